"""Benchmark: predict_heatmap against a bare predict_on_batch, c-ResUnet(16), one 1200x1600 image.

Targets (issue 2): predict_heatmap at most 1.15x a bare predict_on_batch of the same model in the
same process, at most 1.5 s per image, peak memory at most 2 GB. c-ResUnet needs about 209 GFLOP
per image, so the machine's matmul GFLOP/s is printed beside the times.

The two timed calls alternate (A, B, A, B, ...) so that load from other processes on a shared
machine hits both alike; both are warmed up first, because the first call traces the predict
function for the input shape. Peak memory is the high-water RSS of a fresh subprocess that builds
the model and predicts once, so nothing earlier in this process inflates it.

Run: ``.venv/bin/python bench/bench_predict.py [--repeat 7]``
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

from common import machine_line, matmul_gflops, peak_rss_mb  # noqa: E402

SHAPE = (1200, 1600)
LARGE = (2400, 3200)  # 7.7 MP: tiled, to show that memory stays bounded
GFLOP_PER_IMAGE = 209.0


def _setup(shape=SHAPE):
    """The paper's model with random weights and one random RGB image (1200x1600 by default)."""
    import keras

    from core.model import build_cresunet

    keras.utils.set_random_seed(0)
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    return build_cresunet(16), rgb


def _memory_child(mode: str) -> None:
    """Subprocess body: one prediction, then print this process's peak RSS in MiB."""
    from core.predict import predict_heatmap

    model, rgb = _setup(LARGE if mode == "large" else SHAPE)
    before = peak_rss_mb()
    start = time.perf_counter()
    if mode == "bare":
        model.predict_on_batch(rgb[None].astype(np.float32) / np.float32(255))
    else:
        predict_heatmap(model, rgb)
    print(f"{time.perf_counter() - start:.2f} {before:.0f} {peak_rss_mb():.0f}")


def _peak_in_subprocess(mode: str) -> tuple[float, float, float]:
    """(seconds of the one cold prediction, RSS MiB before it, peak RSS MiB) in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", mode], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    seconds, before, peak = out.stdout.split()[-3:]
    return float(seconds), float(before), float(peak)


def _alternate(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Time each function ``repeat`` times, interleaved, after one untimed warm-up each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--memory-child", choices=["heatmap", "bare", "large"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return _memory_child(args.memory_child)

    from core.predict import predict_heatmap

    gflops = matmul_gflops()
    print(machine_line(gflops))
    model, rgb = _setup()
    x = rgb[None].astype(np.float32) / np.float32(255)  # the bare call gets its input ready-made
    times = _alternate({"predict_heatmap": lambda: predict_heatmap(model, rgb),
                        "predict_on_batch": lambda: model.predict_on_batch(x)}, args.repeat)
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["predict_heatmap"] / med["predict_on_batch"]
    for name, t in times.items():
        print(f"{name:17s} median {med[name]:.3f} s  (min {min(t):.3f}, max {max(t):.3f}, "
              f"n={len(t)}; {GFLOP_PER_IMAGE / med[name]:.0f} GFLOP/s effective)")
    print(f"ratio heatmap/bare {ratio:.3f}   (target <= 1.15)  {'OK' if ratio <= 1.15 else 'MISS'}")
    t = med["predict_heatmap"]
    print(f"time per image     {t:.3f} s (target <= 1.5 s)   {'OK' if t <= 1.5 else 'MISS'}")
    for mode in ("heatmap", "bare", "large"):
        seconds, before, peak = _peak_in_subprocess(mode)
        verdict = "OK" if peak <= 2048 else "MISS"
        label = f"{mode} {'x'.join(map(str, LARGE if mode == 'large' else SHAPE))}"
        print(f"peak RSS {label:17s} {peak:.0f} MiB in a fresh process ({before:.0f} MiB after "
              f"building the model; one cold call {seconds:.1f} s; target <= 2048 MiB)  {verdict}")


if __name__ == "__main__":
    main()
