"""Benchmark: what the synthetic generator's configurations draw, beside the FNC reference.

For TRAIN, VALIDATION and HELDOUT it draws ``--images`` images (default 6, 1200x1600) as
configured and prints, pooled over them, the cell count, the median and IQR of cell area (px),
the foreground % and the per-image cell counts (``image_stats``, see ``core.synthetic``).
Colour depends on the stain, so a second table draws ``--per-stain`` images (default 2) of each
configuration with its stain forced to each one it uses, and prints the bright cells' G/R and
B/R and the background median per stain. The reference row is
``core.synthetic.REFERENCE_STATS`` (one yellow FNC image; see ``bench/reference_stats.py``).
Finally it prints every configuration's hash (sha256 of its canonical JSON): HELDOUT's must not
change without a note in ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/bench_generator.py [--images 6] [--per-stain 2] [--seed 0]``
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402

from common import machine_line, today  # noqa: E402
from core.synthetic import (  # noqa: E402
    HELDOUT, REFERENCE_STATS, TRAIN, VALIDATION, artefact_kinds, config_hash, image_stats,
    make_dataset,
)

CONFIGS = (TRAIN, VALIDATION, HELDOUT)
SHAPE = (1200, 1600)


def pooled_stats(data) -> dict:
    """``image_stats`` of several images side by side, each keeping its own cell ids."""
    rgbs, labels, offset = [], [], 0
    for rgb, lab in data:
        rgbs.append(rgb)
        labels.append(np.where(lab > 0, lab + offset, 0))
        offset += int(lab.max())
    return image_stats(np.concatenate(rgbs, axis=1), np.concatenate(labels, axis=1))


def fmt(value, digits=2) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:.0f}" for v in value) + ")"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def shape_table(n_images: int, seed: int) -> None:
    print("| configuration | images | cells | cells per image | area median px | area IQR px "
          "| foreground % | s per image |")
    print("|---|---|---|---|---|---|---|---|")
    r = REFERENCE_STATS
    print(f"| reference (FNC yellow, 1 image) | 1 | {r['cells']} | {r['cells']} | "
          f"{r['area_median']:.0f} | {r['area_iqr']:.0f} | {r['foreground_pct']:.2f} | |")
    for config in CONFIGS:
        start = time.perf_counter()
        data = make_dataset(n_images, seed, SHAPE, config=config)
        seconds = (time.perf_counter() - start) / n_images
        s = pooled_stats(data)
        counts = ", ".join(str(int(lab.max())) for _, lab in data)
        print(f"| {config.name} | {n_images} | {s['cells']} | {counts} "
              f"| {fmt(s['area_median'], 0)} | {fmt(s['area_iqr'], 0)} "
              f"| {s['foreground_pct']:.2f} | {seconds:.2f} |")


def colour_table(n_images: int, seed: int) -> None:
    print("| configuration | stain | images | cells | G/R bright cells | B/R bright cells "
          "| background median RGB |")
    print("|---|---|---|---|---|---|---|")
    r = REFERENCE_STATS
    print(f"| reference | yellow | 1 | {r['cells']} | {r['g_over_r']:.3f} | {r['b_over_r']:.3f} | "
          f"{fmt(r['background_median'])} |")
    for config in CONFIGS:
        for stain, _ in config.stains:
            single = dataclasses.replace(config, stains=((stain, 1.0),))
            s = pooled_stats(make_dataset(n_images, seed, SHAPE, config=single))
            print(f"| {config.name} | {stain} | {n_images} | {s['cells']} "
                  f"| {fmt(s['g_over_r'], 3)} | {fmt(s['b_over_r'], 3)} "
                  f"| {fmt(s['background_median'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--per-stain", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"bench_generator {today()}, {SHAPE[0]}x{SHAPE[1]} images, seed {args.seed}")
    print(machine_line())
    print()
    shape_table(args.images, args.seed)
    print()
    colour_table(args.per_stain, args.seed)
    print()
    for config in CONFIGS:
        print(f"{config.name}: artefacts {', '.join(sorted(artefact_kinds(config)))}")
    only = sorted(artefact_kinds(HELDOUT) - artefact_kinds(TRAIN))
    print(f"heldout-only artefact kinds (not in train): {', '.join(only)}")
    for config in CONFIGS:
        print(f"sha256 {config.name}: {config_hash(config)}")


if __name__ == "__main__":
    main()
