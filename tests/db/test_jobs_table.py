"""The Train and Count pages' job table."""

from sqlalchemy.orm import Session

from db import jobs
from tests.db.world import at, mask, scored, world  # noqa: F401 (fixtures)


def test_jobs_table_durations(world):
    from db.models import Job

    engine, _, ids = world
    with Session(engine) as s, s.begin():
        s.add_all([Job(project_id=ids["project"], kind="train", status="done",
                       started_at=at(0), finished_at=at(90)),
                   Job(project_id=ids["project"], kind="train", status="running",
                       started_at=at(100)),
                   Job(project_id=ids["project"], kind="count", status="queued")])
    with Session(engine) as s:
        t = jobs.jobs_table(s, ids["project"], kinds=("train",), now=at(130))
    assert list(t["status"]) == ["running", "done"]
    assert list(t["duration_s"]) == [1800.0, 5400.0]
