"""Training throughput on this machine, and (with --lr-compare) the learning-rate comparison.

Default run (``python bench/bench_train.py``):

- the training step time of the paper's model (base 16) on a batch of 4 crops of 512x512,
  median of several steps after the first (which traces the graph);
- the loader's time per batch of the same size in isolation (crops, augmentation, weight maps
  from the cache), and the share of a real ``fit`` epoch's wall time spent waiting for data:
  ``(epoch time - steps x step time) / epoch time`` with the loader's worker threads running ahead.

``--lr-compare`` trains the demo's small model twice on the demo's synthetic data, once with the
paper's learning rate (0.006) and once with the authors' code's (0.001), and prints validation
loss and test F1 for both. The default learning rate now rests on ``bench/bench_defaults.py``
(three rates, three seeds, judged on the VALIDATION configuration).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine_line, matmul_gflops, timings, today  # noqa: E402


def _synthetic_batches(config, n_images: int, seed: int = 0):
    from core.synthetic import make_dataset
    from training.data import CropBatches, Sample, prepare

    data = make_dataset(n_images, seed)
    samples = [Sample(f"s{i}", rgb, lab) for i, (rgb, lab) in enumerate(data)]
    return CropBatches(prepare(samples, config), config, augment=True)


def bench_step(batches, config, repeat: int = 5) -> dict:
    """Median seconds per training step (batch of ``config.batch_size``), graph mode."""
    import keras

    from core.model import build_cresunet, weighted_bce

    model = build_cresunet(config.base_filters)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=weighted_bce,
                  jit_compile=False)
    x, y = batches[0]
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    steps = timings(lambda: model.train_on_batch(x, y), repeat=repeat, warmup=1)
    return {"first_step_s": first, "step_s": statistics.median(steps), "model": model}


def bench_loader(batches, repeat: int = 8) -> float:
    """Median seconds to build one batch on the calling thread (no prefetch)."""
    counter = iter(range(10**6))
    return statistics.median(timings(lambda: batches[next(counter) % len(batches)],
                                     repeat=repeat, warmup=1))


def bench_wait_share(model, batches, config, step_s: float, steps: int = 12) -> dict:
    """Run one real ``fit`` epoch of ``steps`` batches with the loader's threads; share waiting."""
    from training.data import keras_dataset

    capped = dataclasses.replace(config, steps_per_epoch=steps)
    batches.config = capped
    ds = keras_dataset(batches, workers=config.loader_workers)
    model.fit(ds, epochs=1, steps_per_epoch=None, shuffle=False, verbose=0)  # warm the pipeline
    start = time.perf_counter()
    model.fit(ds, epochs=1, shuffle=False, verbose=0)
    epoch_s = time.perf_counter() - start
    waiting = max(0.0, epoch_s - steps * step_s)
    return {"epoch_s": epoch_s, "steps": steps, "wait_share": waiting / epoch_s}


def main_bench() -> None:
    from training.config import TrainConfig

    config = TrainConfig(base_filters=16, crop_size=512, batch_size=4, loader_workers=2)
    print(f"# bench_train {today()}  {machine_line(matmul_gflops())}")
    batches = _synthetic_batches(config, n_images=3)
    loader_s = bench_loader(batches)
    step = bench_step(batches, config)
    share = bench_wait_share(step["model"], batches, config, step["step_s"])
    print(f"train step, batch 4 x 512x512, base 16: {step['step_s']:.2f} s median "
          f"(first step {step['first_step_s']:.1f} s; target <= 3.2 s)")
    print(f"loader alone: {loader_s:.2f} s per batch of 4 (augmented, weight maps cached)")
    print(f"fit epoch of {share['steps']} steps with 2 loader threads: {share['epoch_s']:.1f} s; "
          f"waiting for data {100 * share['wait_share']:.0f}% (target <= 20%)")


def main_lr_compare(epochs: int, steps: int, seed: int) -> None:
    from training.demo_model import DEMO_CONFIG, DEMO_SHAPE, demo_data
    from training.fit import train_run

    train, validation, test = demo_data(seed)
    print(f"# lr comparison {today()}  {machine_line()}")
    print(f"base {DEMO_CONFIG.base_filters}, crops {DEMO_CONFIG.crop_size}, batch "
          f"{DEMO_CONFIG.batch_size}, {epochs} epochs x {steps} steps, {len(train)} train / "
          f"{len(validation)} validation / {len(test)} test synthetic {DEMO_SHAPE} images "
          "(demo_data: TRAIN, then HELDOUT for test)")
    for lr in (0.006, 0.001):
        config = dataclasses.replace(DEMO_CONFIG, learning_rate=lr, epochs=epochs,
                                     steps_per_epoch=steps, seed=seed)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = train_run(train, validation, test, config, Path(tmp) / "run", manifest={})
        best_val = min(r["val_loss"] for r in out.history if r["val_loss"] is not None)
        print(json.dumps({"seed": seed, "learning_rate": lr, "best_val_loss": round(best_val, 4),
                          "final_loss": round(out.history[-1]["loss"], 4),
                          "test_f1": round(out.metrics["f1"], 3),
                          "test_mae": round(out.metrics["mae"], 2),
                          "threshold": out.thresholds["chosen"],
                          "minutes": round((time.perf_counter() - start) / 60, 1)}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-compare", action="store_true")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.lr_compare:
        main_lr_compare(args.epochs, args.steps, args.seed)
    else:
        main_bench()
