"""Count: count new images with the promoted model through a ``count`` job.

Images are uploaded or read from a folder below an allowed root; unreadable files are listed with
their error. The counted images belong to the count (kept in the file store, named by its jobs),
not to the project: "Add to project" imports them as an ordinary batch when wanted. Progress
updates while the job runs. Results come as a table and a CSV, and each image is shown with the
cells found on it; a polygon drawn on an image limits its count to that region, and with the
project's pixel size the density per mm² is given.
"""
import io

import numpy as np
import pandas as pd
import streamlit as st

from core import render
from core.plaintext import write_csv
from core.strokes import region_from_objects
from db import importing, runs
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
# Before anything is counted: a model whose test counts lean one way says so here.
with ui.session() as s:
    leaning = scoring.run_reliability(s, int(model["run_id"])).warning
if leaning:
    st.warning(leaning)

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
            images, problems = importing.store_for_count(
                s, ui.settings(), pid, uploads=uploads, folder=(folder or "").strip() or None)
        if not images:
            st.error("None of the files can be counted; see the list below.")
        else:
            job_id = tasks.submit_count(ui.settings(), project=pid, created_by=who.id,
                                        run_dir=model["run_dir"], images=images,
                                        engine=ui.engine())
            # The new batch is the one shown, also when the picker below already holds another.
            st.session_state["count_job"] = st.session_state["count_job_pick"] = job_id
            st.success(f"Counting {len(images)} images (batch {job_id}; any worker can take "
                       "a chunk of it).")
        st.session_state["count_problems"] = pd.DataFrame(problems, columns=["file", "problem"])
    except ValueError as exc:
        st.error(str(exc))

problems = st.session_state.get("count_problems")
if problems is not None and not problems.empty:
    st.warning(f"{len(problems)} file(s) could not be counted:")
    st.dataframe(problems, hide_index=True, width="stretch", key="count_problems_table")

# ---------------------------------------------------------------- progress
# A count is a batch of chunk jobs that any workers claim (db.jobs.queue_count_chunks).
with ui.session() as s:
    past = job_rows.count_batches(s, pid)
if past.empty:
    st.stop()
ids = list(past["batch_id"])
current = st.session_state.get("count_job")
job_id = st.selectbox("Count job", ids, index=ids.index(current) if current in ids else 0,
                      key="count_job_pick",
                      format_func=lambda j: f"batch {j}: "
                                            f"{past.loc[past['batch_id'] == j, 'status'].iloc[0]}")


@st.fragment(run_every=2.0)
def progress():
    """The batch's chunks, re-read every two seconds; a whole-page rerun once it has ended."""
    with ui.session() as s:
        row = job_rows.count_batches(s, pid)
    row = row[row["batch_id"] == job_id].iloc[0]
    if row["status"] in ("queued", "running"):
        st.progress(min(max(row["progress"], 0.0), 1.0),
                    text=f"Job {job_id} ({row['status']}): {row['message']}")
        st.session_state["count_waiting"] = job_id
    elif st.session_state.pop("count_waiting", None) == job_id:
        st.rerun()


progress()
row = past[past["batch_id"] == job_id].iloc[0]
if row["status"] == "failed":
    st.error(f"Count batch {job_id} failed: {row['error']}")
if row["status"] != "done":
    st.stop()

# ---------------------------------------------------------------- the cells found
rois = st.session_state.setdefault("count_rois", {})
with ui.session() as s:
    table = pd.concat([scoring.count_results(s, ui.storage(), chunk, rois=rois.get(job_id, {}))
                       for chunk in row["job_ids"]], ignore_index=True)
names = dict(zip(table["item"], table["file"]))
item = st.selectbox("Image", list(names), format_func=names.get, key="count_image")
if item is None:
    st.info("This count holds no counted image.")
    st.stop()
shown = None
try:
    with ui.session() as s:
        counted = scoring.counted_image(s, ui.storage(), job_id, int(item))
    shown = render.draw_outlines(counted.rgb, counted.labels,
                                 color=render.contrast_color(counted.stain), thickness=2)
    st.image(shown, caption=f"{counted.name}: the cells the model found, outlined",
             width="stretch")
except ValueError as exc:
    st.error(str(exc))

# ---------------------------------------------------------------- region of interest
with st.expander("Limit an image's count to a region (draw a polygon)"):
    # What streamlit-drawable-canvas's polygon tool does: a left click adds a corner, a click
    # on the first corner closes the shape (three corners at least), a click on another
    # corner removes it; right clicks do nothing.
    st.caption("Click the corners of the region, then click the first corner again to close "
               "the polygon (clicking any other corner removes it). Then use it.")
    if shown is not None:
        from PIL import Image as PILImage
        from streamlit_drawable_canvas import st_canvas

        scale = min(1.0, 700 / shown.shape[1])
        small = PILImage.fromarray(shown).resize((max(1, round(shown.shape[1] * scale)),
                                                  max(1, round(shown.shape[0] * scale))))
        canvas = st_canvas(background_image=small, drawing_mode="polygon",
                           stroke_color="#00e040", fill_color="rgba(0, 224, 64, 0.2)",
                           width=small.width, height=small.height,
                           key=f"count_roi_{job_id}_{item}")
        objects = ((canvas.json_data or {}).get("objects", []) if canvas is not None else [])
        if st.button("Use this region", key="count_roi_use"):
            try:
                region = region_from_objects(objects, shown.shape[:2], scale)
                rois.setdefault(job_id, {})[int(item)] = region
                st.rerun()
            except ValueError as exc:
                st.error(str(exc))
    if st.button("Count the whole image again", key="count_roi_clear"):
        rois.get(job_id, {}).pop(int(item), None)
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

# ---------------------------------------------------------------- add to the project
st.subheader("Add to the project")
st.caption("Counted images stay out of the project (its review queue, statistics and exports) "
           "unless you add them: they are then imported as one ordinary batch, with automatic "
           "masks to review.")
if st.button("Add to project", key="count_add"):
    try:
        report = importing.import_counted(ui.engine(), ui.settings(), int(job_id),
                                          user_id=who.id)
        st.success(f"Import batch {report.batch_id}: {report.summary()}")
        for outcome in report.skipped:
            st.warning(outcome.message)
    except ValueError as exc:
        st.error(str(exc))
