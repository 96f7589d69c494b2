"""Correct: draw on the image to fix its mask, then save a new version.

Tools (keys in brackets): add a cell as a polygon [P] or freehand [F], erase with a brush [E],
delete an object by clicking inside it [D], split touching cells with a line [S], pan [H, or
drag with Space held or the right button]. The wheel and the + and - buttons zoom; Ctrl+Z and
Ctrl+Shift+Z undo and redo; Ctrl+S saves.

How it keeps your work: the editor (``correct_editor.js``, a ``st.components.v2`` module with
no build step) keeps every stroke in image coordinates, so zoom and pan never touch them. The
strokes are kept in this session per image and mask version, across reruns, other images and
other pages, until you save or discard them. After every stroke the page applies the whole list
to the version you started from with the one edit rule (``core.objects.edited_labels``), and
sends the new outlines (a one-bit PNG, redrawn only where the labels changed) and the counts;
Save stores exactly that label image. If someone saved meanwhile, both versions are kept and
shown side by side, and you choose which one is current.

How it stays fast: the image is encoded once per image and display setting (shared by every
session) and fetched by the browser from Streamlit's media store by URL; the editor, the counts
and Save are one fragment, so a stroke reruns only that and sends no image.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image as PILImage
from streamlit import runtime

from core import render, strokes
from core.objects import count_objects, edited_labels
from db import masks, review
from db.projects import ImageFilter, get_image
from pages import ui

PAGE_SIZE = 50
JPEG_QUALITY = 90
DRAFTS = "cx_drafts"  # session state: {"image:version": [stroke, ...]}, the unsaved strokes
#: The keys, as the page lists them (the editor handles them; Save is Streamlit's shortcut).
KEYS = (("P", "polygon"), ("F", "freehand"), ("E", "erase"), ("D", "delete"), ("S", "split"),
        ("H", "pan (or drag with Space held, or with the right button)"), ("Ctrl+Z", "undo"),
        ("Ctrl+Shift+Z", "redo"), ("Ctrl+S", "save"), ("+ / - / 0", "zoom in, out, fit"),
        ("[ / ]", "brush size"), ("Enter / Esc", "close or drop a polygon"))
EDITOR = st.components.v2.component(
    "celltally_correct_editor", isolate_styles=False,
    js=(Path(__file__).resolve().parent / "correct_editor.js").read_text(encoding="utf-8"))


def hex_color(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


@st.cache_resource(show_spinner=False, max_entries=16)
def background_jpeg(path: str, brightness: float, contrast: float, gamma: float) -> bytes:
    """The image as shown (display settings applied), JPEG-encoded once for every session."""
    rgb = render.adjust_display(ui.read_image(path), brightness=brightness, contrast=contrast,
                                gamma=gamma)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def image_url(jpeg: bytes) -> str:
    """Where the browser fetches the image: Streamlit's media store (identical bytes keep one
    URL), as a path relative to the page so a base URL path works."""
    if not runtime.exists():  # a bare `python pages/correct.py`: no server, inline it
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    url = runtime.get_instance().media_file_mgr.add(jpeg, "image/jpeg", "celltally-correct-image")
    return url.lstrip("/")


def outline_pixels(labels: np.ndarray) -> np.ndarray:
    """Where the outlines of a label image lie (``render.draw_outlines``' pixels), as a mask."""
    return render.draw_outlines(np.zeros((*labels.shape, 1), np.uint8).repeat(3, 2), labels,
                                color=(255, 255, 255))[..., 0] > 0


@st.cache_resource(show_spinner=False, max_entries=16)
def version_outlines(path: str) -> np.ndarray:
    """The outline mask of a stored version (read-only; shared by every session)."""
    edges = outline_pixels(ui.read_labels(path))
    edges.flags.writeable = False
    return edges


@st.cache_resource(show_spinner=False, max_entries=64)
def version_count(path: str) -> int:
    """How many objects a stored version holds (files are named by content: never stale)."""
    return count_objects(ui.read_labels(path))


def png_url(edges: np.ndarray) -> str:
    """An outline mask as a one-bit PNG data URL: outline pixels in the outline colour, the rest
    transparent (a few kB for a whole frame)."""
    im = PILImage.frombytes("P", (edges.shape[1], edges.shape[0]),
                            edges.astype(np.uint8).tobytes())
    im.putpalette([0, 0, 0, *render.COLORS["outline"]])
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0, bits=1, compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def outlines_after(doc: str, base_path: str | None, labels: np.ndarray) -> str:
    """The outlines of ``labels`` as a PNG data URL, redrawn only inside the box where they
    differ from the last labels this session outlined for ``doc``."""
    held = st.session_state.get("cx_outlines")
    if held is None or held[0] != doc or held[1].shape != labels.shape:
        edges = (version_outlines(base_path).copy() if base_path else
                 np.zeros(labels.shape, bool))
        held = (doc, ui.read_labels(base_path) if base_path else np.zeros_like(labels), edges,
                png_url(edges))
    _, old, edges, url = held
    changed = old != labels
    if changed.any():
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        # An outline pixel depends on its 4 neighbours: redraw the box from one pixel around it.
        R0, R1 = max(r0 - 1, 0), min(r1 + 1, labels.shape[0])
        C0, C1 = max(c0 - 1, 0), min(c1 + 1, labels.shape[1])
        edges = edges.copy()
        part = outline_pixels(labels[R0:R1, C0:C1])
        edges[r0:r1, c0:c1] = part[r0 - R0:r1 - R0, c0 - C0:c1 - C0]
        url = png_url(edges)
    st.session_state["cx_outlines"] = (doc, labels, edges, url)
    return url


def edits_of(doc: str, items: list, shape) -> tuple[list, list[str]]:
    """The edits of the strokes, each stroke turned into pixels once per session, and the
    sentences of the strokes that could not be."""
    held = st.session_state.get("cx_edits")
    if held is None or held[0] != doc:
        held = (doc, {})
        st.session_state["cx_edits"] = held
    known, out, errors = held[1], [], []
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key not in known:
            try:
                known[key] = strokes.shapes_to_edits([item], shape)
            except ValueError as err:
                known[key] = str(err)
        got = known[key]
        if isinstance(got, str):
            errors.append(got)
        else:
            out.extend(got)
    return out, errors


@dataclass(frozen=True)
class Shown:
    """The image and version the editor works on; fixed until the page reruns."""

    image_id: int
    base_id: int | None
    head_id: int | None
    base_path: str | None
    path: str
    name: str
    url: str
    height: int
    width: int

    @property
    def doc(self) -> str:
        return f"{self.image_id}:{self.base_id}"


who, pid = ui.open_page("Correct", *ui.EDITORS)

with ui.session() as s:
    # Review and Correct follow the same image; the list is the page of the queue holding it.
    where = review.queue_position(s, pid, st.session_state.get("rv_image"), ImageFilter(),
                                  page_size=PAGE_SIZE)
if where.image_id is None:
    st.info("The project has no images yet: import some on the Import page.")
    st.stop()
drafts = st.session_state.setdefault(DRAFTS, {})
unsaved: dict[int, int] = {}
for doc_key, items in drafts.items():
    if items:
        image_key = int(doc_key.split(":")[0])
        unsaved[image_key] = unsaved.get(image_key, 0) + len(items)
names = {r.image_id: r.name for r in where.page.rows}
ids = list(names)
image_id = st.selectbox(
    "Image", ids, index=ids.index(where.image_id), key="cx_image",
    format_func=lambda i: names[i] + (f" · {unsaved[i]} unsaved edit(s)" if i in unsaved else ""))
st.session_state["rv_image"] = image_id

with ui.session() as s:
    image = get_image(s, image_id)
    path, head_id = image.path, image.head_version_id
    base_key = f"cx_base_{image_id}"
    base_id = st.session_state.setdefault(base_key, head_id)
    base_path = next((v.path for v in masks.versions(s, image_id) if v.id == base_id), None)
rgb = ui.read_image(path)
shape = rgb.shape[:2]
if min(shape) < 2:  # imports refuse such images now; older rows may still hold one
    st.error(f"This image is {shape[1]} x {shape[0]} px, too small to draw on; pick another "
             "image, or archive its import batch on the Import page.")
    st.stop()
others = {i: n for i, n in unsaved.items() if i != image_id}
if others:
    st.caption("Unsaved edits are kept on " + ", ".join(
        f"{names.get(i, f'image {i}')} ({n})" for i, n in others.items())
        + ": open the image to save or discard them.")

with st.sidebar.expander("Display", expanded=False):
    brightness = st.slider("Brightness", -0.5, 0.5, 0.0, 0.05, key="cx_bright")
    contrast = st.slider("Contrast", 0.5, 5.0, 1.0, 0.1, key="cx_contrast")
    gamma = st.slider("Gamma", 0.2, 2.0, 1.0, 0.05, key="cx_gamma",
                      help="Below 1 lifts dim cells; the stored image is not changed.")

shown = Shown(image_id, base_id, head_id, base_path, path, names.get(image_id, str(image_id)),
              image_url(background_jpeg(path, brightness, contrast, gamma)), *shape)


# ---------------------------------------------------------------- the editor (a fragment)
def save(item: Shown, labels: np.ndarray, n_edits: int, n_after: int) -> None:
    """Store ``labels`` (what the page showed) as a new version, or as a conflicting one."""
    with ui.session() as s:
        try:
            v = masks.save_mask_version(s, ui.storage(), item.image_id, labels,
                                        based_on=item.base_id, source="manual", author_id=who.id,
                                        note=f"{n_edits} edit(s) in the editor")
            saved, count, conflict = v.id, v.object_count, None  # what was stored
        except masks.ConflictError as err:
            saved, count, conflict = err.version_id, n_after, err
    st.session_state[DRAFTS].pop(item.doc, None)
    st.session_state[f"cx_base_{item.image_id}"] = saved
    st.session_state["cx_saved"] = (item.image_id, saved, count,
                                    conflict.head_id if conflict else None)


def conflict_panel(item: Shown, saved: int, other: int) -> None:
    """Both versions side by side, objects found in only one of them in their own colour."""
    with ui.session() as s:
        paths = {v.id: v.path for v in masks.versions(s, item.image_id)}
    st.warning(f"Image {item.name} changed while you edited: version {other} was saved after "
               f"the version you started from. Your edit is kept as version {saved}. Compare "
               "them below and choose which one is current.")
    mine, theirs = ui.read_labels(paths[saved]), ui.read_labels(paths[other])
    only_mine, only_theirs = strokes.compare_masks(theirs, mine)
    rgb = render.adjust_display(ui.read_image(item.path))
    step = max(1, int(np.ceil(item.width / 700)))
    left, right = st.columns(2)
    for col, labels, only, title, version in (
            (left, mine, only_mine, "Your version", saved),
            (right, theirs, only_theirs, "Version", other)):
        lone = np.unique(labels[only > 0])
        picture = render.draw_outlines(rgb, labels, color=render.COLORS["outline"],
                                       colors={int(v): render.COLORS["appear"] for v in lone if v})
        col.image(picture[::step, ::step], width="stretch",
                  caption=f"{title} {version}: {count_objects(labels)} objects, "
                          f"{int(only.max())} found only here (green).")
    if left.button(f"Make my version {saved} current", key="cx_take_mine"):
        with ui.session() as s:
            masks.make_head(s, item.image_id, saved, user_id=who.id)
        st.session_state.pop("cx_saved")
        st.rerun()
    if right.button(f"Keep version {other} current", key="cx_take_theirs"):
        st.session_state.pop("cx_saved")
        st.session_state[f"cx_base_{item.image_id}"] = other
        st.rerun()


@st.fragment
def editor(item: Shown) -> None:
    """The editor, the counts and Save: a stroke reruns only this."""
    doc = item.doc
    nonce = st.session_state.get("cx_nonce", 0)
    # The editor's list: this image and version, started afresh by a discard (the nonce).
    listed = f"{doc}:{nonce}"
    key = f"cx_editor_{item.image_id}_{item.base_id}_{nonce}"
    st.session_state["cx_editor_key"] = key  # tests send strokes through this key ...
    st.session_state["cx_editor_doc"] = listed  # ... naming this list
    sent = (st.session_state.get(key) or {}).get("strokes")
    drafts = st.session_state.setdefault(DRAFTS, {})
    if isinstance(sent, dict) and sent.get("doc") == listed and isinstance(sent.get("items"),
                                                                           list):
        if sent["items"]:
            drafts[doc] = list(sent["items"])
        else:
            drafts.pop(doc, None)
    items = drafts.get(doc, [])
    base = (ui.read_labels(item.base_path) if item.base_path
            else np.zeros((item.height, item.width), np.int32))
    edits, errors = edits_of(doc, items, (item.height, item.width))
    after = edited_labels(base, edits) if edits else base
    n_before = version_count(item.base_path) if item.base_path else 0
    n_after = count_objects(after) if edits else n_before

    bar = st.container(horizontal=True, vertical_alignment="bottom")
    if bar.button("Save", type="primary", disabled=not items, key="cx_save", shortcut="Mod+S",
                  help="Stores the mask as it is shown as a new version (Ctrl+S)."):
        try:
            save(item, after, len(items), n_after)
            st.rerun()
        except ValueError as err:
            st.error(str(err))
    if bar.button("Discard edits", disabled=not items, key="cx_discard",
                  help="Drops every unsaved stroke on this image."):
        drafts.pop(doc, None)
        st.session_state["cx_nonce"] = nonce + 1
        st.rerun()
    if bar.button("Reload the current version", disabled=item.base_id == item.head_id,
                  key="cx_reload", help="Starts from the image's current version; your unsaved "
                                        "strokes go with you, applied to it."):
        # Strokes are image coordinates: they apply to any version of the image.
        moved = drafts.pop(doc, [])
        current = f"{item.image_id}:{item.head_id}"
        if moved:
            drafts[current] = drafts.get(current, []) + moved
        st.session_state[f"cx_base_{item.image_id}"] = item.head_id
        st.rerun()
    bar.metric(f"Objects in version {item.base_id}", n_before)
    bar.metric("After your edits", n_after, delta=n_after - n_before)
    bar.metric("Edits", len(items))
    EDITOR(key=key, on_strokes_change=lambda: None, data={
        "doc": listed, "image": str(item.image_id), "width": item.width, "height": item.height,
        "url": item.url, "outlines": outlines_after(doc, item.base_path, after),
        "outline_color": hex_color(render.COLORS["outline"]),
        "colors": dict(strokes.TOOL_COLORS), "strokes": items,
        "applied": [str(i.get("id")) for i in items], "before": n_before, "after": n_after,
        "error": errors[0] if errors else None})
    st.caption("Keys: " + " · ".join(f"**{k}** {what}" for k, what in KEYS)
               + ". Scroll to zoom about the pointer.")
    # Below the editor, so that nothing above it moves while you draw.
    if items:
        st.caption(f"{len(items)} unsaved edit(s): they stay with this image in this session, "
                   "also when you zoom, go to another image or page, until you save or "
                   "discard them.")
    for message in errors:
        st.error(message)
    if item.base_id != item.head_id and item.head_id is not None:
        st.info(f"You are editing version {item.base_id}; the current version is now "
                f"{item.head_id}. Saving keeps both; reload to start from the current one.")

    if "cx_saved" in st.session_state:
        image_key, saved, count, other = st.session_state["cx_saved"]
        if image_key != item.image_id:
            st.session_state.pop("cx_saved")
        elif other is not None:
            conflict_panel(item, saved, other)
        elif items:  # the next edit has begun: the message has served
            st.session_state.pop("cx_saved")
        else:
            st.success(f"Saved version {saved} with {count} objects.")


editor(shown)
