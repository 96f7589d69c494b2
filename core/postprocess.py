"""From a probability heatmap to labelled cells (docs/METHOD.md section 6).

The model gives a heatmap; counting needs one label per cell. The chain is: threshold
(``p > threshold``), fill small enclosed holes, drop small objects, split touching cells with a
distance-transform watershed, and (``fnc_v2`` only) drop small objects again after the split.

Every size in the chain is stored at the reference cell diameter of 50 px (the paper's numbers) and
scaled to the actual ``cell_diameter`` when it is used: lengths by ``d / 50``, areas by
``(d / 50) ** 2``. So ``dataclasses.replace(params, cell_diameter=24)`` and
``PostprocessParams.paper(cell_diameter=24)`` give the same behaviour.

Choices kept from the authors' code, with the reason:

- ``maximum_filter`` of the distance map before the peak search: it turns every ridge top into a
  plateau, so an elongated cell yields one marker blob rather than a string of single-pixel peaks.
- ``compactness=1`` and watershed lines: the lines keep split cells apart when the labels are stored
  as a 0/255 mask, where instances are connected components again.

Choices changed, with the reason:

- Objects are 8-connected (as ``skimage.measure.label`` reads a 2D mask, and as the rest of the
  project does) and holes 4-connected, the pairing under which a hole is exactly a background
  region enclosed by one object. The authors used 1-connectivity for both; a mask written from
  these labels now reads back as the same cells.
- The watershed line is drawn here, not by scikit-image: with ``compactness > 0`` its
  ``watershed_line`` leaves split cells touching over most of their contact (checked on two
  overlapping disks), so the flattened mask merged them again. A cell pixel that has a higher
  label among its 8 neighbours is cleared, so split cells stay apart under 4- and 8-connectivity.
- The peak search sees only the component's own distance map, so a large neighbour's plateau
  cannot plant a marker on the edge of a small cell, as a whole-frame filter could.
- A hole is a background region that does not touch the image border (the authors'
  ``remove_small_holes`` also filled small background pockets between a cell and the image edge).

Work is done per connected component inside its bounding box, never with whole-frame filters, so
the cost grows with the number and size of the cells, not with the image.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from core.objects import separate_touching

__all__ = ["PostprocessParams", "mask_to_labels", "heatmap_to_labels", "quantise_heatmap",
           "foreground", "REFERENCE_DIAMETER"]

log = logging.getLogger(__name__)

#: Cell diameter (px) at which the stored sizes apply unchanged: the paper's average cell diameter.
REFERENCE_DIAMETER = 50.0

# Holes are 4-connected background, objects (and marker blobs) 8-connected: see module docstring.
_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = ndi.generate_binary_structure(2, 2)

_LENGTHS = ("peak_filter", "peak_footprint")
_AREAS = ("hole_area", "min_area", "min_marker_area", "min_area_after_split")


@dataclass(frozen=True)
class PostprocessParams:
    """Parameters of the heatmap-to-labels chain, sizes at the 50 px reference diameter.

    Build one with a preset (:meth:`paper`, :meth:`fnc_v2`); change the scale with
    ``dataclasses.replace(params, cell_diameter=...)``. The ``*_px`` properties give the sizes
    actually used, derived from ``cell_diameter`` at the moment they are read.

    Attributes
    ----------
    preset : str
        Name of the preset these values came from (``"paper"``, ``"fnc_v2"`` or ``"custom"``).
    threshold : float
        Foreground where ``p > threshold``.
    cell_diameter : float
        Expected cell diameter in pixels; sizes scale with ``cell_diameter / 50``.
    hole_area : float
        Enclosed holes with fewer pixels than this are filled (at d = 50).
    min_area : float
        Objects with fewer pixels than this are removed before the split (at d = 50).
    peak_filter : float
        Side of the square maximum filter applied to the distance map (at d = 50).
    peak_footprint : float
        Side of the square footprint in which a marker must be the maximum (at d = 50).
    min_marker_area : float
        Marker blobs with fewer pixels than this are dropped (at d = 50).
    min_area_after_split : float
        Objects with fewer pixels than this are removed after the split; 0 keeps all (at d = 50).
    compactness : float
        Compactness of the watershed (0 is the classical watershed).
    watershed_line : bool
        Clear a background line between split cells, so they stay separate objects when the
        labels are flattened to a mask (8-connectivity included).

    Examples
    --------
    >>> p = PostprocessParams.paper()
    >>> p.threshold, p.hole_area_px, p.peak_filter_px
    (0.55, 600.0, 30)
    >>> PostprocessParams.paper(cell_diameter=25).min_area_px
    50.0
    """

    preset: str = "paper"
    threshold: float = 0.55
    cell_diameter: float = REFERENCE_DIAMETER
    hole_area: float = 600.0
    min_area: float = 200.0
    peak_filter: float = 30.0
    peak_footprint: float = 40.0
    min_marker_area: float = 25.0
    min_area_after_split: float = 0.0
    compactness: float = 1.0
    watershed_line: bool = True

    def __post_init__(self):
        if not (isinstance(self.cell_diameter, (int, float)) and self.cell_diameter > 0):
            raise ValueError(f"cell_diameter must be a positive number of pixels, "
                             f"got {self.cell_diameter!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold!r}")
        for name in _LENGTHS + _AREAS + ("compactness",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")

    @classmethod
    def paper(cls, cell_diameter: float = REFERENCE_DIAMETER) -> "PostprocessParams":
        """The preprint's chain: threshold 0.55, holes < 600, objects < 200, markers >= 25.

        Examples
        --------
        >>> PostprocessParams.paper().min_area_after_split_px
        0.0
        """
        return cls(preset="paper", threshold=0.55, cell_diameter=cell_diameter,
                   hole_area=600.0, min_area=200.0, peak_filter=30.0, peak_footprint=40.0,
                   min_marker_area=25.0, min_area_after_split=0.0)

    @classmethod
    def fnc_v2(cls, cell_diameter: float = REFERENCE_DIAMETER) -> "PostprocessParams":
        """The FNC v2 chain: threshold 0.5, holes < 50, objects < 200 before and after the split.

        Examples
        --------
        >>> p = PostprocessParams.fnc_v2()
        >>> p.threshold, p.hole_area_px, p.min_area_after_split_px
        (0.5, 50.0, 200.0)
        """
        return cls(preset="fnc_v2", threshold=0.5, cell_diameter=cell_diameter,
                   hole_area=50.0, min_area=200.0, peak_filter=30.0, peak_footprint=40.0,
                   min_marker_area=25.0, min_area_after_split=200.0)

    @classmethod
    def from_preset(cls, name: str, cell_diameter: float = REFERENCE_DIAMETER) -> "PostprocessParams":
        """The preset called ``name`` (``"paper"`` or ``"fnc_v2"``) at ``cell_diameter``.

        Examples
        --------
        >>> PostprocessParams.from_preset("fnc_v2").threshold
        0.5
        """
        makers = {"paper": cls.paper, "fnc_v2": cls.fnc_v2}
        if name not in makers:
            raise ValueError(f"unknown post-processing preset {name!r}; choose one of {sorted(makers)}")
        return makers[name](cell_diameter=cell_diameter)

    @property
    def scale(self) -> float:
        """Length scale factor ``cell_diameter / 50``."""
        return float(self.cell_diameter) / REFERENCE_DIAMETER

    def _length(self, value: float) -> int:
        # Filter sides are whole pixels; never below 1, which would disable the filter silently.
        return max(1, int(round(value * self.scale)))

    def _area(self, value: float) -> float:
        return float(value) * self.scale ** 2

    @property
    def hole_area_px(self) -> float:
        """Hole-filling area limit in pixels at this ``cell_diameter``."""
        return self._area(self.hole_area)

    @property
    def min_area_px(self) -> float:
        """Minimum object area in pixels at this ``cell_diameter``."""
        return self._area(self.min_area)

    @property
    def peak_filter_px(self) -> int:
        """Side of the distance-map maximum filter in pixels at this ``cell_diameter``."""
        return self._length(self.peak_filter)

    @property
    def peak_footprint_px(self) -> int:
        """Side of the peak footprint in pixels at this ``cell_diameter``."""
        return self._length(self.peak_footprint)

    @property
    def min_marker_area_px(self) -> float:
        """Minimum marker blob area in pixels at this ``cell_diameter``."""
        return self._area(self.min_marker_area)

    @property
    def min_area_after_split_px(self) -> float:
        """Minimum object area after the split in pixels at this ``cell_diameter``."""
        return self._area(self.min_area_after_split)

    def derived(self) -> dict[str, float]:
        """Every size actually used, in pixels, keyed ``<field>_px``.

        Examples
        --------
        >>> PostprocessParams.paper(cell_diameter=100).derived()["peak_footprint_px"]
        80
        """
        return {f"{name}_px": getattr(self, f"{name}_px") for name in _LENGTHS + _AREAS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: every field plus every derived size (for the run's config).

        Examples
        --------
        >>> d = PostprocessParams.fnc_v2(cell_diameter=24).to_dict()
        >>> d["preset"], d["min_area_px"]
        ('fnc_v2', 46.08)
        """
        out: dict[str, Any] = dataclasses.asdict(self)
        out.update(self.derived())
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PostprocessParams":
        """Rebuild from :meth:`to_dict` output; derived ``*_px`` keys are ignored.

        Missing fields take the class defaults; an unknown key raises ``ValueError`` so a typo
        in a hand-edited config does not pass silently.

        Examples
        --------
        >>> p = PostprocessParams.paper(cell_diameter=24)
        >>> PostprocessParams.from_dict(p.to_dict()) == p
        True
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        derived = {f"{name}_px" for name in _LENGTHS + _AREAS}
        unknown = set(data) - fields - derived
        if unknown:
            raise ValueError(f"unknown post-processing keys {sorted(unknown)}; "
                             f"expected some of {sorted(fields)}")
        return cls(**{k: v for k, v in data.items() if k in fields})


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """``mask`` with enclosed background regions smaller than ``max_area`` set to True."""
    if max_area <= 0 or not mask.any():
        return mask
    background, n = ndi.label(~mask, structure=_CROSS)
    sizes = np.bincount(background.ravel(), minlength=n + 1)
    small = sizes < max_area
    small[0] = False  # label 0 is the foreground itself
    # A region touching the image edge may continue outside the field of view: not a hole.
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    small[edges] = False
    if not small[1:].any():
        return mask
    return mask | small[background]


def _split_component(inside: np.ndarray, params: PostprocessParams) -> tuple[np.ndarray, int]:
    """Watershed-split one component (bool window); returns (labels 0..n, n) in that window."""
    distance = ndi.distance_transform_edt(inside)
    # Constant mode with 0: outside the window there is no cell, so no distance either.
    plateau = ndi.maximum_filter(distance, size=params.peak_filter_px, mode="constant", cval=0.0)
    local_max = ndi.maximum_filter(plateau, size=params.peak_footprint_px, mode="constant", cval=0.0)
    peaks = inside & (plateau == local_max)
    blobs, n_blobs = ndi.label(peaks, structure=_SQUARE)
    if n_blobs > 1:
        sizes = np.bincount(blobs.ravel(), minlength=n_blobs + 1)
        keep = sizes >= params.min_marker_area_px
        keep[0] = False
        n_blobs = int(keep.sum())
    if n_blobs <= 1:
        # One marker (or none survived): the component is one cell; a watershed would only cost time.
        return inside.astype(np.int32), 1
    lut = np.zeros(keep.size, dtype=np.int32)
    lut[keep] = np.arange(1, n_blobs + 1, dtype=np.int32)
    # 8-neighbour flooding: a diagonal-only link belongs to the component and must be reached.
    labels = watershed(-distance, lut[blobs], mask=inside, connectivity=2,
                       compactness=params.compactness)
    labels = labels.astype(np.int32, copy=False)
    if params.watershed_line:
        labels = separate_touching(labels)
    return labels, n_blobs


def _drop_small_labels(labels: np.ndarray, n: int, min_area: float) -> tuple[np.ndarray, int]:
    """Remove labels smaller than ``min_area`` (and empty ones) and renumber the rest 1..m."""
    if n == 0:
        return labels, n
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    # Also drops ids left empty (a sliver cleared by the watershed line), so numbering has no gaps.
    keep = sizes >= max(min_area, 1)
    keep[0] = False
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels], int(keep.sum())


def mask_to_labels(mask: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """Label the cells of a binary mask: fill holes, drop small objects, split touching cells.

    Parameters
    ----------
    mask : (M, N) array of bool
        Foreground mask (any nonzero value counts as foreground).
    params : PostprocessParams
        Sizes of the chain (see :class:`PostprocessParams`); ``threshold`` is not used here.

    Returns
    -------
    labels : (M, N) ndarray of int32
        0 is background; cells are numbered 1..n without gaps, in raster order of their components.

    Examples
    --------
    >>> from skimage.draw import disk
    >>> m = np.zeros((60, 100), bool)
    >>> m[disk((30, 30), 20)] = True
    >>> m[disk((30, 66), 20)] = True            # overlaps the first: one touching pair
    >>> labels = mask_to_labels(m, PostprocessParams.paper())
    >>> labels.dtype, int(labels.max())
    (dtype('int32'), 2)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2D array, got shape {mask.shape}")
    mask = _fill_small_holes(mask.astype(bool, copy=False), params.hole_area_px)
    components, n = ndi.label(mask, structure=_SQUARE)
    components, n = _drop_small_labels(components, n, params.min_area_px)
    out = np.zeros(mask.shape, dtype=np.int32)
    total = 0
    for index, box in enumerate(ndi.find_objects(components), start=1):
        # Pad by one pixel so the distance transform sees the background around the cell.
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = components[box] == index
        pieces, m = _split_component(inside, params)
        if m > 1 or params.min_area_after_split_px > 0:
            pieces, m = _drop_small_labels(pieces, m, params.min_area_after_split_px)
        if m:
            cells = pieces > 0
            out[box][cells] = pieces[cells] + total
            total += m
    log.debug("mask_to_labels: %d components -> %d cells", n, total)
    return out


