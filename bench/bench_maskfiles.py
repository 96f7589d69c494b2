"""Benchmark: exact outlines and mask files of a 1200x1600 label image with 300 cells.

Target (issue 11, helper brief): ``label_outlines`` well under a second for 300 cells in a
1200x1600 frame. Also timed, for the import/export budget: rasterising the outlines back, and
writing and reading a label TIFF, an ImageJ ROI zip and QuPath GeoJSON. Every round trip is
checked to give the cells back exactly.

Run: ``.venv/bin/python bench/bench_maskfiles.py [--repeat 5]``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from skimage import draw  # noqa: E402

from common import machine_line, median_time, today  # noqa: E402
from core.maskfiles import (read_geojson, read_imagej_rois, read_label_image,  # noqa: E402
                            write_geojson, write_imagej_rois, write_label_tiff)
from core.polygons import label_outlines, rasterise_labels  # noqa: E402

SHAPE = (1200, 1600)
N_CELLS = 300
TARGET_S = 1.0


def make_labels(seed: int = 0) -> np.ndarray:
    """N_CELLS ellipses of 24-56 px, overlapping ones painted over (so many touch), every
    tenth with a hole and every fifteenth in two pieces (seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.int32)
    for k in range(1, N_CELLS + 1):
        r, c = rng.integers(30, SHAPE[0] - 30), rng.integers(30, SHAPE[1] - 30)
        ry, rx = rng.uniform(12, 28, 2)
        rr, cc = draw.ellipse(r, c, ry, rx, shape=SHAPE, rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = k
        if k % 10 == 0:
            rr, cc = draw.disk((r, c), min(ry, rx) / 3, shape=SHAPE)
            labels[rr, cc] = 0
        if k % 15 == 0:
            rr, cc = draw.disk((min(r + 40, SHAPE[0] - 6), c), 5, shape=SHAPE)
            labels[rr, cc] = k
    return labels


def cpu_time(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine_line(), "|", today())
    labels = make_labels()
    cells = label_outlines(labels)
    print(f"{SHAPE[0]}x{SHAPE[1]}, {len(cells)} cells, {sum(not c.simple for c in cells.values())} "
          f"not one simple polygon")
    rings = [cells[k].rings() for k in sorted(cells)]
    back = rasterise_labels(rings, SHAPE)
    values = np.asarray(sorted(cells))  # cell k of a file written here is the k-th label
    exact = np.array_equal(values[np.maximum(back - 1, 0)] * (back > 0), labels)
    steps = {
        "label_outlines": lambda: label_outlines(labels),
        "rasterise_labels": lambda: rasterise_labels(rings, SHAPE),
        "write_label_tiff": lambda: write_label_tiff(None, labels),
        "write_imagej_rois": lambda: write_imagej_rois(None, labels),
        "write_geojson": lambda: write_geojson(None, labels),
    }
    files = {"tif": write_label_tiff(None, labels), "zip": write_imagej_rois(None, labels),
             "geojson": write_geojson(None, labels)}
    steps["read_label_image"] = lambda: read_label_image(files["tif"], SHAPE, name="b.tif")
    steps["read_imagej_rois"] = lambda: read_imagej_rois(files["zip"], SHAPE, name="b.zip")
    steps["read_geojson"] = lambda: read_geojson(files["geojson"], SHAPE, name="b.geojson")
    for name, fn in steps.items():
        wall = median_time(fn, repeat=args.repeat, warmup=1)
        print(f"{name:18s} {wall * 1000:7.1f} ms wall   {cpu_time(fn) * 1000:7.1f} ms CPU")
    for kind, read in (("ROI zip", steps["read_imagej_rois"]), ("GeoJSON", steps["read_geojson"])):
        got = read().labels
        exact &= np.array_equal(values[np.maximum(got - 1, 0)] * (got > 0), labels)
    exact &= np.array_equal(steps["read_label_image"]().labels, labels)
    print(f"sizes: TIFF {len(files['tif']) >> 10} KiB, ROI zip {len(files['zip']) >> 10} KiB, "
          f"GeoJSON {len(files['geojson']) >> 10} KiB")
    wall = median_time(steps["label_outlines"], repeat=args.repeat)
    print(f"round trips exact: {exact}; label_outlines {wall * 1000:.0f} ms, target <= "
          f"{TARGET_S * 1000:.0f} ms: {'ok' if wall <= TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
