"""Object matching and counting scores (docs/METHOD.md section 7, paper section 5.1).

An object is a label id; its position is its centre of mass. :func:`match_objects` pairs true and
predicted objects of one image, :func:`score` pools many images, :func:`bootstrap_intervals` says
how far those pooled scores could move on other images like them, and :func:`threshold_curve`
sweeps the heatmap threshold to find the best and the knee threshold (:func:`combine_curves`
pools the curves of two image sets).

Matching methods:

``"hungarian"`` (default)
    One-to-one, centroids at most ``max_distance`` apart; first the most pairs, then the least total
    distance among those.
``"greedy"``
    The paper's rule: true objects in increasing id order each take the nearest remaining
    prediction within ``max_distance`` (equal distances: the lower prediction id). It can miss pairs
    the optimal rule finds.
``"iou"``
    One-to-one by overlap, IoU > 0.5 (as FNC v2 reports). No pair can share an object, since each
    object overlaps at most one other by more than half of their union.

Distances ``<= max_distance`` count (docs/METHOD.md; the preprint says "less than", which differs
only on exact ties). Bool masks are accepted and split into 8-connected objects, as in
:mod:`core.postprocess`; pass an integer label image to keep touching cells apart.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from core.objects import as_labels
from core.postprocess import (PostprocessParams, foreground, heatmap_to_labels,
                              quantise_heatmap)

__all__ = ["Match", "Scores", "ThresholdCurve", "match_objects", "score", "threshold_curve",
           "combine_curves", "bootstrap_intervals", "METHODS", "DEFAULT_THRESHOLDS",
           "PAPER_SCORES", "INTERVAL_KEYS"]

log = logging.getLogger(__name__)

METHODS = ("hungarian", "greedy", "iou")
#: The preprint's test scores on 60 FNC images (docs/METHOD.md), shown beside every run's.
PAPER_SCORES = {"f1": 0.87, "mae": 0.85, "medae": 1.0, "mean_iou": 0.74}
#: The threshold grid: 0.05 to 0.90 in steps of 0.025, then 0.91 to 0.99 in steps of 0.01
#: (44 values). The paper's grid stopped at 0.95; a well-trained model's F1 can still be rising
#: there (the first demo model's best was 0.95, the grid's end), so the top is finer and longer.
DEFAULT_THRESHOLDS = np.round(np.concatenate([np.arange(0.05, 0.90 + 1e-9, 0.025),
                                              np.arange(0.91, 0.99 + 1e-9, 0.01)]), 3)
#: The scores :func:`bootstrap_intervals` gives an interval for.
INTERVAL_KEYS = ("f1", "precision", "recall", "mae", "medae", "bias")


def _ratio(num: int, den: int) -> float:
    # 0/0 is no error: nothing to find, or nothing claimed (docs/METHOD.md section 7).
    return 1.0 if den == 0 else num / den


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 0.0 if total == 0 else 2.0 * precision * recall / total


@dataclass(frozen=True)
class Match:
    """The matching of one image's true and predicted objects.

    Attributes
    ----------
    tp, fp, fn : int
        Matched pairs; predicted objects left unmatched; true objects left unmatched.
    n_true, n_pred : int
        Number of true and predicted objects (distinct positive ids).
    iou : float
        Foreground IoU of the two binary masks (1.0 when both are empty).
    pairs : tuple of (int, int, float)
        ``(true_id, pred_id, centroid distance)`` of every match, sorted by true id.
    unmatched_true, unmatched_pred : tuple of int
        Ids of the false negatives and of the false positives, ascending.
    method : str
        The matching method used.
    """

    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    iou: float
    pairs: tuple = ()
    unmatched_true: tuple = ()
    unmatched_pred: tuple = ()
    method: str = "hungarian"

    @property
    def precision(self) -> float:
        """``tp / n_pred`` (1.0 when nothing was predicted)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """``tp / n_true`` (1.0 when there was nothing to find)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0.0 when both are 0)."""
        return _f1(self.precision, self.recall)


