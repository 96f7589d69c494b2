"""core.synthetic: the default (TRAIN) images, configurations, unlabelled artefacts, gaps, image_stats."""
import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import rectangle

from core.synthetic import (
    HELDOUT, TRAIN, VALIDATION, GeneratorConfig, artefact_kinds, config_hash, image_stats,
    make_dataset, make_image,
)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(6, seed=21, shape=(400, 480))


def test_deterministic_for_a_seed():
    first = make_dataset(2, seed=5, shape=(200, 260))
    second = make_dataset(2, seed=5, shape=(200, 260))
    for (rgb_a, lab_a), (rgb_b, lab_b) in zip(first, second):
        np.testing.assert_array_equal(rgb_a, rgb_b)
        np.testing.assert_array_equal(lab_a, lab_b)
    other = make_dataset(1, seed=6, shape=(200, 260))[0][0]
    assert not np.array_equal(first[0][0], other)
    # Without a configuration the images are TRAIN's (the demo project and model use them).
    trained = make_dataset(2, seed=5, shape=(200, 260), config=TRAIN)
    for (rgb_a, lab_a), (rgb_b, lab_b) in zip(first, trained):
        np.testing.assert_array_equal(rgb_a, rgb_b)
        np.testing.assert_array_equal(lab_a, lab_b)


def test_types_and_shapes(dataset):
    for rgb, labels in dataset:
        assert rgb.shape == (400, 480, 3) and rgb.dtype == np.uint8
        assert labels.shape == (400, 480) and labels.dtype == np.int32


def test_label_ids_contiguous(dataset):
    for _, labels in dataset:
        np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_density_varies_and_small_images_hold_few_cells():
    counts = [labels.max() for _, labels in make_dataset(30, seed=3, shape=(300, 400))]
    assert min(counts) <= 1 and max(counts) >= 5
    assert all(labels.max() <= 20 for _, labels in make_dataset(5, seed=4, shape=(128, 128)))


def test_touching_cells_keep_separate_ids():
    """Clumps exist: background pixels with two different cells in their 3x3 neighbourhood."""
    from scipy import ndimage as ndi

    gaps = 0
    for _, labels in make_dataset(8, seed=9, shape=(500, 500)):
        highest = ndi.maximum_filter(labels, size=3, mode="constant")
        big = np.iinfo(np.int32).max
        lowest = ndi.minimum_filter(np.where(labels > 0, labels, big), size=3, mode="constant",
                                    cval=big)
        gaps += int(((labels == 0) & (highest > 0) & (lowest < highest)).sum())
    assert gaps > 0


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        make_image(np.random.default_rng(0), shape=(0, 10))


def test_labels_survive_flattening_to_a_mask():
    """Touching cells are one pixel apart in the labels, so mask -> components gives them back."""
    from scipy import ndimage as ndi

    from core.synthetic import make_dataset

    total_cells = total_components = 0
    for _, labels in make_dataset(6, seed=21, shape=(600, 800)):
        components = ndi.label(labels > 0, structure=np.ones((3, 3)))[1]
        total_cells += int(labels.max())
        total_components += components
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert total_cells > 20          # the check means something only if cells were drawn
    assert total_components == total_cells


# --- Configured generator (GeneratorConfig, TRAIN / VALIDATION / HELDOUT) --------------------

SMALL = (256, 320)
# Every artefact kind off, no texture, no camera: what is left is a flat tissue glow.
NOTHING = dict(
    unstained_per_field=(0.0, 0.0), neurites_per_field=(0.0, 0.0), specks_per_field=(0.0, 0.0),
    dust_per_field=(0.0, 0.0), fold_chance=0.0, strip_chance=0.0, band_chance=0.0,
    edge_chance=0.0, unevenness=(0.0, 0.0), vignetting=(0.0, 0.0), blur=(0.0, 0.0),
    read_noise=(0.0, 0.0), shot_noise=(0.0, 0.0),
)
# One kind at a time, at a rate that puts several in a small image.
ONE_KIND = {
    "unstained cells": dict(unstained_per_field=(2000.0, 2000.0)),
    "neurites": dict(neurites_per_field=(2000.0, 2000.0)),
    "specks": dict(specks_per_field=(2000.0, 2000.0)),
    "dust": dict(dust_per_field=(2000.0, 2000.0)),
    "tissue folds": dict(fold_chance=1.0),
    "bright strips": dict(strip_chance=1.0),
    "autofluorescent bands": dict(band_chance=1.0),
    "tissue edges": dict(edge_chance=1.0),
    "uneven background": dict(unevenness=(0.4, 0.4)),
    "vignetting": dict(vignetting=(0.5, 0.5)),
    "camera noise": dict(read_noise=(1.5, 1.5)),
}


