"""The objects of a mask: what a cell is, everywhere in CellTally (docs/METHOD.md, "Objects").

One rule decides what the objects of a mask are, for every surface that counts, scores, draws or
stores them:

- a mask of any dtype with **one** distinct non-zero value (a bool mask, a 0/255 PNG, a label
  image holding a single label) is binary: its objects are its 8-connected components;
- a mask with **two or more** distinct non-zero values is a label image: each value is one cell,
  whether or not its pixels touch each other or another cell.

Everything that needs objects goes through :func:`as_labels`, and everything that needs facts
about them (their number, centre, box, area, mean probability, match outcome) through the other
functions here, so two pages can never disagree on how many cells an image holds.

Edits follow one rule too, :func:`edited_labels`, so what a page previews after an edit is what
is saved: an object is a label; a label that an edit cuts into pieces becomes one label per piece
(pieces below :data:`MIN_PIECE_AREA` are dropped); a label no edit touched stays as it is, even
when it arrived in several pieces.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = ["ObjectInfo", "as_labels", "separate_touching", "count_objects", "object_info", "object_pixels",
           "label_at", "object_stats", "describe_outcomes", "doubt", "edited_labels",
           "MAX_LABELS", "MIN_PIECE_AREA", "EDIT_KINDS"]

#: The most cells one mask may hold: labels are stored as uint16 PNGs.
MAX_LABELS = 65535
#: Pixels below which a piece that an edit cuts off an object is dropped: a 5 x 5 patch. It is
#: far below any cell CellTally counts (post-processing drops objects below 200 px at a 50 px
#: cell diameter, 86 px at 33 px) and above the slivers a brush or a cut leaves along an edge.
MIN_PIECE_AREA = 25
#: The edits :func:`edited_labels` applies (``core.strokes`` makes them from canvas drawings).
EDIT_KINDS = ("add", "erase", "delete", "split")
#: How many 8-neighbour steps from a piece the pixels under a split line are given back to it
#: (the line is at most 3 px wide: its middle pixel is 2 steps from either side).
_GIVE_BACK = 2

# 8-connectivity: a diagonal touch joins two pixels into one object.
_SQUARE = ndi.generate_binary_structure(2, 2)


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a label image.

    Attributes
    ----------
    label : int
        Its value in the label image.
    centroid : tuple of float
        Centre of mass (row, col).
    bbox : tuple of int
        (min_row, min_col, max_row, max_col), maxima exclusive.
    area : int
        Pixels.
    """

    label: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    area: int