def quantise_heatmap(prob) -> np.ndarray:
    """A heatmap as the uint8 levels it is stored and thresholded in: ``round(p * 255)``.

    Stored heatmaps are uint8, and every surface (evaluation, counting, the Predictions recount,
    the dashboard's curves) thresholds the same levels, so a pixel near the threshold falls on
    the same side everywhere. A uint8 heatmap is returned as it is; NaN counts as 0.

    Examples
    --------
    >>> quantise_heatmap(np.array([0.0, 0.5, 0.502, 1.0, np.nan])).tolist()
    [0, 128, 128, 255, 0]
    """
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"a heatmap holds probabilities (floats in [0, 1]) or uint8 levels, "
                         f"not {prob.dtype}")
    scaled = np.clip(np.nan_to_num(prob.astype(np.float32), nan=0.0), 0.0, 1.0) * np.float32(255)
    return np.rint(scaled).astype(np.uint8)


def foreground(prob, threshold: float) -> np.ndarray:
    """Pixels above the threshold, ``p > threshold``, compared on the quantised levels.

    The level of ``p`` is ``round(p * 255)`` and a pixel is foreground when ``level / 255 >
    threshold``; so p = 0.5 (level 128, i.e. 0.502) is above a threshold of 0.5.

    Examples
    --------
    >>> foreground(np.array([[0.49, 0.5, 0.51]]), 0.5).tolist()
    [[False, True, True]]
    """
    t = float(threshold)
    if not 0.0 <= t <= 1.0 or math.isnan(t):
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    return quantise_heatmap(prob) > np.float32(t * 255.0)


def heatmap_to_labels(prob: np.ndarray, params: PostprocessParams, *,
                      threshold: float | None = None) -> np.ndarray:
    """Threshold a probability heatmap (:func:`foreground`) and label its cells.

    Parameters
    ----------
    prob : (M, N) array of float in [0, 1], or uint8 levels (p x 255)
        Per-pixel cell probability; floats are quantised to uint8 first, as stored heatmaps
        are (:func:`quantise_heatmap`).
    params : PostprocessParams
        Chain parameters; ``params.threshold`` is used unless ``threshold`` is given.
    threshold : float, optional
        Overrides ``params.threshold`` (threshold sweeps, the UI slider).

    Returns
    -------
    labels : (M, N) ndarray of int32
        See :func:`mask_to_labels`.

    Examples
    --------
    >>> prob = np.zeros((40, 40), np.float32)
    >>> prob[5:25, 5:25] = 0.9
    >>> int(heatmap_to_labels(prob, PostprocessParams.paper()).max())
    1
    >>> int(heatmap_to_labels(prob, PostprocessParams.paper(), threshold=0.95).max())
    0
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"heatmap must be a 2D array, got shape {prob.shape}")
    t = params.threshold if threshold is None else threshold
    return mask_to_labels(foreground(prob, t), params)
