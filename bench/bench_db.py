"""Database benchmarks (issue 3): the review queue at scale, and importing 100 full-size images.

Run: ``.venv/bin/python bench/bench_db.py [--db-url URL]`` (SQLite in a temporary folder by
default; pass a ``postgresql+psycopg://`` URL of an empty database for PostgreSQL).

1. 10,000 images, each with a head mask version, and 100,000 object decisions (bulk inserted),
   then one page (50 rows) of the review queue: unfiltered, filtered by split and status, and deep
   in the list. Target: at most 100 ms.
2. Importing 100 images of 1600x1200 (a folder of PNGs) without pre-labelling through
   ``db.importing.import_path``. Target: at most 30 s.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line, median_time, today  # noqa: E402
from core import io as core_io  # noqa: E402
from db.engine import make_engine, upgrade  # noqa: E402
from db.models import Image, MaskVersion, ObjectDecision, utcnow  # noqa: E402
from db.projects import create_project  # noqa: E402
from db.projects import ImageFilter  # noqa: E402
from db.review import review_queue  # noqa: E402
from db.settings import Settings  # noqa: E402

N_IMAGES, N_DECISIONS, PAGE_LIMIT_MS, IMPORT_LIMIT_S = 10_000, 100_000, 100.0, 30.0


def fill(engine, seed: int = 0) -> int:
    """Bulk-insert the large project; returns its id."""
    rng = np.random.default_rng(seed)
    now = utcnow()
    with Session(engine) as s, s.begin():
        pid = create_project(s, "bench", stain="yellow").id
        s.execute(insert(Image), [dict(
            project_id=pid, sha256=f"{i:064x}", path=f"/x/{i}.png", original_name=f"img{i:05d}.png",
            width=1600, height=1200, stain="yellow", animal=f"A{i % 20}", region=f"R{i % 7}",
            split=("train", "test", "unassigned")[i % 3],
            review_status=("to_review", "in_progress", "approved")[int(rng.integers(3))],
            created_at=now) for i in range(N_IMAGES)])
        ids = sorted(s.scalars(select(Image.id).where(Image.project_id == pid)))
        s.execute(insert(MaskVersion), [dict(
            image_id=i, source="auto", path="/m.png", sha256="0" * 64,
            object_count=int(rng.integers(0, 40)), note="", conflict=False, created_at=now)
            for i in ids])
        s.execute(Image.__table__.update().values(
            head_version_id=select(MaskVersion.id).where(MaskVersion.image_id == Image.id)
            .scalar_subquery()))
        heads = dict(s.execute(select(Image.id, Image.head_version_id)).all())
        picks = rng.choice(ids, N_DECISIONS)
        s.execute(insert(ObjectDecision), [dict(
            image_id=int(i), version_id=heads[int(i)], label=int(rng.integers(1, 40)), cell_key=k,
            centroid_row=1.0, centroid_col=1.0, bbox=[0, 0, 2, 2],
            verdict=("keep", "drop", "unsure")[k % 3], reason="", created_at=now)
            for k, i in enumerate(picks)])
    return pid


def bench_queue(engine) -> dict[str, float]:
    """Median milliseconds for one page of the queue, three ways."""
    pid = fill(engine)
    cases = {"first page": (ImageFilter(), 0),
             "split=test, status=to_review": (ImageFilter(split="test", status="to_review"), 0),
             "page 150 of 200": (ImageFilter(), 150)}
    out = {}
    for label, (filters, page) in cases.items():
        def one():
            with Session(engine) as s:
                assert review_queue(s, pid, filters, page=page, page_size=50).rows
        out[label] = 1000 * median_time(one, repeat=15, warmup=2)
    return out


def bench_import(settings: Settings, n: int = 100) -> float:
    """Seconds to import ``n`` 1600x1200 PNGs (no pre-labelling) as one batch."""
    from core.synthetic import make_image
    from db.importing import ImportOptions, import_path

    folder = settings.data_dir / "incoming"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    bases = [make_image(rng)[0] for _ in range(5)]  # drawing is slow; vary copies instead
    for i in range(n):
        rgb = bases[i % 5].copy()
        rgb[0, :8, 2] = [(i >> b) & 1 for b in range(8)]  # distinct pixels, distinct hash
        core_io.write_image(folder / f"Mar19bS1C{i}R1_DMR_200x_y.png", rgb)
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        create_project(s, "import-bench", stain="yellow")
    start = time.perf_counter()
    with Session(engine) as s, s.begin():
        report = import_path(s, settings, folder, project="import-bench",
                             options=ImportOptions(prelabel=False))
    took = time.perf_counter() - start
    assert len(report.imported) == n, report.summary()
    return took


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=None, help="empty database for the queue benchmark")
    parser.add_argument("--skip-import", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"# bench_db, {today()}; {machine_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{tmp}/queue.db"
        engine = make_engine(url)
        upgrade(engine)
        backend = engine.dialect.name
        for label, ms in bench_queue(engine).items():
            flag = "ok" if ms <= PAGE_LIMIT_MS else "TOO SLOW"
            print(f"review queue ({backend}, {N_IMAGES} images, {N_DECISIONS} decisions), "
                  f"{label}: {ms:.1f} ms (limit {PAGE_LIMIT_MS:.0f}) {flag}", flush=True)
        if not args.skip_import:
            data = Path(tmp) / "data"
            settings = Settings(data_dir=data, db_url=f"sqlite:///{data / 'celltally.db'}",
                                import_roots=(data,))
            s = bench_import(settings)
            flag = "ok" if s <= IMPORT_LIMIT_S else "TOO SLOW"
            print(f"import 100 images 1600x1200, no pre-labelling (sqlite): {s:.1f} s "
                  f"(limit {IMPORT_LIMIT_S:.0f}) {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
