"""Predictions: browse a run's test images with TP/FP/FN boxes, move the threshold and see the
counts change (recounted from the stored heatmaps), keep the new threshold, and send an FP or FN
to the experts.
"""
import streamlit as st

from core.io import encode_png
from core.render import outcome_overlay
from db import adjudication, runs, users
from pages import ui
from training import scoring

who, pid = ui.open_page("Predictions")
may_edit = who.role in ui.EDITORS

with ui.session() as s:
    overview = runs.runs_overview(s, pid)
if overview.empty:
    st.info("No trained run yet. Queue one on the Train page; its test images appear here.")
    st.stop()

labels = {int(r.run_id): f"{r.name}{' (promoted)' if r.promoted else ''}"
          for r in overview.itertuples()}
ids = list(labels)
default = (int(overview.loc[overview["promoted"], "run_id"].iloc[-1]) if overview["promoted"].any()
           else ids[-1])
run_id = st.selectbox("Run", ids, index=ids.index(default), format_func=labels.get,
                      key="pred_run")
with ui.session() as s:
    stored_t = runs.run_scoring(runs.get_run(s, run_id), ui.storage()).threshold
    results = runs.run_results(s, run_id)
if results.empty:
    st.info("This run has no scored test images. Evaluate it on the Train page.")
    st.stop()

# ---------------------------------------------------------------- threshold
top = st.columns([3, 1])
threshold = top[0].slider("Threshold", 0.05, 0.95, value=round(stored_t, 3), step=0.025,
                          format="%.3f", key=f"pred_threshold_{run_id}",
                          help="Counts and colours are recomputed from the stored heatmaps.")
if abs(threshold - stored_t) < 1e-9:
    table = results
else:
    memo = st.session_state.setdefault("pred_recount", {})
    key = (run_id, round(threshold, 4))
    if key not in memo:
        bar = st.progress(0.0, text="Recounting the test images...")
        with ui.session() as s:
            memo[key] = scoring.recount(s, ui.storage(), run_id, threshold,
                                        progress=lambda d, n: bar.progress(d / n))
        bar.empty()
    fresh = memo[key]
    table = results.drop(columns=["n_true", "n_pred", "tp", "fp", "fn", "iou", "error",
                                  "abs_error"]).merge(fresh, on="image_id", how="left")
    for problem in table.loc[table["problem"].fillna("") != "", "problem"]:
        st.error(problem)
if may_edit and abs(threshold - stored_t) > 1e-9:
    if top[1].button(f"Keep {threshold:.3f} as the run's threshold", key="pred_keep"):
        try:
            with ui.session() as s:
                runs.set_threshold(s, run_id, threshold, actor=users.get_user(s, who.name),
                                  storage=ui.storage())
            st.success(f"The run now counts with threshold {threshold:.3f}.")
            st.rerun()
        except ValueError as exc:
            st.error(str(exc))
else:
    top[1].caption(f"Run's threshold: {stored_t:.3f}")

tp, fp, fn = (int(table[k].sum()) for k in ("tp", "fp", "fn"))
c = st.columns(5)
c[0].metric("True cells", int(table["n_true"].sum()))
c[1].metric("Predicted", int(table["n_pred"].sum()))
c[2].metric("TP", tp)
c[3].metric("FP", fp)
c[4].metric("FN", fn)

# ---------------------------------------------------------------- per-image table
f1, f2 = st.columns(2)
only_errors = f1.checkbox("Only images with errors", key="pred_only_errors")
sort = f2.selectbox("Sort by", ["FP + FN", "count error", "FP", "FN", "name"], key="pred_sort")
view = table[(table["fp"] + table["fn"]) > 0] if only_errors else table
order = {"FP + FN": view["fp"] + view["fn"], "count error": view["abs_error"], "FP": view["fp"],
         "FN": view["fn"]}.get(sort)
view = (view.assign(_k=order).sort_values(["_k", "name"], ascending=[False, True])
        .drop(columns="_k") if order is not None else view.sort_values("name"))
st.dataframe(view[["name", "n_true", "n_pred", "tp", "fp", "fn", "abs_error"]],
             hide_index=True, width="stretch", key="pred_table")
if view.empty:
    st.info("No image matches the filter.")
    st.stop()

# ---------------------------------------------------------------- one image
names = dict(zip(view["image_id"], view["name"]))
image_id = st.selectbox("Image", list(names), format_func=names.get, key="pred_image")
l1, l2, l3, l4 = st.columns(4)
colors, words = ui.outcome_palette(l4, "pred_colorblind")
show_boxes = l1.checkbox(f"Boxes ({words})", value=True, key="pred_boxes")
show_heat = l2.checkbox("Heatmap", key="pred_heat")
show_outlines = l3.checkbox("Outlines", key="pred_outlines")
row = view[view["image_id"] == image_id].iloc[0]
try:
    with ui.session() as s:
        outcome = scoring.image_outcome(s, ui.storage(), run_id, image_id, threshold)
    picture = outcome_overlay(ui.read_image(row["image_path"]), outcome.match,
                              outcome.true_labels, outcome.pred_labels,
                              heatmap=outcome.heatmap if show_heat else None, boxes=show_boxes,
                              outlines=show_outlines, colors=colors)
    st.image(encode_png(picture), caption=f"{row['name']}: {outcome.match.n_pred} predicted, "
                                          f"{outcome.match.n_true} true at {threshold:.3f}")
except (ValueError, OSError) as exc:
    st.error(f"{row['name']}: {exc}")

# ---------------------------------------------------------------- send to the experts
if may_edit:
    with ui.session() as s:
        stored = runs.result_for(s, run_id, image_id)
        errors = runs.result_objects(s, stored.id) if stored is not None else []
        errors = [(o.id, o.outcome, o.centroid_row, o.centroid_col, o.probability)
                  for o in errors if o.outcome in ("FP", "FN")]
    st.subheader("Send an error to the experts")
    if abs(threshold - stored_t) > 1e-9:
        st.caption(f"These are the errors stored at the run's threshold {stored_t:.3f}.")
    if not errors:
        st.caption("This image has no FP or FN at the run's threshold.")
    for oid, kind, r, col, p in errors:
        a, b = st.columns([4, 1])
        a.write(f"{kind} at row {r:.0f}, column {col:.0f}"
                + ("" if p is None else f", probability {p:.2f}"))
        if b.button("Send", key=f"pred_send_{oid}"):
            try:
                with ui.session() as s:
                    adjudication.queue_run_object(s, oid, user_id=who.id,
                                                  note="sent from Predictions")
                st.success(f"The {kind} is in the experts' queue.")
            except ValueError as exc:
                st.error(str(exc))
