"""Train: live progress and cancel (at the top; they survive a reload), the training config
(docs/METHOD.md defaults, a quick preset, an estimate of the time on a CPU), what a run will use,
"Retrain" through ``training.tasks.submit``, past jobs, and (admins) promoting a finished run after
a confirmation beside the promoted run's scores. While the page is open, a job whose local worker
died is requeued and a new worker started (``training.tasks.revive_stale_jobs``), and the page
says so.
"""
import dataclasses

import pandas as pd
import streamlit as st

from db import exporting, runs, users
from db import jobs as job_rows
from pages import ui
from training import estimate, scoring, tasks
from training.config import POSTPROCESS_PRESETS, TrainConfig

who, pid = ui.open_page("Train", *ui.EDITORS)

ACTIVE = ("queued", "running")
REFRESH_S = 2.0


# ---------------------------------------------------------------- live progress
def _duration(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s")


def _ended_note(job) -> tuple[str, str]:
    """(kind of box, sentence) for a job this session watched until it ended."""
    if job.status == "done":
        run = (f"; run {int(job.run_id)} is listed under Runs" if pd.notna(job.run_id)
               else "")
        return "success", f"Job {job.job_id} ({job.kind}) is done{run}."
    if job.status == "failed":
        return "error", f"Job {job.job_id} ({job.kind}) failed: {job.error or job.message}"
    return "info", f"Job {job.job_id} ({job.kind}) was cancelled: {job.message}"


@st.fragment(run_every=REFRESH_S)
def live_jobs():
    """Re-read the job rows every few seconds; the state is in the database, so a reload of the
    page finds the same jobs. A job seen running here and then ending is announced, and the
    whole page reruns once so the past jobs and runs below include it."""
    notes = st.session_state.setdefault("train_ended", [])
    # A local worker killed mid-job (kill -9, a crash) leaves its job "running"; bring it back.
    revived = tasks.revive_stale_jobs(ui.settings(), engine=ui.engine())
    notes.extend(("warning", f"Job {i}'s worker stopped (killed or crashed). The job was queued "
                             "again and a new worker started; training resumes from its last "
                             "checkpoint.") for i in revived["requeued"])
    notes.extend(("error", f"Job {i}'s worker stopped, and the job had used all its attempts, "
                           "so it failed. Retrain to start it again.") for i in revived["failed"])
    with ui.session() as s:
        table = job_rows.jobs_table(s, pid, kinds=("train", "evaluate"))
    active = table[table["status"].isin(ACTIVE)]
    watched = st.session_state.setdefault("train_watched", set())
    ended = table[table["job_id"].isin(watched) & ~table["status"].isin(ACTIVE)]
    notes.extend(_ended_note(j) for j in ended.itertuples())
    watched.difference_update(ended["job_id"])
    watched.update(int(i) for i in active["job_id"])
    if not ended.empty:
        st.rerun()
    st.subheader("Running and queued")
    for box, note in notes[-3:]:
        getattr(st, box)(note)
    if active.empty:
        st.caption("No training job is running.")
    for j in active.itertuples():
        st.progress(min(max(j.progress, 0.0), 1.0),
                    text=f"Job {j.job_id} ({j.kind}, {j.status}): {j.message}")
        st.caption(f"Queued by {j.created_by or '?'}; running for {_duration(j.duration_s)}"
                   if j.status == "running" else f"Queued by {j.created_by or '?'}, waiting "
                                                 "for a worker.")
        if st.button("Cancel", key=f"train_cancel_{j.job_id}"):
            try:
                with ui.session() as s:
                    job_rows.request_cancel(s, int(j.job_id), user_id=who.id)
                st.info(f"Job {j.job_id} will stop at its next check.")
            except ValueError as exc:
                st.error(str(exc))


live_jobs()


# ---------------------------------------------------------------- what a run will use
with ui.session() as s:
    data = runs.training_data(s, pid)
    shapes = runs.training_shapes(s, pid)
c = st.columns(4)
c[0].metric("Train images", data["train_images"])
c[1].metric("… with approved masks", data["train_approved"])
c[2].metric("Test images", data["test_images"])
c[3].metric("… with approved masks", data["test_approved"])
st.caption("A run learns from the approved masks of train images (part held out for "
           "validation) and is scored on the approved masks of test images.")

# ---------------------------------------------------------------- config form
d = TrainConfig()
# The form's widgets take their values from here, so the quick preset can fill them.
FORM_KEYS = {"train_base_filters": "base_filters", "train_epochs": "epochs",
             "train_crop_size": "crop_size", "train_batch_size": "batch_size",
             "train_steps": "steps_per_epoch"}
for key, field in FORM_KEYS.items():
    st.session_state.setdefault(key, getattr(d, field) or 0)


def _fill_quick_preset() -> None:
    for key, field in FORM_KEYS.items():
        st.session_state[key] = estimate.QUICK_PRESET.get(field, getattr(d, field) or 0)


q = estimate.QUICK_PRESET
st.button(f"Quick preset: base {q['base_filters']}, {q['crop_size']} px crops, {q['epochs']} "
          f"epochs x {q['steps_per_epoch']} steps", key="train_quick", on_click=_fill_quick_preset,
          help="A small model trained briefly: minutes on a CPU instead of hours. Its counts are "
               "rougher than the paper's model; use it to try the loop, then train the full one "
               "where there is time or a GPU.")
with st.form("train_form"):
    st.markdown("**Training settings** (defaults: docs/METHOD.md)")
    a, b, c3 = st.columns(3)
    name = a.text_input("Run name (optional)", key="train_name")
    base_filters = b.number_input("Base filters", 1, 64, key="train_base_filters",
                                  help="16 is the paper's model (1,707,287 parameters).")
    epochs = c3.number_input("Most epochs", 1, 1000, key="train_epochs")
    a, b, c3 = st.columns(3)
    crop_size = a.number_input("Crop size (multiple of 8)", 8, 2048, step=8,
                               key="train_crop_size")
    batch_size = b.number_input("Batch size", 1, 256, key="train_batch_size")
    learning_rate = c3.number_input("Learning rate", 1e-6, 1.0, d.learning_rate, format="%.4f",
                                    key="train_learning_rate")
    a, b, c3 = st.columns(3)
    plateau_patience = a.number_input("LR x0.7 after flat epochs", 1, 100, d.plateau_patience,
                                      key="train_plateau")
    early = b.number_input("Stop after flat epochs", 1, 500, d.early_stopping_patience,
                           key="train_early")
    validation = c3.number_input("Validation share", 0.0, 0.9, d.validation_fraction, step=0.05,
                                 key="train_validation")
    a, b, c3 = st.columns(3)
    cell_weight = a.number_input("Cell weight", 0.01, 100.0, d.cell_weight, key="train_cell_w")
    sigma = b.number_input("Weight map sigma (px)", 0.1, 500.0, d.sigma, key="train_sigma")
    ring = c3.number_input("Weight map ring (px)", 0, 1000, d.ring, key="train_ring")
    a, b, c3 = st.columns(3)
    preset = a.selectbox("Post-processing", POSTPROCESS_PRESETS, key="train_preset")
    diameter = b.number_input("Cell diameter (px)", 1.0, 500.0, d.cell_diameter,
                              key="train_diameter")
    steps = c3.number_input("Steps per epoch (0 = all crops)", 0, 100000, key="train_steps")
    augment = st.checkbox("Augment crops (rotations, flips, colour, noise, blur, elastic)",
                          value=d.augment.enabled, key="train_augment")
    a, b = st.columns(2)
    queued = a.form_submit_button("Retrain", type="primary", key="train_retrain")
    b.form_submit_button("Estimate the time", key="train_estimate")

config = dataclasses.replace(
    d, base_filters=int(base_filters), epochs=int(epochs), crop_size=int(crop_size),
    batch_size=int(batch_size), learning_rate=float(learning_rate),
    plateau_patience=int(plateau_patience), early_stopping_patience=int(early),
    validation_fraction=float(validation), cell_weight=float(cell_weight),
    sigma=float(sigma), ring=int(ring), postprocess_preset=preset,
    cell_diameter=float(diameter), steps_per_epoch=int(steps) or None,
    augment=dataclasses.replace(d.augment, enabled=bool(augment)))
eta = estimate.estimate_training(config, shapes)
how = (f"an estimate: at most {eta.epochs} epochs x {eta.steps_per_epoch} steps x "
       f"{eta.step_seconds:.2f} s per step, scaled from one measured step (batch "
       f"{estimate.REFERENCE['batch_size']}, {estimate.REFERENCE['crop_size']} px crops, base "
       f"{estimate.REFERENCE['base_filters']}: {estimate.REFERENCE_STEP_S} s on this CPU) by "
       "batch, crop area and base filters squared; early stopping may end sooner, a busy "
       "machine runs slower")
if eta.long:
    st.warning(f"These settings mean about {_duration(eta.seconds)} of training on a CPU "
               f"({how}). For a first model, use the quick preset above, or train where there "
               "is a GPU.")
elif eta.steps_per_epoch:
    st.caption(f"About {_duration(eta.seconds)} of training on a CPU ({how}).")

if queued:
    if data["train_approved"] == 0:
        st.error("No train image has an approved mask yet, so there is nothing to learn from. "
                 "Approve some masks of train images on the Review page first.")
    else:
        try:
            job_id = tasks.submit(ui.settings(), "train", project=pid, created_by=who.id,
                                 config={"train": config.to_dict(), "name": name.strip() or None},
                                 engine=ui.engine())
            # Watched from now on, so even a job that ends before the next refresh is announced.
            st.session_state.setdefault("train_watched", set()).add(job_id)
            st.session_state["train_queued_note"] = (
                f"Training job {job_id} is queued; its progress is at the top of the page.")
            st.rerun()  # so the progress at the top lists the new job at once
        except ValueError as exc:
            st.error(str(exc))
if note := st.session_state.pop("train_queued_note", None):
    st.success(note)


# ---------------------------------------------------------------- past jobs
st.subheader("Past jobs")
with ui.session() as s:
    table = job_rows.jobs_table(s, pid, kinds=("train", "evaluate"))
past = table[~table["status"].isin(ACTIVE)]
if past.empty:
    st.caption("No finished job yet.")
else:
    shown = past.assign(duration=past["duration_s"].map(_duration))
    st.dataframe(shown[["job_id", "kind", "status", "created_at", "duration", "message",
                        "error", "created_by"]], hide_index=True, width="stretch",
                 key="train_past")
    ids = sorted((int(i) for i in past["job_id"]), reverse=True)
    # A job that ended since the last look is the one to read: the picker moves to it.
    if st.session_state.get("train_log_newest") != ids[0]:
        st.session_state["train_log_newest"] = ids[0]
        st.session_state["train_log_pick"] = ids[0]
    pick = st.selectbox("Log of job (newest first)", ids, key="train_log_pick")
    row = past[past["job_id"] == pick].iloc[0]
    if row["status"] == "failed":
        st.error(f"Job {pick} failed: {row['error'] or row['message']}")
    elif row["error"]:  # e.g. requeued after its worker died, then cancelled: a note, no failure
        st.caption(f"Job {pick} ({row['status']}): {row['error']}")
    st.code(row["log_tail"][-4000:] or "(no log kept)", language=None)

# ---------------------------------------------------------------- runs and promotion
def promote_block(overview: pd.DataFrame) -> None:
    """Pick a run, see it beside the promoted one on the held-out test images, then confirm:
    one click must never swap the project's model without a word."""
    names = dict(zip(overview["run_id"], overview["name"]))
    done = st.session_state.pop("train_promoted_note", None)
    if done:
        st.success(done)
    choice = st.selectbox("Run to promote", list(names), format_func=names.get,
                          key="train_promote_pick")
    if st.button("Promote to the project's model", key="train_promote"):
        st.session_state["train_promote_pending"] = int(choice)
    pending = st.session_state.get("train_promote_pending")
    if pending is None:
        return
    if pending != int(choice):  # the pick changed since: ask again for the new one
        del st.session_state["train_promote_pending"]
        return
    check = scoring.compare_for_promotion(overview, pending)
    st.markdown(f"**Promote {names[pending]}?** Held-out test scores of both runs:")
    st.dataframe(check.table, hide_index=True, width="stretch", key="train_promote_compare")
    if check.warning:
        st.warning(check.warning)
    yes, no = st.columns(2)
    if yes.button(f"Yes, promote {names[pending]}", key="train_promote_confirm", type="primary"):
        try:
            with ui.session() as s:
                runs.promote_run(s, pending, actor=users.get_user(s, who.name))
            was = check.table[check.table["role"] == "promoted now"]["run"]
            replaced = f", in place of {was.iloc[0]}" if len(was) else ""
            st.session_state["train_promoted_note"] = (
                f"{names[pending]} is now the project's model{replaced}.")
            del st.session_state["train_promote_pending"]
            st.rerun()
        except ValueError as exc:
            st.error(str(exc))
    if no.button("No, keep the current model", key="train_promote_keep"):
        del st.session_state["train_promote_pending"]
        st.rerun()


st.subheader("Runs")
with ui.session() as s:
    overview = scoring.runs_table(s, ui.storage(), pid)
if overview.empty:
    st.caption("No run yet.")
else:
    shown = overview.rename(columns={"chosen_on": "threshold chosen on", "f1_ci": "F1 95% CI",
                                     "mae_ci": "MAE 95% CI", "bias_ci": "bias 95% CI"})
    st.dataframe(shown[["run_id", "name", "created_at", "promoted", "threshold",
                        "threshold chosen on", "f1", "F1 95% CI", "mae", "MAE 95% CI", "bias",
                        "bias 95% CI", "n_images"]], hide_index=True, width="stretch",
                 key="train_runs")
    st.caption("Bias is the mean of predicted minus true count per test image: above 0 the model "
               "over-counts. Intervals are bootstrap 95% intervals over the test images.")
    pooled = overview[overview["chosen_on"] == "train+validation"]
    if not pooled.empty:
        latest = pooled.iloc[-1]
        held = ("" if pd.isna(latest["validation_cells"])
                else f" (they held {int(latest['validation_cells'])})")
        st.warning(f"Run {latest['name']} chose its threshold on train and validation images "
                   f"together, not on held-out images alone: its validation images held fewer "
                   f"than {scoring.MIN_VALIDATION_CELLS} cells{held}. A threshold chosen on "
                   "images the model was fitted on tends to over-count new images; approve "
                   "more masks of train images so the validation share holds enough cells.")
    if who.role == "admin":
        promote_block(overview)
    else:
        st.caption("Only an admin promotes a run to be the project's model.")
    # Any finished run, for deepImageJ, QuPath, ilastik or bioimageio.core (ONNX weights).
    labels = dict(zip(overview["run_id"], overview["name"]))
    pick = st.selectbox("Run to share as a BioImage Model Zoo package", list(labels),
                        format_func=labels.get, key="train_package_pick")
    if st.button("Prepare the package", key="train_package"):
        try:
            with st.spinner("Packaging the run (ONNX weights, test tensors, README)..."):
                with ui.session() as s:
                    data = exporting.model_package(s, ui.storage(), int(pick))
            st.session_state["train_package_zip"] = (int(pick), data)
        except (ValueError, OSError) as exc:
            st.error(str(exc))
    ready = st.session_state.get("train_package_zip")
    if ready is not None and ready[0] == int(pick):
        st.download_button("Download the package", ready[1], file_name=f"{labels[pick]}.zip",
                           mime="application/zip", key="train_package_download")
