"""core.render: box colours and pixels, outlines on boundaries only, display adjust, heatmaps."""
import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from core.metrics import match_objects
from core.render import (OUTCOME_COLORS, adjust_display, colormap_lut, crop_around,
                         draw_boxes, draw_outcome_boxes, draw_outlines, heatmap_overlay,
                         outcome_boxes)

GREEN, RED, BLUE = (OUTCOME_COLORS[k] for k in ("TP", "FP", "FN"))


@pytest.fixture
def crafted():
    """One TP (true 1 / pred 1), one FN (true 2), two FPs (pred 2, pred 3 in the corner)."""
    true = np.zeros((120, 160), np.int32)
    pred = np.zeros((120, 160), np.int32)
    true[10:20, 10:20] = 1
    true[40:50, 120:130] = 2    # centroids of unpaired objects lie > 50 px from any other
    pred[11:21, 11:21] = 1
    pred[90:100, 20:30] = 2
    pred[0:5, 0:5] = 3          # touches the image corner: its box must be clipped
    match = match_objects(true, pred)
    assert (match.tp, match.fp, match.fn) == (1, 2, 1)
    return np.full((120, 160, 3), 7, np.uint8), match, true, pred


def _where(out, colour):
    return np.all(out == colour, axis=-1)


def _ring(shape, r0, c0, r1, c1, t):
    """Pixels of a t-wide frame whose outside is rows r0..r1-1, cols c0..c1-1."""
    ring = np.zeros(shape, bool)
    ring[r0:r1, c0:c1] = True
    ring[r0 + t:r1 - t, c0 + t:c1 - t] = False
    return ring


def test_outcome_boxes_colours_and_pixels(crafted):
    rgb, match, true, pred = crafted
    out = draw_outcome_boxes(rgb, match, true, pred, thickness=2)
    shape = out.shape[:2]
    # Default pad = thickness: the 2 px line lies just outside each object's bounding box; the
    # corner FP's box is clipped to the image and closed along its edges.
    np.testing.assert_array_equal(_where(out, GREEN), _ring(shape, 9, 9, 23, 23, 2))
    np.testing.assert_array_equal(_where(out, BLUE), _ring(shape, 38, 118, 52, 132, 2))
    expected_red = _ring(shape, 88, 18, 102, 32, 2) | _ring(shape, 0, 0, 7, 7, 2)
    np.testing.assert_array_equal(_where(out, RED), expected_red)
    assert int(_where(out, GREEN).sum()) == 14 * 14 - 10 * 10
    # Everything else, the objects' own pixels included, is the untouched image.
    drawn = _where(out, GREEN) | _where(out, RED) | _where(out, BLUE)
    assert np.all(out[~drawn] == 7)
    assert np.all(rgb == 7), "the input is never modified"


def test_outcome_boxes_list_and_bad_match(crafted):
    _, match, true, pred = crafted
    boxes = outcome_boxes(match, true, pred)
    assert [(b.outcome, b.label) for b in boxes] == [("TP", 1), ("FP", 2), ("FP", 3), ("FN", 2)]
    assert tuple(boxes[0])[2:] == (11, 11, 21, 21)      # a TP gets the predicted object's box
    with pytest.raises(ValueError, match="does not hold"):
        outcome_boxes(match, true, np.zeros_like(pred))


def test_errors_are_drawn_over_true_positives():
    true = np.zeros((30, 30), np.int32)
    pred = np.zeros((30, 30), np.int32)
    true[5:10, 5:10] = 1
    pred[5:10, 5:10] = 1
    true[5:10, 12:17] = 2       # an FN whose box overlaps the TP's
    match = match_objects(true, pred)
    out = draw_outcome_boxes(np.zeros((30, 30, 3), np.uint8), match, true, pred, thickness=1,
                             pad=2)
    assert out[3, 11].tolist() == list(BLUE)   # both top lines cross here: the FN box wins


def test_draw_boxes_clips_and_takes_one_colour_per_box():
    out = draw_boxes(np.zeros((10, 10, 3), np.uint8), [(-3, -3, 4, 4), (8, 8, 20, 20),
                                                       (-9, -9, -1, -1)],
                     color=[(255, 0, 0), (0, 255, 0), (0, 0, 255)], thickness=1)
    red, green = _where(out, (255, 0, 0)), _where(out, (0, 255, 0))
    assert red[3, :4].all() and red[:4, 3].all() and red[0, :4].all() and not red[1:3, 1:3].any()
    assert green[8, 8:].all() and green[8:, 8].all()
    assert not _where(out, (0, 0, 255)).any()                        # wholly outside: nothing


