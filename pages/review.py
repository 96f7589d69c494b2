"""Review: go through the images, judge the objects of the current mask, approve.

Clicking an object's marker on the figure picks it (the picker beside it does the same); then
keep, drop, or flag it unsure (it goes to the experts' queue). Approving an image makes its
current mask the ground truth, minus the objects dropped on it.
"""
import io

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import render, strokes
from core.objects import count_objects, object_info
from core.prelabel import METHODS, PrelabelParams, auto_mask, auto_threshold
from db import adjudication, masks, review
from db.models import SPLITS
from db.projects import ImageFilter
from pages import ui

VERDICT_COLOURS = {v: render.COLORS[v] for v in ("keep", "drop", "unsure")}
STATUSES = ("to_review", "in_progress", "approved")
PAGE_SIZE = 50

who, pid = ui.open_page("Review", *ui.EDITORS)

# ---------------------------------------------------------------- the image list (one page)
f1, f2, f3 = st.columns(3)
status = f1.multiselect("Status", STATUSES, default=["to_review", "in_progress"], key="rv_status")
split = f2.multiselect("Split", SPLITS, key="rv_split")
with ui.session() as s:
    options = [f"{k}: {v}" for k, v in review.metadata_values(s, pid)]
meta = f3.multiselect("Metadata", options, key="rv_meta")
filters = ImageFilter(status=tuple(status or STATUSES), split=tuple(split) or None,
                      **dict(item.split(": ", 1) for item in meta))
with ui.session() as s:
    screen = review.review_screen(s, pid, st.session_state.get("rv_image"), who.id, filters,
                                  page_size=PAGE_SIZE)
where = screen.position
if screen.image is None:
    st.info("No image matches these filters; widen them." if where.page.total == 0 and options
            else "The project has no images yet: import some on the Import page.")
    st.stop()
rows = {r.image_id: r for r in where.page.rows}
ids = list(rows)


def go_to(target: int) -> None:
    # A callback runs before the script, so the buttons below are drawn for the image it picks.
    st.session_state["rv_image"] = target
    st.session_state["rv_obj_pick"] = None


nav1, nav2, nav3 = st.columns([1, 6, 1])
nav1.button("◀ Previous", disabled=where.previous is None, key="rv_prev", on_click=go_to,
            args=(where.previous,))
nav3.button("Next ▶", disabled=where.next is None, key="rv_next", on_click=go_to,
            args=(where.next,))
st.session_state["rv_image"] = where.image_id
page_note = (f", page {where.page.page + 1} of {where.page.pages}" if where.page.pages > 1 else "")
pick_key = f"rv_pick_{where.image_id}"
image_id = nav2.selectbox(f"Image ({where.page.total} shown{page_note})", ids,
                          index=ids.index(where.image_id), key=pick_key,
                          on_change=lambda: go_to(st.session_state[pick_key]),
                          format_func=lambda i: f"{rows[i].name} · {rows[i].status}")

# ---------------------------------------------------------------- the chosen image
# On an open blind assignment the page shows the reviewer's own version and votes only.
blind, head, votes = screen.blind, screen.version, screen.votes
path, split_name = screen.image.path, screen.image.split
head_id = head.id if head else None
head_path = head.path if head else None
rgb = ui.read_image(path)
labels = ui.read_labels(head_path) if head_path else np.zeros(rgb.shape[:2], np.int32)
objects = object_info(labels)
mine = {d.label: d.verdict for d in votes if d.version_id == head_id}  # last verdict wins

with st.sidebar.expander("Display", expanded=False):
    brightness = st.slider("Brightness", -0.5, 0.5, 0.0, 0.05, key="rv_bright")
    contrast = st.slider("Contrast", 0.5, 5.0, 1.0, 0.1, key="rv_contrast")
    gamma = st.slider("Gamma", 0.2, 2.0, 1.0, 0.05, key="rv_gamma",
                      help="Below 1 lifts dim cells; the stored image is not changed.")

