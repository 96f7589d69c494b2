"""core.postprocess: presets, scaling with cell_diameter, and the heatmap-to-labels chain."""
import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import watershed

from core.postprocess import PostprocessParams, heatmap_to_labels, mask_to_labels

PAPER_AT_50 = dict(threshold=0.55, hole_area_px=600.0, min_area_px=200.0, peak_filter_px=30,
                   peak_footprint_px=40, min_marker_area_px=25.0, min_area_after_split_px=0.0)
FNC_AT_50 = dict(threshold=0.5, hole_area_px=50.0, min_area_px=200.0, peak_filter_px=30,
                 peak_footprint_px=40, min_marker_area_px=25.0, min_area_after_split_px=200.0)


@pytest.mark.parametrize("make, numbers", [(PostprocessParams.paper, PAPER_AT_50),
                                           (PostprocessParams.fnc_v2, FNC_AT_50)])
def test_preset_numbers_at_reference_diameter(make, numbers):
    p = make()
    assert p.cell_diameter == 50.0 and p.preset == make.__name__
    assert {k: getattr(p, k) for k in numbers} == numbers


@pytest.mark.parametrize("make", [PostprocessParams.paper, PostprocessParams.fnc_v2])
def test_scaling_to_24_px_agrees_by_both_routes(make):
    built = make(cell_diameter=24)
    replaced = dataclasses.replace(make(), cell_diameter=24)
    assert built == replaced
    s = 24 / 50
    assert replaced.min_area_px == pytest.approx(200 * s * s)  # 46.08
    assert replaced.min_marker_area_px == pytest.approx(25 * s * s)
    assert replaced.peak_filter_px == 14 and replaced.peak_footprint_px == 19  # 14.4, 19.2 rounded
    assert replaced.to_dict() == built.to_dict()


def test_dict_round_trip_is_json_and_ignores_derived_keys():
    p = PostprocessParams.fnc_v2(cell_diameter=43)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["cell_diameter"] == 43 and d["preset"] == "fnc_v2"
    assert d["hole_area_px"] == pytest.approx(50 * (43 / 50) ** 2)
    assert PostprocessParams.from_dict(d) == p
    d["min_area_px"] = 1.0  # a stale derived size must not override the stored one
    assert PostprocessParams.from_dict(d).min_area_px == p.min_area_px
    with pytest.raises(ValueError, match="unknown"):
        PostprocessParams.from_dict({**d, "min_aera": 3})


def test_invalid_params_and_presets():
    with pytest.raises(ValueError, match="cell_diameter"):
        PostprocessParams.paper(cell_diameter=0)
    with pytest.raises(ValueError, match="threshold"):
        dataclasses.replace(PostprocessParams.paper(), threshold=1.5)
    with pytest.raises(ValueError, match="preset"):
        PostprocessParams.from_preset("v3")
    assert PostprocessParams.from_preset("paper", 30) == PostprocessParams.paper(30)


def two_touching_disks(shape=(80, 130), radius=22, gap=40):
    mask = np.zeros(shape, bool)
    mask[disk((40, 40), radius)] = True
    mask[disk((40, 40 + gap), radius)] = True
    return mask


@pytest.mark.parametrize("make", [PostprocessParams.paper, PostprocessParams.fnc_v2])
def test_touching_disks_are_split_and_stay_apart(make):
    labels = mask_to_labels(two_touching_disks(), make())
    assert labels.dtype == np.int32 and labels.max() == 2
    assert set(np.unique(labels)) == {0, 1, 2}
    # The line keeps them apart once flattened, under 8- and 4-connectivity.
    assert ndi.label(labels > 0, structure=np.ones((3, 3)))[1] == 2
    left, right = labels[40, 30], labels[40, 90]
    assert left and right and left != right


def test_a_single_disk_stays_whole():
    mask = np.zeros((80, 80), bool)
    mask[disk((40, 40), 25)] = True
    labels = mask_to_labels(mask, PostprocessParams.paper())
    assert labels.max() == 1 and np.array_equal(labels > 0, mask)


def test_more_than_255_cells_keep_distinct_int32_labels():
    mask = np.zeros((200, 400), bool)
    for r in range(0, 200, 10):
        for c in range(0, 400, 10):
            mask[r + 2:r + 8, c + 2:c + 8] = True  # 20 x 40 = 800 squares of 36 px
    labels = mask_to_labels(mask, PostprocessParams.paper(cell_diameter=10))
    assert labels.dtype == np.int32 and labels.max() == 800
    assert np.array_equal(np.unique(labels), np.arange(801))


