"""Dashboard: how good the counts are, per run and over time, per group, and between operators.

Everyone may read it; nothing here changes data (the threshold curve, when first drawn from the
test heatmaps, is kept in the run directory so the next visit is instant).
"""
import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import render
from core.metrics import PAPER_SCORES
from db import review
from db import runs as run_rows
from pages import ui
from training import scoring

who, pid = ui.open_page("Dashboard")

with ui.session() as s:
    runs = run_rows.runs_overview(s, pid)


def fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


# ---------------------------------------------------------------- scores per run
st.subheader("Scores per run")
if runs.empty:
    st.info("No trained run yet. Queue one on the Train page; its scores appear here.")
else:
    default = runs.index[runs["promoted"]].max() if runs["promoted"].any() else runs.index[-1]
    labels = {int(r.run_id): f"{r.name}{' (promoted)' if r.promoted else ''}"
              for r in runs.itertuples()}
    run_id = st.selectbox("Run", list(labels), index=list(labels).index(int(runs.loc[default,
                                                                                     "run_id"])),
                          format_func=labels.get, key="dash_run")
    row = runs[runs["run_id"] == run_id].iloc[0]
    with ui.session() as s:
        sure = scoring.run_reliability(s, run_id)
    cols = st.columns(7)
    paper = PAPER_SCORES
    for col, key, title, digits in zip(cols, ("f1", "precision", "recall", "mae", "medae", "bias",
                                              "mean_iou"),
                                       ("F1", "Precision", "Recall", "MAE", "MedAE", "Bias",
                                        "Mean IoU"), (2, 2, 2, 2, 1, 2, 2)):
        ref = paper.get(key)
        low_high = sure.intervals.get(key)
        notes = [f"95% interval {fmt(low_high[0], digits)} to {fmt(low_high[1], digits)}"
                 if low_high else None,
                 f"Paper (preprint, 60 test images): {ref}" if ref is not None else None]
        col.metric(title, fmt(row[key], digits), help=". ".join(n for n in notes if n) or None)
    if sure.intervals:
        ci = sure.intervals
        st.caption(f"95% bootstrap intervals over the {sure.n_images} test images "
                   f"({sure.n_cells} true cells), images resampled: F1 {fmt(ci['f1'][0])} to "
                   f"{fmt(ci['f1'][1])}, MAE {fmt(ci['mae'][0])} to {fmt(ci['mae'][1])}, bias "
                   f"{fmt(ci['bias'][0])} to {fmt(ci['bias'][1])}. Few images give wide "
                   "intervals: a score is only as sure as its interval is narrow.")
    if sure.warning:
        st.warning(sure.warning)
    few = scoring.few_data_caution(sure.n_images, sure.n_cells) if pd.notna(row["f1"]) else None
    if few:
        st.warning(few)
    st.caption("Paper (preprint): F1 0.87, MAE 0.85, MedAE 1, mean IoU 0.74 on 60 test images. "
               f"This run: {fmt(row['n_images'], 0)} test images, chosen threshold "
               f"{fmt(row['threshold'], 3)}.")
    table = runs[["name", "created_at", "promoted", "threshold", *run_rows.SCORE_KEYS]].copy()
    table = pd.concat([table, pd.DataFrame([{"name": "paper (preprint)", "promoted": False,
                                             **paper, "n_images": 60}])], ignore_index=True)
    st.dataframe(table, hide_index=True, width="stretch")

    with ui.session() as s:
        results = run_rows.run_results(s, run_id)
        curve = scoring.threshold_curve_for_run(s, ui.storage(), run_id)

    # ------------------------------------------------------------ F1 against threshold
    st.subheader("F1, precision and recall against threshold")
    if curve is None:
        st.caption("This run stored no threshold curve. Drawing it from its test heatmaps takes "
                   "a few seconds per image, once.")
        if st.button("Draw the curve", key="dash_curve"):
            try:
                with st.spinner("Sweeping the threshold over the test heatmaps..."), \
                        ui.session() as s:
                    curve = scoring.threshold_curve_for_run(s, ui.storage(), run_id,
                                                            compute=True)
            except ValueError as exc:
                st.error(str(exc))
    if curve is not None:
        fig = go.Figure()
        palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
        # One colour per image set, one dash per score: the legend names both.
        for colour, (images, c) in zip(palette, curve["curves"].items()):
            for key, dash in (("f1", "solid"), ("precision", "dot"), ("recall", "dash")):
                if key in c:
                    fig.add_trace(go.Scatter(x=c["thresholds"], y=c[key], mode="lines",
                                             name=f"{key}, {images}",
                                             line={"dash": dash, "color": colour}))
        # Marks at the same threshold share one line and label (they overprint otherwise).
        at: dict[float, list[str]] = {}
        for mark in ("chosen", "knee", "best"):
            if curve.get(mark) is not None:
                at.setdefault(round(float(curve[mark]), 4), []).append(mark)
        colour = {"chosen": "green", "knee": "orange", "best": "grey"}
        for x, marks in at.items():
            fig.add_vline(x=x, line_color=colour[marks[0]], line_dash="dash",
                          annotation_text=f"{' = '.join(marks)} {x:.3f}")
        # Scores live in [0, 1]: an axis cut above 0 makes small differences look large.
        fig.update_layout(xaxis_title="threshold", yaxis_title="score", height=400,
                          showlegend=True, legend_title_text="score, images",
                          yaxis_range=[0, 1.02], xaxis_range=[0, 1],
                          title=f"Scores against threshold (chosen on {curve['source']})")
        st.plotly_chart(fig, key="dash_fig_curve")
        partial = [images for images, c in curve["curves"].items()
                   if not {"precision", "recall"} <= set(c)]
        if partial:
            st.caption(f"This run kept only F1 for the {', '.join(partial)}; precision and "
                       "recall appear for runs trained since they were stored.")
        if curve.get("chosen_on") == "train+validation":
            st.caption("The threshold was chosen on train and validation images together: the "
                       f"validation images held fewer than {scoring.MIN_VALIDATION_CELLS} cells. "
                       "A threshold chosen on images the model was fitted on tends to over-count "
                       "new images.")
        elif curve.get("chosen_on") == "validation":
            st.caption("The threshold was chosen on the held-out validation images; the train "
                       "images' curve, on which the model was fitted, is shown for comparison.")

    # ------------------------------------------------------------ per-image errors
    if results.empty:
        st.info("This run has no per-image results; evaluate it to see its errors.")
    else:
        left, right = st.columns(2)
        worst = float(max(results["abs_error"].max(), 1))
        hist = px.histogram(results, x="abs_error", marginal="box",
                            title="Absolute count error per image",
                            labels={"abs_error": "|predicted - true|"})
        # An absolute error is never below 0: one bin per whole cell from 0, axis from 0.
        hist.update_traces(xbins={"start": 0, "size": max(1, math.ceil(worst / 20))},
                           selector={"type": "histogram"})
        hist.update_xaxes(range=[0, worst * 1.05 + 1])
        hist.update_layout(height=380)
        left.plotly_chart(hist, key="dash_fig_errors")
        top = float(max(results["n_true"].max(), results["n_pred"].max(), 1))
        scatter = px.scatter(results, x="n_true", y="n_pred", hover_name="name",
                             title="Predicted against true count",
                             labels={"n_true": "true count", "n_pred": "predicted count"})
        scatter.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="y = x",
                                     line={"dash": "dash", "color": "grey"}))
        scatter.update_layout(height=380, xaxis_range=[0, top * 1.05],
                              yaxis_range=[0, top * 1.05])
        right.plotly_chart(scatter, key="dash_fig_counts")
        colors, words = ui.outcome_palette(st, "dash_colorblind")
        outcomes = go.Figure([go.Bar(x=results["name"], y=results[k.lower()], name=k,
                                     marker_color=render.hex_color(colors[k]))
                              for k in ("TP", "FP", "FN")])
        outcomes.update_layout(barmode="stack", height=340, yaxis_title="objects",
                               title=f"Objects per test image ({words})", showlegend=True)
        st.plotly_chart(outcomes, key="dash_fig_outcomes")

    # ------------------------------------------------------------ across runs
    if len(runs) > 1:
        over = runs.melt(id_vars=["created_at", "name"], value_vars=["f1", "mae", "mean_iou"],
                         var_name="score", value_name="value").dropna(subset=["value"])
        trend = px.line(over, x="created_at", y="value", color="score", markers=True,
                        hover_name="name", title="Scores across runs")
        trend.update_layout(height=340, xaxis_title="trained", yaxis_title="",
                            yaxis_rangemode="tozero")
        st.plotly_chart(trend, key="dash_fig_runs")

