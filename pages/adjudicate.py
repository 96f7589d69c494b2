"""Adjudicate: experts settle the cells operators were unsure of, disagreed on, or that the model
got wrong or doubts. Each decision is a new mask version (source ``adjudicated``) and an audit
record; the history tab lists every decision on an image.

What people wrote (notes, reasons, file names) and messages that may quote it are shown as text:
``st.text`` for notes, :func:`core.plaintext.escape_markdown` where a sentence has formatting.
"""
import pandas as pd
import streamlit as st

from core.plaintext import escape_markdown as md
from db import adjudication, review, users
from pages import ui

who, pid = ui.open_page("Adjudicate", "expert", "admin")

REASONS = ("clear soma, stained", "debris or artefact", "too dim to be a cell", "out of focus",
           "part of a neighbouring cell", "other (write below)")

queue_tab, history_tab = st.tabs(["Queue", "History of an image"])

with queue_tab:
    with ui.session() as s:
        queue = adjudication.adjudication_queue(s, pid)
        doubts = adjudication.model_doubt_candidates(s, ui.storage(), pid)
    if st.session_state.get("adj_last"):
        st.success(md(st.session_state.pop("adj_last")))
    top = st.columns([3, 2])
    top[0].markdown(f"**{len(queue)}** objects wait for an expert.")
    if not doubts.empty and top[1].button(
            f"Add the model's {len(doubts)} least sure objects", key="adj_add_doubts"):
        try:
            with ui.session() as s:
                n = adjudication.queue_model_doubts(s, ui.storage(), pid, user_id=who.id)
            st.success(f"{n} objects added to the queue.")
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
        try:
            with ui.session() as s:
                crop = adjudication.item_crop(s, ui.storage(), int(item["item_id"]))
            left.image(crop, caption="Yellow: the object in question; cyan: the other cells "
                                     "of the current mask (magnified x4).")
        except ValueError as exc:
            left.error(md(exc))
        with right:
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
            st.metric("Model probability", "n/a" if pd.isna(prob) else f"{prob:.2f}")
            if item["note"]:
                st.text(f"Note: {item['note']}")
            votes = pd.DataFrame(item["votes"], columns=["user", "verdict", "reason", "at"])
            if votes.empty:
                st.caption("No operator voted on this object.")
            else:
                st.markdown("**Operators' votes**")
                st.dataframe(votes, hide_index=True, width="stretch")
            choice = st.selectbox("Reason", REASONS, key="adj_reason_choice")
            text = st.text_input("Reason in your words", key="adj_reason_text",
                                 placeholder="required for 'other'; added to the reason otherwise")
            reason = text.strip() if choice.startswith("other") else (
                f"{choice}; {text.strip()}" if text.strip() else choice)
            keep, drop, skip = st.columns(3)
            verdict = None
            if keep.button("Keep", key="adj_keep", type="primary", shortcut="k",
                           help="It is a cell (key K)"):
                verdict = "keep"
            if drop.button("Drop", key="adj_drop", shortcut="d", help="Not a cell (key D)"):
                verdict = "drop"
            if skip.button("Skip", key="adj_skip", shortcut="s", help="Decide later (key S)"):
                st.session_state["adj_pos"] = (pos + 1) % len(queue)
                st.rerun()
            if verdict is not None:
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