left, right = st.columns([3, 1])
with right:
    st.metric("Objects in the current mask", len(objects))
    st.caption(f"Split {split_name}; mask version {head_id or '-'}; "
               f"{sum(v == 'keep' for v in mine.values())} kept, "
               f"{sum(v == 'drop' for v in mine.values())} dropped, "
               f"{sum(v == 'unsure' for v in mine.values())} unsure.")
    if blind:
        st.info("Blind review: you see your own votes and versions only, not the other "
                "reviewer's. Finish it when you are done.")
    with st.expander("Pre-labelling parameters"):
        preview = st.toggle("Preview a new automatic mask", key="rv_preview")
        method = st.selectbox("Threshold method", METHODS, index=METHODS.index(PrelabelParams().method),
                              key="rv_method")
        min_area = st.slider("Smallest object (px)", 0, 1000, PrelabelParams().min_area, 10,
                             key="rv_min_area")
        sigma = st.slider("Smoothing sigma (px)", 0.0, 6.0, PrelabelParams().sigma, 0.5, key="rv_sigma")
        threshold = None
        if preview:  # the automatic value costs a pass over the image: only when previewing
            start = round(auto_threshold(rgb, PrelabelParams(method=method, sigma=sigma)) * 2) / 2
            # Keyed by what the automatic value depends on, so it restarts there when they change.
            moved = st.slider("Threshold (signal, 0-255)", 0.0, 255.0, start, 0.5,
                              key=f"rv_threshold_{image_id}_{method}_{sigma}",
                              help=f"Starts at the {method} method's value ({start:g}); higher "
                                   "keeps only brighter objects.")
            threshold = None if moved == start else moved
appeared = disappeared = None
if preview:
    try:
        params = PrelabelParams(method=method, min_area=min_area, sigma=sigma, threshold=threshold)
        new_mask = auto_mask(rgb, params)
        appeared, disappeared = strokes.compare_masks(labels > 0, new_mask)
        with right:
            st.metric("Objects with these parameters", count_objects(new_mask),
                      delta=count_objects(new_mask) - len(objects))
            st.caption(f"{int(appeared.max())} would appear (green), "
                       f"{int(disappeared.max())} would disappear (red). Nothing is saved yet.")
            if st.button("Save as a new automatic mask"):
                try:
                    with ui.session() as s:
                        masks.save_mask_version(s, ui.storage(), image_id, new_mask, based_on=head_id,
                                                source="auto", author_id=who.id,
                                                note=f"prelabel {method}, min {min_area}, sigma "
                                                     f"{sigma}, threshold "
                                                     f"{'auto' if threshold is None else threshold}")
                    st.rerun()
                except masks.ConflictError as err:
                    st.warning(str(err))
    except ValueError as err:
        st.error(str(err))

# ---------------------------------------------------------------- the figure
def emphasise(over, labels, obj, color):
    """Redraw one object's outline 2 px thick, working in its bounding box (plus a 1 px margin,
    so the box edge never passes for the object's boundary) instead of the whole frame."""
    r0, c0, r1, c1 = obj.bbox
    box = (slice(max(r0 - 1, 0), r1 + 1), slice(max(c0 - 1, 0), c1 + 1))
    over[box] = render.draw_outlines(over[box], labels[box] == obj.label, color=color, thickness=2)
    return over


# The picker keeps one key: a key that changes with the pick brings back, in the browser, whatever
# value an older widget of the same key last had (the object just judged, say).
labels_list = [o.label for o in objects]
if "rv_obj_next" in st.session_state:  # set after a verdict, applied before the picker exists
    st.session_state["rv_obj_pick"] = st.session_state.pop("rv_obj_next")
if st.session_state.get("rv_obj_pick") not in labels_list:
    st.session_state["rv_obj_pick"] = None
picked = st.session_state["rv_obj_pick"]
shown_rgb = render.adjust_display(rgb, brightness=brightness, contrast=contrast, gamma=gamma)
colours = {lab: VERDICT_COLOURS[v] for lab, v in mine.items()}
if picked:
    colours[picked] = render.COLORS["picked"]
over = render.draw_outlines(shown_rgb, labels, color=render.COLORS["outline"], colors=colours)
for obj in objects:
    if obj.label == picked:
        over = emphasise(over, labels, obj, colours[picked])
