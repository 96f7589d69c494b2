"""Training data: images split per image, cut into crops, augmented, batched (docs/METHOD.md 5).

The chain is::

    Sample (image, labels)  --split_samples-->  train / validation samples (whole images)
        --prepare-->  PreparedSample (+ weight map computed once per image, optionally cached on disk)
        --CropBatches-->  batches x (B, H, W, 3) float32 in [0, 1], y (B, H, W, 2) = stack(mask, weight)
        --keras_dataset-->  a keras.utils.PyDataset whose worker threads build batches ahead of the model

The split happens on whole source images before any crop exists, so no source image can feed both
training and validation (the original code split augmented crops and leaked). Batch ``i`` of epoch
``e`` depends only on ``(seed, e, i)``: a resumed run sees the same crops, in the same order, with
the same augmentation as an uninterrupted one, and the worker threads can build batches in any order.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.objects import separate_touching
from training.augment import augment_crop
from training.config import TrainConfig
from training.crops import crop_grid

__all__ = ["Sample", "PreparedSample", "split_samples", "prepare", "CropBatches", "keras_dataset"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One source image with its ground truth.

    Attributes
    ----------
    key : str
        Identifies the source image (e.g. ``"image:12"``); the split is made on keys.
    image : uint8 array (H, W, 3)
    labels : array (H, W)
        Bool mask or int label image (objects = labels), as ``core.weights.weight_map`` takes it.
    hard, manual : bool
        Flagged hard by an operator / segmented by hand: oversampled per ``TrainConfig``.
    """

    key: str
    image: np.ndarray
    labels: np.ndarray
    hard: bool = False
    manual: bool = False


@dataclass(frozen=True)
class PreparedSample:
    """A sample ready for cropping: mask and weight map at least one crop in each side."""

    key: str
    image: np.ndarray
    mask: np.ndarray
    weights: np.ndarray
    repeat: int


def split_samples(samples, fraction: float, seed: int):
    """Split samples into training and validation by source image, seeded.

    Parameters
    ----------
    samples : sequence of Sample
    fraction : float
        Share of distinct source keys held out; rounded, but at least one image on each side
        whenever there are two or more sources and ``fraction > 0``.
    seed : int

    Returns
    -------
    train, validation : lists of Sample

    Examples
    --------
    >>> s = [Sample(f"img{i}", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool)) for i in range(10)]
    >>> tr, va = split_samples(s, 0.3, seed=0)
    >>> len(tr), len(va), {x.key for x in tr} & {x.key for x in va}
    (7, 3, set())
    """
    keys = sorted({s.key for s in samples})
    n_val = int(round(fraction * len(keys)))
    if fraction > 0 and len(keys) >= 2:
        n_val = min(max(n_val, 1), len(keys) - 1)
    order = np.random.default_rng([seed, 7919]).permutation(len(keys))
    held_out = {keys[i] for i in order[:n_val]}
    train = [s for s in samples if s.key not in held_out]
    validation = [s for s in samples if s.key in held_out]
    return train, validation


def repeat_factor(sample: Sample, config: TrainConfig) -> int:
    """How often a sample's crops appear per epoch: the largest factor among its flags."""
    factor = 1
    if sample.hard:
        factor = max(factor, config.oversample_hard)
    if sample.manual:
        factor = max(factor, config.oversample_manual)
    return factor


def prepare(samples, config: TrainConfig, *, cache_dir=None, oversample: bool = True):
    """Compute each sample's target and weight map once and pad images smaller than a crop.

    The target is the cells with a one-pixel background line between touching ones
    (:func:`core.objects.separate_touching`), so label masks teach the borders that 0/255 masks
    lost.

    Parameters
    ----------
    samples : sequence of Sample
    config : TrainConfig
        Weight-map parameters, crop size and oversampling factors.
    cache_dir : path, optional
        Keep weight maps as ``.npy`` files named by a digest of the labels and parameters, and
        memory-map them: a large data set then lives in the page cache instead of the heap, and
        the next run on the same ground truth skips the computation.
    oversample : bool
        Apply the hard/manual repeat factors (validation data uses False).

    Returns
    -------
    list of PreparedSample
    """
    out = []
    for sample in samples:
        # Touching cells are parted by a background line: that border is what the target
        # teaches and where the weight map puts both cells' weight (docs/METHOD.md 3).
        labels = separate_touching(sample.labels)
        weights = _weight_map(labels, config, cache_dir)
        mask = labels > 0
        image = np.asarray(sample.image, dtype=np.uint8)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{sample.key}: image {image.shape[:2]} and mask {mask.shape} differ "
                             "in size; re-import the mask at the image's size")
        image, mask, weights = _pad_to_crop(image, mask, weights, config)
        repeat = repeat_factor(sample, config) if oversample else 1
        out.append(PreparedSample(sample.key, image, mask, weights, repeat))
    return out


def _weight_map(labels, config: TrainConfig, cache_dir) -> np.ndarray:
    """``core.weights.weight_map`` divided by the normaliser, through the optional disk cache."""
    from core.weights import weight_map

    params = (config.sigma, config.ring, config.cell_weight, config.background_weight,
              config.weight_normaliser)
    target = None
    if cache_dir is not None:
        labels_arr = np.ascontiguousarray(labels)
        digest = hashlib.sha1(labels_arr.tobytes() + repr((labels_arr.shape, labels_arr.dtype.str,
                                                          params)).encode()).hexdigest()
        target = Path(cache_dir) / f"weights-{digest}.npy"
        if target.is_file():
            return np.load(target, mmap_mode="r")
    weights = weight_map(labels, sigma=config.sigma, ring=config.ring,
                         cell_weight=config.cell_weight,
                         background_weight=config.background_weight)
    weights = (weights / np.float32(config.weight_normaliser)).astype(np.float32)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp.npy")
        np.save(tmp, weights)
        tmp.replace(target)
        return np.load(target, mmap_mode="r")
    return weights


