"""Command line: ``python -m training {train,evaluate,status,worker,demo-model}``.

Examples::

    python -m training train --project yellow --epochs 50 --wait
    python -m training evaluate --run data/runs/yellow-20250101-120000-job3
    python -m training evaluate --run data/runs/yellow-20250101-120000-job3 --project heldout
    python -m training status
    python -m training worker --forever
    python -m training demo-model
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sqlalchemy.orm import Session

from db.engine import make_engine, upgrade
from db.jobs import get_job, list_jobs
from db.settings import Settings
from db.storage import Storage
from training.config import TrainConfig
from training.demo_model import build_demo_model
from training.tasks import submit, worker_pid
from training.worker import WorkerOptions, run_worker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("training")

ENDED = ("done", "failed", "cancelled")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="queue a training job for a project")
    t.add_argument("--project", required=True, help="project name")
    t.add_argument("--config", type=Path, help="JSON file with TrainConfig fields to override")
    t.add_argument("--epochs", type=int)
    t.add_argument("--base-filters", type=int)
    t.add_argument("--wait", action="store_true",
                   help="run a worker here until the job ends; print the run directory last")
    e = sub.add_parser("evaluate", help="score a run on its project's test split")
    e.add_argument("--run", required=True, type=Path, help="run directory")
    e.add_argument("--project", help="score on this project's test images (default: the run's "
                                     "own project; a run trained elsewhere is registered here)")
    sub.add_parser("status", help="recent jobs and the local worker")
    w = sub.add_parser("worker", help="serve the job queue")
    w.add_argument("--forever", action="store_true", help="keep polling when the queue is empty")
    w.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    w.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    w.add_argument("--stale-after", type=float, default=120.0,
                   help="requeue running jobs with no heartbeat for this long")
    w.add_argument("--max-attempts", type=int, default=3)
    d = sub.add_parser("demo-model", help="train the small demo model into models/demo/")
    d.add_argument("--out", type=Path, default=Path("models/demo"))
    d.add_argument("--seed", type=int, default=0)
    return p


def _engine(settings):
    engine = make_engine(settings)
    upgrade(engine)
    return engine


def _train_config(args) -> dict:
    """TrainConfig overrides from --config, --epochs and --base-filters (validated)."""
    overrides = {}
    if args.config:
        data = json.loads(args.config.read_text())
        overrides = data.get("train", data) if isinstance(data, dict) else {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.base_filters is not None:
        overrides["base_filters"] = args.base_filters
    TrainConfig.from_dict(overrides)
    return overrides


def _wait_for(settings, engine, job_id: int) -> dict:
    """Run a foreground worker until job ``job_id`` has ended; return its final row as a dict."""
    def ended() -> bool:
        with Session(engine) as session:
            return get_job(session, job_id).status in ENDED

    run_worker(settings, WorkerOptions(poll=1.0), engine=engine, stop_when=ended)
    with Session(engine) as session:
        job = get_job(session, job_id)
        return {"status": job.status, "message": job.message, "result": dict(job.result or {}),
                "error": job.error}


def _finished(settings, engine, job_id: int) -> dict | None:
    """Wait for a job and print how it ended and its metrics; None (error printed) unless done."""
    job = _wait_for(settings, engine, job_id)
    print(f"job {job_id} {job['status']}: {job['message']}")
    if job["status"] != "done":
        print(job["error"] or "", file=sys.stderr)
        return None
    print(json.dumps(job["result"].get("metrics", {}), indent=1, default=str))
    return job


def cmd_train(args, settings) -> int:
    engine = _engine(settings)
    job_id = submit(settings, "train", project=args.project,
                    config={"train": _train_config(args)}, start_worker=not args.wait,
                    engine=engine)
    if not args.wait:
        print(f"queued training job {job_id}; follow it with `python -m training status`")
        return 0
    job = _finished(settings, engine, job_id)
    if job is None:
        return 1
    print(Storage.from_settings(settings).resolve(job["result"]["run_dir"]))
    return 0


def cmd_evaluate(args, settings) -> int:
    engine = _engine(settings)
    job_id = submit(settings, "evaluate", project=args.project,
                    config={"run_dir": str(args.run.resolve())}, start_worker=False, engine=engine)
    return 0 if _finished(settings, engine, job_id) is not None else 1


def cmd_status(args, settings) -> int:
    engine = _engine(settings)
    pid = worker_pid(settings)
    print(f"local worker: {'pid ' + str(pid) if pid else 'not running'} ({settings.workers})")
    with Session(engine) as session:
        for job in list_jobs(session, limit=20):
            print(f"{job.id:>5} {job.kind:<8} {job.status:<9} {100 * job.progress:5.1f}%  "
                  f"{job.message}")
    return 0


def cmd_worker(args, settings) -> int:
    if args.stale_after < 3 * args.heartbeat:
        print("--stale-after must be at least three heartbeats, or live jobs get requeued.",
              file=sys.stderr)
        return 2
    options = WorkerOptions(forever=args.forever, poll=args.poll, heartbeat=args.heartbeat,
                            stale_after=args.stale_after, max_attempts=args.max_attempts)
    run_worker(settings, options, engine=_engine(settings))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo-model":
        metrics = build_demo_model(args.out, seed=args.seed)
        keys = ("f1", "precision", "recall", "mae", "medae", "bias", "mean_iou", "n_images",
                "threshold", "seconds")
        print("demo model test scores:", json.dumps({k: metrics.get(k) for k in keys}))
        return 0
    settings = Settings.from_env()
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "status": cmd_status,
                "worker": cmd_worker}
    try:
        return commands[args.command](args, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
