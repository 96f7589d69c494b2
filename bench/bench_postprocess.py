"""Benchmark: heatmap_to_labels on 1200x1600 heatmaps with 40 and with 300 cells.

Targets (issue 2): at most 150 ms with 40 cells and 250 ms with 300 cells.

The heatmaps imitate a model's output: elliptical cells of 30-56 px diameter (FNC yellow cells
measure about 43 px), a fifth of them in touching pairs that the watershed must split, a smooth
rim (Gaussian blur), a few small false blobs above the threshold, and low noise below it.
Both presets run at the default cell diameter of 50 px.

On a shared machine wall time carries other people's load, so CPU time is printed too.

Run: ``.venv/bin/python bench/bench_postprocess.py [--repeat 7]``
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
from scipy import ndimage as ndi  # noqa: E402
from skimage.draw import ellipse  # noqa: E402

from common import machine_line  # noqa: E402
from core.postprocess import PostprocessParams, heatmap_to_labels  # noqa: E402

SHAPE = (1200, 1600)
TARGETS_MS = {40: 150.0, 300: 250.0}


def make_heatmap(n_cells: int, seed: int = 0) -> np.ndarray:
    """Float32 heatmap with ``n_cells`` cells, a fifth of them touching a partner (seeded)."""
    rng = np.random.default_rng(seed)
    heat = np.zeros(SHAPE, np.float32)
    placed = 0
    while placed < n_cells:
        r, c = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1])
        partners = 2 if rng.random() < 0.2 and placed + 2 <= n_cells else 1
        angle = rng.uniform(0, np.pi)
        for k in range(partners):
            d = rng.uniform(30, 56)
            # The partner sits about one diameter away, so the two overlap slightly.
            rr, cc = ellipse(r + k * 0.85 * d * np.sin(angle), c + k * 0.85 * d * np.cos(angle),
                             d / 2 * rng.uniform(0.8, 1.0), d / 2, rotation=angle, shape=SHAPE)
            heat[rr, cc] = np.maximum(heat[rr, cc], rng.uniform(0.7, 0.98))
        placed += partners
    for _ in range(n_cells // 10 + 2):  # small false detections
        rr, cc = ellipse(rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1]), 3, 4, shape=SHAPE)
        heat[rr, cc] = 0.8
    heat = ndi.gaussian_filter(heat, 2.0)
    heat += rng.uniform(0, 0.2, SHAPE).astype(np.float32)
    return np.clip(heat, 0, 1)


def time_one(prob, params, repeat):
    """Median wall and CPU seconds of heatmap_to_labels, and its cell count."""
    labels = heatmap_to_labels(prob, params)  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        heatmap_to_labels(prob, params)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu), int(labels.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print(machine_line())
    print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine shared with other work)")
    for n in (40, 300):
        prob = make_heatmap(n)
        for params in (PostprocessParams.paper(), PostprocessParams.fnc_v2()):
            wall, cpu, count = time_one(prob, params, args.repeat)
            print(f"heatmap_to_labels 1200x1600, {n:3d} cells, {params.preset:6s}: "
                  f"{count:3d} labels, median {wall * 1e3:6.1f} ms wall, {cpu * 1e3:6.1f} ms cpu "
                  f"(target <= {TARGETS_MS[n]:.0f} ms)")


if __name__ == "__main__":
    main()
