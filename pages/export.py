"""Export: counts CSV, cells as label PNGs, label TIFFs, ImageJ ROIs, QuPath GeoJSON, COCO or
VIA, for the whole project or a filtered set, from the current masks or the ground truth.

Read-only for everyone: the files are built from ``db.exporting`` when asked for, then offered
for download.
"""
import json

import streamlit as st

from db import exporting, review
from db.projects import ImageFilter
from pages import ui

who, pid = ui.open_page("Export")

ANY = "(all)"
FORMATS = {
    "Counts CSV": ("counts", "counts.csv", "text/csv"),
    "Label PNGs (zip)": ("masks", "masks.zip", "application/zip"),
    "Label TIFFs (zip)": ("labels", "labels.zip", "application/zip"),
    "ImageJ ROI sets (zip)": ("imagej", "imagej.zip", "application/zip"),
    "QuPath GeoJSON (zip)": ("geojson", "geojson.zip", "application/zip"),
    "COCO JSON": ("coco", "coco.json", "application/json"),
    "VIA JSON": ("via", "via.json", "application/json"),
}

with ui.session() as s:
    images = review.image_counts(s, pid)
if images.empty:
    st.info("The project has no images to export yet. Import some on the Import page.")
    st.stop()


def choices(column: str) -> list[str]:
    return [ANY, *sorted({str(v) for v in images[column].dropna() if str(v)})]


st.subheader("Which images")
c1, c2, c3 = st.columns(3)
split = c1.selectbox("Split", [ANY, "train", "test", "unassigned"], key="exp_split")
status = c2.selectbox("Review status", [ANY, "to_review", "in_progress", "approved"],
                      key="exp_status")
which = c3.radio("Mask", ["current mask", "ground truth (latest approved)"], key="exp_which")
m1, m2, m3 = st.columns(3)
metadata = {}
for col, field in ((m1, "animal"), (m2, "region"), (m3, "condition")):
    value = col.selectbox(field.capitalize(), choices(field), key=f"exp_{field}")
    if value != ANY:
        metadata[field] = value

filters = ImageFilter(split=None if split == ANY else split,
                      status=None if status == ANY else status, **metadata)
with ui.session() as s:
    chosen = exporting.count_images(s, pid, filters)
st.caption(f"{chosen} of {len(images)} images match.")

st.subheader("Format")
fmt = st.radio("Format", list(FORMATS), key="exp_format", horizontal=True,
               label_visibility="collapsed")
kind, file_name, mime = FORMATS[fmt]
if kind in exporting.FILE_KINDS:
    st.caption("One file per image, named after it, in a zip with counts.csv: one cell per "
               "label (PNG and TIFF: 16-bit, 0 is background), ROI or feature.")
rle = kind == "coco" and st.checkbox(
    "Every cell as RLE", key="exp_rle",
    help="Without it, cells are polygons where a polygon is exact; cells with holes or in "
         "several pieces are RLE either way.")
mask = "head" if which.startswith("current") else "ground_truth"
if st.button("Prepare the file", key="exp_prepare", type="primary"):
    try:
        with st.spinner("Building the export..."), ui.session() as s:
            if kind == "counts":
                data = exporting.export_counts(s, pid, filters=filters, which=mask).encode()
            elif kind in exporting.FILE_KINDS:
                data = exporting.export_files_zip(s, ui.storage(), pid, kind, filters=filters,
                                                  which=mask)
            elif kind == "coco":
                data = json.dumps(exporting.export_coco(s, ui.storage(), pid, filters=filters,
                                                        which=mask, rle=rle)).encode()
            else:
                data = json.dumps(exporting.export_via(s, ui.storage(), pid, filters=filters,
                                                       which=mask)).encode()
        st.session_state["exp_ready"] = (fmt, file_name, mime, data)
    except (ValueError, OSError) as exc:
        st.error(f"The export could not be built: {exc}")

ready = st.session_state.get("exp_ready")
if ready is not None:
    name, file_name, mime, data = ready
    st.download_button(f"Download {file_name} ({len(data) / 1024:.0f} KiB)", data,
                       file_name=file_name, mime=mime, key="exp_download")
    if name == "Counts CSV":
        st.caption("Each row is stamped with the promoted model, its threshold and the image's "
                   "review status.")
