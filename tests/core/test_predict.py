"""predict_heatmap: shapes, padding, input checks, and tiles that stitch to the single pass."""
import numpy as np
import pytest

from core import predict
from core.model import build_cresunet
from core.predict import predict_heatmap


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(7)
    return build_cresunet(2)


class PixelwiseModel:
    """Stands in for a network: probability = red channel, and it records the shapes it saw."""

    def __init__(self):
        self.shapes = []

    def predict_on_batch(self, x):
        assert x.dtype == np.float32 and x.shape[1] % 8 == 0 and x.shape[2] % 8 == 0
        self.shapes.append(x.shape)
        return x[..., :1]


@pytest.mark.parametrize("shape", [(13, 21), (8, 8), (1, 30), (40, 33)])
def test_shape_dtype_and_crop_for_odd_sizes(rng, shape):
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    fake = PixelwiseModel()
    prob = predict_heatmap(fake, rgb)
    assert prob.shape == shape and prob.dtype == np.float32 and prob.flags.c_contiguous
    # Divided by 255 and cropped back exactly: the padding never leaks into the result.
    np.testing.assert_allclose(prob, rgb[..., 0] / 255.0, rtol=1e-6)
    assert fake.shapes == [(1, -(-shape[0] // 8) * 8, -(-shape[1] // 8) * 8, 3)]


def test_padding_is_reflection():
    x = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    padded = predict._pad_to_multiple(x)
    assert padded.shape == (8, 8, 3)
    np.testing.assert_array_equal(padded[5, :6], x[3])  # row 5 mirrors row 3
    np.testing.assert_array_equal(padded[:5, 6], x[:, 4])


def test_real_model_single_pass(tiny_model, rng):
    rgb = rng.integers(0, 256, (19, 27, 3), dtype=np.uint8)
    prob = predict_heatmap(tiny_model, rgb)
    assert prob.shape == (19, 27) and prob.dtype == np.float32
    assert np.all(np.isfinite(prob) & (prob >= 0) & (prob <= 1))


def test_tiles_equal_the_single_pass(tiny_model, rng):
    # Overlap above the receptive-field radius (~100 px) makes stitching exact up to rounding.
    rgb = rng.integers(0, 256, (300, 331, 3), dtype=np.uint8)
    whole = predict_heatmap(tiny_model, rgb)
    tiled = predict_heatmap(tiny_model, rgb, tile=288, overlap=112)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_kept_tile_parts_cover_every_pixel_once():
    for length in (8, 64, 288, 296, 1000, 1608):
        windows = predict._tile_windows(length, 288, 112)
        kept = np.zeros(length, int)
        for start, k0, k1 in windows:
            assert start % 8 == 0 and start <= k0 < k1 <= min(start + 288, length)
            assert k0 - start >= 112 or start == 0
            assert start + 288 - k1 >= 112 or start + 288 >= length
            kept[k0:k1] += 1
        assert np.all(kept == 1)


def test_large_images_are_tiled_by_default():
    rgb = np.zeros((2100, 2000, 3), np.uint8)  # 4.2 megapixels: above the single-pass limit
    rgb[..., 0] = np.arange(2000) % 256
    fake = PixelwiseModel()
    prob = predict_heatmap(fake, rgb)
    np.testing.assert_allclose(prob, rgb[..., 0] / 255.0, rtol=1e-6)
    tile = predict.DEFAULT_TILE
    assert len(fake.shapes) > 1 and set(fake.shapes) == {(1, tile, tile, 3)}


def test_a_1200_by_1600_image_goes_in_one_pass():
    fake = PixelwiseModel()
    predict_heatmap(fake, np.zeros((1200, 1600, 3), np.uint8))
    assert fake.shapes == [(1, 1200, 1600, 3)]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((8, 8, 4), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([[[0, 0, 0]]], "NumPy array"),
])
def test_bad_input_says_what_to_do(bad, message):
    with pytest.raises(ValueError, match=message):
        predict_heatmap(PixelwiseModel(), bad)


@pytest.mark.parametrize("tile, overlap", [(100, 8), (64, 32), (64, 12), (64, -8)])
def test_bad_tile_settings(tile, overlap):
    with pytest.raises(ValueError, match="multiples of 8"):
        predict_heatmap(PixelwiseModel(), np.zeros((8, 8, 3), np.uint8), tile=tile, overlap=overlap)