if appeared is not None:
    over = render.draw_outlines(over, appeared, color=render.COLORS["appear"])
    over = render.draw_outlines(over, disappeared, color=render.COLORS["disappear"], thickness=2)


def encoded(rgb_array) -> str:
    from base64 import b64encode

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb_array).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + b64encode(buf.getvalue()).decode()


height, width = rgb.shape[:2]
fig = go.Figure(go.Image(source=encoded(over), hoverinfo="skip"))
fig.add_trace(go.Scatter(
    x=[o.centroid[1] for o in objects], y=[o.centroid[0] for o in objects], mode="markers",
    customdata=[o.label for o in objects], marker=dict(size=14, opacity=0.25, color="cyan"),
    hovertemplate="object %{customdata}<extra></extra>"))
fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), height=int(min(700, 900 * height / width)),
                  showlegend=False, dragmode="pan", clickmode="event+select")
fig.update_xaxes(visible=False, range=[0, width])
fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
with left:
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"rv_fig_{image_id}",
                            config={"displaylogo": False, "scrollZoom": True})
points = (event or {}).get("selection", {}).get("points", []) if event else []
clicked = None
if points and points[0].get("customdata") is not None:
    clicked = points[0]["customdata"]
    clicked = int(clicked[0] if isinstance(clicked, list) else clicked)
# The chart keeps its selection across reruns: act on a click once, so a verdict that moved the
# picker on is not undone by the marker still selected.
if clicked is None:
    st.session_state["rv_fig_seen"] = None
elif st.session_state.get("rv_fig_seen") != (image_id, clicked):
    st.session_state["rv_fig_seen"] = (image_id, clicked)
    if clicked != picked:
        st.session_state["rv_obj_pick"] = clicked
        st.rerun()

# ---------------------------------------------------------------- actions
with right:
    st.subheader("Object")
    choice = st.selectbox("Pick an object (or click its marker)", [None] + labels_list,
                          format_func=lambda v: "-" if v is None else
                          f"object {v}" + (f" ({mine[v]})" if v in mine else ""),
                          key="rv_obj_pick")
    reason = st.text_input("Reason (optional; shown to the experts)", key="rv_reason")
    b1, b2, b3 = st.columns(3)
    verdict = None
    if b1.button("Keep", disabled=choice is None, key="rv_keep"):
        verdict = "keep"
    if b2.button("Drop", disabled=choice is None, key="rv_drop"):
        verdict = "drop"
    if b3.button("Unsure", disabled=choice is None, key="rv_unsure",
                 help="Sends the object to the experts' queue."):
        verdict = "unsure"
    if verdict:
        try:
            with ui.session() as s:
                adjudication.record_decision(s, ui.storage(), image_id, head_id, choice,
                                             user_id=who.id, verdict=verdict, reason=reason)
            # On to the next object nobody judged yet, so the picker never rests on this one.
            st.session_state["rv_obj_next"] = next(
                (lab for lab in labels_list if lab > choice and lab not in mine), None)
            st.rerun()
        except ValueError as err:
            st.error(str(err))

    st.divider()
    dropped = sorted(lab for lab, v in mine.items() if v == "drop")
    label = "Approve" + (f" without the {len(dropped)} dropped object(s)" if dropped else "")
    if blind:
        label = "Finish blind review" + (f" without the {len(dropped)} dropped object(s)"
                                         if dropped else "")
    if st.button(label, type="primary", disabled=head_id is None, key="rv_approve"):
        try:
            with ui.session() as s:
                flash = masks.finish_review(s, ui.storage(), image_id, ui.db_user(s, who),
                                            version_id=head_id, dropped=dropped)
            st.session_state["rv_flash"] = flash
            if where.next is not None:
                st.session_state["rv_image"] = where.next
            st.rerun()
        except masks.ConflictError as err:
            st.warning(str(err))
        except (ValueError, PermissionError) as err:
            st.error(str(err))
    if "rv_flash" in st.session_state:
        st.success(st.session_state.pop("rv_flash"))
