"""How long importing 100 images takes (target: <= 30 s without pre-labelling), and how long an
import holds SQLite's write lock while it runs.

Writes an FNC v1-like tree of N 1600x1200 RGB PNGs with their 0/255 masks (synthetic
fluorescence from ``core.synthetic``, each made distinct by its own faint noise) into a scratch
folder, then imports it into a fresh SQLite database with pre-labelling off, twice:

* per image (``import_path(engine, ...)``, what the app and the command line do): files are read,
  decoded and stored outside the database, then each image is committed in a short transaction;
* in one transaction (``import_path(session, ...)``, the way every import ran before): the write
  lock is taken at the first image and held until the end.

For each it prints the wall time, the write lock's hold time per transaction (from the first
INSERT/UPDATE of a transaction to its commit: the longest, the median, and their total), and the
longest wait a second writer saw, saving a small row every 0.2 s on its own connection meanwhile
(what a person saving a mask during an import waits). A third timing imports the images without
masks. Setup (drawing and encoding the files) is not timed.

Run::

    .venv/bin/python bench/bench_import.py            # 100 images
    .venv/bin/python bench/bench_import.py --n 20     # quicker look
"""
from __future__ import annotations

import argparse
import io
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from common import machine_line, peak_rss_mb, today  # noqa: E402
from core import io as core_io  # noqa: E402
from core.synthetic import make_image  # noqa: E402
from db import audit  # noqa: E402
from db.engine import make_engine, upgrade  # noqa: E402
from db.importing import ImportOptions, import_path  # noqa: E402
from db.projects import create_project  # noqa: E402
from db.settings import Settings  # noqa: E402

SHAPE = (1200, 1600)
_WRITES = ("INSERT", "UPDATE", "DELETE")


def write_tree(root: Path, n: int, seed: int = 0) -> None:
    """N distinct image/mask pairs in the FNC v1 layout (a few base scenes, own noise each)."""
    rng = np.random.default_rng(seed)
    bases = [make_image(rng, shape=SHAPE) for _ in range(4)]
    images, masks = root / "all_images" / "images", root / "all_masks" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for k in range(n):
        rgb, labels = bases[k % len(bases)]
        noisy = np.clip(rgb.astype(np.int16) + rng.integers(0, 3, rgb.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        # Level 1 keeps setup short; decoding speed hardly depends on the level.
        PILImage.fromarray(noisy).save(buffer, format="PNG", compress_level=1)
        name = f"Mar{19 + k % 20}bS1C{k % 6 + 1}R{k % 3 + 1}_DMl_200x_y_{k:03d}.png"
        (images / name).write_bytes(buffer.getvalue())
        core_io.write_mask(masks / name, labels > 0)


class LockClock:
    """Write-lock hold times of an engine's transactions: first write statement to commit."""

    def __init__(self, engine):
        self.holds: list[float] = []
        self._since: float | None = None
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _statement(self, conn, cursor, statement, *args):
        if self._since is None and statement.lstrip().upper().startswith(_WRITES):
            self._since = time.perf_counter()

    def _end(self, conn):
        if self._since is not None:
            self.holds.append(time.perf_counter() - self._since)
            self._since = None


def other_writer(url: str, stop: threading.Event, waits: list[float]) -> None:
    """Save a small row every 0.2 s on another connection; record how long each took."""
    engine = make_engine(url)
    while not stop.wait(0.2):
        start = time.perf_counter()
        try:
            with Session(engine) as s, s.begin():
                audit.record(s, user_id=None, action="bench.save", entity="bench", entity_id=0,
                             detail={})
            waits.append(time.perf_counter() - start)
        except Exception:  # "database is locked" after the busy timeout: the wait was that long
            waits.append(time.perf_counter() - start)
    engine.dispose()


def time_import(data: Path, source: Path, project: str, fmt: str, *, per_image: bool) -> dict:
    """Seconds for one import batch, its lock holds, the other writer's waits, its summary."""
    settings = Settings(data_dir=data, db_url=f"sqlite:///{data / 'bench.db'}",
                        import_roots=(data, source))
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        create_project(s, project, stain="yellow")
    clock, waits, stop = LockClock(engine), [], threading.Event()
    writer = threading.Thread(target=other_writer, args=(settings.db_url, stop, waits))
    writer.start()
    start = time.perf_counter()
    options = ImportOptions(prelabel=False)
    try:
        if per_image:
            report = import_path(engine, settings, source, project=project, fmt=fmt,
                                 options=options)
        else:
            with Session(engine) as s, s.begin():
                report = import_path(s, settings, source, project=project, fmt=fmt,
                                     options=options)
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        writer.join()
        engine.dispose()
    return {"seconds": seconds, "holds": clock.holds, "waits": waits,
            "summary": report.summary()}


def describe(label: str, n: int, got: dict) -> str:
    holds, waits = got["holds"] or [0.0], got["waits"] or [0.0]
    return (f"{label}: {got['seconds']:.1f} s, {1000 * got['seconds'] / n:.0f} ms/image; "
            f"write lock held {len(got['holds'])} times, longest {1000 * max(holds):.0f} ms, "
            f"median {1000 * statistics.median(holds):.1f} ms, total {sum(holds):.2f} s; "
            f"another writer waited at most {1000 * max(waits):.0f} ms over {len(got['waits'])} "
            f"saves -- {got['summary']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="ct-bench-import-"))
    try:
        tree = scratch / "fnc1"
        write_tree(tree, args.n)
        print(machine_line())
        print(f"date: {today()}; {args.n} images of {SHAPE[1]}x{SHAPE[0]}, pre-labelling off")
        per_image = time_import(scratch / "data1", tree, "with masks", "fnc", per_image=True)
        print(describe("with masks, per image (FNC v1, approved)", args.n, per_image))
        whole = time_import(scratch / "data2", tree, "with masks", "fnc", per_image=False)
        print(describe("with masks, one transaction (before)     ", args.n, whole))
        bare = time_import(scratch / "data3", tree / "all_images" / "images", "images only",
                           "folder", per_image=True)
        print(describe("images only, per image (folder)         ", args.n, bare))
        worst = max(per_image["seconds"], whole["seconds"], bare["seconds"])
        print(f"peak RSS: {peak_rss_mb():.0f} MiB; target <= 30 s for 100 images: "
              f"{'met' if worst * 100 / args.n <= 30 else 'MISSED'}; longest lock hold per "
              f"image / one transaction: {max(per_image['holds']) / max(whole['holds']):.4f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
