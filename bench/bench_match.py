"""Benchmark: match_objects with 1,000 true and 1,000 predicted objects on a 2000x2000 image.

Target (issue 2): at most 0.2 s (the default, Hungarian, method).

The truth holds 1,000 disks of radius 6-12 px at random non-overlapping places; the prediction
moves each by a few pixels, drops 5% of them and adds 5% elsewhere, so there are misses, false
detections and crowded spots where the optimal assignment has real work. Greedy and IoU matching
are timed too.

Run: ``.venv/bin/python bench/bench_match.py [--repeat 7]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
from skimage.draw import disk  # noqa: E402

from common import machine_line  # noqa: E402
from core.metrics import METHODS, match_objects  # noqa: E402

SHAPE = (2000, 2000)
N = 1000


def draw(centres, radii) -> np.ndarray:
    labels = np.zeros(SHAPE, np.int32)
    for i, (centre, radius) in enumerate(zip(centres, radii), start=1):
        labels[disk(centre, radius, shape=SHAPE)] = i
    return labels


def make_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(truth, prediction) label images with N objects each (seeded)."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < N:  # rejection sampling keeps true cells apart
        c = rng.uniform(15, SHAPE[0] - 15, 2)
        if all(np.hypot(*(c - o)) > 26 for o in centres[-400:]):
            centres.append(c)
    centres = np.array(centres)
    radii = rng.uniform(6, 12, N)
    moved = centres + rng.normal(0, 4, centres.shape)
    lost = rng.random(N) < 0.05
    moved[lost] = rng.uniform(15, SHAPE[0] - 15, (int(lost.sum()), 2))
    return draw(centres, radii), draw(moved, radii * rng.uniform(0.8, 1.2, N))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print(machine_line())
    print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine shared with other work)")
    truth, pred = make_pair()
    for method in METHODS:
        m = match_objects(truth, pred, method=method)  # warm-up
        wall, cpu = [], []
        for _ in range(args.repeat):
            w, c = time.perf_counter(), time.process_time()
            match_objects(truth, pred, method=method)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        print(f"match_objects {m.n_true} x {m.n_pred} on 2000x2000, {method:9s}: "
              f"tp {m.tp} fp {m.fp} fn {m.fn}, median {statistics.median(wall) * 1e3:6.1f} ms wall, "
              f"{statistics.median(cpu) * 1e3:6.1f} ms cpu (target <= 200 ms)")


if __name__ == "__main__":
    main()
