"""core.weights.weight_map against the formula of docs/METHOD.md 3, computed independently."""
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from core.weights import weight_map


def full_frame_reference(labels, sigma, ring, cell_weight=1.5, background_weight=1.0):
    """The definition, the slow way: one full-frame distance transform per object."""
    total = np.zeros(labels.shape)
    for i in np.unique(labels)[1:]:
        d = ndi.distance_transform_edt(labels != i)
        total += np.exp(-d**2 / (2 * sigma**2))
    near = ndi.distance_transform_edt(labels == 0) <= ring   # within `ring` of SOME cell
    total = np.where(near, total, 0.0)
    return np.where(labels > 0, cell_weight, background_weight * np.maximum(1.0, total))


def disks(centres, radius=12, shape=(128, 160)):
    labels = np.zeros(shape, np.int32)
    for i, centre in enumerate(centres, start=1):
        labels[disk(centre, radius, shape=shape)] = i
    return labels


ONE = [(64, 60)]
TWO = [(64, 50), (64, 84)]           # 10 px gap between the borders
THREE = [(50, 50), (50, 84), (80, 67)]


@pytest.mark.parametrize("centres", [ONE, TWO, THREE], ids=["one", "two", "three"])
def test_matches_the_formula_on_disks(centres):
    labels = disks(centres)
    got = weight_map(labels, sigma=25.0, ring=50)
    want = full_frame_reference(labels, 25.0, 50)
    # Chosen pixels: a cell centre, the gap between cells, near the border of the ring, far away.
    for pixel in [(64, 60), (64, 67), (50, 67), (64, 30), (64, 130), (5, 5), (127, 159)]:
        assert got[pixel] == pytest.approx(want[pixel], rel=1e-5), pixel
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.dtype == np.float32


def test_single_pixel_objects_by_hand():
    labels = np.zeros((30, 30), np.int32)
    labels[10, 10], labels[10, 20], labels[18, 15] = 1, 2, 3
    w = weight_map(labels, sigma=5.0, ring=8)
    e = lambda d2: math.exp(-d2 / 50.0)
    # (12, 15): squared distances 4+25, 4+25, 36 to the three points.
    assert w[12, 15] == pytest.approx(2 * e(29) + e(36), rel=1e-6)
    # (10, 13): 3 px from object 1, 7 from object 2 and sqrt(64+4) from object 3: inside the ring
    # of object 1, so all three terms count, the far one too (its term 0.26 is above tolerance).
    assert w[10, 13] == pytest.approx(e(9) + e(49) + e(68), rel=1e-6)
    assert w[10, 10] == 1.5


def test_floor_at_one_next_to_a_single_cell():
    labels = disks(ONE)
    w = weight_map(labels, sigma=25.0, ring=50)
    background = w[labels == 0]
    assert background.min() == 1.0 and background.max() == 1.0


def test_ring_picks_pixels_not_objects():
    # A pixel 4 px from object 1 and 6 px from object 2, sigma 10: exp(-16/200) + exp(-36/200)
    # = 1.758 whenever the pixel is within `ring` of some cell, even when one cell is beyond it.
    labels = np.zeros((5, 30), np.int32)
    labels[2, 4], labels[2, 14] = 1, 2
    both = math.exp(-16 / 200) + math.exp(-36 / 200)
    assert weight_map(labels, sigma=10.0, ring=5)[2, 8] == pytest.approx(both, rel=1e-6)
    assert weight_map(labels, sigma=10.0, ring=6)[2, 8] == pytest.approx(both, rel=1e-6)
    # 6 px from object 2 and 16 px from object 1: outside a 5 px ring of both -> plain 1.
    assert weight_map(labels, sigma=10.0, ring=5)[2, 20] == 1.0
    # ...but inside a 6 px ring: exp(-36/200) + exp(-256/200) = 1.113.
    inside = math.exp(-36 / 200) + math.exp(-256 / 200)
    assert weight_map(labels, sigma=10.0, ring=6)[2, 20] == pytest.approx(inside, rel=1e-6)


def test_class_weights_apply_once():
    labels = disks(TWO)
    plain = weight_map(labels)
    scaled = weight_map(labels, cell_weight=3.0, background_weight=2.0)
    np.testing.assert_allclose(scaled[labels == 0], 2.0 * plain[labels == 0], rtol=1e-6)
    assert np.all(scaled[labels > 0] == 3.0)
    assert scaled[0, 0] == 2.0  # beyond the ring: the background weight itself


def test_far_background_and_empty_mask():
    w = weight_map(np.zeros((20, 30), bool), background_weight=0.5)
    assert w.dtype == np.float32 and np.all(w == 0.5)


def test_bool_mask_is_split_into_connected_components():
    labels = disks(TWO)
    np.testing.assert_allclose(weight_map(labels > 0), weight_map(labels), rtol=1e-6)
    # Two touching label ids are two objects; the same pixels as one bool blob are one.
    touching = np.zeros((20, 30), np.int32)
    touching[5:15, 5:15], touching[5:15, 15:25] = 1, 2
    assert not np.allclose(weight_map(touching, sigma=3.0), weight_map(touching > 0, sigma=3.0))


@pytest.mark.parametrize("mask, message", [
    (np.zeros((2, 4, 4), bool), "2D"),
    (np.zeros((4, 4), np.float32), "dtype"),
    (-np.ones((4, 4), np.int32), "negative"),
])
def test_bad_masks(mask, message):
    with pytest.raises(ValueError, match=message):
        weight_map(mask)


def test_bad_parameters():
    with pytest.raises(ValueError, match="sigma"):
        weight_map(np.zeros((4, 4), bool), sigma=0.0)
    with pytest.raises(ValueError, match="ring"):
        weight_map(np.zeros((4, 4), bool), ring=-1)


def test_a_far_object_still_adds_to_a_pixel_inside_the_ring():
    """docs/METHOD.md: the ring picks the pixels that take the sum, not the objects in it.

    Two 1-px cells on one row: the pixel 5 px right of the first is 55 px left of the second, so
    S = exp(-25/1250) + exp(-3025/1250), computed by hand: 0.98020 + 0.08892 = 1.06912.
    """
    labels = np.zeros((3, 200), np.int32)
    labels[1, 20] = 1
    labels[1, 80] = 2
    w = weight_map(labels, sigma=25.0, ring=50)
    want = math.exp(-25 / 1250) + math.exp(-3025 / 1250)
    assert float(w[1, 25]) == pytest.approx(want, rel=1e-5)
    assert float(w[1, 25]) == pytest.approx(1.06912, abs=1e-4)
    # 60 px right of the second cell: outside the ring of every cell, so plain background.
    assert float(w[1, 140]) == 1.0