@dataclass(frozen=True)
class Scores:
    """Scores pooled over images (counts summed before the ratios).

    Attributes
    ----------
    f1, precision, recall : float
        From the summed tp, fp, fn; 0/0 counts as 1 and F1 is 0 when precision + recall is 0.
    tp, fp, fn : int
        Summed over images.
    mae, medae : float
        Mean and median over images of ``|n_pred - n_true|``.
    bias : float
        Mean over images of ``n_pred - n_true`` (positive: over-counting).
    mean_iou : float
        Mean over images of the foreground IoU.
    n_images : int
        Number of images scored.
    """

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    mae: float
    medae: float
    bias: float
    mean_iou: float
    n_images: int

    def to_dict(self) -> dict:
        """Plain dict, JSON-able (for ``metrics.json``)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ThresholdCurve:
    """Pooled scores against the heatmap threshold.

    Attributes
    ----------
    thresholds, f1, precision, recall : ndarray of float64
        One value per threshold (read-only arrays).
    best : float
        Threshold of maximum F1; among tied maxima, the middle one (the lower of two middles), so a
        flat top does not push the choice to its edge.
    knee : float
        Kneedle point of the F1 curve from ``best`` upwards (concave, decreasing); ``best`` itself
        when that tail has fewer than 3 points or is flat.
    best_f1 : float
        F1 at ``best``.
    tp, fp, fn : ndarray of int64 or None
        Pooled counts per threshold, from which the ratios were computed; what
        :func:`combine_curves` adds up.
    """

    thresholds: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    best: float
    knee: float
    best_f1: float = field(default=float("nan"))
    tp: np.ndarray | None = field(default=None, repr=False)
    fp: np.ndarray | None = field(default=None, repr=False)
    fn: np.ndarray | None = field(default=None, repr=False)


def _centroids(labels: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct positive ids (ascending) and their centres of mass as (row, col) float64."""
    # Work on foreground pixels only: cheap on large, sparsely populated images.
    where = np.flatnonzero(foreground)
    if where.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    values = labels.ravel()[where]
    if values.max() <= 4 * where.size + 1024:
        # Ids dense enough to index by: bincount avoids sorting every foreground pixel.
        ids = np.flatnonzero(np.bincount(values))
        lookup = np.zeros(int(ids[-1]) + 1, dtype=np.intp)
        lookup[ids] = np.arange(ids.size)
        index = lookup[values]
    else:
        ids, index = np.unique(values, return_inverse=True)
    rows, cols = np.divmod(where, labels.shape[1])
    counts = np.bincount(index, minlength=ids.size)
    centre = np.stack([np.bincount(index, weights=rows, minlength=ids.size),
                       np.bincount(index, weights=cols, minlength=ids.size)], axis=1)
    return ids.astype(np.int64), centre / counts[:, None]


def _candidates(true_xy, pred_xy, max_distance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (true index, pred index, distance) with distance <= max_distance."""
    if len(true_xy) == 0 or len(pred_xy) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    # The "ndarray" output keeps pairs at distance 0 (a sparse matrix could drop them).
    near = cKDTree(true_xy).sparse_distance_matrix(cKDTree(pred_xy), max_distance,
                                                    output_type="ndarray")
    return near["i"].astype(np.int64), near["j"].astype(np.int64), near["v"].astype(float)


def _match_greedy(ti, pj, dist) -> list[tuple[int, int]]:
    """Paper's rule: true in index order, each takes its nearest free prediction."""
    order = np.lexsort((pj, dist, ti))  # by true, then distance, then pred index
    taken: set[int] = set()
    done: set[int] = set()
    out = []
    for t, p in zip(ti[order].tolist(), pj[order].tolist()):
        if t in done or p in taken:
            continue
        done.add(t)
        taken.add(p)
        out.append((t, p))
    return out


def _match_optimal(ti, pj, dist, n_true, n_pred) -> list[tuple[int, int]]:
    """Most pairs, then least total distance, solved per connected group of candidates."""
    if ti.size == 0:
        return []
    # Nodes 0..n_true-1 are true objects, the rest predictions. Separate groups of the candidate
    # graph cannot compete for an object, so each is solved on its own (mostly isolated pairs).
    nodes = n_true + n_pred
    graph = coo_matrix((np.ones(ti.size), (ti, pj + n_true)), shape=(nodes, nodes))
    _, group = connected_components(graph, directed=False)
    edge_group = group[ti]
    order = np.argsort(edge_group, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_group[order])) + 1
    out = []
    for edges in np.split(order, bounds):
        if edges.size == 1:  # the common case: an isolated pair
            out.append((int(ti[edges[0]]), int(pj[edges[0]])))
            continue
        out.extend(_assign_group(ti[edges], pj[edges], dist[edges]))
    return out


