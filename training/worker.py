"""The worker loop: claim jobs atomically, keep a heartbeat, honour cancel, requeue dead workers' jobs.

``python -m training worker`` runs :func:`run_worker`. Several workers (on this machine or on GPU
hosts pointing at the same database) can serve one queue: ``db.jobs.claim_next_job`` hands each
job to exactly one of them. While a job runs, a background thread stamps its heartbeat and reads
its cancel flag. Before every claim the worker requeues running jobs whose heartbeat is older than
``stale_after`` seconds (their worker died), up to ``max_attempts``; a requeued training job
resumes from the previous attempt's checkpoint, whose run directory is kept on the job row.

Every claim carries its attempt number as a fencing token (``db.jobs``): heartbeats, progress,
the run's registration and the finish all check it. A worker that was paused past the stale
limit, and whose job went to another worker meanwhile, learns so at its next write: it stops
the job without ending it, and each attempt trains into its own ``runs/<name>-a<attempt>``, so
the two never share a directory and only the fenced finisher's run is registered.
"""
from __future__ import annotations

import collections
import errno
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
from db.jobs import (MAX_ATTEMPTS, STALE_AFTER_S, ClaimLost, claim_next_job, fail_job,
                     finish_job, get_job, heartbeat, report_progress, requeue_stale)
from db.settings import Settings
from db.storage import DiskError, disk_error
from training.scoring import Cancelled
from training.tasks import PID_FILE, JobContext, run_job, worker_pid

__all__ = ["WorkerOptions", "run_worker", "execute_job", "LogTail"]

log = logging.getLogger(__name__)

_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


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
    stale_after: float = STALE_AFTER_S
    max_attempts: int = MAX_ATTEMPTS
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
            with Session(engine) as session, session.begin():
                job_id = claim_next_job(session, host=host, pid=pid, kinds=options.kinds)
                # Read in the claim's own transaction: this attempt number is the fencing token.
                attempt = get_job(session, job_id).attempts if job_id is not None else None
            if job_id is not None:
                execute_job(settings, engine, job_id, options, attempt=attempt)
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
    """Stamps the job's heartbeat every ``interval`` s under the claim's ``attempt``; mirrors
    the cancel flag in ``cancel`` and a lost claim in ``lost`` (then it stops beating)."""

    def __init__(self, engine, job_id: int, attempt: int, interval: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.engine, self.job_id, self.attempt, self.interval = engine, job_id, attempt, interval
        self.stop = threading.Event()
        self.cancel = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                # Given the engine, the stamp commits on its own and retries while the
                # database is locked; a lost claim stops the beat.
                if heartbeat(self.engine, self.job_id, attempt=self.attempt):
                    self.cancel.set()
            except ClaimLost as exc:
                log.warning("%s", exc)
                self.lost.set()
                return
            except Exception:  # a locked or unreachable database: try again next beat
                log.warning("heartbeat of job %d failed", self.job_id, exc_info=True)

    def should_stop(self) -> bool:
        """What the runner polls: cancelled, or no longer this worker's job."""
        return self.cancel.is_set() or self.lost.is_set()


def _progress_writer(engine, job_id: int, attempt: int, tail: LogTail, beat: _Heartbeat):
    """A ``progress(fraction, message)`` that logs and writes the job row (fenced by ``attempt``),
    at most every 0.5 s; raises :class:`ClaimLost` once the claim is gone."""
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        if beat.lost.is_set():
            raise ClaimLost(f"Job {job_id}: attempt {attempt} lost its claim and stops.")
        now = time.monotonic()
        if now - last[0] < 0.5 and fraction < 1.0:
            return
        last[0] = now
        log.info("job %d: %s", job_id, message)
        # Given the engine, the write commits on its own and retries while the database is
        # locked: a busy database never fails the job. A lost claim raises ClaimLost.
        if report_progress(engine, job_id, fraction, message, log_tail=tail.text(),
                           attempt=attempt):
            beat.cancel.set()

    return progress


def execute_job(settings: Settings, engine, job_id: int,
                options: WorkerOptions = WorkerOptions(), *, attempt: int | None = None) -> str:
    """Run one claimed job to its end; returns its final status (done, cancelled or failed),
    or ``"lost"`` when another attempt took the job over meanwhile (nothing more is written).

    ``attempt`` is the claim's fencing token (read from the row when not given).
    """
    with Session(engine) as session:
        job = get_job(session, job_id)
        tail = LogTail(earlier=job.log_tail or "")
        attempt = job.attempts if attempt is None else attempt
    root = logging.getLogger()
    level = root.level
    root.addHandler(tail)
    root.setLevel(min(level or logging.WARNING, logging.INFO))  # the tail wants INFO lines
    log.info("job %d: attempt %d on %s:%d", job_id, attempt, socket.gethostname(), os.getpid())
    beat = _Heartbeat(engine, job_id, attempt, options.heartbeat)
    beat.start()
    ctx = JobContext(settings, engine, job_id, _progress_writer(engine, job_id, attempt, tail,
                                                                beat),
                     beat.should_stop, attempt=attempt)
    try:
        result = run_job(ctx)
        status, kwargs = "done", {"result": result}
    except ClaimLost as exc:
        status = "lost"
        log.warning("%s", exc)
    except Cancelled as exc:
        status, kwargs = "cancelled", {"cancelled": True, "message": "Cancelled."}
        log.info("job %d cancelled: %s", job_id, exc)
    except Exception as exc:
        log.exception("job %d failed", job_id)
        shown = _sentence(exc, settings)
        status, error = "failed", f"{shown}\n\n{traceback.format_exc()}"
    finally:
        beat.stop.set()
        beat.join()
        root.removeHandler(tail)
        root.setLevel(level)
    if beat.lost.is_set():
        status = "lost"
    if status != "lost":
        status = _end_job(engine, job_id, attempt, status, kwargs if status != "failed" else
                          {"error": error, "log_tail": tail.text()})
    log.info("job %d attempt %d: %s", job_id, attempt,
             "lost its claim; another attempt owns the job" if status == "lost" else status)
    return status


def _sentence(exc: Exception, settings: Settings) -> str:
    """The first line of a failed job's error: a disk error as a sentence naming the path and
    what to do (a full disk while writing a checkpoint, say), anything else as type: message."""
    if isinstance(exc, OSError) and not isinstance(exc, DiskError) and exc.errno in _DISK_ERRNOS:
        exc = disk_error(exc, exc.filename or settings.data_dir)
    if isinstance(exc, DiskError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _end_job(engine, job_id: int, attempt: int, status: str, kwargs: dict) -> str:
    """Write the end of the job under the claim; ``"lost"`` if the claim went meanwhile."""
    try:
        with Session(engine) as session, session.begin():
            if status == "failed":
                fail_job(session, job_id, kwargs["error"], log_tail=kwargs["log_tail"],
                         attempt=attempt)
            else:
                finish_job(session, job_id, attempt=attempt, **kwargs)
    except ClaimLost as exc:
        log.warning("%s", exc)
        return "lost"
    return status