def test_small_holes_are_filled_large_ones_kept():
    mask = np.zeros((100, 200), bool)
    mask[disk((50, 50), 30)] = True
    mask[disk((50, 50), 5)] = False                  # 81 px hole
    mask[disk((50, 150), 30)] = True
    mask[disk((50, 150), 20)] = False                # ~1250 px hole
    labels = mask_to_labels(mask, PostprocessParams.paper())
    assert labels[50, 50] > 0 and labels[50, 150] == 0
    # fnc_v2 fills only holes below 50 px.
    assert mask_to_labels(mask, PostprocessParams.fnc_v2())[50, 50] == 0


def test_background_pocket_at_the_image_edge_is_not_a_hole():
    mask = np.zeros((40, 60), bool)
    mask[0:30, 10:40] = True
    mask[0:3, 20:23] = False  # 9 px notch open to the image edge
    assert mask_to_labels(mask, PostprocessParams.paper())[0, 21] == 0


def test_small_objects_are_removed_at_the_scaled_size():
    mask = np.zeros((60, 60), bool)
    mask[10:20, 10:20] = True  # 100 px: below 200 at d=50, above 46 at d=24
    assert mask_to_labels(mask, PostprocessParams.paper()).max() == 0
    assert mask_to_labels(mask, PostprocessParams.paper(cell_diameter=24)).max() == 1


def test_objects_too_small_after_the_split_are_removed():
    mask = np.zeros((80, 120), bool)
    mask[disk((40, 40), 22)] = True
    mask[disk((40, 72), 13)] = True  # a smaller cell touching the big one
    # At d=30 the peak footprint (24 px) no longer spans both cells, so they split.
    params = PostprocessParams.paper(cell_diameter=30)
    assert mask_to_labels(mask, params).max() == 2
    strict = dataclasses.replace(params, min_area_after_split=2000.0)  # 720 px at d=30
    labels = mask_to_labels(mask, strict)
    assert labels.max() == 1 and labels[40, 40] == 1 and labels[40, 75] == 0


def test_heatmap_threshold_is_strict_and_can_be_overridden():
    prob = np.zeros((60, 60), np.float32)
    prob[10:40, 10:40] = 0.55
    params = PostprocessParams.paper()
    assert heatmap_to_labels(prob, params).max() == 0  # p > 0.55 is required
    assert heatmap_to_labels(prob, params, threshold=0.5).max() == 1
    with pytest.raises(ValueError, match="threshold"):
        heatmap_to_labels(prob, params, threshold=2.0)
    with pytest.raises(ValueError, match="2D"):
        heatmap_to_labels(prob[None], params)


def reference_labels(mask, params):
    """The same chain on whole frames, one component at a time: slow but window-free."""
    components, n = ndi.label(mask, structure=np.ones((3, 3)))
    out, total = np.zeros(mask.shape, np.int32), 0
    for k in range(1, n + 1):
        inside = components == k
        if inside.sum() < params.min_area_px:
            continue
        dist = ndi.distance_transform_edt(inside)
        plateau = ndi.maximum_filter(dist, size=params.peak_filter_px, mode="constant")
        peaks = inside & (plateau == ndi.maximum_filter(plateau, size=params.peak_footprint_px,
                                                        mode="constant"))
        blobs, _ = ndi.label(peaks, structure=np.ones((3, 3)))
        sizes = np.bincount(blobs.ravel())
        kept = [b for b in range(1, sizes.size) if sizes[b] >= params.min_marker_area_px]
        if len(kept) <= 1:
            out[inside] = total = total + 1
            continue
        markers = np.zeros(mask.shape, np.int32)
        for i, b in enumerate(kept, start=1):
            markers[blobs == b] = i
        pieces = watershed(-dist, markers, mask=inside, connectivity=2, compactness=1.0)
        pieces[ndi.maximum_filter(pieces, size=3, mode="constant") > pieces] = 0
        for i in range(1, len(kept) + 1):
            if (pieces == i).any():
                total += 1
                out[pieces == i] = total
    return out


def test_bounding_box_windows_match_whole_frame_processing(rng):
    mask = np.zeros((160, 220), bool)
    for _ in range(14):
        r, c = rng.integers(0, 160), rng.integers(0, 220)  # some cut by the image edge
        mask[disk((r, c), rng.uniform(6, 16), shape=mask.shape)] = True
    params = PostprocessParams.paper(cell_diameter=30)
    want = reference_labels(mask, params)
    assert want.max() >= 8
    np.testing.assert_array_equal(mask_to_labels(mask, dataclasses.replace(params, hole_area=0)),
                                  want)