def _assign_group(ti, pj, dist) -> list[tuple[int, int]]:
    """Optimal assignment inside one group of candidate edges."""
    rows, r = np.unique(ti, return_inverse=True)
    cols, c = np.unique(pj, return_inverse=True)
    # A missing edge costs more than all possible real distances together, so the solver first
    # maximises the number of real pairs, then minimises their summed distance.
    big = (float(dist.max()) + 1.0) * (min(rows.size, cols.size) + 1)
    cost = np.full((rows.size, cols.size), big)
    cost[r, c] = dist
    rr, cc = linear_sum_assignment(cost)
    real = cost[rr, cc] < big
    return list(zip(rows[rr[real]].tolist(), cols[cc[real]].tolist()))


def _match_iou(true_labels, pred_labels, true_ids, pred_ids) -> list[tuple[int, int]]:
    """Pairs with IoU > 0.5, as (true index, pred index)."""
    if true_ids.size == 0 or pred_ids.size == 0:
        return []
    both = (true_labels > 0) & (pred_labels > 0)
    t = np.searchsorted(true_ids, true_labels[both])
    p = np.searchsorted(pred_ids, pred_labels[both])
    key, inter = np.unique(t * pred_ids.size + p, return_counts=True)
    t, p = np.divmod(key, pred_ids.size)
    area_t = np.bincount(np.searchsorted(true_ids, true_labels[true_labels > 0]), minlength=true_ids.size)
    area_p = np.bincount(np.searchsorted(pred_ids, pred_labels[pred_labels > 0]), minlength=pred_ids.size)
    iou = inter / (area_t[t] + area_p[p] - inter)
    good = iou > 0.5
    return list(zip(t[good].tolist(), p[good].tolist()))


def _foreground_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def match_objects(true_labels: np.ndarray, pred_labels: np.ndarray, *,
                  max_distance: float = 50.0, method: str = "hungarian") -> Match:
    """Pair the true and predicted objects of one image.

    Parameters
    ----------
    true_labels, pred_labels : (M, N) array of int or bool
        Label images (0 = background, one object per positive id) of the same shape. A bool mask
        is split into 8-connected objects first.
    max_distance : float, optional
        Largest centroid distance (px) of a pair; the paper uses 50, the average cell diameter.
        Not used by ``method="iou"``.
    method : {"hungarian", "greedy", "iou"}, optional
        See the module docstring.

    Returns
    -------
    Match
        tp, fp, fn, n_true, n_pred, foreground iou, pairs and the unmatched ids.

    Raises
    ------
    ValueError
        Shapes differ, an input is not 2D, not integer/bool, has negative ids, or the method or
        distance is invalid.

    Examples
    --------
    >>> t = np.zeros((10, 30), int); t[2:5, 2:5] = 1; t[2:5, 20:23] = 2
    >>> p = np.zeros((10, 30), int); p[3:6, 3:6] = 7; p[8:10, 8:10] = 9
    >>> m = match_objects(t, p, max_distance=5)
    >>> m.tp, m.fp, m.fn, m.pairs[0][:2], m.unmatched_true, m.unmatched_pred
    (1, 1, 1, (1, 7), (2,), (9,))

    Ids are those of :func:`core.objects.as_labels`: a mask with a single non-zero value in
    several pieces is binary, so its objects are its components, numbered from 1.
    """
    true_labels = as_labels(true_labels, name="true_labels")
    pred_labels = as_labels(pred_labels, name="pred_labels")
    if true_labels.shape != pred_labels.shape:
        raise ValueError(f"true_labels and pred_labels differ in shape: "
                         f"{true_labels.shape} vs {pred_labels.shape}")
    if method not in METHODS:
        raise ValueError(f"unknown matching method {method!r}; choose one of {METHODS}")
    if not max_distance >= 0:
        raise ValueError(f"max_distance must not be negative, got {max_distance!r}")
    true_fg, pred_fg = true_labels > 0, pred_labels > 0
    true_ids, true_xy = _centroids(true_labels, true_fg)
    pred_ids, pred_xy = _centroids(pred_labels, pred_fg)
    if method == "iou":
        found = _match_iou(true_labels, pred_labels, true_ids, pred_ids)
    else:
        ti, pj, dist = _candidates(true_xy, pred_xy, float(max_distance))
        if method == "greedy":
            found = _match_greedy(ti, pj, dist)
        else:
            found = _match_optimal(ti, pj, dist, true_ids.size, pred_ids.size)
    return _build_match(found, true_ids, pred_ids, true_xy, pred_xy,
                        _foreground_iou(true_fg, pred_fg), method)


