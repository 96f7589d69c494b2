"""Adjudicate: experts settle the cells operators were unsure of, disagreed on, or that the model
got wrong or doubts. Each decision is a new mask version (source ``adjudicated``) and an audit
record; the history tab lists every decision on an image.

The model's doubts are objects whose peak probability p lies near the promoted run's threshold t
(within ``db.adjudication.near_band(t)``, on either side, near-misses included), shown with p and
t, and objects of unusual size. The reason offered with a verdict fits it: reasons to keep beside
Keep, reasons to drop beside Drop. The crop shows the object with context around it (how much is
a slider), under the same display controls as Review and Correct.

What people wrote (notes, reasons, file names) and messages that may quote it are shown as text:
``st.text`` for notes, :func:`core.plaintext.escape_markdown` where a sentence has formatting.
"""
import pandas as pd
import streamlit as st

from core.plaintext import escape_markdown as md
from db import adjudication, review, runs, users
from pages import ui

who, pid = ui.open_page("Adjudicate", "expert", "admin")

OTHER = "other (write below)"
#: What an expert may give as the reason, per verdict; the first is the one offered.
REASONS = {"keep": ("clear soma, stained", "dim but a whole cell", "cell at the image edge", OTHER),
           "drop": ("debris or artefact", "too dim to be a cell", "out of focus",
                    "part of a neighbouring cell", OTHER)}
#: One key per action, shown on the buttons and listed under them.
KEYS = {"keep": "K", "drop": "D", "skip": "S"}

queue_tab, history_tab = st.tabs(["Queue", "History of an image"])