# ---------------------------------------------------------------- group summaries
st.subheader("Groups")
by = st.radio("Group by", ["animal", "region", "condition"], horizontal=True, key="dash_by")
source = "ground truth"
if not runs.empty:
    source = st.radio("Counts", ["ground truth", "selected run"], horizontal=True,
                      key="dash_source")
try:
    with ui.session() as s:
        groups = review.group_summary(
            s, pid, by, run_id=run_id if source == "selected run" and not runs.empty else None)
except ValueError as exc:
    st.error(str(exc))
    groups = pd.DataFrame()
if groups.empty:
    st.caption("No counted images to group yet.")
else:
    st.dataframe(groups, hide_index=True, width="stretch")
    if groups["density_per_mm2"].isna().all():
        st.caption("Density per mm² needs the project's pixel size (an admin sets it).")

# ---------------------------------------------------------------- operator agreement
st.subheader("Agreement between operators")
with ui.session() as s:
    agreement = review.operator_agreement(s, ui.storage(), pid)
if agreement.before is None:
    st.caption("No image has been reviewed blind by two operators yet. An admin assigns images "
               "for double review on the Import page.")
else:
    a, b = st.columns(2)
    for col, title, ag in ((a, "Before adjudication", agreement.before),
                           (b, "After adjudication", agreement.after)):
        col.markdown(f"**{title}** ({ag.n} images)")
        col.metric("Mean difference (A - B)", fmt(ag.bias))
        col.caption(f"Limits of agreement: {fmt(ag.lower)} to {fmt(ag.upper)} cells")
    few = min(agreement.before.n, agreement.after.n)
    if few < scoring.MIN_TEST_IMAGES:
        st.warning(f"Few images: these limits rest on {few} double-reviewed images (fewer than "
                   f"{scoring.MIN_TEST_IMAGES}); they will move as more are reviewed twice.")
    ba = go.Figure()
    # Each set with its own limits, in its own colour from the one table; the colours stay
    # apart for colour-blind eyes and light enough for a dark theme.
    for name, ag, dash in (("before", agreement.before, "dot"),
                           ("after", agreement.after, "dash")):
        colour = render.hex_color(render.COLORS[f"agreement_{name}"])
        ba.add_trace(go.Scatter(x=list(ag.means), y=list(ag.differences), mode="markers",
                                name=f"{name} adjudication", marker={"color": colour, "size": 9}))
        for y, text in ((ag.bias, "mean"), (ag.lower, "-1.96 sd"), (ag.upper, "+1.96 sd")):
            if not math.isnan(y):
                ba.add_hline(y=y, line_dash=dash, line_color=colour, line_width=2, opacity=0.9,
                             annotation_text=f"{name}: {text}",
                             annotation_font_color=colour)
    ba.update_layout(title="Bland-Altman", xaxis_title="mean count of A and B",
                     yaxis_title="A - B", height=360, showlegend=True)
    st.plotly_chart(ba, key="dash_fig_agreement")
    st.dataframe(agreement.table, hide_index=True, width="stretch")
