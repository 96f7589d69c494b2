"""Benchmark: ``python -m core count`` per image against the arithmetic floor, Keras vs ONNX.

Setup: a base-16 c-ResUnet with random weights written by ``core.run.save_run`` (so with its
model.onnx) and 9 synthetic 1200x1600 PNGs (``core.synthetic``).

- Floor: 210 GFLOP (c-ResUnet(16) on one 1200x1600 image, TensorFlow's profiler) divided by the
  speed of a NumPy float32 4096x4096 matmul measured in this process, before each repeat.
- Per-image cost through the CLI: ``(t9 - t1) / 8``, where ``tN`` is the wall time of a fresh
  ``python -m core count`` process on N images; start-up is ``t1`` minus one image's cost
  (imports, loading the network, the first call), and, steadier under load, the wall time of
  the CLI on one 64x64 image.
- "before" is today's path, Keras serial (``--backend keras --no-overlap``); "after" is ONNX
  Runtime with reading and post-processing overlapped with the network (the default);
  "after, no overlap" shows what overlapping buys.

The machine is shared and noisy: each repeat measures the floor and then both paths, and the
ratios to the floor are taken within that repeat. Run: ``.venv/bin/python bench/bench_count.py
[--repeat 2]``; figures go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402

from common import machine_line, today  # noqa: E402

GFLOP_PER_IMAGE = 210.0
PATHS = {"before (Keras, serial)": ["--backend", "keras", "--no-overlap"],
         "after (ONNX Runtime, overlapped)": [],
         "after, no overlap": ["--no-overlap"]}


def floor_seconds(repeat: int = 3) -> tuple[float, float]:
    """(seconds per image at the matmul rate, that rate in GFLOP/s): 4096^2 float32 matmul."""
    a = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    gflops = 2 * 4096 ** 3 / best / 1e9
    return GFLOP_PER_IMAGE / gflops, gflops


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def setup(out: Path) -> tuple[Path, list[Path]]:
    """The random-weight run and the 9 images (made once, kept under bench/out/count)."""
    import keras

    from core.io import write_image
    from core.model import build_cresunet
    from core.postprocess import PostprocessParams
    from core.run import save_run
    from core.synthetic import make_dataset

    run = out / "run16"
    if not (run / "model.onnx").is_file():
        keras.utils.set_random_seed(0)
        save_run(run, model=build_cresunet(16), config={"base_filters": 16},
                 postprocess=PostprocessParams.paper(cell_diameter=43),
                 thresholds={"best": 0.5, "knee": None, "chosen": 0.5}, metrics={},
                 manifest={})
    images = [out / f"image{i}.png" for i in range(9)]
    if not all(p.is_file() for p in images):
        for path, (rgb, _) in zip(images, make_dataset(9, 7)):
            write_image(path, rgb)
    return run, images


def cli_seconds(run: Path, images: list[Path], extra: list[str], csv: Path) -> float:
    """Wall seconds of one fresh ``python -m core count`` process."""
    cmd = [sys.executable, "-m", "core", "count", *map(str, images), "--model", str(run),
           "--out", str(csv), "-q", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def startup_seconds(run: Path, extra: list[str], out: Path) -> float:
    """Wall seconds of ``core count`` on one 64x64 image: imports and loading the network."""
    from core.io import write_image

    tiny = out / "tiny64.png"
    if not tiny.is_file():
        write_image(tiny, np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    return cli_seconds(run, [tiny], extra, out / "tiny.csv")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--overlap-too", action="store_true",
                        help="also time ONNX Runtime without overlapping (what overlap buys)")
    args = parser.parse_args(argv)
    out = ROOT / "bench" / "out" / "count"
    out.mkdir(parents=True, exist_ok=True)
    run, images = setup(out)
    print(f"# bench_count {today()}: {machine_line()}", flush=True)
    paths = {k: v for k, v in PATHS.items() if args.overlap_too or "no overlap" not in k}
    ratios: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.repeat):
        print(f"repeat {r + 1}")
        for name, extra in paths.items():
            # The floor is measured right before and after each path: other processes' load
            # changes within minutes on a shared machine.
            before, gflops_before = floor_seconds()
            t1 = cli_seconds(run, images[:1], extra, out / "one.csv")
            t9 = cli_seconds(run, images, extra, out / "nine.csv")
            after, gflops_after = floor_seconds()
            floor = (before + after) / 2
            cost = (t9 - t1) / 8
            ratios[name].append(cost / floor)
            print(f"  {name:34s} t1 {t1:6.2f} s  t9 {t9:6.2f} s  per image {cost:5.2f} s "
                  f"= {cost / floor:4.2f}x floor ({floor:.2f} s: {gflops_before:.0f} and "
                  f"{gflops_after:.0f} GFLOP/s)  start-up {t1 - cost:5.2f} s", flush=True)
        line = ", ".join(f"{name.split(' (')[0]} {startup_seconds(run, extra, out):.2f} s"
                         for name, extra in list(paths.items())[:2])
        print(f"  start-up (one 64x64 image): {line}", flush=True)
    for name, values in ratios.items():
        print(f"{name:36s} ratio to the floor: median {statistics.median(values):.2f}x "
              f"(each repeat: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
