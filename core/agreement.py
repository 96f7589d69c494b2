"""Agreement between counts, group summaries, and how unsure a model is of an object.

The science behind the dashboard and the experts' queue, kept free of any database:

- :func:`bland_altman`: mean difference and 95 % limits of agreement between two sets of counts of
  the same images (two operators, or an operator and the model);
- :func:`count_density`: cells per mm² from a count, an area in pixels and the pixel size;
- :func:`summarize_groups`: counts and density per animal, region or condition;
- :func:`object_stats`: area, centre and mean model probability of every labelled object;
- :func:`doubt`: how unsure the model is of an object (probability near the threshold, or a size far
  from the usual cell), in [0, 1];
- :func:`polygon_mask` and :func:`count_in_region`: a region of interest drawn as a polygon, and the
  objects whose centre lies inside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = [
    "Agreement",
    "bland_altman",
    "count_density",
    "summarize_groups",
    "object_stats",
    "doubt",
    "polygon_mask",
    "count_in_region",
]

#: Half-width of the limits of agreement in standard deviations (Bland & Altman 1986: 95 %).
LOA_Z = 1.96


@dataclass(frozen=True)
class Agreement:
    """Bland-Altman agreement between two sets of paired counts.

    Attributes
    ----------
    n : int
        Number of pairs (images counted by both).
    bias : float
        Mean of ``a - b``: how many more cells ``a`` counts than ``b`` on average.
    sd : float
        Sample standard deviation of ``a - b`` (``ddof=1``); NaN with a single pair.
    lower, upper : float
        Limits of agreement ``bias -/+ 1.96 sd``: 95 % of differences are expected between them.
    mean_abs_difference : float
        Mean of ``|a - b|``.
    means, differences : tuple of float
        Per pair ``(a + b) / 2`` and ``a - b``, the two axes of a Bland-Altman plot.
    """

    n: int
    bias: float
    sd: float
    lower: float
    upper: float
    mean_abs_difference: float
    means: tuple[float, ...]
    differences: tuple[float, ...]

    def to_dict(self) -> dict:
        """The scalar fields, for a table row."""
        return {"n": self.n, "bias": self.bias, "sd": self.sd, "lower": self.lower,
                "upper": self.upper, "mean_abs_difference": self.mean_abs_difference}


def bland_altman(a, b) -> Agreement:
    """Mean difference and limits of agreement between paired counts ``a`` and ``b``.

    Parameters
    ----------
    a, b : array_like of float, same length
        Counts of the same images by two raters (pair ``i`` is image ``i``).

    Returns
    -------
    Agreement
        ``bias = mean(a - b)``, ``sd`` (sample), limits ``bias -/+ 1.96 sd``.

    Raises
    ------
    ValueError
        When the lengths differ, nothing is paired, or a count is not finite.

    Examples
    --------
    >>> ag = bland_altman([10, 12, 8], [9, 12, 10])
    >>> round(ag.bias, 4), round(ag.sd, 4), ag.n
    (-0.3333, 1.5275, 3)
    >>> round(ag.lower, 3), round(ag.upper, 3)
    (-3.327, 2.661)
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Agreement needs paired counts, got {a.size} and {b.size} values.")
    if a.size == 0:
        raise ValueError("No image was counted by both raters, so there is no agreement to show.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("A count is missing or not a number; every paired count must be finite.")
    diff = a - b
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
    return Agreement(
        n=int(diff.size),
        bias=bias,
        sd=sd,
        lower=bias - LOA_Z * sd,
        upper=bias + LOA_Z * sd,
        mean_abs_difference=float(np.abs(diff).mean()),
        means=tuple(float(v) for v in (a + b) / 2.0),
        differences=tuple(float(v) for v in diff),
    )


def count_density(count, area_px, pixel_size_um):
    """Cells per mm² from a count over ``area_px`` pixels of side ``pixel_size_um`` micrometres.

    Parameters
    ----------
    count : float or array_like
        Number of cells.
    area_px : float or array_like
        Counted area in pixels (the whole image, or the region of interest).
    pixel_size_um : float or None
        Side of one pixel in micrometres. ``None`` or a non-positive value gives NaN (no density
        without a scale).

    Returns
    -------
    float or ndarray
        ``count / (area_px * (pixel_size_um / 1000) ** 2)``; NaN where the area is 0.

    Examples
    --------
    >>> count_density(40, 1000 * 1000, 1.0)   # 1 mm² at 1 um per pixel
    40.0
    >>> float(count_density(10, 500 * 500, 2.0))
    10.0
    >>> math.isnan(count_density(3, 100, None))
    True
    """
    if pixel_size_um is None or not pixel_size_um > 0:
        return np.nan if np.ndim(count) == 0 else np.full(np.shape(count), np.nan)
    area_mm2 = np.asarray(area_px, dtype=np.float64) * (float(pixel_size_um) / 1000.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(area_mm2 > 0, np.asarray(count, dtype=np.float64) / area_mm2, np.nan)
    return float(out) if out.ndim == 0 else out


def summarize_groups(table: pd.DataFrame, by: str, *, count: str = "count",
                     area: str = "area_px", pixel_size_um: float | None = None) -> pd.DataFrame:
    """Counts per group (animal, region, condition), with density per mm² when the scale is known.

    Parameters
    ----------
    table : DataFrame
        One row per image, with the column ``by``, the column ``count`` and, for density, ``area``.
        A missing group value is shown as ``"(none)"``.
    by : str
        The grouping column.
    count, area : str
        Names of the count and area (pixels) columns.
    pixel_size_um : float, optional
        Pixel side in micrometres; without it the density column is NaN.

    Returns
    -------
    DataFrame
        Columns ``by, images, total, mean, sd, density_per_mm2``; density pools the group
        (total cells over total area), so large images weigh more.

    Examples
    --------
    >>> t = pd.DataFrame({"animal": ["a", "a", "b"], "count": [4, 6, 3],
    ...                   "area_px": [1e6, 1e6, 1e6]})
    >>> summarize_groups(t, "animal", pixel_size_um=1.0)[["animal", "total", "mean",
    ...                                                 "density_per_mm2"]].values.tolist()
    [['a', 10, 5.0, 5.0], ['b', 3, 3.0, 3.0]]
    """
    if by not in table.columns:
        raise ValueError(f"Cannot group by {by!r}: the images have no such field.")
    cols = [by, "images", "total", "mean", "sd", "density_per_mm2"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    t = table.copy()
    t[by] = t[by].fillna("(none)").astype(str).replace("", "(none)")
    if area not in t.columns:
        t[area] = np.nan
    g = t.groupby(by, sort=True)
    out = pd.DataFrame({
        "images": g.size(),
        "total": g[count].sum(),
        "mean": g[count].mean().astype(float),
        "sd": g[count].std(ddof=1).astype(float),
        "area": g[area].sum(min_count=1),
    }).reset_index()
    out["density_per_mm2"] = count_density(out["total"].to_numpy(), out["area"].to_numpy(),
                                           pixel_size_um)
    return out[cols]


def object_stats(labels, prob=None) -> pd.DataFrame:
    """Area, centre and mean probability of each object of a label image.

    Parameters
    ----------
    labels : ndarray of int, (H, W)
        Objects are the non-zero label ids.
    prob : ndarray of float, (H, W), optional
        The model's heatmap in [0, 1] (uint8 heatmaps are scaled by 1/255).

    Returns
    -------
    DataFrame
        One row per object, columns ``label, area, row, col, mean_prob`` (``mean_prob`` NaN without
        a heatmap), sorted by label.

    Examples
    --------
    >>> lab = np.zeros((6, 6), int); lab[1:3, 1:3] = 1; lab[4:6, 3:6] = 2
    >>> p = np.where(lab == 1, 0.9, 0.4)
    >>> object_stats(lab, p).round(2).values.tolist()
    [[1.0, 4.0, 1.5, 1.5, 0.9], [2.0, 6.0, 4.5, 4.0, 0.4]]
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"A label image must be 2-D, got shape {labels.shape}.")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return pd.DataFrame(columns=["label", "area", "row", "col", "mean_prob"])
    area = ndi.sum_labels(np.ones(labels.shape), labels, ids)
    centres = np.array(ndi.center_of_mass(np.ones(labels.shape), labels, ids), dtype=float)
    if prob is not None:
        prob = np.asarray(prob)
        if prob.shape != labels.shape:
            raise ValueError(f"The heatmap is {prob.shape} but the labels are {labels.shape}.")
        scale = 1.0 / 255.0 if prob.dtype == np.uint8 else 1.0
        mean_prob = ndi.mean(prob.astype(np.float64) * scale, labels, ids)
    else:
        mean_prob = np.full(ids.size, np.nan)
    return pd.DataFrame({"label": ids.astype(int), "area": area.astype(float),
                         "row": centres[:, 0], "col": centres[:, 1],
                         "mean_prob": np.asarray(mean_prob, dtype=float)})


def doubt(mean_prob, area, *, threshold: float, typical_area: float, size_factor: float = 4.0):
    """How unsure the model is of an object: 1 = as unsure as can be, 0 = sure.

    Two reasons to doubt, and the larger one counts:

    - the mean probability is near the threshold: ``1 - |p - t| / max(t, 1 - t)``;
    - the size is far from the usual cell: ``|ln(area / typical_area)| / ln(size_factor)``, capped
      at 1 (an object ``size_factor`` times larger or smaller than usual is as odd as it gets).

    Parameters
    ----------
    mean_prob : float or array_like
        Mean heatmap value over the object; NaN (no heatmap) counts as no doubt from probability.
    area : float or array_like
        Object area in pixels.
    threshold : float
        The model's threshold, in (0, 1).
    typical_area : float
        The usual cell area in pixels (e.g. the median over approved masks).
    size_factor : float
        The ratio of sizes that counts as fully odd (> 1).

    Returns
    -------
    ndarray of float in [0, 1]

    Examples
    --------
    >>> doubt([0.55, 0.95, 0.0], [100, 100, 100], threshold=0.55, typical_area=100).round(3).tolist()
    [1.0, 0.273, 0.0]
    >>> doubt(0.99, 400, threshold=0.5, typical_area=100).round(3).tolist()
    [1.0]
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"The threshold must be between 0 and 1, got {threshold}.")
    if not typical_area > 0 or not size_factor > 1:
        raise ValueError("The usual cell area must be positive and the size factor above 1.")
    p = np.atleast_1d(np.asarray(mean_prob, dtype=np.float64))
    a = np.atleast_1d(np.asarray(area, dtype=np.float64))
    near = 1.0 - np.abs(p - threshold) / max(threshold, 1.0 - threshold)
    near = np.nan_to_num(np.clip(near, 0.0, 1.0), nan=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        odd = np.abs(np.log(np.maximum(a, 1e-9) / typical_area)) / math.log(size_factor)
    odd = np.nan_to_num(np.clip(odd, 0.0, 1.0), nan=0.0)
    return np.maximum(near, odd)


def polygon_mask(shape, vertices) -> np.ndarray:
    """A boolean region of interest from a polygon given as ``(row, col)`` vertices.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    vertices : array_like, (N, 2)
        Polygon corners in pixel coordinates ``(row, col)``; at least three, not all on a line.

    Returns
    -------
    ndarray of bool, (H, W)

    Examples
    --------
    >>> polygon_mask((5, 5), [(0, 0), (0, 4), (4, 4), (4, 0)]).sum()
    np.int64(25)
    """
    from skimage.measure import grid_points_in_poly

    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise ValueError("A region of interest needs at least three corners (row, col).")
    if not np.isfinite(v).all():
        raise ValueError("A corner of the region of interest is not a number.")
    # Pixels on the border count too, so a rectangle over the whole image is the whole image.
    out = grid_points_in_poly(tuple(int(s) for s in shape[:2]), v, binarize=True)
    if not out.any():
        raise ValueError("The region of interest lies outside the image or encloses no pixel.")
    return out


def count_in_region(labels, region) -> int:
    """Number of objects whose centre of mass lies inside ``region``.

    Counting by centre (not by any overlap) means a cell cut by the border is counted once, on the
    side that holds most of it: two regions that tile an image sum to the image's count.

    Examples
    --------
    >>> lab = np.zeros((6, 6), int); lab[0:2, 0:2] = 1; lab[4:6, 4:6] = 2
    >>> roi = np.zeros((6, 6), bool); roi[:3, :3] = True
    >>> count_in_region(lab, roi), count_in_region(lab, ~roi)
    (1, 1)
    """
    labels = np.asarray(labels)
    region = np.asarray(region, dtype=bool)
    if labels.shape != region.shape:
        raise ValueError(f"The region is {region.shape} but the image is {labels.shape}.")
    stats = object_stats(labels)
    if stats.empty:
        return 0
    r = np.clip(np.rint(stats["row"].to_numpy()).astype(int), 0, labels.shape[0] - 1)
    c = np.clip(np.rint(stats["col"].to_numpy()).astype(int), 0, labels.shape[1] - 1)
    return int(region[r, c].sum())
