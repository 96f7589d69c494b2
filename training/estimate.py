"""How long a training run will take on this CPU, before it is queued.

The figure is an estimate scaled from one measured step (bench/RESULTS.md, "Step time and data
loading", 2026-11-25): a step of batch 4 at 512x512 with base 16 took 2.54 s on this project's
2-core CPU in graph mode. A c-ResUnet step costs about the pixels it sees times the work per pixel;
the work per pixel of a convolution grows with the square of its width (input x output channels),
so the step scales with batch, crop area and base filters squared. Early stopping may end a run
sooner; a loaded machine runs slower (the same bench ran up to 4x slower under load).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from training.config import TrainConfig
from training.crops import crop_grid
from training.data import Sample, repeat_factor

__all__ = ["REFERENCE_STEP_S", "LONG_RUN_S", "QUICK_PRESET", "TrainingEstimate",
           "estimate_training", "step_seconds", "quick_config"]

#: Measured seconds of one step at batch 4, 512x512 crops, base 16 (bench/RESULTS.md).
REFERENCE_STEP_S = 2.54
REFERENCE = {"batch_size": 4, "crop_size": 512, "base_filters": 16}
#: A run longer than this gets a warning on the Train page.
LONG_RUN_S = 3600.0
#: A small model on small crops for a short budget: minutes, not hours, on the CPU
#: (bench/RESULTS.md trained this size, base 8 at 256 px, to usable counts in 24 x 40 steps).
QUICK_PRESET = {"base_filters": 8, "crop_size": 256, "batch_size": 4, "epochs": 20,
                "steps_per_epoch": 40}


@dataclass(frozen=True)
class TrainingEstimate:
    """What a run's settings cost on this CPU (an estimate, see the module docstring).

    Attributes
    ----------
    step_seconds : float
        One training step, scaled from :data:`REFERENCE_STEP_S`.
    steps_per_epoch : int
        Batches per epoch: every crop of the train images (less the validation share), or the
        config's cap.
    epochs : int
        The most epochs (early stopping may stop sooner).
    seconds : float
        ``epochs x steps_per_epoch x step_seconds``: the longest the run takes.
    """

    step_seconds: float
    steps_per_epoch: int
    epochs: int
    seconds: float

    @property
    def long(self) -> bool:
        """True when the run may take more than :data:`LONG_RUN_S` (an hour)."""
        return self.seconds > LONG_RUN_S


def step_seconds(config: TrainConfig) -> float:
    """Seconds of one step for ``config``: the measured reference scaled by batch, crop area
    and base filters squared.

    >>> step_seconds(TrainConfig())
    2.54
    >>> round(step_seconds(TrainConfig(base_filters=8, crop_size=256)), 4)
    0.1588
    """
    return (REFERENCE_STEP_S * config.batch_size / REFERENCE["batch_size"]
            * (config.crop_size / REFERENCE["crop_size"]) ** 2
            * (config.base_filters / REFERENCE["base_filters"]) ** 2)


def estimate_training(config: TrainConfig, images) -> TrainingEstimate:
    """Estimate a run's length from its settings and the train images it will learn from.

    Parameters
    ----------
    config : TrainConfig
        The settings (batch, crop, base filters, epochs, validation share, step cap, and the
        repeats of hard and hand-segmented images).
    images : sequence of (rows, cols) or (rows, cols, hard, hand_segmented)
        The train images with approved masks (``db.runs.training_shapes``); the validation
        share of them is left out. A flagged image's crops repeat per epoch as in training.

    Returns
    -------
    TrainingEstimate

    Examples
    --------
    Ten 1200x1600 images, 7 of them trained on, give 7 x 12 crops: 21 steps of 4 per epoch.

    >>> est = estimate_training(TrainConfig(epochs=100), [(1200, 1600)] * 10)
    >>> est.steps_per_epoch, round(est.seconds / 3600, 2), est.long
    (21, 1.48, True)
    """
    if not images:
        return TrainingEstimate(step_seconds(config), 0, config.epochs, 0.0)
    crops = [len(crop_grid(image[:2], config.crop_size)) * _repeat(image, config)
             for image in images]
    # Whole images are held out for validation (not repeated there); assume average ones.
    kept = max(1, len(crops) - int(round(config.validation_fraction * len(crops))))
    steps = math.ceil(sum(crops) * kept / len(crops) / config.batch_size)
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    step = step_seconds(config)
    return TrainingEstimate(step, steps, config.epochs, config.epochs * steps * step)


def _repeat(image, config: TrainConfig) -> int:
    hard, manual = (tuple(image[2:4]) + (False, False))[:2]
    # The flags alone decide the repeats; no pixels are needed to know them.
    return repeat_factor(Sample("", None, None, hard=bool(hard), manual=bool(manual)), config)


def quick_config(config: TrainConfig) -> TrainConfig:
    """``config`` with :data:`QUICK_PRESET`'s small model, small crops and short budget.

    >>> quick = quick_config(TrainConfig())
    >>> quick.base_filters, quick.crop_size, quick.epochs, quick.steps_per_epoch
    (8, 256, 20, 40)
    """
    return replace(config, **QUICK_PRESET)