def _variant(config=TRAIN, **fields):
    return dataclasses.replace(config, **fields)


def test_configs_are_frozen_named_and_distinct():
    for config in (TRAIN, VALIDATION, HELDOUT):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.cell_peak = (1.0, 2.0)
    assert len({c.name for c in (TRAIN, VALIDATION, HELDOUT)}) == 3
    assert len({config_hash(c) for c in (TRAIN, VALIDATION, HELDOUT)}) == 3
    # Distinct in substance, not only in name: many ranges differ pairwise.
    fields = [f.name for f in dataclasses.fields(GeneratorConfig) if f.name != "name"]
    for a, b in ((TRAIN, VALIDATION), (TRAIN, HELDOUT), (VALIDATION, HELDOUT)):
        assert sum(getattr(a, f) != getattr(b, f) for f in fields) >= 10


def test_heldout_has_artefact_kinds_that_train_and_validation_lack():
    assert TRAIN.dust_per_field == (0.0, 0.0) and HELDOUT.dust_per_field[0] > 0
    assert TRAIN.vignetting == (0.0, 0.0) and HELDOUT.vignetting[0] > 0
    assert len(artefact_kinds(HELDOUT) - artefact_kinds(TRAIN)) >= 2
    # Settings chosen on VALIDATION must not be steered by HELDOUT's own kinds.
    assert artefact_kinds(VALIDATION) == artefact_kinds(TRAIN)
    assert set(ONE_KIND) <= artefact_kinds(HELDOUT)


def test_heldout_is_unchanged():
    """HELDOUT was committed before any tuning; changing it needs a note in bench/RESULTS.md."""
    expected = "474c92c57e76beca95094500286bc4cb1725be176fc3422c533767c857e84cfc"
    assert config_hash(HELDOUT) == expected
    assert config_hash(_variant(HELDOUT)) == config_hash(HELDOUT)
    assert config_hash(_variant(HELDOUT, touching_gap=0)) != config_hash(HELDOUT)


@pytest.mark.parametrize("fields, message", [
    (dict(cell_radius=(25.0, 7.0)), "cell_radius"),
    (dict(fold_chance=1.5), "fold_chance"),
    (dict(clump_size=(1, 3)), "clump_size"),
    (dict(stains=(("blue", 1.0),)), "stains"),
    (dict(exposure=(0.0, 1.0)), "exposure"),
    (dict(touching_gap=-1), "touching_gap"),
])
def test_config_rejects_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        _variant(**fields)


def test_make_image_rejects_a_config_of_the_wrong_type():
    with pytest.raises(ValueError, match="GeneratorConfig"):
        make_image(np.random.default_rng(0), SMALL, config={"name": "train"})


@pytest.mark.parametrize("config", [TRAIN, VALIDATION, HELDOUT], ids=lambda c: c.name)
def test_configured_images_are_deterministic_per_seed(config):
    first = make_dataset(2, seed=5, shape=SMALL, config=config)
    second = make_dataset(2, seed=5, shape=SMALL, config=config)
    for (rgb_a, lab_a), (rgb_b, lab_b) in zip(first, second):
        assert rgb_a.shape == (*SMALL, 3) and rgb_a.dtype == np.uint8 and lab_a.dtype == np.int32
        np.testing.assert_array_equal(rgb_a, rgb_b)
        np.testing.assert_array_equal(lab_a, lab_b)
        np.testing.assert_array_equal(np.unique(lab_a), np.arange(lab_a.max() + 1))
    other = make_dataset(1, seed=6, shape=SMALL, config=config)[0][0]
    assert not np.array_equal(first[0][0], other)