with queue_tab:
    with ui.session() as s:
        queue = adjudication.adjudication_queue(s, pid)
        run = runs.promoted_run(s, pid)
        threshold = runs.run_threshold(run, ui.storage()) if run is not None else None
    if st.session_state.pop("adj_decided", False):
        # A verdict was given: its reasons do not carry over to the next object.
        for key in ("adj_reason_text", "adj_why_keep", "adj_why_drop"):
            st.session_state.pop(key, None)
    if st.session_state.get("adj_last"):
        st.success(md(st.session_state.pop("adj_last")))
    top = st.columns([3, 2])
    top[0].markdown(f"**{len(queue)}** objects wait for an expert.")
    if threshold is not None:
        t = float(threshold)
        band = adjudication.near_band(t)
        if top[1].button(
                "Queue the model's doubts", key="adj_add_doubts",
                help=f"Objects of the promoted model's test images whose peak probability p lies "
                     f"within {band:g} of its threshold t = {t:.2f} ({t - band:.3g} to "
                     f"{t + band:.3g}: counted ones and near-misses), least sure first, and "
                     "objects of unusual size."):
            try:
                with ui.session() as s:
                    n = adjudication.queue_model_doubts(s, ui.storage(), pid, user_id=who.id)
                st.session_state["adj_last"] = (
                    f"{n} objects near the threshold or of unusual size were added to the queue."
                    if n else "The model has no doubts that are not queued already.")
                st.rerun()
            except ValueError as exc:
                st.error(md(exc))

    if queue.empty:
        st.info("Nothing waits for an expert. Items arrive when operators flag a cell as unsure "
                "or disagree on one, when someone sends an FP or FN from Predictions, or from "
                "the model's doubts (button above, once a model is promoted).")
    else:
        pos = min(st.session_state.get("adj_pos", 0), len(queue) - 1)
        item = queue.iloc[pos]
        st.caption(f"Item {pos + 1} of {len(queue)}: {md(item['group'])} "
                   f"({md(item['reason'])}), image **{md(item['name'])}**")
        left, right = st.columns([3, 2])
        with left:
            margin = st.slider("Context around the object (px)", 10, 200, 60, 10,
                               key="adj_margin")
            try:
                r0, c0, r1, c1 = (list(item["bbox"]) or [0, 0, 1, 1])[:4]
                # Magnified so the crop is about 500 px across, never below 1x or above 6x.
                zoom = int(min(6, max(1, 500 // (max(r1 - r0, c1 - c0) + 2 * margin))))
                with ui.session() as s:
                    crop = adjudication.item_crop(
                        s, ui.storage(), int(item["item_id"]), margin=margin, zoom=zoom,
                        display={"brightness": st.session_state.get("adj_bright", 0.0),
                                 "contrast": st.session_state.get("adj_contrast", 1.0),
                                 "gamma": st.session_state.get("adj_gamma", 1.0)})
                st.image(crop, caption=f"Yellow: the object in question; cyan: the other cells "
                                       f"of the current mask ({margin} px around it, "
                                       f"magnified x{zoom}).")
            except ValueError as exc:
                st.error(md(exc))
            with st.expander("Display"):
                st.slider("Brightness", -0.5, 0.5, 0.0, 0.05, key="adj_bright")
                st.slider("Contrast", 0.5, 5.0, 1.0, 0.1, key="adj_contrast")
                st.slider("Gamma", 0.2, 2.0, 1.0, 0.05, key="adj_gamma",
                          help="Below 1 lifts dim cells; the stored image is not changed.")
        with right:
            geometry = item["geometry"] or {}
            if item["reason"] == "uncertain" and "threshold" in geometry:
                p, t = float(item["probability"]), float(geometry["threshold"])
                a, b = st.columns(2)
                a.metric("Model probability (peak)", f"{p:.2f}")
                b.metric("Threshold", f"{t:.2f}")
                st.caption(f"Near the threshold: p {p:.2f} is "
                           + (f"above t {t:.2f}, so the model counts it, only just."
                              if geometry.get("counted") else
                              f"below t {t:.2f}, so the model does not count it: a near-miss "
                              f"it finds at {float(geometry.get('drawn_at', t)):.2f}."))
            elif item["reason"] == "size":
                st.caption(f"Unusual size: {md(item['note'])}.")
            prob = item["probability"]
            if pd.isna(prob):
                try:
                    with ui.session() as s:
                        prob = adjudication.item_probability(s, ui.storage(),
                                                             int(item["item_id"]),
                                                             predict=ui.model_heatmap)
                except ValueError as exc:
                    st.caption(f"No model probability: {md(exc)}")
                prob = float("nan") if prob is None else prob
            if not (item["reason"] == "uncertain" and "threshold" in geometry):
                st.metric("Model probability", "n/a" if pd.isna(prob) else f"{prob:.2f}")
            if item["note"]:
                st.text(f"Note: {item['note']}")
            votes = pd.DataFrame(item["votes"], columns=["user", "verdict", "reason", "at"])
            if votes.empty:
                st.caption("No operator voted on this object.")
            else:
                st.markdown("**Operators' votes**")
                st.dataframe(votes, hide_index=True, width="stretch")
            keep, drop, skip = st.columns(3)
            choices = {"keep": keep.selectbox("Why keep", REASONS["keep"], key="adj_why_keep"),
                       "drop": drop.selectbox("Why drop", REASONS["drop"], key="adj_why_drop")}
            text = st.text_input("Reason in your words", key="adj_reason_text",
                                 placeholder="required for 'other'; added to the reason otherwise")
            verdict = None
            if keep.button("Keep", key="adj_keep", type="primary", shortcut=KEYS["keep"],
                           help="It is a cell: with the reason above it (key K)"):
                verdict = "keep"
            if drop.button("Drop", key="adj_drop", shortcut=KEYS["drop"],
                           help="Not a cell: with the reason above it (key D)"):
                verdict = "drop"
            if skip.button("Skip", key="adj_skip", shortcut=KEYS["skip"],
                           help="Decide later (key S)"):
                st.session_state["adj_pos"] = (pos + 1) % len(queue)
                st.rerun()
            st.caption("Keys: " + " · ".join(f"**{k}** {name}" for name, k in KEYS.items()))
            if verdict is not None:
                choice = choices[verdict]
                reason = text.strip() if choice == OTHER else (
                    f"{choice}; {text.strip()}" if text.strip() else choice)
                try:
                    with ui.session() as s:
                        expert = users.get_user(s, who.name)
                        decision = adjudication.decide_adjudication(
                            s, ui.storage(), int(item["item_id"]), expert=expert,
                            verdict=verdict, reason=reason)
                        version_id = decision.version_id
                    st.session_state["adj_last"] = (
                        f"{verdict.capitalize()}: {item['name']} now has version {version_id}.")
                    st.session_state["adj_pos"] = pos
                    st.session_state["adj_decided"] = True
                    st.rerun()
                except ValueError as exc:
                    st.error(md(exc))
        with st.expander("The whole queue"):
            st.dataframe(queue[["name", "reason", "kind", "probability", "priority",
                                "created_at"]], hide_index=True, width="stretch")

with history_tab:
    with ui.session() as s:
        counts = review.image_counts(s, pid)
    if counts.empty:
        st.info("The project has no images yet.")
    else:
        names = dict(zip(counts["image_id"], counts["name"]))
        default = st.session_state.get("adj_history_image")
        ids = list(names)
        image_id = st.selectbox("Image", ids, format_func=names.get, key="adj_history_pick",
                                index=ids.index(default) if default in ids else 0)
        with ui.session() as s:
            history = review.image_history(s, image_id)
        if history.empty:
            st.caption("Nothing happened to this image's masks yet.")
        else:
            st.dataframe(history, hide_index=True, width="stretch")
