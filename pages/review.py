"""Review: go through the images, judge the objects of the current mask, approve.

Click an object's number on the image (or pick it in the list), then keep, drop, or flag it
unsure (it goes to the experts' queue); the keys are listed on the page. Approving an image makes
its current mask the ground truth, minus the objects dropped on it.

How it stays fast: the image is encoded once per image and display setting and fetched by the
browser from Streamlit's media store by URL; the outlines, numbers and verdict colours are SVG
vectors drawn over it by a small viewer (``review_viewer.js``, a ``st.components.v2`` module
with no build step) that keeps its zoom and pan across reruns. ``st.plotly_chart`` cannot: its
element id hashes the figure, so any change of colour remounts it and resets the view. The
viewer and the object panel are one fragment, so a pick or a verdict reruns only that and sends
no image.
"""
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image as PILImage
from streamlit import runtime

from core import render, strokes
from core.objects import count_objects, object_info
from core.prelabel import METHODS, PrelabelParams, auto_mask, auto_threshold
from db import adjudication, masks, review
from db.models import SPLITS
from db.projects import ImageFilter
from pages import ui

STATUSES = ("to_review", "in_progress", "approved")
PAGE_SIZE = 50
VERDICTS = ("keep", "drop", "unsure")
#: One key per action, shown on the buttons and listed under the image.
KEYS = {"previous": "P", "next": "N", "keep": "K", "drop": "D", "unsure": "U"}
JPEG_QUALITY = 90
VIEWER = st.components.v2.component(
    "celltally_review_viewer", isolate_styles=False,
    js=(Path(__file__).resolve().parent / "review_viewer.js").read_text(encoding="utf-8"))

who, pid = ui.open_page("Review", *ui.EDITORS)

# ---------------------------------------------------------------- the image list (one page)
with ui.session() as s:
    options = [f"{k}: {v}" for k, v in review.metadata_values(s, pid)]
chosen = st.session_state.get("rv_status", ["to_review", "in_progress"])
with st.expander(f"Queue: {', '.join(chosen) or 'every status'}", expanded=False):
    f1, f2, f3 = st.columns(3)
    status = f1.multiselect("Status", STATUSES, default=["to_review", "in_progress"],
                            key="rv_status")
    split = f2.multiselect("Split", SPLITS, key="rv_split")
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


if st.session_state.get("rv_for_image") != where.image_id:
    # A new image: the object picked and the reason typed on the last one do not carry over.
    st.session_state["rv_for_image"] = where.image_id
    st.session_state["rv_obj_pick"] = None
    st.session_state["rv_reason"] = ""


def go_to(target: int) -> None:
    # A callback runs before the script, so the buttons below are drawn for the image it picks.
    st.session_state["rv_image"] = target


nav = st.container(horizontal=True, vertical_alignment="bottom")
nav.button("◀ Previous", disabled=where.previous is None, key="rv_prev", on_click=go_to,
           args=(where.previous,), shortcut=KEYS["previous"])
st.session_state["rv_image"] = where.image_id
page_note = (f", page {where.page.page + 1} of {where.page.pages}" if where.page.pages > 1 else "")
pick_key = f"rv_pick_{where.image_id}"
image_id = nav.selectbox(f"Image ({where.page.total} shown{page_note})", ids,
                         index=ids.index(where.image_id), key=pick_key,
                         on_change=lambda: go_to(st.session_state[pick_key]),
                         format_func=lambda i: f"{rows[i].name} · {rows[i].status}")
nav.button("Next ▶", disabled=where.next is None, key="rv_next", on_click=go_to,
           args=(where.next,), shortcut=KEYS["next"])

with st.sidebar.expander("Display", expanded=False):
    brightness = st.slider("Brightness", -0.5, 0.5, 0.0, 0.05, key="rv_bright")
    contrast = st.slider("Contrast", 0.5, 5.0, 1.0, 0.1, key="rv_contrast")
    gamma = st.slider("Gamma", 0.2, 2.0, 1.0, 0.05, key="rv_gamma",
                      help="Below 1 lifts dim cells; the stored image is not changed.")


