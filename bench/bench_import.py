"""How long importing 100 full-size images takes (target: <= 30 s without pre-labelling).

Writes an FNC v1-like tree of N 1600x1200 RGB PNGs with their 0/255 masks (synthetic
fluorescence from ``core.synthetic``, each made distinct by its own faint noise) into a scratch
folder, then times ``db.importing.import_path`` into a fresh SQLite database, in one transaction,
with pre-labelling off. A second timing imports the same images without masks. Setup (drawing and
encoding the files) is not timed.

Run::

    .venv/bin/python bench/bench_import.py            # 100 images
    .venv/bin/python bench/bench_import.py --n 20     # quicker look
"""
from __future__ import annotations

import argparse
import io
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from common import machine_line, peak_rss_mb, today  # noqa: E402
from core import io as core_io  # noqa: E402
from core.synthetic import make_image  # noqa: E402
from db.engine import make_engine, upgrade  # noqa: E402
from db.importing import ImportOptions, import_path  # noqa: E402
from db.projects import create_project  # noqa: E402
from db.settings import Settings  # noqa: E402

SHAPE = (1200, 1600)


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


def time_import(data: Path, source: Path, project: str, fmt: str) -> tuple[float, str]:
    """Seconds for one import batch and its report summary."""
    settings = Settings(data_dir=data, db_url=f"sqlite:///{data / 'bench.db'}",
                        import_roots=(data, source))
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        create_project(s, project, stain="yellow")
    start = time.perf_counter()
    with Session(engine) as s, s.begin():
        report = import_path(s, settings, source, project=project, fmt=fmt,
                             options=ImportOptions(prelabel=False))
    seconds = time.perf_counter() - start
    engine.dispose()
    return seconds, report.summary()


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
        with_masks, summary = time_import(scratch / "data1", tree, "with masks", "fnc")
        print(f"with masks (FNC v1, approved): {with_masks:.1f} s, "
              f"{1000 * with_masks / args.n:.0f} ms/image -- {summary}")
        images_only, summary = time_import(scratch / "data2", tree / "all_images" / "images",
                                           "images only", "folder")
        print(f"images only (folder):          {images_only:.1f} s, "
              f"{1000 * images_only / args.n:.0f} ms/image -- {summary}")
        print(f"peak RSS: {peak_rss_mb():.0f} MiB; target <= 30 s for 100 images: "
              f"{'met' if max(with_masks, images_only) * 100 / args.n <= 30 else 'MISSED'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
