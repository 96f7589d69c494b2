"""Count: count new images with the promoted model through a ``count`` job.

Images are uploaded or read from a folder below an allowed root; unreadable files are listed with
their error. Progress updates while the job runs. Results come as a table and a CSV; a polygon
drawn on an image limits its count to that region, and with the project's pixel size the density
per mm² is given.
"""
import io

import numpy as np
import pandas as pd
import streamlit as st

from core.plaintext import write_csv
from core.strokes import region_from_objects
from db import importing, projects, runs
from db import jobs as job_rows
from pages import ui
from training import scoring, tasks

who, pid = ui.open_page("Count", *ui.EDITORS)

with ui.session() as s:
    overview = runs.runs_overview(s, pid)
promoted = overview[overview["promoted"]]
if promoted.empty:
    st.info("The project has no promoted model yet. Train one on the Train page and ask an "
            "admin to promote it.")
    st.stop()
model = promoted.iloc[-1]
st.caption(f"Model **{model['name']}**, threshold {model['threshold']:.3f}"
           if pd.notna(model["threshold"]) else f"Model **{model['name']}**")

# ---------------------------------------------------------------- what to count
source = st.radio("Images", ["Upload", "Folder on the server"], horizontal=True,
                  key="count_source")
uploads, folder = None, None
if source == "Upload":
    files = st.file_uploader("Images to count", accept_multiple_files=True,
                             type=["png", "tif", "tiff", "jpg", "jpeg"], key="count_files")
    uploads = [(f.name, f.getvalue()) for f in files or []]
else:
    roots = ", ".join(str(r) for r in ui.settings().import_roots)
    folder = st.text_input("Folder", key="count_folder", help=f"Below one of: {roots}")
if st.button("Count", key="count_go", type="primary"):
    try:
        with ui.session() as s:
            images, problems = importing.import_for_count(
                s, ui.settings(), pid, uploads=uploads, folder=(folder or "").strip() or None,
                user_id=who.id)
        if not images:
            st.error("None of the files can be counted; see the list below.")
        else:
            job_id = tasks.submit(ui.settings(), "count", project=pid, created_by=who.id,
                                 config={"run_dir": model["run_dir"],
                                         "image_ids": [i for _, i in images]},
                                 engine=ui.engine())
            st.session_state["count_job"] = job_id
            st.success(f"Counting {len(images)} images (job {job_id}).")
        st.session_state["count_problems"] = pd.DataFrame(problems, columns=["file", "problem"])
    except ValueError as exc:
        st.error(str(exc))

problems = st.session_state.get("count_problems")
if problems is not None and not problems.empty:
    st.warning(f"{len(problems)} file(s) could not be counted:")
    st.dataframe(problems, hide_index=True, width="stretch", key="count_problems_table")

# ---------------------------------------------------------------- progress
with ui.session() as s:
    past = job_rows.jobs_table(s, pid, kinds=("count",))
if past.empty:
    st.stop()
ids = list(past["job_id"])
current = st.session_state.get("count_job")
job_id = st.selectbox("Count job", ids, index=ids.index(current) if current in ids else 0,
                      key="count_job_pick",
                      format_func=lambda j: f"job {j}: {past.loc[past['job_id'] == j, 'status'].iloc[0]}")


@st.fragment(run_every=2.0)
def progress():
    """The job's row, re-read every two seconds; a whole-page rerun once it has ended."""
    with ui.session() as s:
        row = job_rows.jobs_table(s, pid, kinds=("count",))
    row = row[row["job_id"] == job_id].iloc[0]
    if row["status"] in ("queued", "running"):
        st.progress(min(max(row["progress"], 0.0), 1.0),
                    text=f"Job {job_id} ({row['status']}): {row['message']}")
        st.session_state["count_waiting"] = job_id
    elif st.session_state.pop("count_waiting", None) == job_id:
        st.rerun()


progress()
row = past[past["job_id"] == job_id].iloc[0]
if row["status"] == "failed":
    st.error(f"Count job {job_id} failed: {row['error']}")
if row["status"] != "done":
    st.stop()

# ---------------------------------------------------------------- region of interest
rois = st.session_state.setdefault("count_rois", {})
with ui.session() as s:
    table = scoring.count_results(s, ui.storage(), job_id, rois=rois.get(job_id, {}))
with st.expander("Limit an image's count to a region (draw a polygon)"):
    names = dict(zip(table["image_id"], table["file"]))
    image_id = st.selectbox("Image", list(names), format_func=names.get, key="count_roi_image")
    st.caption("Click the corners of the region; a right-click closes the polygon. Then use it.")
    picture = None
    try:
        with ui.session() as s:
            picture = projects.read_image_pixels(s, ui.storage(), int(image_id))
    except ValueError as exc:
        st.error(str(exc))
    if picture is not None:
        from PIL import Image as PILImage
        from streamlit_drawable_canvas import st_canvas

        scale = min(1.0, 700 / picture.shape[1])
        small = PILImage.fromarray(picture).resize((max(1, round(picture.shape[1] * scale)),
                                                    max(1, round(picture.shape[0] * scale))))
        canvas = st_canvas(background_image=small, drawing_mode="polygon",
                           stroke_color="#00e040", fill_color="rgba(0, 224, 64, 0.2)",
                           width=small.width, height=small.height, key=f"count_roi_{image_id}")
        objects = ((canvas.json_data or {}).get("objects", []) if canvas is not None else [])
        if st.button("Use this region", key="count_roi_use"):
            try:
                region = region_from_objects(objects, picture.shape[:2], scale)
                rois.setdefault(job_id, {})[int(image_id)] = region
                st.rerun()
            except ValueError as exc:
                st.error(str(exc))
    if st.button("Count the whole image again", key="count_roi_clear"):
        rois.get(job_id, {}).pop(int(image_id), None)
        st.rerun()

# ---------------------------------------------------------------- results
st.subheader("Counts")
for problem in table.loc[table["problem"] != "", "problem"]:
    st.error(problem)
st.dataframe(table.drop(columns=["problem"]), hide_index=True, width="stretch",
             key="count_table")
if table["density_per_mm2"].isna().all():
    st.caption("Density per mm² needs the project's pixel size (an admin sets it).")
unreadable = st.session_state.get("count_problems")
csv = table
if unreadable is not None and not unreadable.empty:
    csv = pd.concat([table, unreadable.assign(count=np.nan)], ignore_index=True)
csv_text = io.StringIO()
write_csv(csv_text, list(csv.columns), csv.to_dict("records"))
st.download_button("Download CSV", csv_text.getvalue().encode(), file_name="counts.csv",
                   mime="text/csv", key="count_csv")
