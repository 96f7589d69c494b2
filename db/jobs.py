"""The job queue that worker processes serve.

A job is queued, claimed by exactly one worker, reports progress and a heartbeat, and ends done,
failed or cancelled. :func:`claim_next_job` is atomic across processes and hosts: on PostgreSQL it
takes a row with ``SELECT ... FOR UPDATE SKIP LOCKED``; elsewhere a conditional
``UPDATE ... WHERE id = :id AND status = 'queued'`` wins only when it changes exactly one row.
Jobs whose heartbeat stopped are found by :func:`requeue_stale` and queued again up to a limit.

Each claim carries a fencing token, the attempt number (``attempts`` after the claim). A worker
passes it to every :func:`heartbeat`, :func:`report_progress`, :func:`finish_job` and
:func:`fail_job`; those change the row only while the job still runs under that attempt (one
conditional ``UPDATE``) and raise :class:`ClaimLost` otherwise. So a worker paused for longer
than the stale limit, whose job was requeued and claimed again, finds out at its next write and
stops, instead of finishing the job a second time.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from db.engine import commit_retrying, is_lock_error
from db.models import JOB_KINDS, Job, User, utcnow

__all__ = ["queue_job", "claim_next_job", "heartbeat", "report_progress", "is_cancel_requested",
           "request_cancel", "finish_job", "fail_job", "requeue_stale", "get_job", "list_jobs",
           "LOG_TAIL_CHARS", "jobs_table", "JOB_COLUMNS", "ClaimLost", "STALE_AFTER_S",
           "MAX_ATTEMPTS", "queue_count_chunks", "batch_jobs", "counted_images", "count_batches",
           "COUNT_CHUNK", "BATCH_COLUMNS"]

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 20_000
#: A running job whose heartbeat is older than this is taken to be orphaned (its worker died).
STALE_AFTER_S = 120.0
#: An orphaned job is queued again while it has been attempted fewer times than this.
MAX_ATTEMPTS = 3
Clock = Callable[[], dt.datetime]


class ClaimLost(RuntimeError):
    """The job no longer runs under this attempt: it was requeued (and maybe claimed again),
    or it ended. The worker holding the old attempt must stop without writing more."""


def _fenced(session: Session, job_id: int, attempt: int, values: dict[str, Any]) -> None:
    """Apply ``values`` to the job only while it runs under ``attempt``; else :class:`ClaimLost`."""
    done = session.execute(
        update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
        .values(**values).execution_options(synchronize_session=False))
    loaded = session.identity_map.get(identity_key(Job, job_id))
    if loaded is not None:
        session.expire(loaded)
    if done.rowcount != 1:
        now = session.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).first()
        state = f"is {now.status} at attempt {now.attempts}" if now else "is gone"
        raise ClaimLost(f"Job {job_id} {state}; attempt {attempt} lost its claim and stops.")


def _check_kinds(kinds: Iterable[str]) -> list[str]:
    kinds = list(kinds)
    bad = [k for k in kinds if k not in JOB_KINDS]
    if bad:
        raise ValueError(f"Unknown job kind {bad[0]!r}; use one of {', '.join(JOB_KINDS)}.")
    return kinds


def queue_job(session: Session, kind: str, *, project_id: int | None = None,
              config: dict[str, Any] | None = None, created_by: int | None = None,
              message: str = "Waiting for a worker.") -> Job:
    """Queue a job of ``kind`` (train, evaluate or count) with a JSON ``config``."""
    _check_kinds([kind])
    job = Job(kind=kind, project_id=project_id, config=dict(config or {}), created_by=created_by,
              status="queued", progress=0.0, message=message, attempts=0)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job:
    """A job by id; ValueError when there is none."""
    job = session.get(Job, job_id)
    if job is None:
        raise ValueError(f"There is no job {job_id}.")
    return job


def list_jobs(session: Session, *, project_id: int | None = None, status: str | None = None,
              kinds: Iterable[str] | None = None, limit: int = 100) -> list[Job]:
    """Jobs, newest first, optionally of one project, status or kinds."""
    query = select(Job)
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    if status is not None:
        query = query.where(Job.status == status)
    if kinds is not None:
        query = query.where(Job.kind.in_(_check_kinds(kinds)))
    return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def _candidates(kinds: list[str] | None, limit: int):
    query = select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(limit)
    return query if kinds is None else query.where(Job.kind.in_(kinds))


def _claim_values(host: str, pid: int, now: dt.datetime) -> dict[str, Any]:
    return dict(status="running", worker_host=host, worker_pid=pid, heartbeat_at=now,
                started_at=now, attempts=Job.attempts + 1, message="Started.", error=None)


def claim_next_job(bind: Engine | Session, *, host: str, pid: int,
                   kinds: Iterable[str] | None = None, clock: Clock = utcnow) -> int | None:
    """Atomically take the oldest queued job; return its id, or None when the queue is empty.

    Parameters
    ----------
    bind : Engine or Session
        Given an engine, the claim runs and commits in its own short transaction (what a worker
        wants). Given a session, it runs in the caller's transaction, which must commit soon:
        the claimed row stays locked until then on PostgreSQL.
    host, pid : str, int
        Recorded on the job, to find the worker again.
    kinds : iterable of str, optional
        Only claim jobs of these kinds.
    """
    kinds = None if kinds is None else _check_kinds(kinds)
    if isinstance(bind, Session):
        return _claim(bind, host, pid, kinds, clock)
    with Session(bind) as session, session.begin():
        return _claim(session, host, pid, kinds, clock)


def _claim(session: Session, host: str, pid: int, kinds: list[str] | None, clock: Clock) -> int | None:
    if session.get_bind().dialect.name == "postgresql":
        job_id = session.scalar(_candidates(kinds, 1).with_for_update(skip_locked=True))
        if job_id is None:
            return None
        session.execute(update(Job).where(Job.id == job_id).values(**_claim_values(host, pid, clock()))
                        .execution_options(synchronize_session=False))
        log.info("Worker %s:%s claimed job %s.", host, pid, job_id)
        return job_id
    for job_id in session.scalars(_candidates(kinds, 20)).all():
        won = session.execute(
            update(Job).where(Job.id == job_id, Job.status == "queued")
            .values(**_claim_values(host, pid, clock())).execution_options(synchronize_session=False))
        if won.rowcount == 1:
            log.info("Worker %s:%s claimed job %s.", host, pid, job_id)
            return job_id
    return None


def _write(session: Session, job_id: int, values: dict[str, Any], attempt: int | None) -> Job:
    """Set ``values`` on the job, fenced by ``attempt`` when one is given; the job, fresh."""
    if attempt is None:
        job = get_job(session, job_id)
        for name, value in values.items():
            setattr(job, name, value)
        session.flush()
        return job
    _fenced(session, job_id, attempt, values)
    return get_job(session, job_id)


def heartbeat(session: Session | Engine, job_id: int, *, attempt: int | None = None,
              clock: Clock = utcnow) -> bool:
    """Stamp a running job as alive; returns whether its cancel flag is set.

    With ``attempt`` (the claim's fencing token) the stamp is made only while the job still
    runs under that attempt; otherwise :class:`ClaimLost` is raised and nothing changes. Given
    an engine instead of a session, it commits in its own transaction and retries while the
    database is locked (see :func:`_locked_never_fails`).
    """
    if isinstance(session, Engine):
        return _locked_never_fails(session, lambda s: heartbeat(s, job_id, attempt=attempt,
                                                                clock=clock))
    return _write(session, job_id, {"heartbeat_at": clock()}, attempt).cancel_requested


def report_progress(session: Session | Engine, job_id: int, progress: float, message: str = "", *,
                    log_tail: str | None = None, attempt: int | None = None,
                    clock: Clock = utcnow) -> bool:
    """Record progress (0..1) and a message; also a heartbeat. Returns the cancel flag.

    Fenced by ``attempt`` and retried on an engine like :func:`heartbeat`.
    """
    if isinstance(session, Engine):
        return _locked_never_fails(session, lambda s: report_progress(
            s, job_id, progress, message, log_tail=log_tail, attempt=attempt, clock=clock))
    values: dict[str, Any] = {"progress": float(min(max(progress, 0.0), 1.0)),
                              "heartbeat_at": clock()}
    if message:
        values["message"] = message
    if log_tail is not None:
        values["log_tail"] = log_tail[-LOG_TAIL_CHARS:]
    return _write(session, job_id, values, attempt).cancel_requested


def _locked_never_fails(engine: Engine, write: Callable[[Session], bool]) -> bool:
    """Commit a progress write or heartbeat, retrying with backoff while the database is
    locked; if it is still locked after that, log it and go on (False: no cancel seen), so a
    busy database never fails a job. Other errors are raised."""
    try:
        return commit_retrying(engine, write, tries=8)
    except OperationalError as exc:
        if not is_lock_error(exc):
            raise
        log.warning("Job progress not recorded: the database stayed locked (%s).", exc.orig)
        return False


def is_cancel_requested(session: Session, job_id: int) -> bool:
    """Whether someone asked the job to stop (read fresh from the database)."""
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(session: Session, job_id: int, *, user_id: int | None = None) -> Job:
    """Ask a job to stop: a queued job is cancelled at once, a running one at its next check."""
    job = get_job(session, job_id)
    if job.status in ("done", "failed", "cancelled"):
        return job
    job.cancel_requested = True
    if job.status == "queued":
        _end(job, "cancelled", "Cancelled before it started.")
    session.flush()
    return job


def _end(job: Job, status: str, message: str) -> None:
    job.status = status
    job.message = message
    job.finished_at = utcnow()


def finish_job(session: Session, job_id: int, *, result: dict[str, Any] | None = None,
               message: str = "Done.", cancelled: bool = False,
               attempt: int | None = None) -> Job:
    """End a job as done (with a JSON ``result``) or, with ``cancelled``, as cancelled.

    With ``attempt`` only the claim holding that attempt may end it (:class:`ClaimLost`).
    """
    values: dict[str, Any] = {"status": "cancelled" if cancelled else "done",
                              "message": message, "finished_at": utcnow()}
    if not cancelled:
        values["progress"] = 1.0
    if result is not None:
        values["result"] = dict(result)
    return _write(session, job_id, values, attempt)


def fail_job(session: Session, job_id: int, error: str, log_tail: str = "", *,
             attempt: int | None = None) -> Job:
    """End a job as failed, keeping the error and the tail of its log (fenced by ``attempt``)."""
    values: dict[str, Any] = {
        "status": "failed", "finished_at": utcnow(), "error": error,
        "message": f"Failed: {error.splitlines()[0] if error else 'unknown error'}"}
    if log_tail:
        values["log_tail"] = log_tail[-LOG_TAIL_CHARS:]
    return _write(session, job_id, values, attempt)


def requeue_stale(session: Session, *, older_than_s: float, max_attempts: int,
                  clock: Clock = utcnow, dead: Iterable[int] = ()) -> dict[str, list[int]]:
    """Find running jobs whose heartbeat is older than ``older_than_s``; requeue or fail them.

    A job that has been attempted fewer than ``max_attempts`` times goes back to the queue
    (a training job resumes from its checkpoint); the others fail. Both keep a note in their
    error and log tail. ``dead`` names running jobs whose worker is known to be gone (its
    process no longer exists), taken at once whatever their heartbeat. Their old worker, if it
    ever wakes, finds its claim lost (see :class:`ClaimLost`). Returns
    ``{"requeued": [...], "failed": [...]}``.
    """
    cutoff = clock() - dt.timedelta(seconds=older_than_s)
    dead = [int(i) for i in dead]
    silent = Job.heartbeat_at < cutoff
    stale = list(session.scalars(select(Job).where(
        Job.status == "running", or_(silent, Job.id.in_(dead)) if dead else silent)
        .order_by(Job.id).with_for_update()))
    out: dict[str, list[int]] = {"requeued": [], "failed": []}
    for job in stale:
        note = (f"Worker {job.worker_host}:{job.worker_pid} stopped sending heartbeats "
                f"(last {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
                + (", and its process has ended." if job.id in dead else "."))
        job.log_tail = ((job.log_tail or "") + "\n" + note)[-LOG_TAIL_CHARS:]
        job.error = note
        if job.attempts < max_attempts:
            job.status, job.message = "queued", f"Requeued after attempt {job.attempts}: {note}"
            job.worker_host = job.worker_pid = None
            out["requeued"].append(job.id)
        else:
            _end(job, "failed", f"Gave up after {job.attempts} attempts: {note}")
            out["failed"].append(job.id)
    session.flush()
    if stale:
        log.warning("Stale jobs: %s", out)
    return out


JOB_COLUMNS = ["job_id", "kind", "status", "progress", "message", "created_at", "started_at",
               "finished_at", "duration_s", "error", "log_tail", "run_id", "run_dir", "created_by"]


def jobs_table(session: Session, project_id: int, *, kinds=None, limit: int = 50,
               now: dt.datetime | None = None) -> pd.DataFrame:
    """A project's jobs, newest first, with how long each ran.

    Returns
    -------
    DataFrame
        Columns :data:`JOB_COLUMNS`; ``duration_s`` runs to now for a running job and is NaN for
        one not started.
    """
    now = now or utcnow()
    q = select(Job).where(Job.project_id == project_id)
    if kinds is not None:
        q = q.where(Job.kind.in_(_check_kinds(kinds)))
    users = dict(session.execute(select(User.id, User.name)).all())
    rows = []
    for j in session.scalars(q.order_by(Job.id.desc()).limit(limit)):
        end = j.finished_at or (now if j.status == "running" else None)
        result = j.result or {}
        rows.append({
            "job_id": j.id, "kind": j.kind, "status": j.status, "progress": float(j.progress or 0),
            "message": j.message or "", "created_at": j.created_at, "started_at": j.started_at,
            "finished_at": j.finished_at,
            "duration_s": (end - j.started_at).total_seconds() if end and j.started_at
            else np.nan,
            "error": j.error or "", "log_tail": j.log_tail or "",
            "run_id": result.get("run_id"), "run_dir": result.get("run_dir"),
            "created_by": users.get(j.created_by, ""),
        })
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


# ---------------------------------------------------------------- count jobs in chunks

#: Images per count job: small enough that several workers share a batch of hundreds, large
#: enough that claiming and loading the network stay a small part of each job.
COUNT_CHUNK = 25
BATCH_COLUMNS = ["batch_id", "job_ids", "status", "progress", "message", "error", "n_images",
                 "n_chunks", "created_at"]


def queue_count_chunks(session: Session, *, project_id: int | None, config: dict[str, Any],
                       images, chunk_size: int = COUNT_CHUNK,
                       created_by: int | None = None) -> list[Job]:
    """Queue a count over ``images`` as jobs of ``chunk_size`` images each.

    Every chunk is an ordinary ``count`` job, so any number of workers claim them (atomically,
    as any job). They share ``config["batch"]``: the id of the first chunk, which also names the
    batch in :func:`count_batches`. ``config["chunk"]`` is each chunk's place in the batch.

    Parameters
    ----------
    images : sequence of dict
        The images to count, kept in the file store and never project images
        (``db.importing.store_for_count``: ``name, path, ...``). Each chunk's
        ``config["images"]`` holds its share, each with ``item``, its place in the batch; the
        store paths there keep the files through ``python -m db gc`` while the job exists.

    Returns
    -------
    list of Job
        The chunks in order.
    """
    entries = [{**dict(e), "item": n} for n, e in enumerate(images)]
    if not entries:
        raise ValueError("There are no images to count.")
    if any(not e.get("path") for e in entries):
        raise ValueError("Every image to count needs its store path ('path'); read them with "
                         "db.importing.store_for_count.")
    if chunk_size < 1:
        raise ValueError(f"A count chunk holds at least one image, got {chunk_size}.")
    parts = [entries[i:i + chunk_size] for i in range(0, len(entries), chunk_size)]
    jobs = [queue_job(session, "count", project_id=project_id, created_by=created_by,
                      config={**config, "images": part, "chunk": n, "chunks": len(parts)})
            for n, part in enumerate(parts)]
    for job in jobs:
        job.config = {**job.config, "batch": jobs[0].id}
    session.flush()
    return jobs


def _chunk_images(job: Job) -> list:
    """The images a count chunk names: stored entries, or an older count's project image ids."""
    config = job.config or {}
    return list(config.get("images") or config.get("image_ids") or [])


def counted_images(session: Session, batch_id: int) -> tuple[int | None, list[dict[str, Any]]]:
    """The project of count batch ``batch_id`` and the stored images it counted, in order.

    An older count, of images already in the project, names none.
    """
    chunks = batch_jobs(session, batch_id)
    return chunks[0].project_id, [dict(e) for j in chunks for e in _chunk_images(j)
                                  if isinstance(e, dict)]


def batch_jobs(session: Session, batch_id: int) -> list[Job]:
    """The count jobs of one batch in chunk order; a job queued before chunking is its own."""
    jobs = [j for j in session.scalars(select(Job).where(Job.kind == "count", Job.id >= batch_id)
                                       .order_by(Job.id))
            if (j.config or {}).get("batch", j.id) == batch_id]
    if not jobs:
        raise ValueError(f"There is no count batch {batch_id}.")
    return sorted(jobs, key=lambda j: (j.config or {}).get("chunk", 0))


def _batch_status(statuses: list[str]) -> str:
    """failed or cancelled when a chunk is; running while any runs or some are done; else one."""
    for status in ("failed", "cancelled"):
        if status in statuses:
            return status
    if all(s == "done" for s in statuses):
        return "done"
    return "queued" if all(s == "queued" for s in statuses) else "running"


def count_batches(session: Session, project_id: int, *, limit: int = 50) -> pd.DataFrame:
    """A project's count batches, newest first: the chunks' jobs summed up.

    Returns
    -------
    DataFrame
        Columns :data:`BATCH_COLUMNS`; ``progress`` is the mean over chunks, ``message`` says how
        many chunks are done, ``error`` is the first failed chunk's.
    """
    q = (select(Job).where(Job.project_id == project_id, Job.kind == "count")
         .order_by(Job.id.desc()))
    groups: dict[int, list[Job]] = {}
    for job in session.scalars(q):
        groups.setdefault(int((job.config or {}).get("batch", job.id)), []).append(job)
    rows = []
    for batch_id in sorted(groups, reverse=True)[:limit]:
        jobs = sorted(groups[batch_id], key=lambda j: (j.config or {}).get("chunk", 0))
        statuses = [j.status for j in jobs]
        done = statuses.count("done")
        running = [j.message for j in jobs if j.status == "running" and j.message]
        rows.append({
            "batch_id": batch_id, "job_ids": [j.id for j in jobs],
            "status": _batch_status(statuses),
            "progress": float(np.mean([float(j.progress or 0) for j in jobs])),
            "message": f"{done} of {len(jobs)} chunks done" + (f"; {running[0]}" if running
                                                               else ""),
            "error": next((j.error for j in jobs if j.status == "failed" and j.error), ""),
            "n_images": sum(len(_chunk_images(j)) for j in jobs),
            "n_chunks": len(jobs), "created_at": jobs[0].created_at})
    return pd.DataFrame(rows, columns=BATCH_COLUMNS)
