"""Benchmark: weight_map on a 512x512 crop with 30 cells, against the authors' approach.

Targets (issue 2): at most 50 ms, and at least 100x faster than the reference kept here: per
object one full-crop Euclidean distance transform, then a Python double loop over the pixels for
the exponential and the ring sum (the shape of the original code, written afresh).

The reference loops over 262,144 pixels per object, so it is timed on the first few objects only
and its per-object time is multiplied by the number of objects (the work is the same for every
object: one full-crop transform and one full-crop loop). The script says which count it timed.
It also checks that the reference and weight_map agree on those objects.

Run: ``.venv/bin/python bench/bench_weights.py [--repeat 7] [--ref-objects 3]``
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.draw import disk  # noqa: E402

from common import machine_line, median_time, timings  # noqa: E402
from core.weights import TERM_TOLERANCE, weight_map  # noqa: E402

SHAPE = (512, 512)
N_CELLS = 30


def make_crop(seed: int = 0) -> np.ndarray:
    """Label image with N_CELLS disks of radius 10-25 px, some touching (seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.int32)
    for i in range(1, N_CELLS + 1):
        centre = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        labels[disk(centre, rng.uniform(10, 25), shape=SHAPE)] = i
    return labels


def authors_weight_map(labels, ids, sigma=25.0, ring=50, cell_weight=1.5, background_weight=1.0):
    """The original approach: full-crop EDT per object, then a per-pixel Python double loop.

    Same definition as ``weight_map`` (docs/METHOD.md section 3): every object's term is summed, and
    only background within ``ring`` of some cell keeps the sum.
    """
    total = np.zeros(labels.shape)
    nearest = np.full(labels.shape, np.inf)
    for i in ids:
        d = ndi.distance_transform_edt(labels != i)
        for r in range(labels.shape[0]):
            for c in range(labels.shape[1]):
                total[r, c] += math.exp(-d[r, c] ** 2 / (2 * sigma * sigma))
                if d[r, c] < nearest[r, c]:
                    nearest[r, c] = d[r, c]
    total[nearest > ring] = 0.0
    return np.where(labels > 0, cell_weight, background_weight * np.maximum(total, 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--ref-objects", type=int, default=3)
    args = ap.parse_args()
    labels = make_crop()
    mask = labels > 0
    n_objects = int(len(np.unique(labels)) - 1)
    print(machine_line())
    print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine shared with other work)")

    wall = timings(lambda: weight_map(labels), repeat=args.repeat, warmup=1)
    cpu = [_cpu(lambda: weight_map(labels)) for _ in range(args.repeat)]
    ours = float(np.median(wall))
    print(f"weight_map 512x512, {n_objects} labelled cells: median {ours * 1e3:.1f} ms wall "
          f"(cpu {np.median(cpu) * 1e3:.1f} ms), target <= 50 ms")
    print(f"weight_map on the bool mask ({int(ndi.label(mask, np.ones((3, 3)))[1])} components): "
          f"median {median_time(lambda: weight_map(mask), repeat=args.repeat, warmup=1) * 1e3:.1f} ms")

    ids = [i for i in np.unique(labels)[1:]][: args.ref_objects]
    subset = np.where(np.isin(labels, ids), labels, 0)
    ref = [(_wall_cpu(lambda: authors_weight_map(subset, ids))) for _ in range(3)]
    ref_wall = float(np.median([w for w, _ in ref])) / len(ids) * n_objects
    ref_cpu = float(np.median([c for _, c in ref])) / len(ids) * n_objects
    diff = np.abs(authors_weight_map(subset, ids) - weight_map(subset)).max()
    print(f"reference (authors' approach) timed on {len(ids)} of {n_objects} objects (3 runs), "
          f"scaled x{n_objects / len(ids):.0f} to all: {ref_wall:.1f} s wall, {ref_cpu:.1f} s cpu")
    print(f"speed-up: {ref_wall / ours:.0f}x wall, {ref_cpu / float(np.median(cpu)):.0f}x cpu "
          f"(target >= 100x); max |difference| on the timed objects {diff:.1e} "
          f"(ours drops terms below {TERM_TOLERANCE})")


def _wall_cpu(fn) -> tuple[float, float]:
    """Wall and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _cpu(fn) -> float:
    """CPU seconds of one call: less disturbed than wall time on a busy shared machine."""
    start = time.process_time()
    fn()
    return time.process_time() - start


if __name__ == "__main__":
    main()