def test_outlines_only_on_boundaries():
    labels = np.zeros((40, 50), np.int32)
    labels[5:20, 5:20] = 1
    labels[5:20, 20:35] = 2      # touches object 1: each keeps its own line
    labels[25:40, 30:50] = 3     # reaches the image edge
    rgb = np.full((40, 50, 3), 50, np.uint8)
    out = draw_outlines(rgb, labels, color=(0, 255, 255))
    painted = np.any(out != rgb, axis=-1)
    np.testing.assert_array_equal(painted, find_boundaries(labels, mode="inner"))
    assert np.all(out[painted] == (0, 255, 255))
    assert not painted[labels == 0].any()


def test_outline_thickness_and_own_colours():
    labels = np.zeros((11, 20), np.int32)
    labels[2:9, 2:9] = 1
    labels[2:9, 11:18] = 2
    out = draw_outlines(np.zeros((11, 20, 3), np.uint8), labels, thickness=2,
                        colors={2: (255, 0, 0)})
    cyan, red = _where(out, (0, 255, 255)), _where(out, (255, 0, 0))
    assert int(cyan.sum()) == 7 * 7 - 3 * 3 and int(red.sum()) == 7 * 7 - 3 * 3
    assert cyan[labels == 1].sum() == cyan.sum() and red[labels == 2].sum() == red.sum()
    bool_mask = draw_outlines(np.zeros((11, 20, 3), np.uint8), labels > 0)
    assert int(_where(bool_mask, (0, 255, 255)).sum()) == 2 * (7 * 7 - 5 * 5)


def test_adjust_display_identity_and_hand_value(rng):
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    same = adjust_display(rgb)
    np.testing.assert_array_equal(same, rgb)
    assert same is not rgb and not np.shares_memory(same, rgb)
    x = np.array([[[100, 255, 0]]], np.uint8)
    # 1.5 * (100 / 255) ** 2 + 0.1 = 0.33068 -> 84.32 -> 84; 255 -> 1.6 clipped; 0 -> 0.1 -> 25.5
    assert adjust_display(x, brightness=0.1, contrast=1.5, gamma=2.0).tolist() == [[[84, 255, 26]]]
    assert adjust_display(x, brightness=-1.0).tolist() == [[[0, 0, 0]]]
    with pytest.raises(ValueError, match="gamma > 0"):
        adjust_display(x, gamma=0)


def test_heatmap_overlay_shape_identity_and_colours(rng):
    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    prob = rng.random((12, 9), dtype=np.float32)
    out = heatmap_overlay(rgb, prob)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(heatmap_overlay(rgb, prob, alpha=0.0), rgb)
    level = np.rint(prob * 255).astype(int)
    full = heatmap_overlay(rgb, prob, alpha=1.0, colormap="viridis")
    np.testing.assert_array_equal(full, colormap_lut("viridis")[level])
    half = heatmap_overlay(rgb, prob, alpha=0.5, colormap="gray").astype(int)
    assert np.abs(half - (rgb.astype(int) + level[..., None]) / 2).max() <= 1
    faded = heatmap_overlay(rgb, np.where(prob < 0.5, 0.0, np.nan), alpha=1.0, fade=True)
    np.testing.assert_array_equal(faded, rgb)        # p = 0 and NaN leave the image as it is
    with pytest.raises(ValueError, match="must match"):
        heatmap_overlay(rgb, prob[:5])


def test_colormaps_and_single_colour():
    assert colormap_lut([(255, 0, 80)]).tolist() == [[255, 0, 80]] * 256
    viridis = colormap_lut("viridis")
    assert viridis[0].tolist() == [68, 1, 84] and viridis[255].tolist() == [253, 231, 37]
    with pytest.raises(ValueError, match="unknown colormap"):
        colormap_lut("jet")


def test_crop_around_clips_and_magnifies():
    image = np.arange(100, dtype=np.int32).reshape(10, 10)
    crop = crop_around(image, (1, 7, 3, 9), margin=2, scale=3)
    assert crop.shape == (3 * 5, 3 * 5)               # rows 0..4 (clipped), cols 5..9 (clipped)
    assert crop[0, 0] == image[0, 5] and crop[-1, -1] == image[4, 9]
    rgb = np.zeros((10, 10, 3), np.uint8)
    assert crop_around(rgb, (4, 4, 6, 6), margin=1, scale=1).shape == (4, 4, 3)


def test_bad_inputs_say_what_to_pass():
    with pytest.raises(ValueError, match="uint8"):
        draw_outlines(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="pixel for pixel"):
        draw_outlines(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.int32))
