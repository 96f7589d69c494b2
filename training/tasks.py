"""Queue jobs, keep a local worker alive, and run the three job kinds (train, evaluate, count).

``submit`` is what the app calls: it queues a row through ``db.jobs`` and makes sure a detached
worker process serves the queue (unless ``settings.workers == "remote"``: then GPU hosts running
``python -m training worker`` against the same database take the jobs). The runners below are
what a worker executes for a claimed job; each receives a :class:`JobContext` whose ``progress``
writes to the job row and whose ``should_cancel`` reflects the row's cancel flag.

Job configs (JSON on the row)::

    train     {"train": {TrainConfig fields to override}, "name": "optional run name"}
    evaluate  {"run_dir": "runs/x", "run_id": 7}   (run_id optional; project: the job's)
    count     {"run_dir": "runs/x", "images": [{"item": 0, "name": "a.tif",
               "path": "images/ab/<hash>.png", ...}, ...], "batch": 12, "chunk": 0,
               "chunks": 4}   (a chunk of a batch: ``submit_count``, ``db.jobs``; the images
               are the store's, never project images; an older job names "image_ids")

A run directory below the data dir is named by its key (``runs/<name>``, ``Storage.key``) in
configs, results and rows, and resolved through ``Storage`` where it is read, so a worker that
mounts the data dir elsewhere finds it; one outside (``models/demo``) stays absolute.

A training job's attempt N trains into ``runs/<name>-a<N>``, starting from a copy of the
previous attempt's checkpoint, so a worker that was paused and lost its claim never writes into
the directory of the attempt that replaced it. The run is registered (with its results) in one
transaction fenced by the attempt (``db.jobs.ClaimLost``), and a retry that finds its job's run
already registered finishes with that run instead of training again.

In local mode a worker killed with ``kill -9`` would leave its job "running" until someone
queued another one; :func:`revive_stale_jobs`, which the Train page calls while it is open,
requeues such a job and starts a new local worker.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.objects import count_objects, describe_outcomes
from core.predict import load_network
from core.run import load_run
from db import jobs as job_rows
from db import projects, runs
from db.engine import make_engine
from db.models import Job, ModelRun
from db.settings import Settings
from db.storage import Storage
from training.config import TrainConfig
from training.data import Sample, split_samples
from training.fit import train_run
from training.scoring import check_cancel, score_samples

__all__ = ["submit", "submit_count", "ensure_worker", "worker_pid", "JobContext", "run_job",
           "run_train", "run_evaluate", "run_count", "evaluate_run", "load_samples",
           "revive_stale_jobs", "PID_FILE", "REPO_ROOT"]

log = logging.getLogger(__name__)

PID_FILE = "worker.pid"
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- submitting


def submit(settings: Settings, kind: str, *, project: str | int | None = None,
           config: dict | None = None, created_by: int | None = None,
           start_worker: bool = True, engine=None) -> int:
    """Queue a job and make sure a local worker will run it; returns the job id.

    Parameters
    ----------
    settings : Settings
        Database URL and data dir (absolute; handed to the worker's environment).
    kind : {"train", "evaluate", "count"}
    project : str or int, optional
        Project name or id.
    config : dict, optional
        The job's JSON config (see the module docstring). A train config is validated here, so a
        bad setting is refused with a sentence instead of failing later in the worker.
    created_by : int, optional
        The user who asked.
    start_worker : bool
        Start a detached local worker if none is alive (ignored for ``workers="remote"``).
    engine : sqlalchemy.Engine, optional
        Reuse an engine (the app's); by default one is made from the settings.
    """
    if kind == "train":
        TrainConfig.from_dict((config or {}).get("train", {}))
    engine = engine or make_engine(settings)
    with Session(engine) as session, session.begin():
        project_id = None if project is None else projects.get_project(session, project).id
        job_id = job_rows.queue_job(session, kind, project_id=project_id, config=config or {},
                           created_by=created_by).id
    log.info("queued %s job %d", kind, job_id)
    if start_worker:
        ensure_worker(settings)
    return job_id


def submit_count(settings: Settings, *, project: str | int, run_dir: str, images,
                 created_by: int | None = None, chunk_size: int = job_rows.COUNT_CHUNK,
                 start_worker: bool = True, engine=None) -> int:
    """Queue a count as chunks any number of workers claim; returns the batch id.

    ``images`` are the stored images to count (``db.importing.store_for_count``); they stay
    the count's, not the project's. Each chunk of ``chunk_size`` images is its own ``count``
    job (``db.jobs.queue_count_chunks``), so five GPU hosts running ``python -m training
    worker`` share one 100k-image count; the local worker started here (unless
    ``settings.workers == "remote"``) takes them otherwise.
    """
    engine = engine or make_engine(settings)
    with Session(engine) as session, session.begin():
        project_id = projects.get_project(session, project).id
        jobs = job_rows.queue_count_chunks(session, project_id=project_id,
                                           config={"run_dir": run_dir}, images=images,
                                           chunk_size=chunk_size, created_by=created_by)
        batch_id = jobs[0].id
    log.info("queued count batch %d in %d chunks", batch_id, len(jobs))
    if start_worker:
        ensure_worker(settings)
    return batch_id


def worker_pid(settings: Settings) -> int | None:
    """Pid of this data dir's local worker if it is alive, else None."""
    path = Path(settings.data_dir) / PID_FILE
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _alive(pid):
        return None
    return pid


def _alive(pid: int) -> bool:
    """Whether a process runs with this pid and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def ensure_worker(settings: Settings) -> int | None:
    """Start a detached ``python -m training worker`` unless one is alive; return its pid.

    The check and the start happen under a file lock in the data dir, so two requests at once
    start one worker. The child gets ``settings.as_env()`` (absolute paths), its own session
    (it survives a restart of the web app) and a log file ``<data_dir>/logs/worker.log``.
    Returns None when ``settings.workers == "remote"``.
    """
    if settings.workers == "remote":
        return None
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".worker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = worker_pid(settings)
        if pid is not None:
            return pid
        (data_dir / "logs").mkdir(exist_ok=True)
        env = {**os.environ, **settings.as_env(), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                           os.environ.get("PYTHONPATH")]))}
        with open(data_dir / "logs" / "worker.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "training", "worker"], cwd=REPO_ROOT,
                                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        (data_dir / PID_FILE).write_text(f"{proc.pid}\n")
        log.info("started worker process %d", proc.pid)
        return proc.pid


def revive_stale_jobs(settings: Settings, *, engine=None,
                      stale_after: float = job_rows.STALE_AFTER_S,
                      max_attempts: int = job_rows.MAX_ATTEMPTS) -> dict[str, list[int]]:
    """Requeue running jobs whose worker died, and start a local worker for them.

    A job counts as orphaned when its heartbeat is older than ``stale_after`` seconds, or at
    once when it was claimed on this host by a process that no longer exists (``kill -9``).
    Jobs with attempts left are requeued, the others fail (``db.jobs.requeue_stale``). Nothing
    happens with ``settings.workers == "remote"``: the remote workers requeue for themselves.

    Returns
    -------
    dict
        ``{"requeued": [job ids], "failed": [job ids]}``.
    """
    if settings.workers == "remote":
        return {"requeued": [], "failed": []}
    engine = engine or make_engine(settings)
    host = socket.gethostname()
    with Session(engine) as session, session.begin():
        running = session.execute(select(Job.id, Job.worker_host, Job.worker_pid).where(
            Job.status == "running")).all()
        dead = [j.id for j in running
                if j.worker_host == host and j.worker_pid and not _alive(j.worker_pid)]
        out = job_rows.requeue_stale(session, older_than_s=stale_after,
                                     max_attempts=max_attempts, dead=dead)
    if out["requeued"]:
        log.warning("jobs %s lost their worker; requeued, starting a local worker",
                    out["requeued"])
        ensure_worker(settings)
    return out


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class JobContext:
    """What a runner gets from the worker.

    Attributes
    ----------
    settings : Settings
    engine : sqlalchemy.Engine
    job_id : int
    progress : callable(fraction, message)
        Writes progress (0..1) and a message to the job row.
    should_cancel : callable() -> bool
        True once someone asked the job to stop, or once the claim was lost.
    attempt : int or None
        The claim's attempt number, its fencing token (None outside a worker).
    """

    settings: Settings
    engine: Any
    job_id: int
    progress: Callable[[float, str], None]
    should_cancel: Callable[[], bool]
    attempt: int | None = None

    @property
    def storage(self) -> Storage:
        return Storage.from_settings(self.settings)


def run_job(ctx: JobContext) -> dict:
    """Run the claimed job ``ctx.job_id`` by its kind; returns the result for ``finish_job``."""
    with Session(ctx.engine) as session:
        job = job_rows.get_job(session, ctx.job_id)
        kind, project_id, config = job.kind, job.project_id, dict(job.config or {})
        previous = dict(job.result or {})
    runner = {"train": run_train, "evaluate": run_evaluate, "count": run_count}[kind]
    return runner(ctx, project_id, config, previous)


def load_samples(session: Session, storage, project_id: int, split: str):
    """Samples (image + labelled ground truth) and manifest pairs of one split of a project."""
    samples, pairs = [], []
    for item in runs.training_items(session, project_id, split):
        image = storage.read_image(item.image_path)
        labels = storage.read_labels(item.mask_path)
        samples.append(Sample(f"image:{item.image_id}", image, labels, hard=bool(item.hard),
                              manual=bool(item.hand_segmented)))
        pairs.append((item.image_id, item.mask_version_id))
    return samples, pairs


def _stage_fraction(payload: dict) -> tuple[float, str]:
    """Map a training progress payload to a job fraction and message."""
    stage = payload.get("stage")
    step, steps = payload.get("step", 0), max(payload.get("steps", 1), 1)
    if stage == "train":
        done = (payload["epoch"] - 1 + step / steps) / max(payload["epochs"], 1)
        loss = payload.get("loss")
        val = payload.get("val_loss")
        msg = (f"Epoch {payload['epoch']}/{payload['epochs']}, step {step}/{steps}"
               + (f", loss {loss:.4f}" if loss is not None else "")
               + (f", val_loss {val:.4f}" if val is not None else "")
               + f", lr {payload['learning_rate']:.2g}, about {_duration(payload['seconds_left'])} left")
        return 0.85 * done, msg
    if stage == "threshold":
        return 0.85 + 0.03 * step / steps, f"Predicting for threshold tuning: image {step}/{steps}"
    if stage == "tuning":
        return 0.88 + 0.05 * step / steps, f"Tuning the threshold: step {step}/{steps}"
    return 0.93 + 0.07 * step / steps, f"Scoring test images: {step}/{steps}"


def _duration(seconds: float) -> str:
    """'1h02m', '3m05s' or '12s'."""
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _fence(ctx: JobContext, session: Session) -> None:
    """Inside ``session``'s transaction: go on only while the job is still this attempt's."""
    if ctx.attempt is not None:
        job_rows.heartbeat(session, ctx.job_id, attempt=ctx.attempt)


def _train_setup(ctx: JobContext, project_id: int, config: dict, previous: dict):
    """This attempt's own run directory, ``runs/<name>-a<attempt>``, and the TrainConfig.

    A retry starts from a copy of the previous attempt's checkpoint (so training resumes),
    and leaves that directory alone: its worker may only be paused, not dead.
    """
    cfg = TrainConfig.from_dict(config.get("train", {}))
    earlier = previous.get("run_dir")
    with Session(ctx.engine) as session, session.begin():
        _fence(ctx, session)
        name = previous.get("run_name") or (Path(earlier).name if earlier else None)
        if not name:
            project = projects.get_project(session, project_id)
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = config.get("name") or f"{project.name}-{stamp}-job{ctx.job_id}"
        run_dir = ctx.storage.run_dir(f"{name}-a{ctx.attempt or 1}")
        if ctx.job_id is not None:
            job_rows.get_job(session, ctx.job_id).result = {"run_dir": ctx.storage.key(run_dir),
                                                            "run_name": name}
    checkpoint = ctx.storage.resolve(earlier) / "checkpoint" if earlier else None
    if checkpoint is not None and checkpoint.is_dir():
        shutil.copytree(checkpoint, run_dir / "checkpoint", dirs_exist_ok=True)
        log.info("job %s: attempt %s resumes from %s", ctx.job_id, ctx.attempt, checkpoint)
    return cfg, run_dir


def _registered_result(ctx: JobContext) -> dict | None:
    """The result of a run an earlier attempt of this job already registered, if any (it died
    between registering and finishing): the job ends with that run, not a second one."""
    with Session(ctx.engine) as session:
        run = session.scalars(select(ModelRun).where(ModelRun.job_id == ctx.job_id)
                              .order_by(ModelRun.id)).first()
        if run is None:
            return None
        found = {"run_dir": run.run_dir, "run_id": run.id, "metrics": dict(run.metrics or {})}
    thresholds = load_run(ctx.storage.resolve(found["run_dir"]), with_model=False).thresholds
    return {**found, "thresholds": {k: thresholds.get(k) for k in ("best", "knee", "chosen")},
            "resumed_from": None, "epochs_run": found["metrics"].get("epochs_run")}


def run_train(ctx: JobContext, project_id: int, config: dict, previous: dict) -> dict:
    """Train on the project's train split, score its test split, store the run and results."""
    if project_id is None:
        raise ValueError("A training job needs a project.")
    if ctx.job_id is not None and (done := _registered_result(ctx)) is not None:
        return done
    cfg, run_dir = _train_setup(ctx, project_id, config, previous)
    with Session(ctx.engine) as session:
        train_all, train_pairs = load_samples(session, ctx.storage, project_id, "train")
        test, test_pairs = load_samples(session, ctx.storage, project_id, "test")
    if not train_all:
        raise ValueError("The project has no train images with approved ground truth; approve "
                         "some masks of train-split images first.")
    train, validation = split_samples(train_all, cfg.validation_fraction, cfg.seed)
    pair_of = dict(zip((s.key for s in train_all), train_pairs))
    manifest = {"train": [pair_of[s.key] for s in train],
                "validation": [pair_of[s.key] for s in validation], "test": test_pairs}
    ctx.progress(0.0, f"Training on {len(train)} images, validating on {len(validation)}.")
    outcome = train_run(train, validation, test, cfg, run_dir, manifest=manifest,
                        progress=lambda p: ctx.progress(*_stage_fraction(p)),
                        should_cancel=ctx.should_cancel,
                        cache_dir=Path(ctx.settings.data_dir) / "cache")
    run_id = _store_run(ctx, project_id, run_dir, outcome.results, test, test_pairs)
    return {"run_dir": ctx.storage.key(run_dir), "run_id": run_id, "metrics": outcome.metrics,
            "thresholds": {k: outcome.thresholds[k] for k in ("best", "knee", "chosen")},
            "resumed_from": outcome.fit.resumed_from, "epochs_run": len(outcome.history)}


def _store_run(ctx: JobContext, project_id: int, run_dir: Path, results, samples, pairs,
               run_id: int | None = None, metrics: dict | None = None) -> int:
    """Register the run (unless given) and store every image's result, objects and heatmap.

    The run's earlier results are replaced in the same transaction, so a re-evaluation (after
    new ground truth, say) rescores every test image instead of adding only new ones.
    ``metrics`` (a re-evaluation's scores) replace the run's stored scores, so the Dashboard's
    figures describe the same test images as its per-image results.
    """
    truth = {s.key: s.labels for s in samples}
    version = {f"image:{image_id}": v for image_id, v in pairs}
    scored = []
    for res in results:
        heat = ctx.storage.key(ctx.storage.put_heatmap(res.heatmap).path)
        scored.append(runs.ScoredImage(
            int(res.key.split(":")[1]), res.match,
            describe_outcomes(truth[res.key], res.labels, res.heatmap, res.match),
            heatmap_path=heat, version_id=version[res.key]))
    with Session(ctx.engine) as session, session.begin():
        _fence(ctx, session)  # a worker that lost its claim registers nothing
        # A retried job whose first attempt stored its run finds that row again.
        run = (runs.get_run(session, run_id) if run_id is not None else
               runs.find_run(session, ctx.storage, run_dir)
               or runs.register_run(session, project_id, run_dir, job_id=ctx.job_id,
                                    storage=ctx.storage))
        runs.replace_image_results(session, run.id, scored, metrics=metrics)
        return run.id


def _job_run(ctx: JobContext, config: dict, *, with_model: bool = True):
    """The job's run directory loaded, counting at its registered threshold, and its row.

    A run kept in the database counts with the threshold kept there (an admin may have moved
    it since the directory was written); an unregistered directory with its own.
    """
    run_dir = config.get("run_dir")
    if not run_dir:
        raise ValueError("The job names no run directory (config 'run_dir').")
    run = load_run(ctx.storage.resolve(run_dir), with_model=False)
    if with_model:
        # The backend counting and pre-labelling use too: ONNX Runtime when it can serve.
        run = dataclasses.replace(run, model=load_network(
            run.path, cache_dir=Path(ctx.settings.data_dir) / "cache" / "onnx"))
    with Session(ctx.engine) as session:
        row = (runs.get_run(session, int(config["run_id"])) if config.get("run_id") is not None
               else runs.find_run(session, ctx.storage, run.path))
        if row is not None:
            session.expunge(row)
    if row is not None and row.threshold is not None:
        run = run.with_threshold(row.threshold)
    return run, row


def _row_in_project(ctx: JobContext, run_path: Path, project_id: int):
    """The run's row in ``project_id``, registered there (once) when it has none yet."""
    keys = {str(run_path), ctx.storage.key(run_path)}
    with Session(ctx.engine) as session, session.begin():
        row = next((r for r in runs.list_runs(session, project_id) if r.run_dir in keys), None)
        if row is None:
            row = runs.register_run(session, project_id, run_path, storage=ctx.storage)
            log.info("run %s registered in project %d to be scored there", run_path, project_id)
        session.expunge(row)
    return row


def run_evaluate(ctx: JobContext, project_id: int | None, config: dict, previous: dict) -> dict:
    """Score an existing run on the test split of a project.

    The job's project when it names one (a run trained in one project scored on another's
    test images, as ``python -m training evaluate --run RUN --project P`` does: the run is
    registered in P too, so its results there stay apart from those in its own project);
    otherwise the run's own project.
    """
    run, row = _job_run(ctx, config)
    if project_id is not None and (row is None or row.project_id != project_id) \
            and config.get("run_id") is None:
        row = _row_in_project(ctx, run.path, project_id)
    project_id = row.project_id if row is not None else project_id
    if project_id is None:
        raise ValueError(f"{run.path} is not a run of any project; name the project.")
    with Session(ctx.engine) as session:
        test, pairs = load_samples(session, ctx.storage, project_id, "test")
    if not test:
        raise ValueError("The project has no test images with approved ground truth.")
    metrics, results = score_samples(
        run.model, test, run.scoring,
        progress=lambda p: ctx.progress(p["step"] / p["steps"], f"Scoring {p['step']}/{p['steps']}"),
        should_cancel=ctx.should_cancel)
    check_cancel(ctx.should_cancel, "after scoring")
    run_id = _store_run(ctx, project_id, run.path, results, test, pairs,
                        run_id=row.id if row is not None else None, metrics=metrics)
    return {"run_dir": ctx.storage.key(run.path), "run_id": run_id, "metrics": metrics}


def _count_targets(ctx: JobContext, config: dict) -> list[dict]:
    """The images a count chunk names, each with its store ``path``.

    An older chunk names project images by id (``image_ids``); those are looked up.
    """
    if config.get("images"):
        return [dict(e) for e in config["images"]]
    targets = []
    with Session(ctx.engine) as session:
        for image_id in config.get("image_ids", []):
            image = projects.get_image(session, int(image_id))
            targets.append({"item": int(image_id), "image_id": int(image_id),
                            "name": image.original_name, "path": image.path,
                            "height": image.height, "width": image.width,
                            "pixel_size_um": image.pixel_size_um})
    return targets


def run_count(ctx: JobContext, project_id: int | None, config: dict, previous: dict) -> dict:
    """Count cells on the given images with a run; heatmaps go to storage, counts to the result.

    Each count in the result is the image's config entry with ``count`` and ``heatmap_path``
    added, so the Count page reads the image, its size and its cells from the job alone.
    """
    from core.predict import predict_heatmap

    run, _row = _job_run(ctx, config)
    targets = _count_targets(ctx, config)
    part = (f" (chunk {config['chunk'] + 1} of {config['chunks']})"
            if config.get("chunks", 1) > 1 else "")
    counts = []
    for n, entry in enumerate(targets):
        check_cancel(ctx.should_cancel, f"after {n} of {len(targets)} images")
        heat = predict_heatmap(run.model, ctx.storage.read_image(entry["path"]))
        counts.append({**entry, "count": count_objects(run.labels(heat)),
                       "heatmap_path": ctx.storage.key(ctx.storage.put_heatmap(heat).path)})
        ctx.progress((n + 1) / len(targets), f"Counted {n + 1}/{len(targets)} images{part}")
    return {"run_dir": ctx.storage.key(run.path), "model": run.name, "threshold": run.threshold,
            "counts": counts}


def evaluate_run(settings: Settings, run_id: int, *, engine=None) -> dict:
    """Score a registered run on its project's test split now, in this process (no job row).

    For callers that need the results at once, such as the demo seeding; the app queues an
    ``evaluate`` job instead. Returns ``{"run_dir", "run_id", "metrics"}``.
    """
    engine = engine or make_engine(settings)
    with Session(engine) as session:
        run = runs.get_run(session, run_id)
        project_id, run_dir = run.project_id, run.run_dir
    ctx = JobContext(settings, engine, job_id=None, progress=lambda fraction, message: None,
                     should_cancel=lambda: False)
    return run_evaluate(ctx, project_id, {"run_dir": run_dir, "run_id": run_id}, {})
