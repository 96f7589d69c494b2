"""Scale benchmark (issue 14, item 10): a Review click with 100,000 images and 1,000,000 decisions.

Run by hand (it is not part of ``make test``; ``tests/db/test_bench_scale.py`` runs a tiny one)::

    .venv/bin/python bench/bench_scale.py                      # SQLite in a temporary folder
    .venv/bin/python bench/bench_scale.py --db-url postgresql+psycopg://user@host/empty_db

The database is filled in bulk (PostgreSQL's COPY, SQLite's executemany): one project of
``--images`` images, each with a head mask version, and ``--decisions`` object decisions spread
over them, then ``ANALYZE`` (what a long-lived database has). One click on the Review page is
what the server does for it, in the page's order: the sidebar (the user, the projects, the
project's state), the filter choices, ``db.review.queue_position`` for the clicked image (its
page of the queue, the totals, its neighbours) and what ``pages/review.py`` reads for the image
(its row, blind assignment, the version shown, the decisions visible). Reading the PNG files is
left out: the page caches them per image, and they cost the same at any scale. Clicked images
are drawn at random over the whole queue, deep pages included.

One session clicks ``--clicks`` times; then 5 sessions click at once, each in its own thread
with its own connection (Streamlit serves sessions as threads of one process). Targets: a click
takes at most 0.5 s alone (median), and at most 1 s for each of 5 concurrent sessions (median
and 95th percentile reported).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line, today  # noqa: E402
from db import adjudication, masks, review  # noqa: E402
from db.engine import make_engine, upgrade  # noqa: E402
from db.models import Image, MaskVersion, Project, User, utcnow  # noqa: E402
from db.projects import ImageFilter, get_image, list_projects  # noqa: E402
from db.users import get_user  # noqa: E402

N_IMAGES, N_DECISIONS, CLICKS = 100_000, 1_000_000, 30
ALONE_LIMIT_S, CONCURRENT_LIMIT_S, SESSIONS = 0.5, 1.0, 5
#: What the Review page filters by when it opens (its default status choice).
OPEN_FILTER = ImageFilter(status=("to_review", "in_progress"))
_DECISION_COLUMNS = ("image_id", "version_id", "label", "cell_key", "centroid_row",
                     "centroid_col", "bbox", "user_id", "verdict", "reason", "created_at")
_BATCH = 20_000


@dataclass(frozen=True)
class Filled:
    """The filled project: its id, the reviewing user's name and id, and every image id."""

    project_id: int
    user: str
    user_id: int
    image_ids: list


def _images(pid: int, lo: int, hi: int, rng, now) -> list[dict]:
    statuses = ("to_review", "in_progress", "approved")
    return [dict(project_id=pid, sha256=f"{i:064x}", path=f"images/{i % 256:02x}/{i:064x}.png",
                 original_name=f"Mar19bS1C{i}R1_DMR_200x_y.png", width=1600, height=1200,
                 stain="yellow", animal=f"A{i % 20}", region=f"R{i % 7}", condition="ctl",
                 split=("train", "test", "unassigned")[i % 3], split_locked=False, hard=False,
                 hand_segmented=False, unlabelled=False, archived=False,
                 review_status=statuses[int(rng.integers(3))], created_at=now)
            for i in range(lo, hi)]