# ---------------------------------------------------------------- what one image needs, once
def memo(name: str, key, make):
    """``make()``, kept in this session until ``key`` changes: the image, the display settings or
    the mask version. One entry per name, so a session holds one image's worth."""
    held = st.session_state.get(name)
    if held is None or held[0] != key:
        held = (key, make())
        st.session_state[name] = held
    return held[1]


def encode_jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def image_url(jpeg: bytes) -> str:
    """Where the browser fetches the image: Streamlit's media store (kept across fragment reruns;
    identical bytes keep one URL), as a path relative to the page so a base URL path works."""
    if not runtime.exists():  # a bare `python pages/review.py`: no server, inline it
        from base64 import b64encode

        return "data:image/jpeg;base64," + b64encode(jpeg).decode()
    url = runtime.get_instance().media_file_mgr.add(jpeg, "image/jpeg", "celltally-review-image")
    return url.lstrip("/")


def svg_path(rings) -> str:
    """SVG path data of closed outlines (``render.object_contours``), in image pixel corners."""
    text = "".join("M" + "L".join(f"{c + 0.5:.1f} {r + 0.5:.1f}" for r, c in ring) + "Z"
                   for ring in rings)
    return re.sub(r"\.0(?=[ LZ])", "", text)


def mask_shapes(head_path):
    """(objects, outline path per label) of a mask version: the numbers' places and outlines."""
    labels = ui.read_labels(head_path)
    return object_info(labels), {lab: svg_path(rings)
                                 for lab, rings in render.object_contours(labels).items()}


@dataclass(frozen=True)
class Shown:
    """What the object panel works on; fixed for one image until the page reruns."""

    image_id: int
    path: str
    head_id: int | None
    head_path: str | None
    split: str
    stain: str | None
    blind: bool
    next_id: int | None
    url: str
    height: int
    width: int


path = screen.image.path
head = screen.version
settings_key = (path, brightness, contrast, gamma)
rgb = ui.read_image(path)
jpeg = memo("rv_jpeg", settings_key, lambda: encode_jpeg(
    render.adjust_display(rgb, brightness=brightness, contrast=contrast, gamma=gamma)))
shown = Shown(image_id, path, head.id if head else None, head.path if head else None,
              screen.image.split, screen.image.stain, screen.blind, where.next, image_url(jpeg),
              *rgb.shape[:2])


# ---------------------------------------------------------------- the object panel (a fragment)
def next_open(labels_list, mine, after):
    """The next object after ``after`` that nobody judged yet (None when there is none)."""
    return next((lab for lab in labels_list if lab > after and lab not in mine), None)


def my_votes(image_id: int, head_id) -> dict[int, str]:
    with ui.session() as s:
        votes = adjudication.visible_decisions(s, image_id, who.id)
    return {d.label: d.verdict for d in votes if d.version_id == head_id}  # last verdict wins


def judge(item: Shown, verdict: str) -> None:
    """Record a verdict on the picked object, before the fragment reruns: the reason box is then
    emptied (a reason is for one object) and the picker moves to the next open object."""
    choice = st.session_state.get("rv_obj_pick")
    if choice is None:
        return
    try:
        with ui.session() as s:
            adjudication.record_decision(s, ui.storage(), item.image_id, item.head_id, choice,
                                         user_id=who.id, verdict=verdict,
                                         reason=st.session_state.get("rv_reason") or "")
    except ValueError as err:
        st.session_state["rv_error"] = str(err)
        return
    objects, _ = memo("rv_shapes", item.head_path, lambda: mask_shapes(item.head_path))
    st.session_state["rv_reason"] = ""
    st.session_state["rv_obj_pick"] = next_open([o.label for o in objects],
                                                my_votes(item.image_id, item.head_id), choice)


def picked_on_image(key: str) -> None:
    """A click on an object in the viewer picks it (the viewer's one-shot ``pick`` trigger)."""
    label = (st.session_state.get(key) or {}).get("pick")
    if label is not None:
        st.session_state["rv_obj_pick"] = int(label)