def test_configurations_share_no_layout_for_one_seed():
    """The name salts the random streams: TRAIN and HELDOUT of one seed are unrelated draws."""
    config = _variant(cells_per_field=(300.0, 300.0))
    same = make_image(np.random.default_rng(3), SMALL, config=config)[1]
    renamed = make_image(np.random.default_rng(3), SMALL, config=_variant(config, name="x"))[1]
    assert same.max() > 0 and renamed.max() > 0
    again = make_image(np.random.default_rng(3), SMALL, config=config)[1]
    np.testing.assert_array_equal(same, again)
    assert not np.array_equal(same > 0, renamed > 0)


def test_without_cells_or_artefacts_the_image_is_flat():
    rgb, labels = make_image(np.random.default_rng(1), SMALL,
                             config=_variant(cells_per_field=(0.0, 0.0), **NOTHING))
    assert labels.max() == 0
    assert np.ptp(rgb.reshape(-1, 3), axis=0).max() == 0


@pytest.mark.parametrize("kind", sorted(ONE_KIND))
def test_an_artefact_alone_is_drawn_and_never_labelled(kind):
    config = _variant(cells_per_field=(0.0, 0.0), **{**NOTHING, **ONE_KIND[kind]})
    for seed in range(2):
        rgb, labels = make_image(np.random.default_rng(seed), (128, 160), config=config)
        assert labels.max() == 0
        assert np.ptp(rgb.reshape(-1, 3), axis=0).max() > 0, f"{kind} drew nothing"


def test_artefacts_never_move_or_add_a_label():
    """The same cells with every artefact kind off, or on at high rates: identical labels."""
    cells = dict(cells_per_field=(1500.0, 1500.0), edge_chance=0.0)
    bare = _variant(**{**NOTHING, **cells})
    busy = _variant(**{**NOTHING, **{k: v for kind in ONE_KIND.values() for k, v in kind.items()},
                       **cells, "blur": (1.5, 1.5)})
    for seed in range(2):
        rgb_bare, labels_bare = make_image(np.random.default_rng(seed), SMALL, config=bare)
        rgb_busy, labels_busy = make_image(np.random.default_rng(seed), SMALL, config=busy)
        assert labels_bare.max() >= 5
        np.testing.assert_array_equal(labels_busy, labels_bare)
        # The artefacts are there, outside the cells too.
        assert (rgb_busy[labels_bare == 0] != rgb_bare[labels_bare == 0]).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("bounds", [(8.0, 11.0), (19.0, 24.0)])
def test_cell_radii_stay_in_the_configured_range(bounds):
    config = _variant(**NOTHING, cells_per_field=(800.0, 800.0), median_radius=bounds,
                      cell_radius=bounds, clump_chance=0.0)
    radii = []
    for rgb, labels in make_dataset(3, seed=2, shape=SMALL, config=config):
        # Whole cells only: away from the border and from other cells (no gap trimmed).
        near_other = ndi.maximum_filter(labels, size=5) != ndi.minimum_filter(
            np.where(labels > 0, labels, labels.max() + 1), size=5)
        for cell in range(1, labels.max() + 1):
            rows, cols = np.nonzero(labels == cell)
            if rows.min() == 0 or cols.min() == 0 or rows.max() == SMALL[0] - 1 \
                    or cols.max() == SMALL[1] - 1 or near_other[rows, cols].any():
                continue
            radii.append(np.sqrt(rows.size / np.pi))
    assert len(radii) >= 5
    # Lobes change the area of the drawn outline by a few percent around pi * r**2.
    assert bounds[0] * 0.85 <= min(radii) and max(radii) <= bounds[1] * 1.15
    assert bounds[0] * 0.95 <= np.median(radii) <= bounds[1] * 1.05


def _nearest_other_cell(labels, reach):
    """Per labelled pixel: is another cell within ``reach`` px (chessboard)?"""
    size = 2 * reach + 1
    big = np.iinfo(np.int32).max
    highest = ndi.maximum_filter(labels, size=size, mode="constant")
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, big), size=size, mode="constant",
                                cval=big)
    return (labels > 0) & ((highest != labels) | (lowest != labels))


