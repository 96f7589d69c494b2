"""Suite-wide setup: quiet TensorFlow, a seeded RNG, and a scratch data dir per session."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A seeded local generator: every test that draws numbers gets the same ones."""
    return np.random.default_rng(1234)