def _build_match(found, true_ids, pred_ids, true_xy, pred_xy, iou, method) -> Match:
    found = sorted(found)
    t = np.array([a for a, _ in found], dtype=np.int64)
    p = np.array([b for _, b in found], dtype=np.int64)
    dist = np.hypot(*(true_xy[t] - pred_xy[p]).T) if found else np.zeros(0)
    pairs = tuple(zip(true_ids[t].tolist(), pred_ids[p].tolist(), dist.tolist()))
    free_true = np.setdiff1d(np.arange(true_ids.size), t)
    free_pred = np.setdiff1d(np.arange(pred_ids.size), p)
    return Match(tp=len(found), fp=int(free_pred.size), fn=int(free_true.size),
                 n_true=int(true_ids.size), n_pred=int(pred_ids.size), iou=float(iou), pairs=pairs,
                 unmatched_true=tuple(true_ids[free_true].tolist()),
                 unmatched_pred=tuple(pred_ids[free_pred].tolist()), method=method)


def score(matches: Iterable[Match]) -> Scores:
    """Pool per-image matches into one set of scores (docs/METHOD.md section 7).

    Parameters
    ----------
    matches : iterable of Match
        One per image.

    Returns
    -------
    Scores

    Examples
    --------
    >>> a = Match(tp=3, fp=1, fn=0, n_true=3, n_pred=4, iou=0.5)
    >>> b = Match(tp=0, fp=0, fn=2, n_true=2, n_pred=0, iou=0.0)
    >>> s = score([a, b])
    >>> s.precision, s.recall, s.mae, s.bias
    (0.75, 0.6, 1.5, -0.5)
    """
    matches = list(matches)
    if not matches:
        raise ValueError("score needs at least one matched image")
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    fn = sum(m.fn for m in matches)
    diff = np.array([m.n_pred - m.n_true for m in matches], dtype=float)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return Scores(f1=_f1(precision, recall), precision=precision, recall=recall, tp=tp, fp=fp,
                  fn=fn, mae=float(np.mean(np.abs(diff))), medae=float(np.median(np.abs(diff))),
                  bias=float(np.mean(diff)), mean_iou=float(np.mean([m.iou for m in matches])),
                  n_images=len(matches))