def hex_color(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def viewer_data(item: Shown, objects, paths, mine, picked, *, fill: float, numbers: bool,
                preview=None) -> dict:
    """What the viewer draws: the image's URL, and per object its number's place, outline and
    verdict; ``view`` names the image, so the zoom resets only when it changes."""
    styles = {"": hex_color(render.contrast_color(item.stain)), "picked":
              hex_color(render.COLORS["review_picked"]),
              **{v: hex_color(render.COLORS[v]) for v in VERDICTS}}
    extra = []
    if preview is not None:
        extra = [[preview[0], hex_color(render.COLORS["appear"]), False],
                 [preview[1], hex_color(render.COLORS["disappear"]), True]]
    return {"view": str(item.image_id), "url": item.url, "width": item.width,
            "height": item.height, "fill": fill, "numbers": numbers,
            "number_color": hex_color(render.COLORS["number"]), "picked": picked,
            "styles": styles, "extra": extra,
            "objects": [[o.label, round(o.centroid[1] + 0.5, 1), round(o.centroid[0] + 0.5, 1),
                         paths.get(o.label, ""), mine.get(o.label, "")] for o in objects]}


def preview_panel(item: Shown, n_old: int, labels):
    """The pre-labelling preview: its parameters, the count it gives beside the threshold, and
    the outlines that would appear or disappear (or None when the preview is off)."""
    if not st.toggle("Preview a new automatic mask", key="rv_preview"):
        return None
    method = st.selectbox("Threshold method", METHODS, index=METHODS.index(PrelabelParams().method),
                          key="rv_method")
    min_area = st.slider("Smallest object (px)", 0, 1000, PrelabelParams().min_area, 10,
                         key="rv_min_area")
    sigma = st.slider("Smoothing sigma (px)", 0.0, 6.0, PrelabelParams().sigma, 0.5, key="rv_sigma")
    rgb = ui.read_image(item.path)
    try:
        start = memo("rv_auto_t", (item.path, method, sigma), lambda: round(
            auto_threshold(rgb, PrelabelParams(method=method, sigma=sigma)) * 2) / 2)
        # Keyed by what the automatic value depends on, so it restarts there when they change.
        moved = st.slider("Threshold (signal, 0-255)", 0.0, 255.0, start, 0.5,
                          key=f"rv_threshold_{item.image_id}_{method}_{sigma}",
                          help=f"Starts at the {method} method's value ({start:g}); higher "
                               "keeps only brighter objects.")
        params = PrelabelParams(method=method, min_area=min_area, sigma=sigma,
                                threshold=None if moved == start else moved)
        new_mask, n_new, appeared, disappeared = memo(
            "rv_preview_mask", (item.path, item.head_path, params),
            lambda: _preview(rgb, labels, params))
    except ValueError as err:
        st.error(str(err))
        return None
    n_appear, n_disappear = len(appeared), len(disappeared)
    # Every change of the count is accounted for: objects that appear or disappear, and the
    # rest, which may merge or split.
    kept_old, kept_new = n_old - n_disappear, n_new - n_appear
    st.metric("Objects with these parameters", n_new, delta=n_new - n_old)
    st.caption(f"{n_appear} would appear (green), {n_disappear} would disappear (red). "
               "Nothing is saved yet.")
    if kept_new != kept_old:
        st.caption(f"The other {kept_old} would become {kept_new} "
                   f"({'merged' if kept_new < kept_old else 'split'}).")
    if st.button("Save as a new automatic mask", key="rv_save_auto"):
        try:
            with ui.session() as s:
                threshold = "auto" if params.threshold is None else moved
                masks.save_mask_version(s, ui.storage(), item.image_id, new_mask,
                                        based_on=item.head_id, source="auto", author_id=who.id,
                                        note=f"prelabel {method}, min {min_area}, sigma {sigma}, "
                                             f"threshold {threshold}")
            st.rerun()
        except masks.ConflictError as err:
            st.warning(str(err))
    return (svg_path(sum(appeared.values(), [])), svg_path(sum(disappeared.values(), [])))


def _preview(rgb, labels, params):
    """The automatic mask for ``params``, its count, and the outlines of the objects that would
    appear and disappear against ``labels``."""
    new_mask = auto_mask(rgb, params)
    appeared, disappeared = strokes.compare_masks(labels, new_mask)
    return (new_mask, count_objects(new_mask), render.object_contours(appeared),
            render.object_contours(disappeared))


@st.fragment
def object_panel(item: Shown) -> None:
    """Pick, judge, approve, preview: everything that reruns without reloading the image."""
    if item.head_path is None:
        objects, paths, labels = [], {}, np.zeros((item.height, item.width), np.int32)
    else:
        objects, paths = memo("rv_shapes", item.head_path, lambda: mask_shapes(item.head_path))
        labels = ui.read_labels(item.head_path)
    labels_list = [o.label for o in objects]
    mine = my_votes(item.image_id, item.head_id)
    if st.session_state.get("rv_obj_pick") not in labels_list:
        st.session_state["rv_obj_pick"] = None

    bar = st.container(horizontal=True, vertical_alignment="bottom")
    choice = bar.selectbox("Pick an object (or click its number)", [None] + labels_list,
                           format_func=lambda v: "-" if v is None else
                           f"object {v}" + (f" ({mine[v]})" if v in mine else ""),
                           key="rv_obj_pick", placeholder="none: click a number")
    bar.text_input("Reason (optional; shown to the experts)", key="rv_reason")
    for verdict in VERDICTS:
        bar.button(verdict.capitalize(), key=f"rv_{verdict}", disabled=choice is None,
                   on_click=judge, args=(item, verdict), shortcut=KEYS[verdict],
                   help="Sends the object to the experts' queue." if verdict == "unsure" else None)
    st.caption("Keys: " + " · ".join(f"**{k}** {name}" for name, k in KEYS.items())
               + ". On the image: scroll to zoom, drag to pan, double-click to fit; the view "
               "stays while you judge.")
    if "rv_error" in st.session_state:
        st.error(st.session_state.pop("rv_error"))

    left, right = st.columns([3, 1])
    with right:
        st.metric("Objects in the current mask", len(objects))
        st.caption(f"Split {item.split}; mask version {item.head_id or '-'}; "
                   f"{sum(v == 'keep' for v in mine.values())} kept, "
                   f"{sum(v == 'drop' for v in mine.values())} dropped, "
                   f"{sum(v == 'unsure' for v in mine.values())} unsure.")
        if item.blind:
            st.info("Blind review: you see your own votes and versions only, not the other "
                    "reviewer's. Finish it when you are done.")
        approve_button(item, sorted(lab for lab, v in mine.items() if v == "drop"))
        with st.expander("Outlines"):
            numbers = st.toggle("Numbers", value=True, key="rv_numbers")
            fill = st.slider("Fill", 0.0, 0.8, 0.0, 0.1, key="rv_fill",
                             help="Opacity of the colour inside each outline (0: outlines only).")
        with st.expander("Pre-labelling parameters"):
            preview = preview_panel(item, len(objects), labels)
    with left:
        key = f"rv_view_{item.image_id}"
        VIEWER(key=key, data=viewer_data(item, objects, paths, mine, choice, fill=fill,
                                         numbers=numbers, preview=preview),
               on_pick_change=lambda: picked_on_image(key))


def approve_button(item: Shown, dropped: list[int]) -> None:
    label = "Approve" + (f" without the {len(dropped)} dropped object(s)" if dropped else "")
    if item.blind:
        label = "Finish blind review" + (f" without the {len(dropped)} dropped object(s)"
                                         if dropped else "")
    if st.button(label, type="primary", disabled=item.head_id is None, key="rv_approve"):
        try:
            with ui.session() as s:
                flash = masks.finish_review(s, ui.storage(), item.image_id, ui.db_user(s, who),
                                            version_id=item.head_id, dropped=dropped)
            st.session_state["rv_flash"] = flash
            if item.next_id is not None:
                st.session_state["rv_image"] = item.next_id
            st.rerun()  # the whole page: the next image, and the sidebar's counts
        except masks.ConflictError as err:
            st.warning(str(err))
        except (ValueError, PermissionError) as err:
            st.error(str(err))
    if "rv_flash" in st.session_state:
        st.success(st.session_state.pop("rv_flash"))


object_panel(shown)
