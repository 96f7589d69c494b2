"""c-ResUnet: the paper's parameter count, a tiny forward pass, and the weighted loss by hand."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.model import PARAMS_AT_16, build_cresunet, weighted_bce

ROOT = Path(__file__).resolve().parents[2]


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_parameter_count_matches_the_paper():
    model = build_cresunet(16)
    assert _count(model.trainable_weights) == PARAMS_AT_16 == 1_707_287
    # BatchNorm moving mean and variance make up the rest.
    assert model.count_params() == 1_709_177


def test_widths_scale_with_base_filters():
    model = build_cresunet(2)
    widths = {layer.name: layer.filters for layer in model.layers if hasattr(layer, "filters")}
    assert widths["colour_space"] == 1
    assert widths["enc1_a_conv"] == 2 and widths["enc2_a_conv"] == 4
    assert widths["enc3_a_conv"] == 8 and widths["bottleneck_extra_b_conv"] == 16
    assert widths["dec1_up"] == 2 and widths["head"] == 1
    # The first BatchNorm sees the single learned-colour channel.
    assert model.get_layer("enc1_a_bn").gamma.shape == (1,)


def test_tiny_forward_pass(rng):
    model = build_cresunet(2)
    x = rng.random((2, 16, 24, 3), dtype=np.float32)
    y = np.asarray(model.predict_on_batch(x))
    assert y.shape == (2, 16, 24, 1) and y.dtype == np.float32
    assert np.all(np.isfinite(y) & (y >= 0) & (y <= 1))


def test_output_is_float32_under_mixed_precision():
    import keras

    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_cresunet(2)
    finally:
        keras.config.set_dtype_policy(old)
    assert model.get_layer("head").compute_dtype == "float16"
    assert model.output.dtype == "float32"


@pytest.mark.parametrize("bad", [0, -4, 2.5, "16"])
def test_bad_base_filters(bad):
    with pytest.raises(ValueError, match="base_filters"):
        build_cresunet(bad)


def test_weighted_bce_by_hand():
    mask = np.array([[1, 0, 1], [0, 0, 1]], dtype=np.float32)
    weight = np.array([[1.5, 1.0, 1.5], [2.2, 1.0, 1.5]], dtype=np.float32)
    p = np.array([[0.9, 0.2, 0.6], [0.7, 0.01, 0.3]], dtype=np.float32)
    y_true = np.stack([mask, weight], axis=-1)[None]  # (1, 2, 3, 2)
    y_pred = p[None, ..., None]  # (1, 2, 3, 1)
    terms = [1.5 * -np.log(0.9), 1.0 * -np.log(0.8), 1.5 * -np.log(0.6),
             2.2 * -np.log(0.3), 1.0 * -np.log(0.99), 1.5 * -np.log(0.3)]
    expected = sum(terms) / 6
    assert float(weighted_bce(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_weighted_bce_is_linear_in_the_map_and_finite_at_the_edges():
    y_true = np.zeros((1, 2, 2, 2), np.float32)
    y_true[..., 0] = [[1, 0], [1, 0]]
    y_true[..., 1] = 1.0
    y_pred = np.array([[[[0.0], [1.0]], [[1.0], [0.0]]]], np.float32)  # two certain mistakes
    base = float(weighted_bce(y_true, y_pred))
    assert np.isfinite(base) and base > 5  # clipped, not infinite
    doubled = y_true.copy()
    doubled[..., 1] = 2.0  # no extra class factor anywhere: twice the map, twice the loss
    assert float(weighted_bce(doubled, y_pred)) == pytest.approx(2 * base, rel=1e-6)
    right = np.array([[[[1.0], [0.0]], [[1.0], [0.0]]]], np.float32)
    assert float(weighted_bce(y_true, right)) < 1e-5


def test_importing_core_modules_does_not_import_keras():
    code = ("import sys, core.model, core.predict, core.run; "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