def as_labels(mask, *, name: str = "mask") -> np.ndarray:
    """The label image of a mask, by the module's rule (int32, 0 is background).

    Parameters
    ----------
    mask : (M, N) array of bool or integers
        A binary mask (one distinct non-zero value) or a label image (two or more).
    name : str
        What to call the array in an error message (a file name, say).

    Returns
    -------
    labels : (M, N) ndarray of int32
        For a binary mask, its 8-connected components numbered 1..n in raster order (a single
        component keeps its value; a bool mask's is 1); for a label image, the labels themselves
        (values above :data:`MAX_LABELS` renumbered in order).

    Raises
    ------
    ValueError
        Not 2-D, not integer or bool, negative values, or more than :data:`MAX_LABELS` cells.

    Examples
    --------
    >>> binary = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 0], [255, 255, 0]], np.uint8)
    >>> as_labels(binary).tolist()              # one value: 8-connected pieces are the objects
    [[1, 0, 0], [0, 1, 0], [0, 0, 0], [2, 2, 0]]
    >>> touching = np.array([[1, 1, 2, 2]], np.uint16)
    >>> as_labels(touching).tolist()            # two values: two cells, touching or not
    [[1, 1, 2, 2]]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2D mask or label image, got shape {mask.shape}")
    if mask.dtype == bool:
        return ndi.label(mask, structure=_SQUARE)[0].astype(np.int32, copy=False)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{name} must hold integers (a label image) or bools (a mask), "
                         f"not dtype {mask.dtype}")
    values = mask[mask != 0]
    if values.size == 0:
        return np.zeros(mask.shape, np.int32)
    low, high = values.min(), values.max()
    if low < 0:
        raise ValueError(f"{name} has negative values; labels are 0 (background) or positive")
    if low == high:
        components, n = ndi.label(mask != 0, structure=_SQUARE)
        # One piece is already one object: keep its value, so ids given by a caller survive.
        return mask.astype(np.int32) if n == 1 and high <= MAX_LABELS else components
    if high <= MAX_LABELS:
        return mask.astype(np.int32, copy=False)
    ids, inverse = np.unique(mask, return_inverse=True)
    background = int(ids[0] == 0)
    if ids.size - background > MAX_LABELS:
        raise ValueError(f"{name} holds {ids.size - background} cells; at most {MAX_LABELS} fit "
                         "in a mask. Split the image into tiles and import those.")
    # Renumbered in the order of the values, so 0 stays background and cell i stays before i + 1.
    return (inverse.reshape(mask.shape) + (1 - background)).astype(np.int32)


def separate_touching(labels) -> np.ndarray:
    """A copy of a label image with a one-pixel background line between touching cells.

    A cell pixel with a higher label among its 8 neighbours is cleared, so only the lower side of
    each contact gives up a pixel and no two cells stay 8-adjacent. The post-processing draws its
    watershed lines this way, and training uses it to make the borders between touching cells
    background, where the weight map then puts the summed weight of both (docs/METHOD.md 3).

    Examples
    --------
    >>> separate_touching(np.array([[1, 1, 2, 2]], np.int32)).tolist()
    [[1, 0, 2, 2]]
    >>> separate_touching(np.array([[1, 0, 2]], np.int32)).tolist()   # apart already: unchanged
    [[1, 0, 2]]
    """
    out = as_labels(labels, name="labels").copy()
    out[ndi.maximum_filter(out, size=3, mode="constant") > out] = 0
    return out


def count_objects(mask) -> int:
    """How many objects a mask or label image holds (:func:`as_labels`'s rule).

    Examples
    --------
    >>> count_objects(np.array([[1, 0, 1], [0, 0, 1]], bool))
    2
    >>> count_objects(np.array([[3, 3, 7]], np.uint16))
    2
    """
    labels = as_labels(mask)
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:]))


def object_info(labels) -> list[ObjectInfo]:
    """Centre, box and area of every object of a label image (or mask), by label.

    Examples
    --------
    >>> lab = np.zeros((4, 6), np.int32); lab[0:2, 0:2] = 1; lab[3, 3:6] = 4
    >>> [(o.label, o.centroid, o.bbox, o.area) for o in object_info(lab)]
    [(1, (0.5, 0.5), (0, 0, 2, 2), 4), (4, (3.0, 4.0), (3, 3, 4, 6), 3)]
    """
    labels = as_labels(labels, name="labels")
    out = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        rows, cols = np.nonzero(inside)
        out.append(ObjectInfo(index, (float(rows.mean() + box[0].start),
                                      float(cols.mean() + box[1].start)),
                              (box[0].start, box[1].start, box[0].stop, box[1].stop),
                              int(rows.size)))
    return out


def object_pixels(labels, label: int, *, name: str = "mask") -> np.ndarray:
    """The pixels of one object, as a bool mask; ValueError when the label holds none.

    Examples
    --------
    >>> object_pixels(np.array([[0, 2, 2]], np.int32), 2).tolist()
    [[False, True, True]]
    """
    labels = as_labels(labels, name=name)
    inside = labels == int(label)
    if int(label) < 1 or not inside.any():
        raise ValueError(f"{name} has no object {label} (it holds {count_objects(labels)})")
    return inside


def label_at(labels, row: float, col: float) -> int:
    """The label under a point (rounded to the nearest pixel, clipped to the image); 0 is none.

    Examples
    --------
    >>> label_at(np.array([[0, 5], [0, 5]], np.int32), 0.4, 1.2)
    5
    """
    labels = np.asarray(labels)
    r = int(np.clip(round(row), 0, labels.shape[0] - 1))
    c = int(np.clip(round(col), 0, labels.shape[1] - 1))
    return int(labels[r, c])


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
    labels = as_labels(labels, name="labels")
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


def _describe(labels: np.ndarray, label: int, prob: np.ndarray, outcome: str, iou) -> dict:
    inside = labels == label
    rows, cols = np.nonzero(inside)
    return {"outcome": outcome, "label": int(label),
            "centroid": (float(rows.mean()), float(cols.mean())),
            "bbox": [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1],
            "area": int(rows.size), "iou": None if iou is None else float(iou),
            "probability": float(prob[inside].mean())}


def describe_outcomes(true_labels, pred_labels, heatmap, match) -> list[dict]:
    """TP, FP and FN objects of one scored image: centre, box, area, IoU, mean probability.

    A TP is described by its predicted object (with the IoU of its true partner), an FN by the
    true object it missed, an FP by the predicted object nobody matched.

    Parameters
    ----------
    true_labels, pred_labels : (M, N) label images
        Those ``match`` was computed from.
    heatmap : (M, N) float in [0, 1] or uint8 (p x 255)
    match : core.metrics.Match

    Returns
    -------
    list of dict
        Keys ``outcome, label, centroid, bbox, area, iou, probability``; TPs in the match's
        order, then FPs, then FNs.

    Examples
    --------
    >>> from core.metrics import match_objects
    >>> t = np.zeros((20, 20), np.int32); t[2:6, 2:6] = 1; t[12:16, 12:16] = 2
    >>> p = np.zeros((20, 20), np.int32); p[2:6, 3:7] = 1
    >>> rows = describe_outcomes(t, p, np.full((20, 20), 0.5, np.float32), match_objects(t, p))
    >>> [(r["outcome"], r["bbox"], r["iou"]) for r in rows]
    [('TP', [2, 3, 6, 7], 0.6), ('FN', [12, 12, 16, 16], None)]
    """
    true_labels = as_labels(true_labels, name="true_labels")
    pred_labels = as_labels(pred_labels, name="pred_labels")
    prob = np.asarray(heatmap)
    prob = prob.astype(np.float32) / 255.0 if prob.dtype == np.uint8 else prob
    rows = []
    for true_id, pred_id, _ in match.pairs:
        a, b = true_labels == true_id, pred_labels == pred_id
        union = np.count_nonzero(a | b)
        rows.append(_describe(pred_labels, pred_id, prob, "TP",
                              np.count_nonzero(a & b) / union if union else 0.0))
    rows += [_describe(pred_labels, i, prob, "FP", None) for i in match.unmatched_pred]
    rows += [_describe(true_labels, i, prob, "FN", None) for i in match.unmatched_true]
    return rows


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


def edited_labels(labels, edits, *, min_area: int = MIN_PIECE_AREA) -> np.ndarray:
    """The objects of a mask after edits, in drawing order: the one rule for preview and save.

    - ``add`` makes a new label of the covered *background* pixels (other cells keep theirs);
    - ``erase`` clears the covered pixels; the labels of what remains are kept;
    - ``delete`` removes the object under the clicked pixel (or the nearest within 5 px);
    - ``split`` cuts every object the line goes right through (an object the line only dents
      is left whole) and gives the line's pixels back to the nearest piece, so the pieces
      touch as the cells did.

    After each edit, every label the edit touched is checked, piece by piece (8-connected): a
    piece the edit cut into several parts keeps the label on its largest part, and its other
    parts of at least ``min_area`` pixels become labels of their own, while smaller parts are
    dropped. An added cell counts as cut from nothing, so it too loses slivers below
    ``min_area``. Pieces an edit only trims, or does not reach, are never renumbered or split,
    so an imported cell in several pieces stays one cell.

    Parameters
    ----------
    labels : (M, N) mask or label image
        Read by :func:`as_labels`.
    edits : iterable
        Objects with ``kind`` (one of :data:`EDIT_KINDS`) and ``rows``, ``cols`` (the pixels
        the edit covers; for ``delete``, the clicked pixel), such as ``core.strokes.Edit``.
    min_area : int
        Smallest piece (pixels) that a cut keeps.

    Returns
    -------
    (M, N) ndarray of int32
        A label image that :func:`as_labels` leaves unchanged, so ``count_objects`` of it is
        the count a stored version of it holds.

    Examples
    --------
    >>> from types import SimpleNamespace as Edit
    >>> lab = np.zeros((5, 9), np.int32); lab[1:4, 1:8] = 1; lab[2, 4] = 0
    >>> erase = Edit(kind="erase", rows=np.array([1, 3]), cols=np.array([4, 4]))
    >>> edited_labels(lab, [erase], min_area=1)[2].tolist()   # the neck erased: two cells
    [0, 1, 1, 1, 0, 2, 2, 2, 0]
    >>> cut = Edit(kind="split", rows=np.arange(5), cols=np.full(5, 4))
    >>> edited_labels(np.where(lab > 0, 1, 0), [cut], min_area=1)[1].tolist()
    [0, 1, 1, 1, 2, 2, 2, 2, 0]
    """
    out = as_labels(labels, name="labels").copy()
    new_labels = itertools.count(int(out.max(initial=0)) + 1)
    for edit in edits:
        if edit.kind not in EDIT_KINDS:
            raise ValueError(f"Unknown edit {edit.kind!r}; use one of {', '.join(EDIT_KINDS)}.")
        rows = np.asarray(edit.rows, dtype=np.intp)
        cols = np.asarray(edit.cols, dtype=np.intp)
        if rows.size == 0:
            continue
        if edit.kind == "delete":
            _delete_at(out, int(rows[0]), int(cols[0]))
            continue
        # Work on a window that holds the touched labels whole: an edit costs its own size.
        box = _window(out, rows, cols)
        crop, rows, cols = out[box], rows - box[0].start, cols - box[1].start
        before = crop.copy()
        touched = _apply(crop, edit.kind, rows, cols, new_labels)
        for label in touched:
            _settle(before, crop, label, min_area, new_labels)
        if edit.kind == "split" and touched:
            _give_back(crop, before, rows, cols, touched)
    return as_labels(out, name="labels")


def _window(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[slice, slice]:
    """A box around an edit's pixels that holds every label under them whole.

    A piece of a label that reaches outside the box has a pixel on the box's edge, so the box
    grows until no label under the edit is on its edge. Pieces wholly outside (a cell imported
    in several pieces) are left out: the edit cannot change them.
    """
    (height, width), margin = labels.shape, _GIVE_BACK + 1
    r0, r1 = max(int(rows.min()) - margin, 0), min(int(rows.max()) + 1 + margin, height)
    c0, c1 = max(int(cols.min()) - margin, 0), min(int(cols.max()) + 1 + margin, width)
    under = _present(labels[rows, cols])
    while under:
        crop, grow = labels[r0:r1, c0:c1], max(r1 - r0, c1 - c0)
        hit = [np.isin(edge, under).any() for edge in (crop[0], crop[-1], crop[:, 0], crop[:, -1])]
        hit = [h and bound for h, bound in zip(hit, (r0 > 0, r1 < height, c0 > 0, c1 < width))]
        if not any(hit):
            break
        r0, r1 = (max(r0 - grow, 0) if hit[0] else r0), (min(r1 + grow, height) if hit[1] else r1)
        c0, c1 = (max(c0 - grow, 0) if hit[2] else c0), (min(c1 + grow, width) if hit[3] else c1)
    return slice(r0, r1), slice(c0, c1)


def _present(values: np.ndarray) -> list[int]:
    """The distinct non-zero labels among ``values``."""
    found = np.unique(values)
    return [int(v) for v in found[found != 0]]


def _apply(labels: np.ndarray, kind: str, rows: np.ndarray, cols: np.ndarray,
           new_labels) -> list[int]:
    """Change ``labels`` in place by one add, erase or split; the labels that may be cut.

    ``new_labels`` yields unused label values (an added cell takes the next one).
    """
    if kind == "erase":
        touched = _present(labels[rows, cols])
        labels[rows, cols] = 0
        return touched
    if kind == "add":
        free = labels[rows, cols] == 0
        if not free.any():
            return []
        new = next(new_labels)
        labels[rows[free], cols[free]] = new
        return [new]
    band = np.zeros(labels.shape, dtype=bool)
    band[rows, cols] = True
    cut = []
    for label in _present(labels[rows, cols]):
        inside = labels == label
        rest = inside & ~band
        if ndi.label(rest, structure=_SQUARE)[1] > ndi.label(inside, structure=_SQUARE)[1]:
            labels[inside & band] = 0
            cut.append(label)
    return cut


def _box(*masks: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """The bounding box of the union of bool masks, grown by ``margin`` (None when empty)."""
    rows, cols = np.nonzero(np.logical_or.reduce(masks))
    if rows.size == 0:
        return None
    shape = masks[0].shape
    return (slice(max(int(rows.min()) - margin, 0), min(int(rows.max()) + 1 + margin, shape[0])),
            slice(max(int(cols.min()) - margin, 0), min(int(cols.max()) + 1 + margin, shape[1])))


def _settle(before: np.ndarray, labels: np.ndarray, label: int, min_area: int,
            new_labels) -> None:
    """One label per piece that an edit cut off ``label``; slivers below ``min_area`` dropped.

    Every piece of ``label`` now lies inside one piece it had before (edits only take pixels
    away from a label), or, for an added cell, inside none. A piece it had that is now several
    was cut: its largest part keeps the label and the other parts of at least ``min_area``
    pixels get new labels. An added cell's parts are treated the same way. Pieces the edit only
    trimmed, and pieces it did not reach, keep the label as they are.
    """
    box = _box(before == label, labels == label)
    if box is None:
        return
    was = ndi.label(before[box] == label, structure=_SQUARE)[0]
    pieces, n = ndi.label(labels[box] == label, structure=_SQUARE)
    origin = np.zeros(n + 1, dtype=np.intp)
    origin[pieces[pieces > 0]] = was[pieces > 0]
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)
    crop = labels[box]
    for source in np.unique(origin[1:]):
        parts = [k for k in np.argsort(-sizes, kind="stable") if k and origin[k] == source]
        if source and len(parts) == 1:
            continue  # trimmed, not cut
        for k in (k for k in parts if sizes[k] < min_area):
            crop[pieces == k] = 0
        for k in [k for k in parts if sizes[k] >= min_area][1:]:
            crop[pieces == k] = next(new_labels)


def _give_back(labels: np.ndarray, before: np.ndarray, rows, cols, cut: list[int]) -> None:
    """Give the pixels a split line took from the cut objects back to a piece beside them.

    The pieces grow into those pixels one 8-neighbour step at a time (:data:`_GIVE_BACK` steps),
    so every pixel given back touches a pixel of its piece and each piece stays one piece.
    """
    taken = np.zeros(labels.shape, dtype=bool)
    taken[rows, cols] = np.isin(before[rows, cols], cut) & (labels[rows, cols] == 0)
    box = _box(taken, margin=_GIVE_BACK + 1)
    if box is None:
        return
    crop, lost = labels[box], taken[box]
    pieces = np.where(np.isin(before[box], cut) & (crop > 0), crop, 0)
    for _ in range(_GIVE_BACK):
        grown = ndi.grey_dilation(pieces, footprint=_SQUARE)
        step = lost & (pieces == 0) & (grown > 0)
        if not step.any():
            break
        pieces[step] = grown[step]
    crop[lost & (pieces > 0)] = pieces[lost & (pieces > 0)]


def _delete_at(labels: np.ndarray, row: int, col: int, radius: int = 5) -> None:
    """Remove the object under (row, col), or the nearest one within ``radius`` pixels."""
    r0, c0 = max(row - radius, 0), max(col - radius, 0)
    patch = labels[r0:row + radius + 1, c0:col + radius + 1]
    rr, cc = np.nonzero(patch)
    if len(rr) == 0:
        return
    d = (rr + r0 - row) ** 2 + (cc + c0 - col) ** 2
    if d.min() <= radius ** 2:
        labels[labels == patch[rr[d.argmin()], cc[d.argmin()]]] = 0
