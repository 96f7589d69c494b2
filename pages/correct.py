"""Correct: draw on the image to fix its mask, then save a new version.

Tools: add a cell (polygon or freehand, filled), erase with a brush, delete an object by clicking
inside it, split touching cells with a line. The counter and the saved version come from the one
edit rule (``core.objects.edited_labels``): a split makes two cells, an added cell is a new one,
erasing keeps the cells that remain, and an erase that cuts a cell in two makes two cells. Undo
and redo are on the canvas's toolbar. Zoom onto a region to draw precisely: the strokes are
mapped back to full-resolution pixels (``core.strokes``). "Keep these edits" stores the strokes of the current view, so you can move
to another region; "Save" applies everything to the version you started from and stores a new
version. If someone saved meanwhile, both versions are kept and you choose which is current.
"""
import io

import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from core import render, strokes
from core.objects import count_objects, edited_labels
from db import masks, review
from db.projects import ImageFilter, get_image
from pages import ui

CANVAS_WIDTH = 800
PAGE_SIZE = 50
TOOLS = {  # label: (edit kind, drawing mode, stroke width, fill)
    "Add cell (polygon)": ("add", "polygon", 2, "rgba(0, 224, 64, 0.30)"),
    "Add cell (freehand)": ("add", "freedraw", 2, "rgba(0, 224, 64, 0.30)"),
    "Erase (brush)": ("erase", "freedraw", None, "rgba(0, 0, 0, 0)"),
    "Delete object (click inside)": ("delete", "point", 3, "rgba(255, 208, 0, 0.8)"),
    "Split cells (draw a line)": ("split", "line", 2, "rgba(0, 0, 0, 0)"),
}

who, pid = ui.open_page("Correct", *ui.EDITORS)

with ui.session() as s:
    # Review and Correct follow the same image; the list is the page of the queue holding it.
    where = review.queue_position(s, pid, st.session_state.get("rv_image"), ImageFilter(),
                                  page_size=PAGE_SIZE)
if where.image_id is None:
    st.info("The project has no images yet: import some on the Import page.")
    st.stop()
names = {r.image_id: r.name for r in where.page.rows}
ids = list(names)
image_id = st.selectbox("Image", ids, index=ids.index(where.image_id), format_func=names.get,
                        key="cx_image")
st.session_state["rv_image"] = image_id

with ui.session() as s:
    image = get_image(s, image_id)
    path, head_id = image.path, image.head_version_id
    base_key = f"cx_base_{image_id}"
    base_id = st.session_state.setdefault(base_key, head_id)
    base = masks.versions(s, image_id)
    base_path = next((v.path for v in base if v.id == base_id), None)
rgb = ui.read_image(path)
shape = rgb.shape[:2]
if min(shape) < 2:  # imports refuse such images now; older rows may still hold one
    st.error(f"This image is {shape[1]} x {shape[0]} px, too small to draw on; pick another "
             "image, or archive its import batch on the Import page.")
    st.stop()
base_labels = ui.read_labels(base_path) if base_path else np.zeros(shape, np.int32)
pending_key = f"cx_pending_{image_id}_{base_id}"
pending = st.session_state.setdefault(pending_key, [])
if base_id != head_id:
    st.info(f"You are editing version {base_id}; the current version is now {head_id}. "
            "Saving keeps both; reload to start from the current one.")

# ---------------------------------------------------------------- tools and view
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
tool = c1.radio("Tool", list(TOOLS), key="cx_tool", horizontal=False)
kind, mode, width, fill = TOOLS[tool]
if width is None:
    width = c1.slider("Brush size (canvas px)", 4, 60, 20, key="cx_brush")
