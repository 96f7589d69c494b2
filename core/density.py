"""Cells per area: density per mm², counts per group, and regions of interest.

- :func:`count_density`: cells per mm² from a count, an area in pixels and the pixel size;
- :func:`summarize_groups`: counts and density per animal, region or condition;
- :func:`polygon_mask` and :func:`count_in_region`: a region of interest drawn as a polygon, and
  the objects whose centre lies inside it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.measure import grid_points_in_poly

from core.objects import object_stats

__all__ = ["count_density", "summarize_groups", "polygon_mask", "count_in_region"]


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
    >>> bool(np.isnan(count_density(3, 100, None)))
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