def _pick_best(f1: np.ndarray) -> int:
    """Index of maximum F1; the middle of tied maxima (lower middle)."""
    tied = np.flatnonzero(np.isclose(f1, f1.max(), rtol=0.0, atol=1e-12))
    return int(tied[(tied.size - 1) // 2])


def _kneedle(x: np.ndarray, y: np.ndarray) -> int:
    """Index of the knee of a concave decreasing curve (Satopaa et al. 2011, offline form).

    Both axes are scaled to [0, 1]; the knee is where the curve stands highest above the straight
    line from its first to its last point.
    """
    if x.size < 3 or y.max() == y.min():
        return 0
    xn = (x - x[0]) / (x[-1] - x[0])
    yn = (y - y.min()) / (y.max() - y.min())
    # For a decreasing curve that chord is 1 - xn; the first maximum wins ties.
    return int(np.argmax(yn - (1.0 - xn)))


def threshold_curve(heatmaps: Sequence[np.ndarray], true_labels: Sequence[np.ndarray],
                    params: PostprocessParams, thresholds: Sequence[float] | None = None, *,
                    max_distance: float = 50.0, method: str = "hungarian",
                    progress: Callable[[int, int], None] | None = None) -> ThresholdCurve:
    """Pooled F1, precision and recall against the heatmap threshold, with best and knee.

    Parameters
    ----------
    heatmaps : sequence of (M, N) float arrays
        Probability heatmaps, one per image.
    true_labels : sequence of (M, N) int or bool arrays
        Ground truth of the same images.
    params : PostprocessParams
        The chain that turns each thresholded heatmap into labels.
    thresholds : sequence of float, optional
        Ascending grid; default :data:`DEFAULT_THRESHOLDS` (0.05 to 0.90 by 0.025, then to 0.99
        by 0.01).
    max_distance, method : optional
        Passed to :func:`match_objects`.
    progress : callable, optional
        Called as ``progress(done, total)`` after each threshold of the grid. Labelling a
        heatmap whose cells merge into one frame-wide component (an untrained model's, near 0.5)
        takes a watershed over most of the frame, so a whole sweep can run for minutes.

    Returns
    -------
    ThresholdCurve

    Notes
    -----
    An image whose thresholded mask is the same as at the previous threshold (a saturated
    heatmap, or thresholds above its maximum) keeps the previous match instead of being labelled
    again; the curve is the same as labelling every time.

    Examples
    --------
    >>> truth = np.zeros((60, 60), int); truth[5:25, 5:25] = 1
    >>> heat = np.where(truth > 0, 0.7, 0.1).astype(np.float32)
    >>> c = threshold_curve([heat], [truth], PostprocessParams.paper(cell_diameter=20),
    ...                     thresholds=[0.05, 0.3, 0.5, 0.8], max_distance=10)
    >>> c.f1.tolist(), c.best
    ([0.0, 1.0, 1.0, 0.0], 0.3)
    """
    heatmaps, true_labels = list(heatmaps), list(true_labels)
    if len(heatmaps) != len(true_labels) or not heatmaps:
        raise ValueError(f"need as many heatmaps as label images, at least one; got "
                         f"{len(heatmaps)} and {len(true_labels)}")
    grid = np.array(DEFAULT_THRESHOLDS if thresholds is None else thresholds, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0):
        raise ValueError("thresholds must be a non-empty, strictly ascending sequence")
    rows = []
    # Quantised once: the sweep thresholds the stored uint8 levels, as every surface does.
    heatmaps = [quantise_heatmap(h) for h in heatmaps]
    true_labels = [as_labels(t, name="true_labels") for t in true_labels]
    previous: list[tuple[np.ndarray, Match] | None] = [None] * len(heatmaps)
    for step, t in enumerate(grid, start=1):
        matches = []
        for i, (h, truth) in enumerate(zip(heatmaps, true_labels)):
            mask = foreground(h, t)         # what heatmap_to_labels thresholds
            if previous[i] is not None and np.array_equal(mask, previous[i][0]):
                match = previous[i][1]
            else:
                match = match_objects(truth, heatmap_to_labels(h, params, threshold=float(t)),
                                      max_distance=max_distance, method=method)
            previous[i] = (mask, match)
            matches.append(match)
        s = score(matches)
        rows.append((s.tp, s.fp, s.fn))
        if progress is not None:
            progress(step, grid.size)
    tp, fp, fn = (np.array(col, dtype=np.int64) for col in zip(*rows))
    return _curve_from_counts(grid, tp, fp, fn)


def _curve_from_counts(grid, tp, fp, fn) -> ThresholdCurve:
    """The ratios, best and knee of pooled counts per threshold (read-only arrays)."""
    precision = np.array([_ratio(a, a + b) for a, b in zip(tp, fp)], dtype=float)
    recall = np.array([_ratio(a, a + b) for a, b in zip(tp, fn)], dtype=float)
    f1 = np.array([_f1(p, r) for p, r in zip(precision, recall)], dtype=float)
    grid = np.array(grid, dtype=float)
    for arr in (grid, f1, precision, recall, tp, fp, fn):
        arr.setflags(write=False)
    b = _pick_best(f1)
    k = b + _kneedle(grid[b:], f1[b:])
    log.info("threshold_curve: best %.3f (F1 %.3f), knee %.3f", grid[b], f1[b], grid[k])
    return ThresholdCurve(thresholds=grid, f1=f1, precision=precision, recall=recall,
                          best=float(grid[b]), knee=float(grid[k]), best_f1=float(f1[b]),
                          tp=tp, fp=fp, fn=fn)


def combine_curves(curves: Iterable[ThresholdCurve]) -> ThresholdCurve:
    """One curve over the images of several: counts added per threshold, ratios recomputed.

    The result is the curve :func:`threshold_curve` gives for all the images at once, without
    labelling any of them again.

    Parameters
    ----------
    curves : iterable of ThresholdCurve
        On the same threshold grid, each with its counts (``tp``, ``fp``, ``fn``).

    Returns
    -------
    ThresholdCurve

    Examples
    --------
    >>> truth = np.zeros((60, 60), int); truth[5:25, 5:25] = 1
    >>> heat = np.where(truth > 0, 0.7, 0.1).astype(np.float32)
    >>> params, grid = PostprocessParams.paper(cell_diameter=20), [0.05, 0.5]
    >>> a = threshold_curve([heat], [truth], params, grid, max_distance=10)
    >>> b = threshold_curve([heat], [np.zeros_like(truth)], params, grid, max_distance=10)
    >>> both = combine_curves([a, b])
    >>> both.tp.tolist(), both.fp.tolist(), both.f1.tolist()
    ([0, 1], [2, 1], [0.0, 0.6666666666666666])
    """
    curves = list(curves)
    if not curves:
        raise ValueError("combine_curves needs at least one curve")
    grid = curves[0].thresholds
    for c in curves:
        if c.tp is None or c.fp is None or c.fn is None:
            raise ValueError("combine_curves needs curves with their counts (tp, fp, fn), "
                         "as threshold_curve makes them")
        if not np.array_equal(c.thresholds, grid):
            raise ValueError("combine_curves needs curves on the same threshold grid")
    return _curve_from_counts(grid, *(sum(getattr(c, k) for c in curves)
                                      for k in ("tp", "fp", "fn")))


def bootstrap_intervals(matches: Iterable[Match], *, confidence: float = 0.95,
                        resamples: int = 2000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Bootstrap confidence intervals of the pooled scores, resampling whole images.

    Images are drawn with replacement, as many as there are, ``resamples`` times; each draw is
    scored as :func:`score` does (F1, precision and recall from the summed counts; MAE, MedAE
    and bias over the drawn images), and the interval is the central ``confidence`` share of
    those scores (percentile method). Images, not cells, are resampled because the cells of one
    image share its staining, focus and artefacts: their errors are not independent.

    Parameters
    ----------
    matches : iterable of Match
        One per image, as for :func:`score`.
    confidence : float, optional
        Coverage of the interval, in (0, 1).
    resamples : int, optional
        Number of bootstrap draws.
    seed : int, optional
        Seeds the draws: the same matches and seed give the same intervals.

    Returns
    -------
    dict
        ``{name: (low, high)}`` for every name in :data:`INTERVAL_KEYS`.

    Examples
    --------
    >>> good = Match(tp=9, fp=0, fn=1, n_true=10, n_pred=9, iou=0.8)
    >>> bad = Match(tp=5, fp=5, fn=5, n_true=10, n_pred=10, iou=0.4)
    >>> ci = bootstrap_intervals([good, bad] * 5, resamples=500, seed=1)
    >>> low, high = ci["f1"]
    >>> bool(low < score([good, bad] * 5).f1 < high), ci["bias"][0] < -0.5 < ci["bias"][1]
    (True, True)
    """
    matches = list(matches)
    if not matches:
        raise ValueError("bootstrap_intervals needs at least one matched image")
    if not 0 < confidence < 1 or int(resamples) < 1:
        raise ValueError(f"confidence must lie in (0, 1) and resamples be at least 1; got "
                         f"{confidence!r} and {resamples!r}")
    counts = np.array([(m.tp, m.fp, m.fn, m.n_pred - m.n_true) for m in matches], dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(matches), (int(resamples), len(matches)))
    tp, fp, fn = (counts[draws, k].sum(axis=1) for k in range(3))
    diff = counts[draws, 3]
    # 0/0 is no error (score's rule): a draw that claims or holds nothing scores 1.
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    values = {"f1": f1, "precision": precision, "recall": recall,
              "mae": np.abs(diff).mean(axis=1), "medae": np.median(np.abs(diff), axis=1),
              "bias": diff.mean(axis=1)}
    tail = 100 * (1 - confidence) / 2
    return {key: tuple(float(v) for v in np.percentile(values[key], [tail, 100 - tail]))
            for key in INTERVAL_KEYS}
