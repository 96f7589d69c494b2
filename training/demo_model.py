"""The demo model: a small c-ResUnet fitted on ``core.synthetic.TRAIN``, kept in ``models/demo/``.

``python -m training demo-model`` rebuilds it. Everything is fixed by the seed: the TRAIN images
it is fitted and validated on (drawn from ``seed + 1000``, so they differ from the demo
project's own images, which use seed 0), the split, the weights' initialisation, the crop order
and the augmentation. Its test images are :data:`core.synthetic.HELDOUT` images, never tuned
on, so ``metrics.json`` says how it counts images of a kind it was not trained on. A fixed
number of optimizer steps (not a time budget) keeps the result independent of the machine's
speed; ``bench/RESULTS.md`` records the build's time and scores.

Only the inference copy and the JSON files are written to ``models/demo/``; the full checkpoint
stays in a temporary directory that is deleted afterwards.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

from core.synthetic import HELDOUT, TRAIN, config_hash, make_dataset
from training.config import TrainConfig
from training.data import Sample, split_samples
from training.fit import train_run

__all__ = ["DEMO_CONFIG", "DEMO_SHAPE", "DEMO_IMAGES", "demo_data", "build_demo_model"]

log = logging.getLogger(__name__)

#: Side of the synthetic images the demo model is fitted and tested on (a full FNC field).
DEMO_SHAPE = (1200, 1600)
#: (TRAIN images for train + validation, HELDOUT images for test).
DEMO_IMAGES = (20, 8)
#: The demo's training settings: base 8, 256 px crops, batch 4, 2,000 optimizer steps (10 epochs
#: of 200), the default learning rate (bench/RESULTS.md, "Defaults"); a quarter of the TRAIN
#: images (5, about 140 cells) held out to choose the threshold on. The cell diameter is the
#: median equivalent diameter of TRAIN's cells (28 px, measured by bench/bench_defaults.py).
DEMO_CONFIG = TrainConfig(base_filters=8, crop_size=256, batch_size=4, epochs=10,
                          steps_per_epoch=200, validation_fraction=0.25, cell_diameter=28.0,
                          plateau_patience=2, loader_workers=2)
RUN_FILES = ("model.keras", "model.onnx", "config.json", "thresholds.json", "metrics.json", "manifest.json",
             "history.csv")


def demo_data(seed: int = 0, shape=DEMO_SHAPE, counts=DEMO_IMAGES):
    """(train, validation, test) samples of the demo: TRAIN images, then HELDOUT images.

    Everything is fixed by ``seed``.
    """
    n_train, n_test = counts
    fitted = make_dataset(n_train, seed + 1000, shape=shape, config=TRAIN)
    held_out = make_dataset(n_test, seed + 2000, shape=shape, config=HELDOUT)
    samples = [Sample(f"train:{i}", rgb, labels) for i, (rgb, labels) in enumerate(fitted)]
    train, validation = split_samples(samples, DEMO_CONFIG.validation_fraction, seed)
    test = [Sample(f"heldout:{i}", rgb, labels) for i, (rgb, labels) in enumerate(held_out)]
    return train, validation, test


def build_demo_model(out="models/demo", *, seed: int = 0, config: TrainConfig | None = None,
                     progress=None) -> dict:
    """Train the demo model and write its run directory (without checkpoint) to ``out``.

    Parameters
    ----------
    out : path
        Target directory; existing run files there are replaced.
    seed : int
        Seeds the data and the training.
    config : TrainConfig, optional
        Defaults to :data:`DEMO_CONFIG` with ``seed``.
    progress : callable, optional
        Receives the training progress dicts (see ``training.fit.fit``).

    Returns
    -------
    dict
        The test metrics (also in ``out/metrics.json``), with ``seconds`` and ``seed``.
    """
    config = config or dataclasses.replace(DEMO_CONFIG, seed=seed)
    started = time.monotonic()
    train, validation, test = demo_data(seed)
    n_train, n_test = DEMO_IMAGES
    manifest = {"train": [], "validation": [], "test": [],
                "synthetic": {"source": f"core.synthetic.make_dataset({n_train}, {seed + 1000}, "
                                        f"shape={DEMO_SHAPE}, config=TRAIN) for train:*, "
                                        f"make_dataset({n_test}, {seed + 2000}, "
                                        f"shape={DEMO_SHAPE}, config=HELDOUT) for heldout:*",
                              "train_config_sha256": config_hash(TRAIN),
                              "heldout_config_sha256": config_hash(HELDOUT),
                              "train": [s.key for s in train],
                              "validation": [s.key for s in validation],
                              "test": [s.key for s in test]}}
    with tempfile.TemporaryDirectory(prefix="celltally-demo-") as scratch:
        outcome = train_run(train, validation, test, config, Path(scratch) / "run",
                            manifest=manifest, progress=progress or _log_progress)
        _publish(outcome.path, Path(out))
    seconds = round(time.monotonic() - started, 1)
    log.info("demo model written to %s in %.0f s: test F1 %.3f", out, seconds,
             outcome.metrics.get("f1", float("nan")))
    return {**outcome.metrics, "seconds": seconds, "seed": seed}


def _publish(run_dir: Path, out: Path) -> None:
    """Copy the run's files (never ``checkpoint/``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)


def _log_progress(payload: dict) -> None:
    """Default progress: one log line per finished epoch and per stage."""
    if payload.get("stage") == "train" and payload["step"] == payload["steps"]:
        log.info("epoch %d/%d: loss %.4f, lr %.2g", payload["epoch"], payload["epochs"],
                 payload["loss"], payload["learning_rate"])
    elif payload.get("stage") != "train" and payload.get("step") == payload.get("steps"):
        log.info("%s done (%d images)", payload["stage"], payload["steps"])
