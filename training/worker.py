"""The worker loop: claim jobs atomically, keep a heartbeat, honour cancel, requeue dead workers' jobs.

``python -m training worker`` runs :func:`run_worker`. Several workers (on this machine or on GPU
hosts pointing at the same database) can serve one queue: ``db.jobs.claim_next_job`` hands each
job to exactly one of them. While a job runs, a background thread stamps its heartbeat and reads
its cancel flag. Before every claim the worker requeues running jobs whose heartbeat is older than
``stale_after`` seconds (their worker died), up to ``max_attempts``; a requeued training job
resumes from its checkpoint because its run directory is kept on the job row.
"""
from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session

from db.engine import make_engine
from db.jobs import (claim_next_job, fail_job, finish_job, get_job, heartbeat, report_progress,
                     requeue_stale)
from db.settings import Settings
from training.scoring import Cancelled
from training.tasks import PID_FILE, JobContext, run_job, worker_pid

__all__ = ["WorkerOptions", "run_worker", "execute_job", "LogTail"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker behaves.

    Attributes
    ----------
    forever : bool
        Keep polling when the queue is empty (otherwise return).
    poll : float
        Seconds between polls of an empty queue.
    heartbeat : float
        Seconds between heartbeats (and cancel-flag reads) of a running job.
    stale_after : float
        A running job whose heartbeat is older than this is considered orphaned. Keep it well
        above ``heartbeat`` of every worker sharing the database.
    max_attempts : int
        An orphaned job is requeued while it has been attempted fewer times than this.
    kinds : tuple of str or None
        Claim only these job kinds.
    """

    forever: bool = False
    poll: float = 2.0
    heartbeat: float = 5.0
    stale_after: float = 120.0
    max_attempts: int = 3
    kinds: tuple[str, ...] | None = None


class LogTail(logging.Handler):
    """Keeps the last ``max_chars`` characters of log records, for the job row."""

    def __init__(self, max_chars: int = 20_000, *, earlier: str = ""):
        super().__init__(level=logging.INFO)
        self.lines: collections.deque[str] = collections.deque()
        self.size, self.max_chars = 0, max_chars
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        if earlier:  # what earlier attempts logged (and why they ended) stays in front
            self._add(earlier.rstrip("\n"))

    def _add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > self.max_chars and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()) + 1

    def emit(self, record: logging.LogRecord) -> None:
        self._add(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


def run_worker(settings: Settings, options: WorkerOptions = WorkerOptions(), *, engine=None,
               stop_when: Callable[[], bool] | None = None) -> int:
    """Serve the queue; return how many jobs this worker ran.

    Parameters
    ----------
    settings : Settings
    options : WorkerOptions
    engine : sqlalchemy.Engine, optional
        Made from the settings by default.
    stop_when : callable, optional
        Checked between jobs and polls; returning True ends the loop (``train --wait`` stops
        once its job has ended).
    """
    engine = engine or make_engine(settings)
    host, pid = socket.gethostname(), os.getpid()
    owns_pid_file = _claim_pid_file(settings)
    ran = 0
    try:
        while not (stop_when and stop_when()):
            with Session(engine) as session, session.begin():
                requeue_stale(session, older_than_s=options.stale_after,
                              max_attempts=options.max_attempts)
            job_id = claim_next_job(engine, host=host, pid=pid, kinds=options.kinds)
            if job_id is not None:
                execute_job(settings, engine, job_id, options)
                ran += 1
            elif options.forever or stop_when is not None:
                time.sleep(options.poll)
            else:
                break
    finally:
        if owns_pid_file:
            _release_pid_file(settings)
    log.info("worker %s:%d stops after %d job(s)", host, pid, ran)
    return ran


def _claim_pid_file(settings: Settings) -> bool:
    """Record this process as the data dir's local worker unless another live one is recorded."""
    if settings.workers == "remote":
        return False
    current = worker_pid(settings)
    if current is not None and current != os.getpid():
        return False
    path = Path(settings.data_dir) / PID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    return True


def _release_pid_file(settings: Settings) -> None:
    path = Path(settings.data_dir) / PID_FILE
    try:
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, IndexError):
        pass


class _Heartbeat(threading.Thread):
    """Stamps the job's heartbeat every ``interval`` s and mirrors its cancel flag in an Event."""

    def __init__(self, engine, job_id: int, interval: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.engine, self.job_id, self.interval = engine, job_id, interval
        self.stop = threading.Event()
        self.cancel = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                if heartbeat(self.engine, self.job_id):  # retries while the database is locked
                    self.cancel.set()
            except Exception:  # a locked or unreachable database: try again next beat
                log.warning("heartbeat of job %d failed", self.job_id, exc_info=True)


def _progress_writer(engine, job_id: int, tail: LogTail, beat: _Heartbeat):
    """A ``progress(fraction, message)`` that logs and writes the job row, at most every 0.5 s."""
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and fraction < 1.0:
            return
        last[0] = now
        log.info("job %d: %s", job_id, message)
        # Given the engine, the write commits on its own and retries while the database is
        # locked: a busy database never fails the job.
        if report_progress(engine, job_id, fraction, message, log_tail=tail.text()):
            beat.cancel.set()

    return progress


def execute_job(settings: Settings, engine, job_id: int,
                options: WorkerOptions = WorkerOptions()) -> str:
    """Run one claimed job to its end; returns its final status (done, cancelled or failed)."""
    with Session(engine) as session:
        job = get_job(session, job_id)
        tail = LogTail(earlier=job.log_tail or "")
        attempt = job.attempts
    root = logging.getLogger()
    level = root.level
    root.addHandler(tail)
    root.setLevel(min(level or logging.WARNING, logging.INFO))  # the tail wants INFO lines
    log.info("job %d: attempt %d on %s:%d", job_id, attempt, socket.gethostname(), os.getpid())
    beat = _Heartbeat(engine, job_id, options.heartbeat)
    beat.start()
    ctx = JobContext(settings, engine, job_id, _progress_writer(engine, job_id, tail, beat),
                     beat.cancel.is_set)
    try:
        result = run_job(ctx)
        status, kwargs = "done", {"result": result}
    except Cancelled as exc:
        log.info("job %d cancelled: %s", job_id, exc)
        status, kwargs = "cancelled", {"cancelled": True, "message": "Cancelled."}
    except Exception as exc:
        log.exception("job %d failed", job_id)
        status, error = "failed", f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
    finally:
        beat.stop.set()
        beat.join()
        root.removeHandler(tail)
        root.setLevel(level)
    with Session(engine) as session, session.begin():
        if status == "failed":
            fail_job(session, job_id, error, log_tail=tail.text())
        else:
            finish_job(session, job_id, **kwargs)
    log.info("job %d %s", job_id, status)
    return status
