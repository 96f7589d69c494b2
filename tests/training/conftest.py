"""Fixtures for the training tests: tiny drawn images and a tiny, fast TrainConfig."""
import os

import numpy as np
import pytest
from skimage.draw import disk

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.config import AugmentConfig, TrainConfig  # noqa: E402
from training.data import Sample  # noqa: E402

SHAPE = (96, 128)


def draw_sample(rng, key, shape=SHAPE, n_cells=5):
    """A dark red field with a few yellow disks (radius 5-8) and their label image."""
    labels = np.zeros(shape, np.int32)
    image = np.zeros(shape + (3,), np.float32)
    image[..., 0] = 0.12 + 0.04 * rng.random(shape)
    for i in range(1, n_cells + 1):
        r, c = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        rr, cc = disk((r, c), rng.integers(5, 9), shape=shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = i
        image[rr[free], cc[free]] = (0.9, 0.75, 0.15)
    rgb = np.clip(image * 255 + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return Sample(key, rgb, labels)


@pytest.fixture
def samples():
    rng = np.random.default_rng(42)
    return [draw_sample(rng, f"img{i}") for i in range(6)]


@pytest.fixture
def tiny_config():
    """base_filters=2, 64 px crops, one epoch, light augmentation: seconds, not minutes."""
    return TrainConfig(base_filters=2, crop_size=64, batch_size=4, epochs=1, cell_diameter=14,
                       sigma=6.0, ring=12, loader_workers=2, execution="eager",
                       augment=AugmentConfig(elastic_prob=0.2))
