"""Training settings: one frozen :class:`TrainConfig`, saved with every run as ``config.json``.

Defaults follow docs/METHOD.md 5 (crops of 512, batch 4, at most 100 epochs, Adam, learning rate
cut by 30% after 4 flat epochs, early stopping after 20) and section 3 (weighted maps with sigma 25,
a 50 px ring, class weights cell 1.5 / background 1).

The learning rate default (0.001, the authors' code) was kept by a sweep of 0.001, 0.003 and 0.006
with three seeds each on VALIDATION images (docs/METHOD.md 8.5, ``bench/RESULTS.md`` "Defaults").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["AugmentConfig", "TrainConfig", "POSTPROCESS_PRESETS", "EXECUTION_MODES"]

#: Names of the post-processing presets of ``core.postprocess.PostprocessParams``.
POSTPROCESS_PRESETS = ("paper", "fnc_v2")
#: How Keras runs the training step: a traced graph, a graph compiled by XLA, or eagerly.
EXECUTION_MODES = ("graph", "xla", "eager")


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of a training crop (``training.augment``).

    Probabilities are per crop; magnitudes are drawn uniformly up to the given bound.

    Attributes
    ----------
    enabled : bool
        Master switch; validation crops are never augmented.
    rotate90, flip : bool
        Random multiples of 90 degrees and left-right / up-down flips (lossless).
    rotate_prob, max_angle : float
        Chance of a small arbitrary rotation and its largest angle in degrees.
    brightness, contrast : float
        Largest additive brightness shift (fraction of full scale) and relative contrast change.
    hue : float
        Largest hue shift as a fraction of the colour wheel.
    noise_prob, noise_std : float
        Chance of Gaussian noise and its largest standard deviation (fraction of full scale).
    blur_prob, blur_sigma : float
        Chance of a Gaussian blur and its largest sigma in pixels.
    elastic_prob, elastic_alpha, elastic_sigma : float
        Chance of an elastic deformation (Simard 2003): a random displacement field smoothed with
        ``elastic_sigma`` px and scaled by ``elastic_alpha`` px.
    """

    enabled: bool = True
    rotate90: bool = True
    flip: bool = True
    rotate_prob: float = 0.3
    max_angle: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.15
    hue: float = 0.03
    noise_prob: float = 0.3
    noise_std: float = 0.03
    blur_prob: float = 0.2
    blur_sigma: float = 1.5
    elastic_prob: float = 0.3
    elastic_alpha: float = 60.0
    elastic_sigma: float = 10.0

    def problems(self) -> list[str]:
        """Sentences describing every invalid field (empty when the settings are usable)."""
        out = []
        for name in ("rotate_prob", "noise_prob", "blur_prob", "elastic_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"Augmentation {name} must be between 0 and 1, got {getattr(self, name)}.")
        for name in ("max_angle", "brightness", "contrast", "hue", "noise_std", "blur_sigma",
                     "elastic_alpha", "elastic_sigma"):
            if getattr(self, name) < 0:
                out.append(f"Augmentation {name} must not be negative, got {getattr(self, name)}.")
        if self.contrast >= 1:
            out.append(f"Augmentation contrast must be below 1, got {self.contrast}.")
        return out


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a c-ResUnet is trained; stored as the run's ``config.json``.

    Attributes
    ----------
    base_filters : int
        Width of the first level (16 is the paper's model, 1,707,287 parameters).
    crop_size : int
        Side of the square training crops; a multiple of 8 (three poolings).
    batch_size, epochs : int
        Crops per step and the most epochs to run.
    learning_rate : float
        Adam's initial learning rate.
    plateau_factor, plateau_patience : float, int
        Multiply the learning rate by the factor after this many epochs without a better
        validation loss.
    early_stopping_patience : int
        Stop after this many epochs without a better validation loss.
    cell_weight, background_weight, sigma, ring : float, float, float, int
        Weighted-map parameters passed to ``core.weights.weight_map``.
    weight_normaliser : float
        Every weight map is divided by this constant (the authors used 3.8177538); kept with the run.
    augment : AugmentConfig
        Augmentation of training crops.
    oversample_hard, oversample_manual : int
        How many times the crops of images flagged hard / segmented by hand are repeated per epoch.
    seed : int
        Seeds the split, the crop order, augmentation and the weight initialisation.
    validation_fraction : float
        Share of the train images (whole source images) held out for validation.
    postprocess_preset, cell_diameter : str, float
        Post-processing of heatmaps (``core.postprocess``) for threshold tuning and scoring.
    loader_workers : int
        Background threads that prepare batches ahead of the model.
    steps_per_epoch : int or None
        Cap on steps per epoch (None: one pass over every crop); the demo model uses it.
    execution : {"graph", "xla", "eager"}
        How Keras runs a step. "graph" (traced, no XLA) is the default: on CPUs XLA doubled the
        compile time for no faster step. "eager" skips tracing, which only pays for tiny models
        trained for a few steps (the test suite).

    Examples
    --------
    >>> cfg = TrainConfig(base_filters=8, epochs=3)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> TrainConfig(batch_size=0).problems()
    ['batch_size must be a positive integer, got 0.']
    """

    base_filters: int = 16
    crop_size: int = 512
    batch_size: int = 4
    epochs: int = 100
    learning_rate: float = 0.001
    plateau_factor: float = 0.7
    plateau_patience: int = 4
    early_stopping_patience: int = 20
    cell_weight: float = 1.5
    background_weight: float = 1.0
    sigma: float = 25.0
    ring: int = 50
    weight_normaliser: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    oversample_hard: int = 4
    oversample_manual: int = 10
    seed: int = 0
    validation_fraction: float = 0.3
    postprocess_preset: str = "paper"
    cell_diameter: float = 50.0
    loader_workers: int = 2
    steps_per_epoch: int | None = None
    execution: str = "graph"

    def problems(self) -> list[str]:
        """Sentences describing every invalid field (empty when the config is usable)."""
        out = []
        for name in ("base_filters", "batch_size", "epochs", "plateau_patience",
                     "early_stopping_patience", "oversample_hard", "oversample_manual"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                out.append(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.crop_size, int) or self.crop_size < 8 or self.crop_size % 8:
            out.append(f"crop_size must be a positive multiple of 8, got {self.crop_size!r}.")
        if not self.learning_rate > 0:
            out.append(f"learning_rate must be positive, got {self.learning_rate!r}.")
        if not 0 < self.plateau_factor < 1:
            out.append(f"plateau_factor must be between 0 and 1, got {self.plateau_factor!r}.")
        if not 0 <= self.validation_fraction < 1:
            out.append("validation_fraction must be at least 0 and below 1, "
                       f"got {self.validation_fraction!r}.")
        for name in ("cell_weight", "background_weight", "sigma", "weight_normaliser",
                     "cell_diameter"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be positive, got {getattr(self, name)!r}.")
        if self.ring < 0:
            out.append(f"ring must not be negative, got {self.ring!r}.")
        if self.postprocess_preset not in POSTPROCESS_PRESETS:
            out.append(f"postprocess_preset must be one of {', '.join(POSTPROCESS_PRESETS)}, "
                       f"got {self.postprocess_preset!r}.")
        if self.execution not in EXECUTION_MODES:
            out.append(f"execution must be one of {', '.join(EXECUTION_MODES)}, "
                       f"got {self.execution!r}.")
        if self.loader_workers < 0:
            out.append(f"loader_workers must not be negative, got {self.loader_workers!r}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            out.append(f"steps_per_epoch must be positive or empty, got {self.steps_per_epoch!r}.")
        return out + self.augment.problems()

    def validate(self) -> "TrainConfig":
        """Return ``self`` if usable, else raise ``ValueError`` listing every problem."""
        bad = self.problems()
        if bad:
            raise ValueError("Invalid training settings: " + " ".join(bad))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the augmentation settings nested under ``augment``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError`` naming them.

        Keys left out keep their defaults, so a small ``cfg.json`` with only ``epochs`` works.
        """
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown training setting(s): {', '.join(unknown)}.")
        aug = data.pop("augment", None) or {}
        if isinstance(aug, dict):
            unknown = sorted(set(aug) - {f.name for f in fields(AugmentConfig)})
            if unknown:
                raise ValueError(f"Unknown augmentation setting(s): {', '.join(unknown)}.")
            aug = AugmentConfig(**aug)
        return cls(augment=aug, **data).validate()

    def with_(self, **changes) -> "TrainConfig":
        """A validated copy with some fields changed."""
        return replace(self, **changes).validate()
