"""Import images (upload, a folder below an allowed root, an FNC data set); splits and batches.

Every file is checked by the backend (``db.importing``): its type by its content, its size
against the upload limit, its pixel count against decompression bombs. What was refused shows
in the report with the file's name, the problem and what to do; the report also says how each
image was read (channel, plane, the rule that scaled its values). Images that arrive without a
mask get an automatic mask at once. Each image is committed as soon as it is imported, so an
import never holds up other people's saves; an interrupted import is completed by running it
again.
"""
import logging

import streamlit as st

from core.io import ReadOptions
from db import importing, masks, projects, review, users
from pages import ui
from training.inference import prelabel_with_model

log = logging.getLogger(__name__)
who, pid = ui.open_page("Import", *ui.EDITORS)
settings = ui.settings()


def run_import(start):
    """Run one import with a progress bar, then keep its report for the table below."""
    bar = st.progress(0.0, text="Starting...")

    def progress(done, total, name):
        bar.progress(done / max(total, 1), text=f"{done} / {total}: {name}")

    try:
        report = start(ui.engine(), progress)  # commits image by image
        bar.progress(1.0, text="Done.")
        st.session_state["import_report"] = report
    except ValueError as err:  # ImportRefused and bad input: the whole import could not start
        bar.empty()
        st.error(str(err))
    except Exception:  # a bug or a failing server: the traceback (server paths) goes to the log
        log.exception("import by %s failed unexpectedly", who.name)
        bar.empty()
        st.error("The import stopped on an unexpected error; the details are in the server log "
                 "for your admin. The Review page shows which images arrived; import the "
                 "others again, or fewer files at a time.")


with ui.session() as s:
    reading = projects.describe_read_options(projects.get_project(s, pid))
st.caption(f"This project reads microscopy files {reading} (set when the project is created).")
z_text = st.text_input("Plane of Z-stacks and multi-page TIFFs",
                       help="A plane number from 0, or max for the maximum projection. Files with "
                            "several planes are refused until one is chosen.", key="import_z")
try:
    z = ReadOptions.from_text(z=z_text.strip()).z if z_text.strip() else None
except ValueError as err:
    st.error(f"The plane is a number from 0 or max: {err}")
    z = None
options = importing.ImportOptions(prelabel=True, user_id=who.id, z=z)
upload, folder, fnc = st.tabs(["Upload files", "Folder", "FNC data set"])
with upload:
    files = st.file_uploader(
        "Images (PNG, TIFF, JPEG) with their masks if any: <image>_mask.png or a label TIFF, "
        "Cellpose <image>_seg.npy, ImageJ <image>_RoiSet.zip or .roi, QuPath <image>.geojson, "
        "or VIA/COCO JSON", accept_multiple_files=True, key="import_files")
    st.caption(f"Files above {settings.upload_limit_mb} MB or "
               f"{settings.max_upload_pixels / 1e6:g} megapixels are refused: import those from "
               "a folder.")
    if st.button("Import uploads", type="primary", disabled=not files):
        pairs = [(f.name, f.getvalue()) for f in files]
        run_import(lambda e, p: importing.import_uploads(e, settings, pid, pairs, options=options,
                                                         progress=p))
roots = ", ".join(str(r) for r in settings.import_roots)
with folder:
    path = st.text_input("Folder of images", placeholder=str(settings.import_roots[0]),
                         help=f"Must lie below one of: {roots}", key="import_folder")
    mask_dir = st.text_input("Folder of masks (optional, matched by file name: label TIFF/PNG, "
                             "Cellpose, ImageJ, QuPath)", key="import_masks")
    if st.button("Import folder", disabled=not path.strip()):
        run_import(lambda e, p: importing.import_path(
            e, settings, path.strip(), project=pid, fmt="folder",
            masks=mask_dir.strip() or None, options=options, progress=p))
with fnc:
    fnc_path = st.text_input("FNC data set folder (v1 or v2)", help=f"Must lie below one of: {roots}",
                             key="import_fnc")
    st.caption("FNC masks are the data set's ground truth: they are imported as approved.")
    if st.button("Import FNC data set", disabled=not fnc_path.strip()):
        run_import(lambda e, p: importing.import_path(e, settings, fnc_path.strip(), project=pid,
                                                      fmt="fnc", options=options, progress=p))

report = st.session_state.get("import_report")
if report is not None:
    st.subheader("Import report")
    (st.success if not report.skipped else st.warning)(report.summary())
    st.dataframe([{"file": o.name, "status": o.status, "mask": o.mask or "", "image": o.image_id,
                   "read as": "; ".join(str(o.read[k]) for k in ("channels", "z", "scaling")
                                        if o.read and o.read.get(k)),
                   "problem": o.message if o.status != "imported" else ""}
                  for o in report.outcomes], hide_index=True, width="stretch")
    for line in report.read_lines() + report.all_notes():
        st.caption(line)

# ---------------------------------------------------------------- pre-label with the model
with ui.session() as s:
    model = ui.promoted_model(s, pid)
    table = review.image_counts(s, pid)
