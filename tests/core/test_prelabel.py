"""core.prelabel: disks on a dark noisy background, every method, params validation."""
import dataclasses

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label

from core.prelabel import (METHODS, PrelabelParams, auto_mask, auto_threshold, select_signal,
                           threshold_signal)
from core.synthetic import make_image

CENTRES = [(40, 50), (45, 150), (130, 60), (140, 170), (200, 110)]


@pytest.fixture
def disks(rng):
    """Five yellow disks (radius 18-22 px, brightness 100-160) on a dark red, noisy background."""
    truth = np.zeros((240, 240), bool)
    rgb = np.zeros((240, 240, 3), np.float32)
    rgb[..., 0] = 4 + rng.normal(0, 1.5, truth.shape)
    rgb[..., 1] = rng.normal(0, 1.0, truth.shape)
    for i, centre in enumerate(CENTRES):
        rr, cc = disk(centre, 18 + i, shape=truth.shape)
        truth[rr, cc] = True
        brightness = 100 + 15 * i
        rgb[rr, cc] += np.array([brightness, 0.8 * brightness, 0.07 * brightness], np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), truth


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_finds_the_disks(disks, method):
    rgb, truth = disks
    mask = auto_mask(rgb, PrelabelParams(method=method))
    assert mask.dtype == bool and mask.shape == truth.shape
    assert label(mask).max() == len(CENTRES)
    assert _iou(mask, truth) > 0.6  # smoothing widens a loose mask's edges a little


@pytest.mark.parametrize("denoise", ["gaussian", "median", "none"])
def test_each_denoiser_and_no_background_subtraction(disks, denoise):
    rgb, truth = disks
    params = PrelabelParams(denoise=denoise, background_radius=None)
    assert _iou(auto_mask(rgb, params), truth) > 0.7


def test_min_area_and_hole_filling(disks):
    rgb, truth = disks
    rgb = rgb.copy()
    rr, cc = disk((40, 50), 4)
    rgb[rr, cc] = 0  # a dark nucleus-sized hole in the first disk
    assert auto_mask(rgb, PrelabelParams(denoise="none"))[40, 50]
    assert not auto_mask(rgb, PrelabelParams(denoise="none", fill_holes_area=0))[40, 50]
    huge = auto_mask(rgb, PrelabelParams(min_area=int(truth.sum())))
    assert not huge.any()


def test_flat_image_gives_empty_mask():
    assert not auto_mask(np.zeros((20, 30, 3), np.uint8)).any()


def test_yellow_signal_ignores_grey_and_red():
    pixels = np.array([[[200, 160, 14], [90, 90, 90], [30, 0, 0]]], np.uint8)
    assert select_signal(pixels).tolist() == [[146.0, 0.0, 0.0]]
    assert select_signal(pixels, "gray")[0, 1] == 90


@pytest.mark.parametrize("change, message", [
    ({"method": "magic"}, "method must be one of"),
    ({"denoise": "bilateral"}, "denoise must be one of"),
    ({"channel": "blue"}, "channel must be one of"),
    ({"sigma": -0.5}, "sigma must be >= 0"),
    ({"sigma": float("nan")}, "sigma must be >= 0"),
    ({"background_radius": -3}, "background_radius must be >= 0"),
    ({"fill_holes_area": 2.5}, "fill_holes_area must be a whole number"),
    ({"min_area": -1}, "min_area must be a whole number"),
    ({"threshold": float("nan")}, "threshold must be a finite number"),
    ({"threshold": "high"}, "threshold must be a finite number"),
    ({"threshold": True}, "threshold must be a finite number"),
])
def test_params_validation(change, message):
    with pytest.raises(ValueError, match=message):
        PrelabelParams(**change)


def test_params_frozen_and_replace():
    params = PrelabelParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.method = "otsu"
    assert dataclasses.replace(params, min_area=10).min_area == 10


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        auto_mask(np.zeros((10, 10), np.uint8))


def test_recovers_most_synthetic_cells():
    # Loose by design: the synthetic generator is not a benchmark for the thresholds.
    found = total = 0
    rng = np.random.default_rng(7)
    while total < 15:
        rgb, labels = make_image(rng, shape=(400, 500))
        mask = auto_mask(rgb)
        for cell in range(1, labels.max() + 1):
            found += mask[labels == cell].mean() > 0.5
        total += labels.max()
    assert found / total > 0.7


@pytest.mark.parametrize("method", METHODS)
def test_auto_threshold_is_what_auto_mask_uses(disks, method):
    rgb, _ = disks
    params = PrelabelParams(method=method)
    t = auto_threshold(rgb, params)
    assert isinstance(t, float) and 0 < t < threshold_signal(rgb, params).max()
    manual = auto_mask(rgb, PrelabelParams(method=method, threshold=t))
    assert np.array_equal(manual, auto_mask(rgb, params))
    # the manual value wins over the method, and auto_threshold ignores it
    assert auto_threshold(rgb, PrelabelParams(method=method, threshold=1.0)) == t


def test_manual_threshold_moves_objects_in_and_out(disks):
    rgb, truth = disks
    no_bg = PrelabelParams(background_radius=None, min_area=0)
    signal = threshold_signal(rgb, no_bg)
    # Disk i peaks near 0.73 * (100 + 15 i): between the 3rd and 4th disk's peak only the
    # last two disks stay, above every peak nothing does.
    peaks = sorted(float(signal[label(truth) == k].max()) for k in range(1, 6))
    between = (peaks[2] + peaks[3]) / 2
    assert label(auto_mask(rgb, PrelabelParams(background_radius=None, min_area=0,
                                               threshold=between))).max() == 2
    assert not auto_mask(rgb, PrelabelParams(threshold=peaks[-1] + 1)).any()
    low = auto_mask(rgb, PrelabelParams(threshold=auto_threshold(rgb) - 10))
    assert low.sum() > auto_mask(rgb).sum() and (low | auto_mask(rgb)).sum() == low.sum()


def test_flat_image_threshold_keeps_the_mask_empty():
    flat = np.full((20, 30, 3), 7, np.uint8)
    assert auto_threshold(flat) == 0.0 and not auto_mask(flat).any()
    assert not auto_mask(flat, PrelabelParams(threshold=auto_threshold(flat))).any()