def _pad_to_crop(image, mask, weights, config: TrainConfig):
    """Pad a side shorter than the crop at its far end: black image, background, background weight."""
    pad_r = max(0, config.crop_size - mask.shape[0])
    pad_c = max(0, config.crop_size - mask.shape[1])
    if not (pad_r or pad_c):
        return image, mask, weights
    fill = np.float32(config.background_weight / config.weight_normaliser)
    return (np.pad(image, ((0, pad_r), (0, pad_c), (0, 0))),
            np.pad(mask, ((0, pad_r), (0, pad_c))),
            np.pad(np.asarray(weights), ((0, pad_r), (0, pad_c)), constant_values=fill))


class CropBatches:
    """Deterministic batches of (augmented) crops; NumPy only, so it can be timed without Keras.

    Parameters
    ----------
    prepared : sequence of PreparedSample
    config : TrainConfig
        Crop size, batch size, augmentation, seed and ``steps_per_epoch``.
    augment : bool
        Augment crops (training) or not (validation).
    shuffle : bool
        New crop order each epoch (training) or a fixed order (validation).

    Notes
    -----
    Batch ``i`` of epoch ``e`` is a pure function of ``(config.seed, e, i)``. Call
    :meth:`set_epoch` before an epoch starts (``training.fit`` does it from a callback).

    Examples
    --------
    >>> img = np.zeros((40, 40, 3), np.uint8); lab = np.zeros((40, 40), bool); lab[5:15, 5:15] = True
    >>> cfg = TrainConfig(crop_size=32, batch_size=2)
    >>> batches = CropBatches(prepare([Sample("a", img, lab)], cfg), cfg, augment=False)
    >>> len(batches), [a.shape for a in batches[0]]
    (2, [(2, 32, 32, 3), (2, 32, 32, 2)])
    """

    def __init__(self, prepared, config: TrainConfig, *, augment: bool, shuffle: bool = True):
        self.prepared = list(prepared)
        self.config = config
        self.augment = augment and config.augment.enabled
        self.shuffle = shuffle
        self.entries = np.array([(i, r, c) for i, p in enumerate(self.prepared)
                                 for r, c in crop_grid(p.mask.shape, config.crop_size)
                                 for _ in range(p.repeat)], dtype=np.int64).reshape(-1, 3)
        if not len(self.entries):
            raise ValueError("no training crops: the selection holds no images with ground truth")
        self.epoch = 0

    def __len__(self) -> int:
        full = math.ceil(len(self.entries) / self.config.batch_size)
        cap = self.config.steps_per_epoch if self.shuffle else None
        return min(full, cap) if cap else full

    def set_epoch(self, epoch: int) -> None:
        """Select the crop order and augmentation stream of ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    @functools.cached_property
    def _fixed_order(self) -> np.ndarray:
        return np.arange(len(self.entries))

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self._fixed_order
        return _epoch_permutation(len(self.entries), self.config.seed, epoch)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        epoch = self.epoch
        size = self.config.batch_size
        picks = self._order(epoch)[index * size:(index + 1) * size]
        xs, ys = [], []
        for k, entry in enumerate(picks):
            rng = np.random.default_rng([self.config.seed, epoch, index * size + k])
            x, y = self.crop(int(entry), rng)
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)

    def crop(self, entry: int, rng: np.random.Generator):
        """One (x, y) pair: crop ``entry`` of :attr:`entries`, augmented when enabled."""
        i, r, c = self.entries[entry]
        p, s = self.prepared[i], self.config.crop_size
        image = p.image[r:r + s, c:c + s].astype(np.float32) / np.float32(255.0)
        mask = p.mask[r:r + s, c:c + s]
        weights = np.asarray(p.weights[r:r + s, c:c + s], dtype=np.float32)
        if self.augment:
            image, mask, weights = augment_crop(image, mask, weights, rng, self.config.augment)
        y = np.stack([np.asarray(mask, dtype=np.float32), weights], axis=-1)
        return image, y


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The crop order of one epoch (cached: every batch of the epoch asks for it)."""
    order = np.random.default_rng([seed, epoch, 104729]).permutation(n)
    order.setflags(write=False)
    return order


@functools.cache
def _dataset_class():
    """The PyDataset subclass, built on first use so importing this module never loads Keras."""
    import keras

    class CropDataset(keras.utils.PyDataset):
        """Keras view of a :class:`CropBatches`; worker threads call ``__getitem__`` ahead."""

        def __init__(self, batches: CropBatches, workers: int, max_queue_size: int):
            super().__init__(workers=workers, use_multiprocessing=False,
                             max_queue_size=max_queue_size)
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

    return CropDataset


def keras_dataset(batches: CropBatches, *, workers: int = 2, max_queue_size: int = 4):
    """Wrap batches in a ``keras.utils.PyDataset`` that loads ahead with ``workers`` threads.

    Threads, not processes: the heavy parts (SciPy filters, ``map_coordinates``) release the GIL,
    and threads share the images and weight maps instead of copying them. Keras starts a
    background enqueuer only for two or more workers; fewer means loading in the training loop.
    """
    return _dataset_class()(batches, workers, max_queue_size)