zoom = c2.selectbox("Zoom", (1, 2, 4, 8), key="cx_zoom", format_func=lambda z: f"{z}x")
centre_row = c3.slider("Centre row", 0, shape[0] - 1, shape[0] // 2, key="cx_row", disabled=zoom == 1)
centre_col = c4.slider("Centre column", 0, shape[1] - 1, shape[1] // 2, key="cx_col",
                       disabled=zoom == 1)
window = strokes.window_at(shape, canvas_width=CANVAS_WIDTH, zoom=zoom,
                           center=(centre_row, centre_col))
canvas_w, canvas_h = window.canvas_size

with st.sidebar.expander("Display", expanded=False):
    brightness = st.slider("Brightness", -0.5, 0.5, 0.0, 0.05, key="cx_bright")
    contrast = st.slider("Contrast", 0.5, 5.0, 1.0, 0.1, key="cx_contrast")
    gamma = st.slider("Gamma", 0.2, 2.0, 1.0, 0.05, key="cx_gamma")


def background(labels) -> bytes:
    """The window of the image with outlines, magnified to the canvas, as JPEG bytes."""
    from PIL import Image as PILImage

    view = render.draw_outlines(
        render.adjust_display(window.crop(rgb), brightness=brightness, contrast=contrast,
                              gamma=gamma), window.crop(labels), color=render.COLORS["outline"])
    pic = PILImage.fromarray(view).resize((canvas_w, canvas_h), PILImage.NEAREST)
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


try:
    kept_labels = edited_labels(base_labels, pending)
except ValueError as err:
    st.error(str(err))
    kept_labels = base_labels
nonce = st.session_state.setdefault("cx_nonce", 0)
canvas_key = (f"cx_canvas_{image_id}_{base_id}_{window.row}_{window.col}_{zoom}_{len(pending)}_"
              f"{nonce}")
st.session_state["cx_canvas_key"] = canvas_key  # tests inject drawings through this key
st.caption(f"{tool}. Showing rows {window.row}-{window.row + window.height}, columns "
           f"{window.col}-{window.col + window.width} at {window.scale:g} screen px per image px. "
           "Polygon: click the corners, then click the first corner again to close it. "
           "Undo, redo and clear are on the canvas toolbar.")
result = st_canvas(
    fill_color=fill, stroke_width=int(width), stroke_color=strokes.TOOL_COLORS[kind],
    background_image=background(kept_labels), update_streamlit=True, width=canvas_w,
    height=canvas_h, drawing_mode=mode, point_display_radius=3, key=canvas_key)
objects = (result.json_data or {}).get("objects", []) if result is not None else []

try:
    current = strokes.objects_to_edits(objects, window, shape)
    after = edited_labels(kept_labels, current)
except ValueError as err:
    st.error(str(err))
    current, after = [], kept_labels

# ---------------------------------------------------------------- result and saving
n_before, n_after = count_objects(base_labels), count_objects(after)
m1, m2, m3 = st.columns(3)
m1.metric(f"Objects in version {base_id}", n_before)
m2.metric("After your edits", n_after, delta=n_after - n_before)
m3.metric("Edits", len(pending) + len(current))
b1, b2, b3, b4 = st.columns(4)
if b1.button("Keep these edits and move on", disabled=not current,
             help="Stores this view's strokes so you can zoom elsewhere."):
    pending.extend(current)
    st.rerun()
if b2.button("Undo kept edits", disabled=not pending):
    pending.clear()
    st.session_state["cx_nonce"] = nonce + 1
    st.rerun()
if b3.button("Reload the current version", disabled=base_id == head_id and not pending):
    st.session_state[base_key] = head_id
    st.session_state["cx_nonce"] = nonce + 1
    st.rerun()
if b4.button("Save", type="primary", disabled=not (pending or current)):
    try:
        with ui.session() as s:
            try:
                v = masks.save_mask_version(s, ui.storage(), image_id, after, based_on=base_id,
                                            source="manual", author_id=who.id,
                                            note=f"{len(pending) + len(current)} edit(s) on the canvas")
                saved, count, conflict = v.id, v.object_count, None  # what was stored
            except masks.ConflictError as err:
                saved, count, conflict = err.version_id, n_after, err
        st.session_state.pop(pending_key, None)
        st.session_state[base_key] = saved
        st.session_state["cx_nonce"] = nonce + 1
        st.session_state["cx_saved"] = (saved, count, str(conflict) if conflict else None,
                                        conflict.head_id if conflict else None)
        st.rerun()
    except ValueError as err:
        st.error(str(err))

if "cx_saved" in st.session_state:
    saved, count, conflict, other = st.session_state["cx_saved"]
    if conflict is None:
        if pending or current:  # the next edit has begun: the message has served
            st.session_state.pop("cx_saved")
        else:
            st.success(f"Saved version {saved} with {count} objects.")
    else:
        st.warning(conflict)
        k1, k2 = st.columns(2)
        if k1.button(f"Make my version {saved} current"):
            with ui.session() as s:
                masks.make_head(s, image_id, saved, user_id=who.id)
            st.session_state.pop("cx_saved")
            st.rerun()
        if k2.button(f"Keep version {other} current"):
            st.session_state.pop("cx_saved")
            st.session_state[base_key] = other
            st.rerun()
