"""Synthetic fluorescence images of stained neurons, with instance labels.

Two generators live here. :func:`make_image` with a :class:`GeneratorConfig` draws what labs'
images show, in ranges a configuration sets:

- things to count: stained somata of varied size, brightness and irregular shape, some in
  touching clumps of 2-4, some with thin processes (drawn, never labelled);
- things not to count, never in the labels: dim unstained cells, thin bright neurites, bright
  specks and dust, tissue folds, bright strips, autofluorescent bands, tissue edges, uneven
  background, vignetting, camera noise and blur;
- yellow, red or green stains at several exposures.

Three named configurations keep the roles apart: :data:`TRAIN` to fit on, :data:`VALIDATION`
to choose settings on, and :data:`HELDOUT`, never tuned, to measure on.

Without a configuration :func:`make_image` draws :data:`TRAIN` images (the demo project and
the demo model use them).

Sizes are physical (pixels at the FNC scale) whatever the image shape, so a small image
simply holds fewer cells. Every object is drawn inside its own bounding box, which
keeps one 1200 x 1600 image at about a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging

import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

logger = logging.getLogger(__name__)

_FULL_AREA = 1200 * 1600


#: Light of each stain as (cell RGB, background RGB) weights. Yellow cells match the FNC yellow
#: reference (bright cells' G/R about 0.75 and B/R about 0.07, see ``REFERENCE_STATS``) once the
#: minor channels fade in the cells' dim parts; red and green stains have one dominant channel.
#: The tissue's own glow takes the stain's filter colour, faint in the minor channels.
STAINS = {
    "yellow": ((1.0, 0.93, 0.08), (1.0, 0.05, 0.0)),
    "red": ((1.0, 0.16, 0.05), (1.0, 0.05, 0.0)),
    "green": ((0.14, 1.0, 0.10), (0.12, 1.0, 0.06)),
}

#: :func:`image_stats` of the FNC yellow reference (``shared/reference-images``: a 1600x1200
#: FNC image and its mask, both scaled down about 3.3 times, from Figure 2 of the FNC v2 paper),
#: computed once by ``bench/reference_stats.py`` with areas scaled by 3.3**2 to full resolution.
#: One image, yellow only: a guide for the eye and for scale, not a target to fit.
REFERENCE_STATS = {
    "cells": 16,
    "area_median": 1421.145,
    "area_iqr": 465.547,
    "foreground_pct": 1.205,
    "g_over_r": 0.751,
    "b_over_r": 0.065,
    "background_median": (4.0, 0.0, 0.0),
}

# Fields whose value is a (low, high) range; every other number is a single setting.
_RANGE_FIELDS = (
    "cells_per_field", "median_radius", "cell_radius", "elongation", "cell_peak", "focus_blur",
    "exposure", "background_level", "unevenness", "vignetting", "unstained_per_field",
    "neurites_per_field", "specks_per_field", "dust_per_field", "blur", "read_noise",
    "shot_noise",
)
_CHANCE_FIELDS = ("process_chance", "clump_chance", "edge_chance", "fold_chance", "strip_chance",
                  "band_chance")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """What the images of one synthetic data set may hold.

    Every range is ``(low, high)``; each image (or each cell, where said) draws its own value
    uniformly from it, or log-uniformly where said. A range of ``(0, 0)`` or a chance of 0
    turns that kind of thing off. Counts ``*_per_field`` are expected numbers in a full
    1200 x 1600 field: a smaller image holds proportionally fewer (sizes are physical).
    Light levels are 8-bit units before the exposure factor.

    Attributes
    ----------
    name : str
        Shown by benchmarks; part of the hash.
    cells_per_field : (float, float)
        Log-uniform per image: the expected number of stained cells (the things to count).
    median_radius : (float, float)
        Per image, px: the equivalent radius of its typical cell.
    radius_spread : float
        Standard deviation of a cell's log radius around the image's median.
    cell_radius : (float, float)
        Px: every cell's equivalent radius is clipped into this range.
    elongation : (float, float)
        Per cell: ratio of the long to the short axis (area kept).
    irregularity : float
        Amplitude of the low harmonics (2-5 lobes) of a cell's outline; 0 is an ellipse.
    cell_peak : (float, float)
        Log-uniform per cell: the brightness of its centre in the dominant channel.
    focus_blur : (float, float)
        Per cell, px: Gaussian sigma of its defocus (cells lie above or below the focal plane).
    process_chance : float
        Share of cells with 1-4 thin processes (drawn, never labelled).
    clump_chance : float
        Share of placed cells that seed a clump of touching cells.
    clump_size : (int, int)
        Cells in a clump, the seed included.
    stains : tuple of (str, float)
        Stain names from :data:`STAINS` with their relative frequencies; one stain per image.
    hue_jitter : float
        Per image: relative standard deviation of each minor channel's share of the stain.
    exposure : (float, float)
        Log-uniform per image: factor on all light (cells, tissue, artefacts) before the camera
        noise; bright parts saturate at 255.
    background_level : (float, float)
        Per image: the tissue's glow in the stain's dominant channel.
    unevenness : (float, float)
        Per image: relative amplitude of the smooth patches and mottling of the tissue.
    edge_chance : float
        Chance that a wavy tissue edge crosses the image, beyond which lies dark, empty slide.
    vignetting : (float, float)
        Per image: share of light lost in the corners (the optics' fall-off, quadratic in the
        distance from an off-centre optical axis).
    unstained_per_field : (float, float)
        Per image: expected dim greyish somata, unstained neurons not to be counted.
    neurites_per_field : (float, float)
        Per image: expected thin bright curving neurites with no soma in view.
    specks_per_field : (float, float)
        Per image: expected small bright dots (1-4 px radius) of precipitate or debris.
    dust_per_field : (float, float)
        Per image: expected whitish dust particles and lint fibres, broad-spectrum
        autofluorescence of about a cell's size.
    fold_chance : float
        Chance of a tissue fold: a bright wavy strip of double tissue with sharp sides.
    strip_chance : float
        Chance of a straight bright rod or scratch as bright as a cell.
    band_chance : float
        Chance of a broad autofluorescent band (a fibre tract or lipofuscin-rich layer),
        soft-edged and dimmer than cells.
    blur : (float, float)
        Per image, px: Gaussian sigma of the whole image's defocus.
    read_noise : (float, float)
        Per image: standard deviation of the camera's read noise.
    shot_noise : (float, float)
        Per image: photon noise gain; a pixel's noise variance is this times its signal.
    touching_gap : int
        Background px kept between different cells in the labels (not in the image). Masks
        are stored today as 0/255, with cells as 8-connected components, so touching cells
        need the 1-px gap an annotator draws to read back as separate cells. Set it to 0 once
        label masks are stored (issue 11): labels then touch where the cells do.

    Examples
    --------
    >>> HELDOUT.name, HELDOUT.touching_gap
    ('heldout', 1)
    >>> dataclasses.replace(HELDOUT, clump_chance=2)
    Traceback (most recent call last):
    ...
    ValueError: clump_chance must lie in [0, 1] (got 2); it is a share of cells or images
    """

    name: str
    cells_per_field: tuple[float, float]
    median_radius: tuple[float, float]
    radius_spread: float
    cell_radius: tuple[float, float]
    elongation: tuple[float, float]
    irregularity: float
    cell_peak: tuple[float, float]
    focus_blur: tuple[float, float]
    process_chance: float
    clump_chance: float
    clump_size: tuple[int, int]
    stains: tuple[tuple[str, float], ...]
    hue_jitter: float
    exposure: tuple[float, float]
    background_level: tuple[float, float]
    unevenness: tuple[float, float]
    edge_chance: float
    vignetting: tuple[float, float]
    unstained_per_field: tuple[float, float]
    neurites_per_field: tuple[float, float]
    specks_per_field: tuple[float, float]
    dust_per_field: tuple[float, float]
    fold_chance: float
    strip_chance: float
    band_chance: float
    blur: tuple[float, float]
    read_noise: tuple[float, float]
    shot_noise: tuple[float, float]
    touching_gap: int = 1

    def __post_init__(self):
        for name in _RANGE_FIELDS + ("clump_size",):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high "
                                 f"(got {getattr(self, name)})")
        for name in _CHANCE_FIELDS:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1] (got {getattr(self, name)}); "
                                 "it is a share of cells or images")
        if self.clump_size[0] < 2 or any(int(n) != n for n in self.clump_size):
            raise ValueError(f"clump_size must be whole numbers of at least 2 cells "
                             f"(got {self.clump_size})")
        if self.exposure[0] <= 0:
            raise ValueError(f"exposure must be above 0 (got {self.exposure})")
        unknown = sorted({stain for stain, _ in self.stains} - set(STAINS))
        if not self.stains or unknown or any(weight <= 0 for _, weight in self.stains):
            raise ValueError(f"stains must be (name, weight > 0) pairs with names from "
                             f"{sorted(STAINS)} (got {self.stains})")
        if int(self.touching_gap) != self.touching_gap or self.touching_gap < 0:
            raise ValueError(f"touching_gap must be a whole number of px >= 0 "
                             f"(got {self.touching_gap})")


def config_hash(config):
    """A stable fingerprint of a configuration: sha256 of its canonical JSON.

    Any change to any field changes it, so a benchmark can show which configuration it ran.

    Parameters
    ----------
    config : GeneratorConfig

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> len(config_hash(HELDOUT)), config_hash(HELDOUT) == config_hash(HELDOUT)
    (64, True)
    """
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Never tuned: set once, before any configuration was tuned, and then left alone, so
#: results on it say how the product does on images nobody shaped it for. Against TRAIN it
#: has other ranges (smaller and larger cells, more irregular and elongated, dimmer, more
#: clumps, all three stains equally, wider exposure, noisier, blurrier, more artefacts) and
#: two kinds of artefact TRAIN lacks: dust and vignetting, which come with a lab's own
#: optics and slides rather than with the tissue.
HELDOUT = GeneratorConfig(
    name="heldout",
    cells_per_field=(2.0, 80.0),
    median_radius=(10.0, 21.0),
    radius_spread=0.25,
    cell_radius=(7.0, 25.0),
    elongation=(1.0, 1.8),
    irregularity=0.22,
    cell_peak=(35.0, 260.0),
    focus_blur=(0.5, 3.0),
    process_chance=0.6,
    clump_chance=0.35,
    clump_size=(2, 4),
    stains=(("yellow", 1.0), ("red", 1.0), ("green", 1.0)),
    hue_jitter=0.15,
    exposure=(0.5, 2.0),
    background_level=(2.0, 8.0),
    unevenness=(0.15, 0.5),
    edge_chance=0.5,
    vignetting=(0.15, 0.45),
    unstained_per_field=(10.0, 60.0),
    neurites_per_field=(10.0, 50.0),
    specks_per_field=(10.0, 60.0),
    dust_per_field=(3.0, 20.0),
    fold_chance=0.35,
    strip_chance=0.25,
    band_chance=0.45,
    blur=(0.8, 2.4),
    read_noise=(1.0, 2.2),
    shot_noise=(0.3, 0.8),
    touching_gap=1,
)

#: The configuration to fit on. It lacks two artefact kinds of :data:`HELDOUT` (dust and
#: vignetting); see :func:`artefact_kinds`.
TRAIN = GeneratorConfig(
    name="train",
    cells_per_field=(2.0, 120.0),
    median_radius=(12.0, 22.0),
    radius_spread=0.2,
    cell_radius=(8.0, 24.0),
    elongation=(1.0, 1.5),
    irregularity=0.16,
    cell_peak=(60.0, 400.0),
    focus_blur=(0.5, 2.5),
    process_chance=0.5,
    clump_chance=0.25,
    clump_size=(2, 4),
    stains=(("yellow", 2.0), ("red", 1.0), ("green", 1.0)),
    hue_jitter=0.1,
    exposure=(0.6, 1.6),
    background_level=(2.5, 6.0),
    unevenness=(0.1, 0.35),
    edge_chance=0.4,
    vignetting=(0.0, 0.0),
    unstained_per_field=(2.0, 40.0),
    neurites_per_field=(0.0, 15.0),
    specks_per_field=(5.0, 40.0),
    dust_per_field=(0.0, 0.0),
    fold_chance=0.25,
    strip_chance=0.3,
    band_chance=0.3,
    blur=(0.6, 2.0),
    read_noise=(0.6, 1.4),
    shot_noise=(0.2, 0.6),
    touching_gap=1,
)

#: The configuration to choose settings on (learning rate, post-processing preset): other
#: ranges than both :data:`TRAIN` and :data:`HELDOUT`, and the same artefact kinds as TRAIN,
#: so that no choice is steered by the kinds only HELDOUT has.
VALIDATION = GeneratorConfig(
    name="validation",
    cells_per_field=(1.5, 120.0),
    median_radius=(11.0, 21.5),
    radius_spread=0.22,
    cell_radius=(7.5, 24.5),
    elongation=(1.0, 1.6),
    irregularity=0.19,
    cell_peak=(38.0, 280.0),
    focus_blur=(0.5, 2.8),
    process_chance=0.55,
    clump_chance=0.3,
    clump_size=(2, 4),
    stains=(("yellow", 1.0), ("red", 1.0), ("green", 1.0)),
    hue_jitter=0.12,
    exposure=(0.55, 1.8),
    background_level=(2.2, 7.0),
    unevenness=(0.12, 0.42),
    edge_chance=0.45,
    vignetting=(0.0, 0.0),
    unstained_per_field=(5.0, 50.0),
    neurites_per_field=(2.0, 20.0),
    specks_per_field=(8.0, 50.0),
    dust_per_field=(0.0, 0.0),
    fold_chance=0.3,
    strip_chance=0.3,
    band_chance=0.35,
    blur=(0.7, 2.2),
    read_noise=(0.8, 1.8),
    shot_noise=(0.25, 0.7),
    touching_gap=1,
)

# Artefact kind -> the field that turns it on (a non-zero upper end or chance).
_ARTEFACT_FIELDS = {
    "unstained cells": "unstained_per_field",
    "neurites": "neurites_per_field",
    "specks": "specks_per_field",
    "dust": "dust_per_field",
    "tissue folds": "fold_chance",
    "bright strips": "strip_chance",
    "autofluorescent bands": "band_chance",
    "tissue edges": "edge_chance",
    "uneven background": "unevenness",
    "vignetting": "vignetting",
    "blur": "blur",
    "camera noise": "read_noise",
}


def make_image(rng, shape=(1200, 1600), *, config=None):
    """Draw one synthetic fluorescence image and its cell labels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random choice; the same generator state gives the same image.
    shape : tuple of int
        (rows, cols) of the image.
    config : GeneratorConfig, optional
        What the image may hold: :data:`TRAIN` (None, the default), :data:`VALIDATION`,
        :data:`HELDOUT` or your own.

    Returns
    -------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    labels : ndarray of int32, shape (rows, cols)
        0 is background; stained cells are 1..n, one id each. Cells that touch in the image
        are kept ``config.touching_gap`` px apart in the labels (1 px in the named
        configurations), so a 0/255 mask of them reads back as the same cells (8-connected
        components).
        Nothing that is not a stained cell is ever labelled.

    Examples
    --------
    >>> import numpy as np
    >>> rgb, labels = make_image(np.random.default_rng(0), shape=(64, 80))
    >>> rgb.shape, rgb.dtype, labels.dtype
    ((64, 80, 3), dtype('uint8'), dtype('int32'))
    >>> same = make_image(np.random.default_rng(0), shape=(64, 80), config=TRAIN)[0]
    >>> bool((same == rgb).all())
    True
    """
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must be positive (rows, cols); got {shape}")
    config = TRAIN if config is None else config
    if not isinstance(config, GeneratorConfig):
        raise ValueError(f"config must be a GeneratorConfig such as TRAIN or None; got "
                         f"{type(config).__name__}")
    rgb, labels = _draw_scene(rng, (rows, cols), config)
    logger.debug("synthetic %s image %s with %d cells", config.name, (rows, cols), labels.max())
    return rgb, labels


def make_dataset(n, seed, shape=(1200, 1600), *, config=None):
    """Draw ``n`` synthetic images, reproducibly from ``seed``.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed of the generator; the same seed gives the same list.
    shape : tuple of int
        (rows, cols) of every image.
    config : GeneratorConfig, optional
        As for :func:`make_image`.

    Returns
    -------
    list of (rgb, labels)
        As returned by :func:`make_image`.

    Examples
    --------
    >>> data = make_dataset(2, seed=3, shape=(32, 32))
    >>> len(data), data[0][0].shape
    (2, (32, 32, 3))
    """
    rng = np.random.default_rng(seed)
    return [make_image(rng, shape, config=config) for _ in range(n)]


def artefact_kinds(config):
    """The kinds of not-to-count things a configuration draws.

    Parameters
    ----------
    config : GeneratorConfig

    Returns
    -------
    frozenset of str
        Names such as ``'dust'`` or ``'vignetting'``; a kind is in when the field that sets
        it allows a non-zero amount.

    Examples
    --------
    >>> sorted(artefact_kinds(HELDOUT) - artefact_kinds(TRAIN))
    ['dust', 'vignetting']
    """
    kinds = set()
    for kind, name in _ARTEFACT_FIELDS.items():
        value = getattr(config, name)
        if (value[1] if isinstance(value, tuple) else value) > 0:
            kinds.add(kind)
    return frozenset(kinds)


def image_stats(rgb, labels):
    """Summary figures of an image and its cells, to compare a generator with real images.

    Parameters
    ----------
    rgb : ndarray, shape (rows, cols, 3)
    labels : ndarray of int, shape (rows, cols)
        A label image (one value per cell). A mask with a single non-zero value is binary:
        its cells are its 8-connected components.

    Returns
    -------
    dict
        ``cells``: the number of cells. ``area_median`` and ``area_iqr``: the median and
        interquartile range (75th minus 25th percentile, linear interpolation) of the cells'
        areas in px. ``foreground_pct``: the share of pixels inside cells, in %.
        ``g_over_r`` and ``b_over_r``: the colour of the bright cells, the ratio of the green
        (blue) channel's sum to the red channel's sum over every pixel of the brightest half
        of the cells (ranked by their mean R + G + B; the brighter ``ceil(n / 2)``).
        ``background_median``: the per-channel median (R, G, B) of the pixels outside cells.
        Figures without cells (or without red light in the bright cells) are NaN.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.zeros((4, 6, 3), np.uint8); rgb[..., 0] = 3
    >>> labels = np.zeros((4, 6), np.int32); labels[:2, :2] = 1
    >>> rgb[:2, :2] = (100, 80, 10)
    >>> stats = image_stats(rgb, labels)
    >>> stats["cells"], stats["area_median"], round(stats["foreground_pct"], 2)
    (1, 4.0, 16.67)
    >>> stats["g_over_r"], stats["b_over_r"], stats["background_median"]
    (0.8, 0.1, (3.0, 0.0, 0.0))
    """
    rgb, labels = np.asarray(rgb), np.asarray(labels)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or labels.shape != rgb.shape[:2]:
        raise ValueError(f"image_stats needs an RGB image (rows, cols, 3) and labels of the "
                         f"same (rows, cols); got {rgb.shape} and {labels.shape}")
    values = np.unique(labels[labels != 0])
    if values.size == 1:
        labels = ndi.label(labels != 0, structure=np.ones((3, 3)))[0]
    ids, flat = np.unique(labels, return_inverse=True)
    areas = np.bincount(flat.ravel())
    cells = ids != 0
    nan = float("nan")
    stats = {"cells": int(cells.sum()), "area_median": nan, "area_iqr": nan,
             "foreground_pct": 100.0 * float((labels != 0).mean()), "g_over_r": nan,
             "b_over_r": nan}
    stats["background_median"] = tuple(float(v) for v in np.median(rgb[labels == 0], axis=0)) \
        if (labels == 0).any() else (nan, nan, nan)
    if stats["cells"]:
        low, mid, high = np.percentile(areas[cells], [25, 50, 75])
        stats["area_median"], stats["area_iqr"] = float(mid), float(high - low)
        sums = np.stack([np.bincount(flat.ravel(), weights=rgb[..., c].ravel(), minlength=ids.size)
                         for c in range(3)], axis=1)[cells]
        brightness = sums.sum(axis=1) / areas[cells]
        bright = np.argsort(-brightness, kind="stable")[: -(-stats["cells"] // 2)]
        red, green, blue = sums[bright].sum(axis=0)
        if red > 0:
            stats["g_over_r"], stats["b_over_r"] = float(green / red), float(blue / red)
    return stats


# ---------------------------------------------------------------------------------------------
# The configured generator
# ---------------------------------------------------------------------------------------------

# One random stream per part of the scene, so that turning an artefact kind on or off leaves
# the cells (and their labels) as they were.
_STREAMS = ("scene", "cells", "unstained", "neurites", "specks", "dust", "fold", "strip",
            "band", "camera")
_WHITE = np.ones(3, np.float32)
# Broad-spectrum tissue autofluorescence (lipofuscin, fibre tracts): orange through the filters.
_AUTOFLUORESCENCE = np.array([1.0, 0.7, 0.3], np.float32)


def _draw_scene(rng, shape, config):
    """Tissue, cells, artefacts, then the camera: returns (rgb uint8, int32 labels).

    The configuration's name salts every stream, so TRAIN and HELDOUT drawn from the same
    seed share no layout, while variants of one configuration (same name) keep their cells.
    """
    salt = int.from_bytes(hashlib.sha256(config.name.encode("utf-8")).digest()[:8], "little")
    seeds = rng.integers(0, 2**63, size=len(_STREAMS))
    streams = {name: np.random.default_rng([int(seed), salt])
               for name, seed in zip(_STREAMS, seeds)}
    cell_rgb, glow_rgb = _pick_stain(streams["scene"], config)
    light, tissue = _draw_tissue(streams["scene"], shape, config, glow_rgb)
    labels = _draw_cells(streams["cells"], light, tissue, config, cell_rgb)
    _draw_unstained(streams["unstained"], light, tissue, config)
    _draw_neurites(streams["neurites"], light, tissue, config, cell_rgb)
    _draw_specks(streams["specks"], light, config, cell_rgb)
    _draw_dust(streams["dust"], light, config)
    _draw_fold(streams["fold"], light, config, 0.5 * (cell_rgb + glow_rgb))
    _draw_strip(streams["strip"], light, config, cell_rgb)
    _draw_band(streams["band"], light, config, 0.5 * (_AUTOFLUORESCENCE + glow_rgb))
    return _photograph(streams["camera"], light, config), labels


def _log_uniform(rng, bounds):
    low, high = bounds
    if low <= 0:
        return rng.uniform(low, high)
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _how_many(rng, per_field, shape, *, log=False):
    """A Poisson count whose mean, drawn from ``per_field``, scales with the image's area."""
    rate = _log_uniform(rng, per_field) if log else rng.uniform(*per_field)
    return int(rng.poisson(rate * shape[0] * shape[1] / _FULL_AREA))


