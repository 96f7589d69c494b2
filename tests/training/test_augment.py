"""Augmentation keeps image, mask and weights aligned, and a seed fixes the result."""
import numpy as np
from skimage.draw import disk

from training.augment import augment_crop
from training.config import AugmentConfig

ALWAYS = AugmentConfig(rotate_prob=1.0, elastic_prob=1.0, noise_prob=0.0, blur_prob=0.0,
                       brightness=0.0, contrast=0.0, hue=0.0)


def _labelled(shape=(96, 96)):
    mask = np.zeros(shape, bool)
    for r, c, rad in [(20, 25, 9), (60, 30, 11), (45, 70, 8), (80, 80, 6)]:
        mask[disk((r, c), rad, shape=shape)] = True
    image = np.zeros(shape + (3,), np.float32)
    image[mask] = (0.9, 0.7, 0.1)
    weights = np.where(mask, 1.5, 1.0).astype(np.float32)
    return image, mask, weights


def test_geometry_is_shared_by_image_mask_and_weights():
    image, mask, weights = _labelled()
    for seed in range(6):
        img, m, w = augment_crop(image, mask, weights, np.random.default_rng(seed), ALWAYS)
        bright = img[..., 0] > 0.45
        # Interpolation can disagree only on a thin border around each cell.
        assert np.mean(bright != (m > 0.5)) < 0.02
        assert np.mean((w > 1.25) != (m > 0.5)) < 0.02
        assert set(np.unique(m).tolist()) <= {0.0, 1.0}


def test_same_seed_same_crop_other_seed_other_crop():
    image, mask, weights = _labelled()
    a = augment_crop(image, mask, weights, np.random.default_rng(7))
    b = augment_crop(image, mask, weights, np.random.default_rng(7))
    c = augment_crop(image, mask, weights, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_photometric_changes_leave_mask_and_weights_alone():
    image, mask, weights = _labelled()
    colour_only = AugmentConfig(rotate90=False, flip=False, rotate_prob=0.0, elastic_prob=0.0,
                                noise_prob=1.0, blur_prob=1.0)
    img, m, w = augment_crop(image, mask, weights, np.random.default_rng(1), colour_only)
    assert np.array_equal(m, mask.astype(np.float32)) and np.array_equal(w, weights)
    assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    assert not np.array_equal(img, image)


def test_disabled_returns_copies():
    image, mask, weights = _labelled()
    img, m, w = augment_crop(image, mask, weights, np.random.default_rng(0),
                             AugmentConfig(enabled=False))
    assert np.array_equal(img, image) and np.array_equal(m, mask) and np.array_equal(w, weights)
