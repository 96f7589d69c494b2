"""What one Review click costs: a page's rows, and parameters bound by the page, not the project.

The Review page reads through two db functions per rerun (``db.review.metadata_values`` and
``db.review.review_screen``) plus the sidebar's ``db.review.project_state``; this test makes that
read for an image on the third page of a 240-image project, counting through SQLAlchemy's event
hooks what it fetches (``do_orm_execute``: every row of every statement) and binds
(``before_cursor_execute``: the parameters of every statement), on SQLite and PostgreSQL.
"""
import contextlib

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session

from db import review
from db.models import AdjudicationItem, Image, MaskVersion, ObjectDecision, Project, User
from db.projects import ImageFilter

N_IMAGES, PAGE = 240, 50


def _project(engine) -> tuple[int, int, list[int]]:
    """240 images with a head version each; every fifth has votes and an open item."""
    with Session(engine) as s, s.begin():
        user = User(name="ann", role="operator", password_hash="x")
        project = Project(name="p", stain="yellow")
        s.add_all([user, project])
        s.flush()
        s.execute(insert(Image), [dict(project_id=project.id, sha256=f"{i:064x}",
                                       path=f"images/{i}.png", original_name=f"img{i:03d}.png",
                                       width=64, height=64, split="train",
                                       animal=f"m{i % 3}") for i in range(N_IMAGES)])
        ids = list(s.scalars(select(Image.id).order_by(Image.id)))
        s.execute(insert(MaskVersion), [dict(image_id=i, source="auto", path="masks/x.png",
                                             sha256="0" * 64, object_count=3) for i in ids])
        heads = dict(s.execute(select(MaskVersion.image_id, MaskVersion.id)).all())
        for image in s.scalars(select(Image)):
            image.head_version_id = heads[image.id]
        s.execute(insert(ObjectDecision), [
            dict(image_id=i, version_id=heads[i], label=1, cell_key=1, centroid_row=5.0,
                 centroid_col=5.0, bbox=[0, 0, 9, 9], user_id=user.id, verdict="unsure")
            for i in ids[::5]])
        s.execute(insert(AdjudicationItem), [
            dict(project_id=project.id, image_id=i, kind="mask_object", reason="unsure",
                 status="open", centroid_row=5.0, centroid_col=5.0, bbox=[0, 0, 9, 9])
            for i in ids[::5]])
        return project.id, user.id, ids


@contextlib.contextmanager
def _counting(engine, session):
    """Rows fetched (ORM statements) and the largest number of parameters of one statement."""
    seen = {"rows": 0, "params": 0, "statements": 0}

    def fetched(state):
        frozen = state.invoke_statement().freeze()
        seen["rows"] += len(frozen().all())
        return frozen()

    def bound(conn, cursor, statement, parameters, context, executemany):
        many = parameters if executemany else [parameters]
        seen["params"] = max([seen["params"], *(len(p or ()) for p in many)])
        seen["statements"] += 1

    event.listen(session, "do_orm_execute", fetched)
    event.listen(engine, "before_cursor_execute", bound)
    try:
        yield seen
    finally:
        event.remove(session, "do_orm_execute", fetched)
        event.remove(engine, "before_cursor_execute", bound)


def test_a_review_click_reads_a_page_not_the_project(engine):
    project_id, user_id, ids = _project(engine)
    target = ids[2 * PAGE + 7]  # on the third page
    filters = ImageFilter(status=("to_review", "in_progress", "approved"))
    with Session(engine) as s, _counting(engine, s) as seen:
        review.metadata_values(s, project_id)
        screen = review.review_screen(s, project_id, target, user_id, filters, page_size=PAGE)
        review.project_state(s, project_id)
    assert screen.image.id == target and screen.position.page.page == 2
    assert len(screen.position.page.rows) == PAGE and screen.position.page.total == N_IMAGES
    assert (screen.position.previous, screen.position.next) == (target - 1, target + 1)
    print(f"\n{engine.dialect.name}: one Review click fetched {seen['rows']} rows in "
          f"{seen['statements']} statements, at most {seen['params']} parameters")
    assert seen["rows"] <= PAGE + 20, seen
    assert seen["params"] <= PAGE + 20, seen
    # The page's own counts come with it: votes and open items on every fifth image.
    marked = {r.image_id for r in screen.position.page.rows if r.pending_adjudications}
    assert marked == set(ids[2 * PAGE:3 * PAGE:5]) and all(
        r.unsure == 1 for r in screen.position.page.rows if r.image_id in marked)


def test_the_counter_sees_a_whole_project_read(engine):
    """The check can fail: listing every image goes over the page's budget."""
    project_id, _, _ = _project(engine)
    with Session(engine) as s, _counting(engine, s) as seen:
        review.image_counts(s, project_id)
    assert seen["rows"] > PAGE + 20


def test_filter_choices_are_the_distinct_values_of_the_project(engine):
    project_id, _, ids = _project(engine)
    with Session(engine) as s, s.begin():
        other = Project(name="other", stain="red")
        s.add(other)
        s.flush()
        s.add(Image(project_id=other.id, sha256="f" * 64, path="x", original_name="o.png",
                    width=8, height=8, split="train", animal="elsewhere", region="CA3"))
        first, second = s.get(Image, ids[0]), s.get(Image, ids[1])
        first.region, second.region, second.condition = "CA1", "", "saline"
    with Session(engine) as s:
        got = review.metadata_values(s, project_id)
    # m0, m1, m2 from the fill; empty and NULL values and the other project's never listed.
    assert got == [("animal", "m0"), ("animal", "m1"), ("animal", "m2"), ("region", "CA1"),
                   ("condition", "saline")]