def _copy_decisions(conn, rows) -> None:
    """PostgreSQL: stream rows through COPY (an order of magnitude faster than INSERT)."""
    cursor = conn.connection.driver_connection.cursor()
    columns = ", ".join(_DECISION_COLUMNS)
    with cursor.copy(f"COPY object_decisions ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _executemany_decisions(conn, rows) -> None:
    """SQLite: the driver's executemany on the raw connection, in batches."""
    raw = conn.connection.driver_connection
    sql = (f"INSERT INTO object_decisions ({', '.join(_DECISION_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_DECISION_COLUMNS))})")
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            raw.executemany(sql, batch)
            batch = []
    if batch:
        raw.executemany(sql, batch)


def fill(engine, n_images: int = N_IMAGES, n_decisions: int = N_DECISIONS,
         seed: int = 0) -> Filled:
    """Bulk-fill one project; returns what the clicks need."""
    rng = np.random.default_rng(seed)
    now = utcnow()
    with Session(engine) as s, s.begin():
        project = Project(name="scale", stain="yellow", pixel_size_um=0.5)
        user = User(name="op", role="operator", password_hash="not used", disabled=False)
        s.add_all([project, user])
        s.flush()
        pid, uid = project.id, user.id
        for lo in range(0, n_images, _BATCH):
            s.execute(insert(Image), _images(pid, lo, min(lo + _BATCH, n_images), rng, now))
        ids = list(s.scalars(select(Image.id).where(Image.project_id == pid).order_by(Image.id)))
        for lo in range(0, len(ids), _BATCH):
            s.execute(insert(MaskVersion), [dict(
                image_id=i, source="auto", path=f"masks/00/{i:064x}.png", sha256=f"{i:064x}",
                object_count=int(rng.integers(0, 40)), note="", conflict=False, created_at=now)
                for i in ids[lo:lo + _BATCH]])
        s.execute(update(Image).where(Image.project_id == pid).values(
            head_version_id=select(MaskVersion.id).where(MaskVersion.image_id == Image.id)
            .scalar_subquery()))
        heads = dict(s.execute(select(Image.id, Image.head_version_id)).all())
        conn = s.connection()
        postgres = conn.dialect.name == "postgresql"
        stamp = now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f")
        picks = rng.choice(np.asarray(ids), n_decisions)
        labels = rng.integers(1, 40, n_decisions)
        rows = ((int(i), heads[int(i)], int(lab), k, 1.0, 1.0, "[0, 0, 2, 2]",
                 uid if k % 4 == 0 else None, ("keep", "drop", "unsure")[k % 3], "", stamp)
                for k, (i, lab) in enumerate(zip(picks, labels)))
        (_copy_decisions if postgres else _executemany_decisions)(conn, rows)
    with engine.begin() as conn:
        for table in ("images", "mask_versions", "object_decisions"):
            conn.execute(text(f"ANALYZE {table}"))
    return Filled(pid, "op", uid, ids)


STAGES = ("sidebar", "filter choices", "queue_position", "image")


def review_click(engine, filled: Filled, image_id: int, filters: ImageFilter = OPEN_FILTER, *,
                 stages: dict[str, list[float]] | None = None) -> int:
    """What the server reads for one click on the Review page; the id of the image shown.

    With ``stages``, each stage's seconds are appended under its name (:data:`STAGES`).
    """
    marks = [time.perf_counter()]
    with Session(engine) as s:   # pages/ui.py: the user, the project picker, the sidebar
        get_user(s, filled.user)
        list_projects(s)
        review.project_state(s, filled.project_id)
    marks.append(time.perf_counter())
    with Session(engine) as s:   # pages/review.py, in its order
        review.metadata_values(s, filled.project_id)
    marks.append(time.perf_counter())
    with Session(engine) as s:
        where = review.queue_position(s, filled.project_id, image_id, filters, page_size=50)
    marks.append(time.perf_counter())
    with Session(engine) as s:
        shown = where.image_id
        image = get_image(s, shown)
        masks.blind_assignment(s, shown, filled.user_id)
        head = masks.review_version(s, shown, filled.user_id)
        votes = adjudication.visible_decisions(s, shown, filled.user_id)
        assert image.head_version_id == (head.id if head else None)
        assert all(v.image_id == shown for v in votes)
    marks.append(time.perf_counter())
    if stages is not None:
        for name, a, b in zip(STAGES, marks, marks[1:]):
            stages.setdefault(name, []).append(b - a)
    return shown


def clicks(engine, filled: Filled, n: int, seed: int,
           stages: dict[str, list[float]] | None = None) -> list[float]:
    """Seconds of ``n`` clicks on images drawn at random (a first, untimed click warms up)."""
    rng = np.random.default_rng(seed)
    review_click(engine, filled, filled.image_ids[0])
    out = []
    for image_id in rng.choice(np.asarray(filled.image_ids), n):
        start = time.perf_counter()
        review_click(engine, filled, int(image_id), stages=stages)
        out.append(time.perf_counter() - start)
    return out


def concurrent_clicks(engine, filled: Filled, n: int, sessions: int = SESSIONS) -> list[float]:
    """Seconds of every click of ``sessions`` threads clicking ``n`` times each, all at once."""
    gate = threading.Barrier(sessions)
    results: list[list[float]] = [[] for _ in range(sessions)]

    def one(k: int) -> None:
        gate.wait()
        results[k] = clicks(engine, filled, n, seed=100 + k)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for r in results for x in r]


def _summary(seconds: list[float]) -> str:
    q95 = float(np.percentile(seconds, 95))
    return (f"median {statistics.median(seconds):.3f} s, p95 {q95:.3f} s, "
            f"max {max(seconds):.3f} s over {len(seconds)} clicks")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=None, help="an EMPTY database (default: SQLite)")
    parser.add_argument("--images", type=int, default=N_IMAGES)
    parser.add_argument("--decisions", type=int, default=N_DECISIONS)
    parser.add_argument("--clicks", type=int, default=CLICKS, help="clicks per session")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"# bench_scale, {today()}; {machine_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args.db_url or f"sqlite:///{tmp}/scale.db")
        upgrade(engine)
        backend = engine.dialect.name
        start = time.perf_counter()
        filled = fill(engine, args.images, args.decisions)
        print(f"{backend}: filled {args.images} images and {args.decisions} decisions in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        stages: dict[str, list[float]] = {}
        alone = clicks(engine, filled, args.clicks, seed=1, stages=stages)
        flag = "ok" if statistics.median(alone) <= ALONE_LIMIT_S else "TOO SLOW"
        print(f"{backend}: Review click, 1 session: {_summary(alone)} "
              f"(target median <= {ALONE_LIMIT_S} s) {flag}", flush=True)
        print(f"{backend}:   of which (medians) " + ", ".join(
            f"{name} {1000 * statistics.median(stages[name]):.0f} ms" for name in STAGES),
            flush=True)
        together = concurrent_clicks(engine, filled, args.clicks)
        flag = "ok" if np.percentile(together, 95) <= CONCURRENT_LIMIT_S else "TOO SLOW"
        print(f"{backend}: Review click, {SESSIONS} concurrent sessions: {_summary(together)} "
              f"(target each <= {CONCURRENT_LIMIT_S} s, checked at p95) {flag}", flush=True)
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