@pytest.mark.parametrize("gap", [0, 1, 2])
def test_clumps_touch_with_the_configured_label_gap(gap):
    config = _variant(**NOTHING, cells_per_field=(600.0, 600.0), clump_chance=1.0,
                      clump_size=(3, 4), touching_gap=gap)
    data = make_dataset(3, seed=4, shape=SMALL, config=config)
    near = sum(int(_nearest_other_cell(labels, gap + 1).sum()) for _, labels in data)
    assert near > 0  # cells in clumps: another cell right across the gap
    if gap:
        for _, labels in data:
            assert not _nearest_other_cell(labels, gap).any()
            # As stored today (0/255), every cell reads back as one 8-connected component.
            assert ndi.label(labels > 0, structure=np.ones((3, 3)))[1] == labels.max()


@pytest.mark.parametrize("stain", ["yellow", "red", "green"])
def test_stains_colour_the_cells_and_the_tissue(stain):
    config = _variant(stains=((stain, 1.0),), cells_per_field=(1500.0, 1500.0))
    stats = image_stats(*make_image(np.random.default_rng(8), SMALL, config=config))
    assert stats["cells"] >= 5
    background = stats["background_median"]
    if stain == "yellow":  # red and green light, almost no blue
        assert 0.6 < stats["g_over_r"] < 1.0 and stats["b_over_r"] < 0.15
        assert background[0] > background[1]
    elif stain == "red":
        assert stats["g_over_r"] < 0.3 and stats["b_over_r"] < 0.15
        assert background[0] > background[1]
    else:  # green: little red
        assert stats["g_over_r"] > 3
        assert background[1] > background[0]


def test_image_stats_against_hand_computed_values():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[...] = (5, 1, 0)
    labels = np.zeros((20, 30), np.int32)
    # Four square cells: area, colour. Brightness (mean R + G + B): 360, 155, 120, 330.
    cells = [((1, 1), 2, (200, 150, 10)), ((1, 5), 3, (100, 50, 5)),
             ((1, 10), 4, (40, 40, 40)), ((10, 10), 5, (220, 110, 0))]
    for cell, (corner, side, colour) in enumerate(cells, start=1):
        where = rectangle(corner, extent=(side, side))
        labels[where] = cell
        rgb[where] = colour
    stats = image_stats(rgb, labels)
    assert stats["cells"] == 4
    # Areas 4, 9, 16, 25: median (9 + 16) / 2; quartiles by linear interpolation 7.75 and 18.25.
    assert stats["area_median"] == 12.5 and stats["area_iqr"] == pytest.approx(10.5)
    assert stats["foreground_pct"] == pytest.approx(100 * 54 / 600)
    # The bright half is the first and the last cell: 4 px of (200, 150, 10), 25 of (220, 110, 0).
    assert stats["g_over_r"] == pytest.approx((4 * 150 + 25 * 110) / (4 * 200 + 25 * 220))
    assert stats["b_over_r"] == pytest.approx(4 * 10 / (4 * 200 + 25 * 220))
    assert stats["background_median"] == (5.0, 1.0, 0.0)
    # A 0/255 mask: its cells are its 8-connected components.
    mask = np.where(labels > 0, 255, 0).astype(np.uint8)
    assert image_stats(rgb, mask)["cells"] == 4
    assert image_stats(rgb, mask)["area_median"] == 12.5


def test_image_stats_without_cells_and_with_bad_shapes():
    rgb = np.full((8, 8, 3), 7, np.uint8)
    stats = image_stats(rgb, np.zeros((8, 8), np.int32))
    assert stats["cells"] == 0 and stats["foreground_pct"] == 0
    assert np.isnan(stats["area_median"]) and np.isnan(stats["g_over_r"])
    assert stats["background_median"] == (7.0, 7.0, 7.0)
    with pytest.raises(ValueError, match="same"):
        image_stats(rgb, np.zeros((8, 9), np.int32))