if model is not None:
    st.subheader(f"Pre-label with the model ({model['name']})")
    names = dict(zip(table["image_id"], table["name"]))
    chosen = st.multiselect("Images", list(names), format_func=lambda i: names[i],
                            key="prelabel_images")
    if st.button("Pre-label selected images with the model", disabled=not chosen):
        bar = st.progress(0.0)
        try:
            with ui.session() as s:
                n = prelabel_with_model(s, ui.storage(), ui.model_run(model), chosen,
                                        run_id=model["id"], user_id=who.id,
                                        progress=lambda d, t: bar.progress(d / t))
            st.success(f"Pre-labelled {n} image(s) with {model['name']} (source: model).")
        except ValueError as err:
            st.error(str(err))

# ---------------------------------------------------------------- splits and batches (admins)
if who.role == "admin":
    st.subheader("Splits")
    with ui.session() as s:
        table = review.image_counts(s, pid)
    locked = table[table["split_locked"]]
    st.caption(f"{(table['split'] == 'train').sum()} train, {(table['split'] == 'test').sum()} test, "
               f"{(table['split'] == 'unassigned').sum()} unassigned; {len(locked)} locked "
               "(a run was scored on them).")
    rand, hand = st.columns(2)
    with rand.form("random_split"):
        share = st.slider("Test share", 0.0, 1.0, 0.25, 0.05)
        seed = st.number_input("Seed", min_value=0, value=0, step=1)
        only_new = st.checkbox("Only unassigned images", value=True)
        if st.form_submit_button("Assign random splits"):
            try:
                with ui.session() as s:
                    got = projects.assign_random_splits(s, pid, test_share=share, seed=int(seed),
                                                        actor=ui.db_user(s, who),
                                                        only_unassigned=only_new)
                st.success(f"{got['test']} image(s) to test, {got['train']} to train.")
            except ValueError as err:
                st.error(str(err))
    with hand.form("hand_split"):
        names = dict(zip(table["image_id"], table["name"]))
        ids = st.multiselect("Images", list(names), format_func=lambda i: names[i])
        split = st.selectbox("Move to", ("train", "test", "unassigned"))
        reason = st.text_input("Reason (needed for locked images; logged)")
        if st.form_submit_button("Move"):
            try:
                with ui.session() as s:
                    n = projects.set_split(s, ids, split, actor=ui.db_user(s, who), reason=reason)
                st.success(f"Moved {n} image(s) to {split}.")
            except ValueError as err:
                st.error(str(err))
    if len(locked):
        st.dataframe(locked[["image_id", "name", "split"]], hide_index=True)

    st.subheader("Blind double review")
    st.caption("Each image goes to two reviewers who count it independently: neither sees the "
               "other's votes or versions. Their counts feed the Dashboard's agreement figures.")
    with ui.session() as s:
        reviewers = {u.id: f"{u.name} ({u.role})" for u in users.list_users(s)
                     if not u.disabled and u.role in ui.EDITORS}
    with st.form("double_review"):
        names = dict(zip(table["image_id"], table["name"]))
        picked_images = st.multiselect("Images", list(names), format_func=lambda i: names[i],
                                       key="dr_images")
        picked_users = st.multiselect("Two reviewers", list(reviewers), max_selections=2,
                                      format_func=lambda u: reviewers[u], key="dr_users")
        if st.form_submit_button("Assign for blind double review"):
            try:
                with ui.session() as s:
                    made = masks.assign_double_review(s, [int(i) for i in picked_images],
                                                      [int(u) for u in picked_users],
                                                      actor=ui.db_user(s, who))
                st.success(f"Assigned {len(picked_images)} image(s) to "
                           f"{' and '.join(reviewers[u] for u in picked_users)} for blind review "
                           f"({len(made)} assignments).")
            except (ValueError, PermissionError) as err:
                st.error(str(err))

st.subheader("Import batches")
with ui.session() as s:
    batches = [{"batch": b.id, "when": b.created_at, "source": b.source,
                "state": projects.batch_state(b),
                "summary": (b.report or {}).get("summary", ""), "archived": b.archived}
               for b in projects.list_batches(s, pid)]
if not batches:
    st.caption("No imports yet.")
else:
    st.dataframe(batches, hide_index=True, width="stretch")
    if any(b["state"] == "interrupted" for b in batches):
        st.caption("An interrupted batch stopped before its end: import the same folder again "
                   "to complete it.")
    ids = [b["batch"] for b in batches]
    col1, col2, col3 = st.columns([2, 1, 1])
    chosen = col1.selectbox("Batch", ids, key="batch_pick")
    if col2.button("Archive batch", help="Hides its images everywhere; nothing is deleted."):
        with ui.session() as s:
            n = projects.archive_batch(s, chosen, actor_id=who.id)
        st.success(f"Archived batch {chosen}: {n} image(s) hidden.")
    if col3.button("Restore batch"):
        with ui.session() as s:
            n = projects.restore_batch(s, chosen, actor_id=who.id)
        st.success(f"Restored batch {chosen}: {n} image(s) back.")