def _pick_stain(rng, config):
    """One stain per image, its minor channels' shares jittered: (cell RGB, glow RGB)."""
    weights = np.array([weight for _, weight in config.stains], float)
    name = config.stains[rng.choice(len(weights), p=weights / weights.sum())][0]
    colours = []
    for rgb in STAINS[name]:
        rgb = np.array(rgb, np.float32)
        minor = rgb < rgb.max()
        jitter = np.clip(1 + rng.normal(0, config.hue_jitter, minor.sum()), 0, None)
        rgb[minor] = np.minimum(rgb[minor] * jitter, 0.98 * rgb.max())  # still minor
        colours.append(rgb)
    return colours[0], colours[1]


def _draw_tissue(rng, shape, config, glow_rgb):
    """The tissue's glow, patchy and mottled, maybe cut by an edge of empty slide.

    Returns the (3, rows, cols) float32 light and a bool map of where tissue (and so
    stained cells) may be.
    """
    factor = 8
    coarse_shape = (-(-shape[0] // factor) + 1, -(-shape[1] // factor) + 1)
    # Smooth patches of tissue (about 100 px) and finer mottling (about 16 px).
    smooth = ndi.gaussian_filter(rng.normal(0, 1, coarse_shape), 6, mode="reflect")
    smooth /= smooth.std() + 1e-9
    mottle = rng.normal(0, 1, coarse_shape)
    amplitude = rng.uniform(*config.unevenness)
    level = rng.uniform(*config.background_level)
    level = level * np.clip(1 + amplitude * (smooth + 0.5 * mottle), 0.05, None)
    beyond = np.zeros(coarse_shape)
    if rng.random() < config.edge_chance:
        beyond = _edge_side(rng, coarse_shape, factor)
        level = level * (1 - 0.85 * beyond)  # empty slide: almost black
    glow = _upsample(level, factor, shape).astype(np.float32)
    # Nearest-neighbour is enough for the tissue map: it only gates cell centres.
    inside = (beyond < 0.5)[np.arange(shape[0]) // factor][:, np.arange(shape[1]) // factor]
    return glow_rgb[:, None, None] * glow[None], inside


def _edge_side(rng, coarse_shape, factor):
    """How far each point lies beyond a wavy tissue edge that crosses the image, 0-1."""
    rr, cc = (np.indices(coarse_shape, dtype=float) - np.array(coarse_shape)[:, None, None] / 2)
    along, across = _rotate(rng, rr * factor, cc * factor)
    offset = rng.uniform(-0.7, 0.7) * np.abs(across).max()
    wave = rng.uniform(10, 60) * np.sin(along / rng.uniform(60, 250) + rng.uniform(0, 6.3))
    return expit((across - offset + wave) / rng.uniform(3, 15))


def _rotate(rng, rr, cc):
    """Coordinates along and across a random direction through the origin."""
    angle = rng.uniform(0, 2 * np.pi)
    return rr * np.sin(angle) + cc * np.cos(angle), -rr * np.cos(angle) + cc * np.sin(angle)


def _outline(rng, radius, elongation, irregularity):
    """An irregular blob of about ``pi * radius**2`` px: a stretched disk with random lobes.

    Returns a bool patch centred on the blob and the patch's half-size.
    """
    half = int(np.ceil(radius * (np.sqrt(elongation) + 3 * irregularity + 0.2))) + 2
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = (rr * np.cos(angle) + cc * np.sin(angle)) / np.sqrt(elongation)
    v = (-rr * np.sin(angle) + cc * np.cos(angle)) * np.sqrt(elongation)
    theta = np.arctan2(v, u)
    edge = np.ones_like(theta)
    for k in range(2, 6):
        edge += rng.normal(0, irregularity / k**0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= radius * np.clip(edge, 0.3, None), half


def _cell_radius(rng, median, config):
    return float(np.clip(median * np.exp(rng.normal(0, config.radius_spread)), *config.cell_radius))


def _cell_layout(rng, shape, tissue, config):
    """(centre, radius) of every cell: scattered on tissue, some seeding touching clumps."""
    count = _how_many(rng, config.cells_per_field, shape, log=True)
    median = rng.uniform(*config.median_radius)
    cells = []
    for _ in range(count):
        if len(cells) >= count:
            break
        centre = rng.uniform((0, 0), shape)
        if not tissue[int(centre[0]), int(centre[1])]:
            continue  # no retry: cells keep the tissue's density, empty slide just has none
        clump = [(centre, _cell_radius(rng, median, config))]
        if rng.random() < config.clump_chance:
            for _ in range(rng.integers(config.clump_size[0], config.clump_size[1] + 1) - 1):
                # Each newcomer leans on a random member, overlapping it a little: it touches.
                anchor, anchor_radius = clump[rng.integers(len(clump))]
                radius = _cell_radius(rng, median, config)
                angle = rng.uniform(0, 2 * np.pi)
                step = (anchor_radius + radius) * rng.uniform(0.8, 0.95)
                spot = anchor + step * np.array([np.sin(angle), np.cos(angle)])
                if 0 <= spot[0] < shape[0] and 0 <= spot[1] < shape[1]:
                    clump.append((spot, radius))
        cells.extend(clump)
    return [(np.floor(c).astype(int), r) for c, r in cells[:count]]


def _draw_cells(rng, light, tissue, config, cell_rgb):
    """Stained somata, added to ``light`` and labelled; their processes are not labelled."""
    labels = np.zeros(light.shape[1:], np.int32)
    next_id = 1
    for centre, radius in _cell_layout(rng, labels.shape, tissue, config):
        body, half = _outline(rng, radius, rng.uniform(*config.elongation), config.irregularity)
        box = _clip_box(centre - half, body.shape, labels.shape)
        if box is None:
            continue
        img, pat = box
        seen, taken = body[pat], labels[img] > 0
        if (seen & taken).sum() > 0.3 * seen.sum() or seen.sum() < 20:
            continue  # would lie mostly under a neighbour or off the image: not drawn at all
        soma = _cell_light(rng, body, half, radius, config)
        pad = (soma.shape[0] - body.shape[0]) // 2
        _paste_add(light, _tint(soma, _log_uniform(rng, config.cell_peak), cell_rgb),
                   centre - half - pad)
        labels[img][seen & ~taken] = next_id
        next_id += 1
    return _separate_cells(labels, config.touching_gap)


def _cell_light(rng, body, half, radius, config):
    """A soma's light: peaked, grainy, maybe with processes, defocused; padded for the blur.

    The power sharpens the peak: in the reference the median pixel inside a mask is about a
    third of the 90th percentile.
    """
    soma = _soma_profile(rng, body, half, radius) ** 1.5
    sigma = rng.uniform(*config.focus_blur)
    pad = int(np.ceil(3 * sigma))
    if rng.random() < config.process_chance:
        pad += int(radius * 1.8)
        soma = np.pad(soma, pad)
        processes = _draw_processes(rng, half + pad, radius, rng.integers(1, 5))
        soma = np.maximum(soma, 0.6 * processes)
    else:
        soma = np.pad(soma, pad)
    return ndi.gaussian_filter(soma, sigma)


def _tint(intensity, peak, rgb):
    """Coloured light of a 0-1 intensity patch: (3, h, w).

    The minor channels fade faster than the main one in dim parts, as in the reference
    cells (their green share drops towards the rim).
    """
    main = rgb == rgb.max()
    fade = np.clip(intensity, 0, 1) ** 0.25
    layers = [peak * w * intensity * (1 if m else fade) for w, m in zip(rgb, main)]
    return np.stack(layers).astype(np.float32)


def _clip_box(corner, patch_shape, shape):
    """Slices of the image and of a patch at ``corner``, clipped to the image; None if off."""
    r0, c0 = int(corner[0]), int(corner[1])
    img = np.s_[max(r0, 0):min(r0 + patch_shape[0], shape[0]),
                max(c0, 0):min(c0 + patch_shape[1], shape[1])]
    if img[0].stop <= img[0].start or img[1].stop <= img[1].start:
        return None
    return img, np.s_[img[0].start - r0:img[0].stop - r0, img[1].start - c0:img[1].stop - c0]


def _paste_add(light, patch, corner):
    """Add a (3, h, w) patch of light with its top-left pixel at ``corner``."""
    box = _clip_box(corner, patch.shape[1:], light.shape[1:])
    if box is not None:
        img, pat = box
        light[:, img[0], img[1]] += patch[:, pat[0], pat[1]]


def _separate_cells(labels, gap):
    """Clear the lower-labelled side wherever two cells come within ``gap`` px; ids 1..n.

    Masks are stored as 0/255 today, their cells read back as 8-connected components, so
    touching cells need a background line between them, as an annotator draws; the image
    keeps them touching.
    """
    if gap > 0:
        labels = labels.copy()
        labels[ndi.maximum_filter(labels, size=2 * gap + 1, mode="constant") > labels] = 0
    present = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels]


def _draw_unstained(rng, light, tissue, config):
    """Dim greyish somata: unstained neurons that an operator must not count."""
    shape = light.shape[1:]
    grey = np.array([1.0, 0.8, 0.45], np.float32)
    for _ in range(_how_many(rng, config.unstained_per_field, shape)):
        centre = rng.integers((0, 0), shape)
        if not tissue[centre[0], centre[1]]:
            continue
        radius = rng.uniform(*config.median_radius) * np.exp(rng.normal(0, 0.2))
        body, half = _outline(rng, radius, rng.uniform(1.0, 1.5), 0.15)
        soma = ndi.gaussian_filter(_soma_profile(rng, body, half, radius * 1.3), rng.uniform(1, 3))
        level = rng.uniform(6, 22)
        _paste_add(light, level * grey[:, None, None] * soma[None], centre - half)


def _polyline(rng, start, length, step):
    """Points of a gently curving random walk of about ``length`` px."""
    heading = rng.uniform(0, 2 * np.pi)
    points = [np.asarray(start, float)]
    for _ in range(max(1, int(length / step))):
        heading += rng.normal(0, 0.3)
        points.append(points[-1] + step * np.array([np.sin(heading), np.cos(heading)]))
    return np.array(points)


def _line_light(points, width):
    """A line through ``points`` of half-width ``width``, as a 0-1 patch and its corner."""
    corner = np.floor(points.min(axis=0) - width - 2).astype(int)
    size = np.ceil(points.max(axis=0) + width + 2).astype(int) - corner + 1
    out = np.zeros(size, np.float32)
    local = points - corner
    for start, end in itertools.pairwise(local):
        lo = np.floor(np.minimum(start, end) - width - 1).astype(int)
        hi = np.ceil(np.maximum(start, end) + width + 2).astype(int)
        rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
        line = np.clip(1 - _distance_to_segment(rr, cc, start, end) / width, 0, 1)
        box = out[lo[0]:hi[0], lo[1]:hi[1]]
        np.maximum(box, line ** 0.7, out=box)
    return out, corner


def _draw_neurites(rng, light, tissue, config, cell_rgb):
    """Thin bright curving neurites whose soma is out of view or out of the focal plane."""
    shape = light.shape[1:]
    for _ in range(_how_many(rng, config.neurites_per_field, shape)):
        start = rng.integers((0, 0), shape)
        if not tissue[start[0], start[1]]:
            continue
        points = _polyline(rng, start, rng.uniform(40, 260), 12.0)
        line, corner = _line_light(points, rng.uniform(0.8, 2.0))
        line = ndi.gaussian_filter(line, rng.uniform(0.3, 1.0))
        _paste_add(light, _tint(line, _log_uniform(rng, (20, 120)), cell_rgb), corner)


def _draw_specks(rng, light, config, cell_rgb):
    """Small bright dots (precipitated dye, debris), 1-4 px in radius, stain-coloured to white."""
    shape = light.shape[1:]
    for _ in range(_how_many(rng, config.specks_per_field, shape)):
        radius = rng.uniform(1, 4)
        half = int(np.ceil(radius)) + 2
        rr, cc = np.mgrid[-half:half + 1, -half:half + 1]
        dot = np.clip(radius + 0.5 - np.hypot(rr, cc), 0, 1).astype(np.float32)
        whiteness = rng.uniform(0, 1)
        rgb = (1 - whiteness) * cell_rgb + whiteness * _WHITE
        corner = rng.integers((0, 0), shape) - half
        _paste_add(light, _log_uniform(rng, (80, 300)) * rgb[:, None, None] * dot[None], corner)


def _draw_dust(rng, light, config):
    """Whitish dust particles up to a cell's size, and lint fibres (about one per two)."""
    shape = light.shape[1:]
    whitish = np.array([1.0, 0.95, 0.8], np.float32)
    for _ in range(_how_many(rng, config.dust_per_field, shape)):
        body, half = _outline(rng, rng.uniform(3, 12), rng.uniform(1, 2.5), 0.35)
        grain = 1 + 0.3 * ndi.gaussian_filter(rng.normal(0, 1, body.shape), 1.0)
        speck = ndi.gaussian_filter(body * grain, rng.uniform(0.8, 3.0)).astype(np.float32)
        centre = rng.integers((0, 0), shape)
        level = _log_uniform(rng, (40, 200))
        _paste_add(light, level * whitish[:, None, None] * speck[None], centre - half)
        if rng.random() < 0.5:
            points = _polyline(rng, rng.integers((0, 0), shape), rng.uniform(30, 150), 8.0)
            fibre, corner = _line_light(points, rng.uniform(1.5, 3.0))
            _paste_add(light, 0.5 * level * whitish[:, None, None] * fibre[None], corner)


def _wavy_distance(rng, shape, scale=1.0):
    """Signed distance (px) from a random wavy line near the image's centre.

    ``scale`` is the px size of one grid step, for drawing on a coarse grid.
    """
    rr, cc = np.indices(shape, dtype=np.float32)
    along, across = _rotate(rng, (rr - shape[0] / 2) * scale, (cc - shape[1] / 2) * scale)
    offset = rng.uniform(-0.4, 0.4) * max(shape) * scale
    wave = sum(rng.uniform(3, 30) * np.sin(along / rng.uniform(40, 400) + rng.uniform(0, 6.3))
               for _ in range(3))
    return (across - offset + wave).astype(np.float32)


def _draw_fold(rng, light, config, rgb):
    """A tissue fold: a wavy strip of double tissue, bright, with sharp sides."""
    if rng.random() >= config.fold_chance:
        return
    distance = _wavy_distance(rng, light.shape[1:])
    width, sharpness = rng.uniform(15, 60), rng.uniform(1.5, 3.0)
    strip = expit((width / 2 - np.abs(distance)) / sharpness)
    light += (rng.uniform(8, 40) * rgb)[:, None, None] * strip[None]


def _draw_band(rng, light, config, rgb):
    """A broad soft autofluorescent band (a fibre tract, a lipofuscin-rich layer)."""
    if rng.random() >= config.band_chance:
        return
    factor = 4
    coarse = (-(-light.shape[1] // factor) + 1, -(-light.shape[2] // factor) + 1)
    distance = _wavy_distance(rng, coarse, factor)
    width, softness = rng.uniform(80, 400), rng.uniform(20, 80)
    fibres = ndi.gaussian_filter(rng.normal(0, 1, coarse), 2.0)
    fibres = np.clip(1 + 0.3 * fibres / (fibres.std() + 1e-9), 0, None)
    band = fibres * expit((width / 2 - np.abs(distance)) / softness)
    band = _upsample(band, factor, light.shape[1:]).astype(np.float32)
    light += (rng.uniform(3, 15) * rgb)[:, None, None] * band[None]


def _draw_strip(rng, light, config, cell_rgb):
    """A straight bright rod or scratch, as bright as a cell."""
    if rng.random() >= config.strip_chance:
        return
    shape = light.shape[1:]
    length, width = rng.uniform(40, 300), rng.uniform(5, 20)
    half = int(length / 2 + width) + 2
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    start = -length / 2 * np.array([np.sin(angle), np.cos(angle)])
    rod = np.clip(1 - _distance_to_segment(rr, cc, start, -start) / (width / 2), 0, 1) ** 0.5
    rod = ndi.gaussian_filter(rod, 1.0).astype(np.float32)
    whiteness = rng.uniform(0, 0.5)
    rgb = (1 - whiteness) * cell_rgb + whiteness * _WHITE
    corner = rng.integers((0, 0), shape) - half
    _paste_add(light, _log_uniform(rng, (60, 250)) * rgb[:, None, None] * rod[None], corner)


def _photograph(rng, light, config):
    """Vignetting, exposure, defocus, shot and read noise, then 8-bit quantisation."""
    rows, cols = light.shape[1:]
    loss = rng.uniform(*config.vignetting)
    if loss > 0:
        axis = rng.uniform(0.35, 0.65, 2) * (rows, cols)  # the optical axis, off-centre
        reach = (max(axis[0], rows - axis[0]) ** 2 + max(axis[1], cols - axis[1]) ** 2)
        r2 = ((np.arange(rows) - axis[0]) ** 2 / reach).astype(np.float32)
        c2 = ((np.arange(cols) - axis[1]) ** 2 / reach).astype(np.float32)
        light *= 1 - loss * (r2[:, None] + c2[None, :])
    light *= np.float32(_log_uniform(rng, config.exposure))
    sigma = rng.uniform(*config.blur)
    for channel in light:
        if sigma > 0:
            ndi.gaussian_filter(channel, sigma, output=channel)
    # In place: this full-frame step dominates the run time.
    noise = np.clip(light, 0, None)
    noise *= np.float32(rng.uniform(*config.shot_noise))
    noise += np.float32(rng.uniform(*config.read_noise) ** 2)
    np.sqrt(noise, out=noise)
    noise *= rng.standard_normal(light.shape, dtype=np.float32)
    noise += light
    noise += np.float32(0.5)  # round half up when truncating below
    np.clip(noise, 0, 255, out=noise)
    return np.ascontiguousarray(noise.astype(np.uint8).transpose(1, 2, 0))


# ---------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------

def _upsample(coarse, factor, shape):
    """Bilinear upsampling of a coarse field, cropped to ``shape``."""
    return ndi.zoom(coarse, factor, order=1, prefilter=False)[: shape[0], : shape[1]]


def _draw_processes(rng, half, radius, count):
    """Thin tapering dendrite-like lines leaving the soma; float intensity patch."""
    out = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    for _ in range(count):
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.6, 1.6) * radius
        point = half + radius * 0.7 * np.array([np.sin(heading), np.cos(heading)])
        width = rng.uniform(2.0, 4.0)
        for step in range(4):  # a few bent segments, each drawn only in its own box
            heading += rng.normal(0, 0.35)
            end = point + length / 4 * np.array([np.sin(heading), np.cos(heading)])
            lo = np.clip(np.floor(np.minimum(point, end) - width), 0, 2 * half).astype(int)
            hi = np.clip(np.ceil(np.maximum(point, end) + width) + 1, 0, 2 * half + 1).astype(int)
            rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
            dist = _distance_to_segment(rr, cc, point, end)
            line = (1 - step / 5) * np.clip(1 - dist / (width * (1 - step / 5)), 0, 1) ** 0.7
            box = out[lo[0]:hi[0], lo[1]:hi[1]]
            np.maximum(box, line, out=box)
            point = end
    return out


def _distance_to_segment(rr, cc, start, end):
    seg = end - start
    t = ((rr - start[0]) * seg[0] + (cc - start[1]) * seg[1]) / (seg @ seg + 1e-9)
    t = np.clip(t, 0, 1)
    return np.hypot(rr - start[0] - t * seg[0], cc - start[1] - t * seg[1])


def _soma_profile(rng, body, half, radius):
    """Bright centre fading to a dim rim, with granular cytoplasm; 0 outside ``body``.

    In the reference the median pixel inside a mask is about a third of the 90th
    percentile, so the profile is peaked rather than flat.
    """
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1]
    offset = rng.normal(0, 0.15 * radius, 2)  # nucleus rarely dead centre
    dist = np.hypot(rr - offset[0], cc - offset[1]) / radius
    grain = ndi.gaussian_filter(rng.normal(0, 1, body.shape), 1.2)
    profile = np.exp(-rng.uniform(1.2, 2.4) * dist**2) * (1 + 0.25 * grain)
    return np.where(body, np.clip(profile, 0.05, None), 0).astype(np.float32)
