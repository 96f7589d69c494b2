"""Jobs through the worker: end to end, cancel, a paused worker's job resumed elsewhere and ended
once, a killed local worker replaced, two workers racing, a full disk named."""
import contextlib
import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.engine import make_engine, upgrade
from db.jobs import get_job, request_cancel
from db.masks import approve, save_mask_version
from db.models import Image, ImageResult, ModelRun, ObjectOutcome
from db.projects import create_project, register_image
from db.settings import Settings
from db.storage import Storage
from training.tasks import REPO_ROOT, ensure_worker, revive_stale_jobs, submit, worker_pid
import training.worker as worker_module
from training.worker import WorkerOptions, run_worker

from .conftest import SHAPE, draw_sample

pytestmark = pytest.mark.slow

FAST = WorkerOptions(poll=0.2, heartbeat=0.3, stale_after=2.0)


@pytest.fixture
def project_db(tmp_path):
    """A SQLite database with project 'mice': 5 train and 2 test images, all approved."""
    settings = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'ct.db'}")
    engine = make_engine(settings)
    upgrade(engine)
    storage = Storage.from_settings(settings)
    rng = np.random.default_rng(3)
    with Session(engine) as s, s.begin():
        project = create_project(s, "mice", stain="yellow")
        for i in range(7):
            sample = draw_sample(rng, f"img{i}")
            image = register_image(s, storage, project.id, sample.image, name=f"img{i}.png",
                                   split="train" if i < 5 else "test").image
            save_mask_version(s, storage, image.id, sample.labels > 0, based_on=None,
                              source="import", author_id=None)
            approve(s, image.id, user_id=None)
    yield settings, engine
    engine.dispose()


def _train_config(tiny_config, **changes):
    return {"train": {**tiny_config.to_dict(), **changes}}


def _job(engine, job_id):
    with Session(engine) as s:
        job = get_job(s, job_id)
        s.expunge(job)
        return job



def _tiny_run(path):
    """An untrained base-2 run directory (cell diameter 14, threshold 0.5) at ``path``."""
    from core.model import build_cresunet
    from core.postprocess import PostprocessParams
    from core.run import save_run

    return save_run(path, model=build_cresunet(2), config={"base_filters": 2},
                    postprocess=PostprocessParams.paper(cell_diameter=14),
                    thresholds={"best": 0.5, "knee": None, "chosen": 0.5}, metrics={},
                    manifest={})

