"""The job queue: claiming is atomic across processes, stale jobs are requeued."""
import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from db import jobs
from db.models import Job, utcnow

ROOT = Path(__file__).resolve().parents[2]

RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from db.engine import make_engine
    from db.jobs import claim_next_job
    url, go, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    engine = make_engine(url)
    while not go.exists():
        time.sleep(0.005)
    got = []
    while (job := claim_next_job(engine, host=me, pid=os.getpid())) is not None:
        got.append(job)
    print(json.dumps(got))
""")


def test_queue_claim_progress_finish(engine):
    with Session(engine) as s, s.begin():
        first = jobs.queue_job(s, "train", config={"epochs": 1}).id
        count = jobs.queue_job(s, "count").id
    assert jobs.claim_next_job(engine, host="h", pid=1, kinds=["count"]) == count
    assert jobs.claim_next_job(engine, host="h", pid=2) == first
    assert jobs.claim_next_job(engine, host="h", pid=3) is None
    with Session(engine) as s, s.begin():
        assert jobs.report_progress(s, first, 0.5, "epoch 1/2", log_tail="x" * 30_000) is False
        jobs.request_cancel(s, first)
    with Session(engine) as s, s.begin():
        assert jobs.is_cancel_requested(s, first)
        jobs.finish_job(s, first, cancelled=True, message="Cancelled at epoch 1.")
        jobs.fail_job(s, count, "ValueError: bad image\nmore", log_tail="boom")
    with Session(engine) as s:
        a, b = s.get(Job, first), s.get(Job, count)
        assert (a.status, a.progress, a.attempts, a.worker_pid) == ("cancelled", 0.5, 1, 2)
        assert len(a.log_tail) == jobs.LOG_TAIL_CHARS and a.heartbeat_at.tzinfo is not None
        assert (b.status, b.error, b.log_tail) == ("failed", "ValueError: bad image\nmore", "boom")
        assert [j.id for j in jobs.list_jobs(s)] == [count, first]


def test_cancel_before_start_cancels_at_once(engine):
    with Session(engine) as s, s.begin():
        job = jobs.queue_job(s, "evaluate")
        jobs.request_cancel(s, job.id)
        assert job.status == "cancelled"
    assert jobs.claim_next_job(engine, host="h", pid=1) is None


def test_two_processes_never_claim_the_same_job(engine, tmp_path):
    n = 30
    with Session(engine) as s, s.begin():
        ids = [jobs.queue_job(s, "count").id for _ in range(n)]
    url = engine.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, url, str(go), f"w{i}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    go.touch()
    claimed = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        claimed.append(json.loads(out.strip().splitlines()[-1]))
    every = [j for got in claimed for j in got]
    assert sorted(every) == ids  # each job once, none twice
    with Session(engine) as s:
        rows = [s.get(Job, i) for i in ids]
        assert all(r.status == "running" and r.attempts == 1 for r in rows)
        owner = {j: f"w{k}" for k, got in enumerate(claimed) for j in got}
        assert all(r.worker_host == owner[r.id] for r in rows)


def test_requeue_stale_requeues_then_gives_up(engine):
    t0 = utcnow()
    with Session(engine) as s, s.begin():
        job = jobs.queue_job(s, "train").id
        alive = jobs.queue_job(s, "count").id
    clock = lambda: t0  # noqa: E731
    assert jobs.claim_next_job(engine, host="a", pid=1, kinds=["train"], clock=clock) == job
    assert jobs.claim_next_job(engine, host="b", pid=2, clock=clock) == alive
    later = lambda: t0 + dt.timedelta(seconds=120)  # noqa: E731
    with Session(engine) as s, s.begin():
        jobs.heartbeat(s, alive, clock=lambda: t0 + dt.timedelta(seconds=100))
        out = jobs.requeue_stale(s, older_than_s=60, max_attempts=2, clock=later)
    assert out == {"requeued": [job], "failed": []}
    with Session(engine) as s:
        row = s.get(Job, job)
        assert row.status == "queued" and "heartbeats" in row.error and "heartbeats" in row.log_tail
        assert s.get(Job, alive).status == "running"
    assert jobs.claim_next_job(engine, host="c", pid=3, kinds=["train"], clock=later) == job
    with Session(engine) as s, s.begin():
        out = jobs.requeue_stale(s, older_than_s=60, max_attempts=2,
                                 clock=lambda: t0 + dt.timedelta(seconds=600))
    assert out == {"requeued": [alive], "failed": [job]}  # alive had one attempt left
    with Session(engine) as s:
        row = s.get(Job, job)
        assert row.status == "failed" and row.attempts == 2 and row.finished_at is not None


def test_a_worker_that_lost_its_claim_can_no_longer_write(engine):
    t0 = utcnow()
    with Session(engine) as s, s.begin():
        job = jobs.queue_job(s, "train").id
    assert jobs.claim_next_job(engine, host="a", pid=1, clock=lambda: t0) == job
    with Session(engine) as s, s.begin():
        assert not jobs.heartbeat(s, job, attempt=1, clock=lambda: t0)
        jobs.report_progress(s, job, 0.4, "first attempt", attempt=1)
        # Paused past the stale limit: requeued, and claimed by a second worker (attempt 2).
        assert jobs.requeue_stale(s, older_than_s=60, max_attempts=3,
                                  clock=lambda: t0 + dt.timedelta(seconds=90))["requeued"] == [job]
    assert jobs.claim_next_job(engine, host="b", pid=2) == job
    with Session(engine) as s, s.begin():
        jobs.report_progress(s, job, 0.1, "second attempt", attempt=2)
    stale_writes = [
        lambda s: jobs.heartbeat(s, job, attempt=1),
        lambda s: jobs.report_progress(s, job, 0.9, "first attempt again", attempt=1),
        lambda s: jobs.finish_job(s, job, result={"run_dir": "runs/x-a1"}, attempt=1),
        lambda s: jobs.fail_job(s, job, "late failure", attempt=1),
    ]
    for write in stale_writes:
        with Session(engine) as s, s.begin():
            with pytest.raises(jobs.ClaimLost, match="attempt 1 lost its claim"):
                write(s)
    with Session(engine) as s:
        row = s.get(Job, job)
        assert (row.status, row.attempts, row.progress, row.message, row.worker_host) == (
            "running", 2, 0.1, "second attempt", "b")
    with Session(engine) as s, s.begin():
        jobs.finish_job(s, job, result={"run_dir": "runs/x-a2"}, attempt=2)
    with Session(engine) as s, s.begin():  # ended: even its own attempt writes no more
        with pytest.raises(jobs.ClaimLost, match="is done"):
            jobs.report_progress(s, job, 0.5, "after the end", attempt=2)
    with Session(engine) as s:
        row = s.get(Job, job)
        assert (row.status, row.progress, row.result) == ("done", 1.0, {"run_dir": "runs/x-a2"})


def test_a_job_whose_worker_process_ended_is_requeued_at_once(engine):
    with Session(engine) as s, s.begin():
        gone, busy = jobs.queue_job(s, "train").id, jobs.queue_job(s, "count").id
    jobs.claim_next_job(engine, host="h", pid=11)
    jobs.claim_next_job(engine, host="h", pid=12)
    with Session(engine) as s, s.begin():
        out = jobs.requeue_stale(s, older_than_s=3600, max_attempts=3, dead=[gone])
    assert out == {"requeued": [gone], "failed": []}
    with Session(engine) as s:
        assert s.get(Job, gone).status == "queued" and "process has ended" in s.get(Job, gone).error
        assert s.get(Job, busy).status == "running"