def test_train_job_end_to_end(project_db, tiny_config):
    settings, engine = project_db
    job_id = submit(settings, "train", project="mice", config=_train_config(tiny_config),
                    start_worker=False, engine=engine)
    assert _job(engine, job_id).status == "queued"
    assert run_worker(settings, FAST, engine=engine) == 1
    job = _job(engine, job_id)
    assert job.status == "done", job.error
    assert job.attempts == 1 and job.worker_pid == os.getpid() and job.progress == 1.0
    assert "Epoch 1/1" in job.log_tail and "Scoring test images" in job.log_tail
    storage = Storage.from_settings(settings)
    assert job.result["run_dir"].startswith("runs/")  # a key below the data dir
    run_dir = storage.resolve(job.result["run_dir"])
    for name in ("model.keras", "model.onnx", "config.json", "thresholds.json", "metrics.json",
                 "manifest.json", "history.csv"):
        assert (run_dir / name).is_file(), name
    from core.exchange import find_onnx

    assert find_onnx(run_dir) == run_dir / "model.onnx"  # stamped with this model.keras's hash
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["train"]) + len(manifest["validation"]) == 5 and len(manifest["test"]) == 2
    # Two validation images of about five cells: too few to choose on alone, and it says so.
    thresholds = json.loads((run_dir / "thresholds.json").read_text())
    assert thresholds["chosen_on"] == "train+validation" and thresholds["min_cells"] == 50
    assert thresholds["curves"]["validation"]["cells"] < 50
    assert len(thresholds["images"]["validation"]) == len(manifest["validation"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["threshold_chosen_on"] == "train+validation"
    assert metrics["intervals"]["f1"][0] <= metrics["f1"] <= metrics["intervals"]["f1"][1]
    with Session(engine) as s:
        run = s.scalar(select(ModelRun))
        results = s.scalars(select(ImageResult).where(ImageResult.run_id == run.id)).all()
        assert run.run_dir == job.result["run_dir"]
        assert run.threshold == job.result["thresholds"]["chosen"]
        assert len(results) == 2
        assert all(storage.resolve(r.heatmap_path).is_file() for r in results)
        n_objects = len(s.scalars(select(ObjectOutcome)).all())
        assert n_objects == sum(r.tp + r.fp + r.fn for r in results)
        assert all(img.split_locked for img in s.scalars(select(Image).where(Image.split == "test")))


def test_cancel_stops_a_running_training(project_db, tiny_config):
    settings, engine = project_db
    job_id = submit(settings, "train", project="mice", config=_train_config(tiny_config, epochs=50),
                    start_worker=False, engine=engine)
    worker = threading.Thread(target=run_worker, args=(settings, FAST), kwargs={"engine": engine})
    worker.start()
    deadline = time.monotonic() + 120
    while _job(engine, job_id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    with Session(engine) as s, s.begin():
        request_cancel(s, job_id)
    worker.join(timeout=180)
    assert not worker.is_alive()
    job = _job(engine, job_id)
    assert job.status == "cancelled" and job.cancel_requested


def _wait_for_checkpoint(engine, storage, job_id, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_dir = (_job(engine, job_id).result or {}).get("run_dir")
        if run_dir and (storage.resolve(run_dir) / "checkpoint" / "state.json").is_file():
            return storage.resolve(run_dir)
        time.sleep(0.1)
    raise AssertionError("no checkpoint appeared")


def _pause_outside_a_transaction(proc, db_path):
    """SIGSTOP the worker at a moment it holds no write lock (else nobody could write again)."""
    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        probe = sqlite3.connect(db_path, timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.02)
        finally:
            probe.close()
    raise AssertionError("the worker always held the write lock")


def test_a_paused_worker_loses_its_job_which_resumes_elsewhere_and_ends_once(project_db,
                                                                             tiny_config):
    """SIGSTOP past --stale-after: a second worker requeues the job and trains it on from the
    checkpoint in its own directory; the paused one wakes, finds its claim gone, and stops."""
    settings, engine = project_db
    storage = Storage.from_settings(settings)
    job_id = submit(settings, "train", project="mice", config=_train_config(tiny_config, epochs=3),
                    start_worker=False, engine=engine)
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO_ROOT)}
    log_path = settings.data_dir / "paused-worker.log"
    with open(log_path, "wb") as log_file:
        paused = subprocess.Popen([sys.executable, "-m", "training", "worker", "--heartbeat",
                                   "0.3", "--stale-after", str(FAST.stale_after)], cwd=REPO_ROOT,
                                  env=env, stdout=log_file, stderr=log_file)
    try:
        first = _wait_for_checkpoint(engine, storage, job_id)
        _pause_outside_a_transaction(paused, settings.db_url.removeprefix("sqlite:///"))
        state = json.loads((first / "checkpoint" / "state.json").read_text())
        assert 1 <= state["epoch"] < 3, "the worker should be paused mid-training"
        time.sleep(FAST.stale_after + 0.5)
        assert run_worker(settings, FAST, engine=engine) == 1
    finally:
        paused.send_signal(signal.SIGCONT)
    done = _job(engine, job_id)
    assert done.status == "done" and done.attempts == 2, done.error
    assert "stopped sending heartbeats" in done.log_tail
    assert done.result["resumed_from"] == state["epoch"] and done.result["epochs_run"] == 3
    second = storage.resolve(done.result["run_dir"])
    assert first.name.endswith("-a1") and second.name == first.name[:-3] + "-a2"
    assert paused.wait(timeout=180) == 0
    assert "attempt 1 lost its claim" in log_path.read_text()
    after = _job(engine, job_id)
    assert (after.status, after.attempts, after.progress, after.finished_at, after.result) == (
        "done", 2, 1.0, done.finished_at, done.result)
    with Session(engine) as s:
        assert [r.run_dir for r in s.scalars(select(ModelRun))] == [done.result["run_dir"]]


def test_two_workers_race_for_one_job(project_db, tmp_path):

    settings, engine = project_db
    run_dir = _tiny_run(tmp_path / "run")
    with Session(engine) as s:
        ids = list(s.scalars(select(Image.id).where(Image.split == "test")))
    job_id = submit(settings, "count", project="mice",
                    config={"run_dir": str(run_dir), "image_ids": ids}, start_worker=False,
                    engine=engine)
    gate = threading.Barrier(2)
    ran = []

    def serve():
        gate.wait()
        ran.append(run_worker(settings, FAST, engine=engine))

    workers = [threading.Thread(target=serve) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert sorted(ran) == [0, 1]
    job = _job(engine, job_id)
    assert job.status == "done" and job.attempts == 1
    assert [c["image_id"] for c in job.result["counts"]] == ids


CLAIM_AND_HANG = """
import os, sys, time
from db.engine import make_engine
from db.jobs import claim_next_job
print(claim_next_job(make_engine(sys.argv[1]), host=sys.argv[2], pid=os.getpid()), flush=True)
time.sleep(600)
"""


def test_a_job_whose_local_worker_was_killed_gets_a_new_worker(tmp_path):
    """kill -9 in local mode: nothing else would ever run the job; reviving requeues it at once
    (its process is gone) and starts a worker, which takes it as attempt 2."""
    settings = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'ct.db'}")
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        create_project(s, "p", stain="red")
    job_id = submit(settings, "evaluate", project="p", config={"run_dir": "runs/never-made"},
                    start_worker=False, engine=engine)
    holder = subprocess.Popen([sys.executable, "-c", CLAIM_AND_HANG, settings.db_url,
                               socket.gethostname()], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert holder.stdout.readline().strip() == str(job_id)
    holder.kill()
    holder.wait()
    assert _job(engine, job_id).status == "running"
    assert revive_stale_jobs(settings, engine=engine) == {"requeued": [job_id], "failed": []}
    new = worker_pid(settings)
    try:
        assert new is not None and new != holder.pid
        deadline = time.monotonic() + 120
        while _job(engine, job_id).status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
        job = _job(engine, job_id)
        # The new worker ran it (and it failed for its own reason: the run does not exist).
        assert (job.attempts, job.worker_pid, job.status) == (2, new, "failed")
        assert "process has ended" in job.log_tail and "never-made" in job.error
    finally:
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(new, signal.SIGTERM)


def test_no_second_local_worker_and_none_for_remote(tmp_path):
    settings = Settings(data_dir=tmp_path, db_url=f"sqlite:///{tmp_path / 'x.db'}")
    (tmp_path / "worker.pid").write_text(f"{os.getpid()}\n")
    assert ensure_worker(settings) == os.getpid()
    assert ensure_worker(settings.with_(workers="remote")) is None


def test_evaluate_job_scores_a_registered_run_once_per_image(project_db, tmp_path):
    from db.runs import register_run
    from training.tasks import evaluate_run

    settings, engine = project_db
    run_dir = _tiny_run(tmp_path / "run")
    with Session(engine) as s, s.begin():
        project_id = s.scalar(select(Image.project_id))
        run_id = register_run(s, project_id, run_dir).id
    job_id = submit(settings, "evaluate", config={"run_dir": str(run_dir)}, start_worker=False,
                    engine=engine)
    assert run_worker(settings, FAST, engine=engine) == 1
    job = _job(engine, job_id)
    assert job.status == "done", job.error
    assert job.result["run_id"] == run_id and job.result["metrics"]["n_images"] == 2
    again = evaluate_run(settings, run_id, engine=engine)  # no duplicate rows the second time
    assert again["metrics"]["n_images"] == 2
    with Session(engine) as s:
        assert len(s.scalars(select(ImageResult)).all()) == 2


def test_evaluate_with_another_project_scores_its_test_images(project_db, tmp_path):
    """``evaluate --run RUN --project P``: a run of 'mice' scored on P's test images."""
    from db.runs import list_runs, register_run

    settings, engine = project_db
    storage = Storage.from_settings(settings)
    run_dir = _tiny_run(tmp_path / "run")
    rng = np.random.default_rng(11)
    with Session(engine) as s, s.begin():
        own = register_run(s, s.scalar(select(Image.project_id)), run_dir).id
        other = create_project(s, "heldout", stain="red")
        for i in range(3):
            sample = draw_sample(rng, f"h{i}")
            image = register_image(s, storage, other.id, sample.image, name=f"h{i}.png",
                                   split="test").image
            save_mask_version(s, storage, image.id, sample.labels, based_on=None,
                              source="import", author_id=None)
            approve(s, image.id, user_id=None)
        other_id = other.id
    for _ in range(2):  # twice: the run is registered in 'heldout' once
        job_id = submit(settings, "evaluate", project="heldout",
                        config={"run_dir": str(run_dir)}, start_worker=False, engine=engine)
        assert run_worker(settings, FAST, engine=engine) == 1
        job = _job(engine, job_id)
        assert job.status == "done", job.error
        assert job.result["metrics"]["n_images"] == 3
    with Session(engine) as s:
        there = list_runs(s, other_id)
        assert len(there) == 1 and job.result["run_id"] == there[0].id != own
        scored = s.scalars(select(Image.project_id).join(ImageResult,
                                                         ImageResult.image_id == Image.id)).all()
        assert sorted(set(scored)) == [other_id]  # nothing was scored in the run's own project


def test_a_reevaluation_replaces_every_result(project_db, tmp_path):
    """New ground truth on a test image, then evaluate again: that image is rescored."""
    from db.runs import register_run
    from training.tasks import evaluate_run

    settings, engine = project_db
    storage = Storage.from_settings(settings)
    run_dir = _tiny_run(tmp_path / "run")
    with Session(engine) as s, s.begin():
        test_id = s.scalars(select(Image.id).where(Image.split == "test")).first()
        run_id = register_run(s, s.get(Image, test_id).project_id, run_dir).id
    evaluate_run(settings, run_id, engine=engine)
    with Session(engine) as s, s.begin():  # the expert finds no cell at all on it
        image = s.get(Image, test_id)
        empty = save_mask_version(s, storage, test_id, np.zeros(SHAPE, bool),
                                  based_on=image.head_version_id, source="manual", author_id=None)
        approve(s, test_id, user_id=None, version_id=empty.id)
        empty_id = empty.id
    metrics = evaluate_run(settings, run_id, engine=engine)["metrics"]
    with Session(engine) as s:
        results = s.scalars(select(ImageResult).where(ImageResult.run_id == run_id)).all()
        rescored = next(r for r in results if r.image_id == test_id)
        assert len(results) == 2 and rescored.version_id == empty_id and rescored.n_true == 0
        assert not s.scalars(select(ObjectOutcome).where(ObjectOutcome.result_id == rescored.id,
                                                         ObjectOutcome.outcome != "FP")).all()
        outcomes = s.scalars(select(ObjectOutcome)).all()
        assert {o.result_id for o in outcomes} <= {r.id for r in results}  # none left behind
        assert s.get(ModelRun, run_id).metrics["tp"] == metrics["tp"] == sum(r.tp for r in results)


def test_cli_status_lists_jobs(project_db, capsys, monkeypatch):
    from training.__main__ import main

    settings, engine = project_db
    submit(settings, "train", project="mice", config={"train": {"epochs": 1}},
           start_worker=False, engine=engine)
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "local worker: not running" in out and "train" in out and "queued" in out


def test_runs_and_heatmaps_are_found_after_the_data_dir_moves(project_db, tmp_path):
    """A run keyed below the data dir and one recorded absolute (older rows), both scored, then
    the data dir moves: pages' reads, a threshold change and a re-evaluation still work."""
    import shutil

    from training import scoring
    from db.runs import get_run, register_run, run_path, set_threshold
    from db.users import create_user, get_user
    from training.tasks import evaluate_run

    settings, engine = project_db
    storage = Storage.from_settings(settings)
    dirs = {name: _tiny_run(storage.run_dir(name)) for name in ("keyed", "absolute")}
    with Session(engine) as s, s.begin():
        pid = s.scalar(select(Image.project_id))
        keyed = register_run(s, pid, dirs["keyed"], storage=storage)
        old = register_run(s, pid, dirs["absolute"])
        ids = {"keyed": keyed.id, "absolute": old.id}
        assert (keyed.run_dir, old.run_dir) == ("runs/keyed", str(dirs["absolute"].resolve()))
        create_user(s, "ann", "correct horse battery", role="operator")
    for run_id in ids.values():
        evaluate_run(settings, run_id, engine=engine)
    with Session(engine) as s, s.begin():  # an older row: its heatmap recorded absolute
        result = s.scalars(select(ImageResult).where(ImageResult.run_id == ids["absolute"])).first()
        assert not Path(result.heatmap_path).is_absolute()
        result.heatmap_path = str(storage.resolve(result.heatmap_path))

    moved = tmp_path / "moved"
    shutil.move(settings.data_dir, moved)
    settings = settings.with_(data_dir=moved)
    storage = Storage.from_settings(settings)
    for run_id in ids.values():
        with Session(engine) as s, s.begin():
            image_id = s.scalars(select(ImageResult.image_id)
                                 .where(ImageResult.run_id == run_id)).first()
            outcome = scoring.image_outcome(s, storage, run_id, image_id, 0.5)
            assert outcome.heatmap.shape == SHAPE
            assert scoring.threshold_curve_for_run(s, storage, run_id, compute=True)["f1"]
            set_threshold(s, run_id, 0.4, actor=get_user(s, "ann"), storage=storage)
            where = run_path(get_run(s, run_id), storage)
        assert where.parent == moved / "runs"
        assert json.loads((where / "thresholds.json").read_text())["chosen"] == 0.4
        assert evaluate_run(settings, run_id, engine=engine)["metrics"]["n_images"] == 2
    with Session(engine) as s:
        assert len(s.scalars(select(ModelRun)).all()) == 2  # re-evaluated, not registered again


def test_an_evaluation_stops_within_one_image_of_a_cancel(project_db, tmp_path):
    from training.fit import Cancelled
    from training.tasks import JobContext, run_evaluate

    settings, engine = project_db
    run_dir = _tiny_run(tmp_path / "run")
    with Session(engine) as s:
        project_id = s.scalar(select(Image.project_id))
    reports = []
    ctx = JobContext(settings, engine, job_id=None,
                     progress=lambda fraction, message: reports.append(message),
                     should_cancel=lambda: len(reports) >= 1)  # asked after the first image
    with pytest.raises(Cancelled, match="after 1 of 2 images"):
        run_evaluate(ctx, project_id, {"run_dir": str(run_dir)}, {})
    assert reports == ["Scoring 1/2"]
    with Session(engine) as s:
        assert not s.scalars(select(ImageResult)).all()


def test_a_job_that_fills_the_disk_fails_with_a_sentence_naming_the_file(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'ct.db'}")
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        create_project(s, "p", stain="red")
    job_id = submit(settings, "evaluate", project="p", config={"run_dir": "runs/x"},
                    start_worker=False, engine=engine)
    checkpoint = settings.data_dir / "runs" / "x-a1" / "checkpoint" / "last-2.keras"

    def full_disk(ctx):
        raise OSError(errno.ENOSPC, "No space left on device", str(checkpoint))

    monkeypatch.setattr(worker_module, "run_job", full_disk)
    assert run_worker(settings, FAST, engine=engine) == 1
    job = _job(engine, job_id)
    first = job.error.splitlines()[0]
    assert job.status == "failed" and first.startswith(f"Could not write {checkpoint}: ")
    assert "disk is full" in first and "python -m db gc" in job.message
