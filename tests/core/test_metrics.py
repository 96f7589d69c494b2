"""core.metrics against hand-computed expectations, plus the invariants every matcher must keep."""
import json

import numpy as np
import pytest

from core.metrics import (DEFAULT_THRESHOLDS, Match, _kneedle, _pick_best, bootstrap_intervals,
                          combine_curves, match_objects, score, threshold_curve)
from core.postprocess import PostprocessParams

SHAPE = (60, 200)


def squares(centres, shape=SHAPE, half=3, ids=None):
    """Label image with one (2*half+1)-wide square per (row, col) centre; ids 1.. unless given."""
    labels = np.zeros(shape, np.int32)
    ids = range(1, len(centres) + 1) if ids is None else ids
    for i, (r, c) in zip(ids, centres):
        labels[r - half:r + half + 1, c - half:c + half + 1] = i
    return labels


ROW = 30


def at(*cols):
    return squares([(ROW, c) for c in cols])


# ---- hand-computed single images ------------------------------------------------------------

def test_precision_and_recall_are_not_swapped():
    # 4 true cells, 2 predictions sitting on two of them: nothing wrong claimed, half found.
    m = match_objects(at(20, 60, 100, 140), at(21, 101), max_distance=10)
    assert (m.tp, m.fp, m.fn, m.n_true, m.n_pred) == (2, 0, 2, 4, 2)
    assert m.precision == 1.0 and m.recall == 0.5
    assert m.f1 == pytest.approx(2 / 3)
    s = score([m])
    assert (s.precision, s.recall) == (1.0, 0.5)
    # 1 true cell, 3 predictions, one right: a third of the claims right, everything found.
    m = match_objects(at(20), at(20, 100, 160), max_distance=10)
    assert (m.tp, m.fp, m.fn) == (1, 2, 0)
    assert m.precision == pytest.approx(1 / 3) and m.recall == 1.0
    assert m.unmatched_pred == (2, 3) and m.unmatched_true == ()


def test_empty_truth_empty_prediction_and_both_empty():
    empty = np.zeros(SHAPE, np.int32)
    m = match_objects(empty, at(20, 100))
    assert (m.tp, m.fp, m.fn, m.iou) == (0, 2, 0, 0.0)
    s = score([m])
    assert (s.precision, s.recall, s.f1) == (0.0, 1.0, 0.0)  # 0/0 recall counts as 1
    m = match_objects(at(20, 100), empty)
    s = score([m])
    assert (m.tp, m.fp, m.fn) == (0, 0, 2)
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)
    m = match_objects(empty, empty)
    assert (m.tp, m.fp, m.fn, m.iou, m.pairs) == (0, 0, 0, 1.0, ())
    s = score([m])
    assert (s.precision, s.recall, s.f1, s.mae, s.mean_iou) == (1.0, 1.0, 1.0, 0.0, 1.0)


def test_pairs_carry_ids_and_centroid_distance():
    m = match_objects(at(20, 100), squares([(ROW + 3, 24)], ids=[9]), max_distance=10)
    assert m.pairs == ((1, 9, 5.0),)  # a 3-4-5 offset
    assert m.unmatched_true == (2,)


def test_distance_limit_is_inclusive():
    assert match_objects(at(20), at(70), max_distance=50).tp == 1
    assert match_objects(at(20), at(71), max_distance=50).tp == 0


def test_foreground_iou_by_hand():
    # 7x7 squares shifted by 3 columns: intersection 4*7 = 28, union 2*49 - 28 = 70.
    m = match_objects(at(20), at(23))
    assert m.iou == pytest.approx(28 / 70)


def test_hungarian_finds_the_pair_greedy_loses():
    # True 1 at col 50, true 2 at col 98; predictions at 70 and 25, limit 30.
    # Greedy: true 1 takes its nearest (70, d=20); true 2 is then left with 25 (d=73): one pair.
    # Optimal: 1-25 (d=25) and 2-70 (d=28): two pairs.
    truth, pred = at(50, 98), at(70, 25)
    greedy = match_objects(truth, pred, max_distance=30, method="greedy")
    best = match_objects(truth, pred, max_distance=30, method="hungarian")
    assert (greedy.tp, greedy.fp, greedy.fn) == (1, 1, 1)
    assert greedy.pairs == ((1, 1, 20.0),)
    assert (best.tp, best.fp, best.fn) == (2, 0, 0)
    assert best.pairs == ((1, 2, 25.0), (2, 1, 28.0))


def test_hungarian_prefers_least_total_distance_among_maximal_matchings():
    # Both assignments have two pairs; the crossing one costs 20 + 20, the straight one 10 + 10.
    m = match_objects(at(50, 80), at(60, 70), max_distance=100)
    assert m.pairs == ((1, 1, 10.0), (2, 2, 10.0))


def test_hungarian_maximises_pairs_before_distance():
    # True 1 sits on pred 1 (d=0); true 2 can only reach pred 1 (d=40); true 1 also reaches pred 2
    # (d=40). Least distance alone would keep the single 0-px pair; most pairs first gives two.
    truth, pred = at(100, 60), at(100, 140)
    m = match_objects(truth, pred, max_distance=40)
    assert m.pairs == ((1, 2, 40.0), (2, 1, 40.0))
    assert match_objects(truth, pred, max_distance=40, method="greedy").tp == 1


def test_iou_method_uses_overlap_not_distance():
    # Shift 3: IoU 28/70 = 0.4 -> no match although centroids are 3 px apart.
    assert match_objects(at(20), at(23), method="iou").tp == 0
    # Shift 1: IoU 42/56 = 0.75 -> match.
    m = match_objects(at(20), at(21), method="iou")
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert m.pairs == ((1, 1, 1.0),)
    assert match_objects(at(20), at(23), method="hungarian").tp == 1


def test_bool_masks_are_split_into_objects():
    m = match_objects(at(20, 100) > 0, at(21, 100))
    assert (m.n_true, m.tp) == (2, 2)


@pytest.mark.parametrize("bad, message", [
    (dict(pred=np.zeros((10, 10), np.int32)), "shape"),
    (dict(pred=np.zeros(SHAPE, np.float32)), "integer"),
    (dict(pred=np.zeros((2,) + SHAPE, np.int32)), "2D"),
    (dict(pred=-at(20)), "negative"),
    (dict(method="nearest"), "method"),
    (dict(max_distance=-1.0), "max_distance"),
])
def test_bad_input_raises_clear_value_error(bad, message):
    pred = bad.get("pred", at(20))
    kwargs = {k: v for k, v in bad.items() if k != "pred"}
    with pytest.raises(ValueError, match=message):
        match_objects(at(20), pred, **kwargs)


# ---- invariants -----------------------------------------------------------------------------

def random_labels(rng, n, shape=(200, 300)):
    centres = np.column_stack([rng.integers(5, shape[0] - 5, n), rng.integers(5, shape[1] - 5, n)])
    return squares(centres, shape=shape, half=2)


@pytest.mark.parametrize("method", ["hungarian", "greedy", "iou"])
def test_self_match_is_perfect(rng, method):
    labels = random_labels(rng, 40)
    m = match_objects(labels, labels, method=method)
    s = score([m])
    assert m.fp == m.fn == 0 and m.tp == m.n_true
    assert s.f1 == 1.0 and m.iou == 1.0


@pytest.mark.parametrize("method", ["hungarian", "greedy", "iou"])
def test_swapping_truth_and_prediction_swaps_fp_and_fn(rng, method):
    truth, pred = random_labels(rng, 30), random_labels(rng, 45)
    a = match_objects(truth, pred, max_distance=20, method=method)
    b = match_objects(pred, truth, max_distance=20, method=method)
    assert a.fp == b.fn and a.fn == b.fp
    if method != "greedy":  # the greedy rule is order-dependent by design; the others are not
        assert a.tp == b.tp


@pytest.mark.parametrize("method", ["hungarian", "greedy", "iou"])
def test_relabelling_never_changes_counts(rng, method):
    truth, pred = random_labels(rng, 30), random_labels(rng, 30)
    base = match_objects(truth, pred, max_distance=15, method=method)
    for _ in range(3):
        perm_t = np.concatenate([[0], rng.permutation(np.arange(1, truth.max() + 1)) * 7])
        perm_p = np.concatenate([[0], rng.permutation(np.arange(1, pred.max() + 1)) + 1000])
        other = match_objects(perm_t[truth], perm_p[pred], max_distance=15, method=method)
        if method == "greedy":
            # Greedy follows label order, so only the object totals are guaranteed.
            assert (other.n_true, other.n_pred) == (base.n_true, base.n_pred)
        else:
            assert (other.tp, other.fp, other.fn) == (base.tp, base.fp, base.fn)


def test_large_ids_are_renumbered_in_order(rng):
    # Ids beyond what a uint16 mask holds are renumbered, keeping their order (core.objects).
    labels = at(20, 100).astype(np.int64) * 10**12
    m = match_objects(labels, at(20, 100))
    assert m.tp == 2 and [p[0] for p in m.pairs] == [1, 2]


# ---- pooled scores --------------------------------------------------------------------------

def test_score_pools_counts_before_ratios():
    ms = [Match(tp=8, fp=2, fn=0, n_true=8, n_pred=10, iou=0.9),
          Match(tp=0, fp=0, fn=4, n_true=4, n_pred=0, iou=0.0),
          Match(tp=2, fp=0, fn=1, n_true=3, n_pred=2, iou=0.6)]
    s = score(ms)
    # tp 10, fp 2, fn 5: precision 10/12, recall 10/15; per-image errors +2, -4, -1.
    assert (s.tp, s.fp, s.fn, s.n_images) == (10, 2, 5, 3)
    assert s.precision == pytest.approx(10 / 12) and s.recall == pytest.approx(10 / 15)
    assert s.f1 == pytest.approx(20 / 27)  # 2 tp / (2 tp + fp + fn)
    assert (s.mae, s.medae) == (pytest.approx(7 / 3), 2.0)
    assert s.bias == pytest.approx(-1.0)
    assert s.mean_iou == pytest.approx(0.5)
    json.dumps(s.to_dict())


def test_score_needs_images():
    with pytest.raises(ValueError, match="at least one"):
        score([])


# ---- threshold curve ------------------------------------------------------------------------

def crafted_heatmap():
    """8 true cells and 4 false ones, each a 10x10 square of one probability value."""
    true_p = [0.95, 0.95, 0.95, 0.95, 0.85, 0.75, 0.45, 0.35]
    false_p = [0.15, 0.15, 0.25, 0.25]
    heat = np.zeros((70, 400), np.float32)
    truth = np.zeros(heat.shape, np.int32)
    for k, p in enumerate(true_p + false_p):
        r, c = 10 + 35 * (k // 10), 10 + 38 * (k % 10)
        heat[r:r + 10, c:c + 10] = p
        if k < len(true_p):
            truth[r:r + 10, c:c + 10] = k + 1
    return heat, truth


def test_threshold_curve_best_and_knee_by_hand():
    heat, truth = crafted_heatmap()
    grid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    curve = threshold_curve([heat], [truth], PostprocessParams.paper(cell_diameter=20), grid,
                            max_distance=10)
    # F1 = 2tp / (2tp + fp + fn): tp counts true values > t, fp false values > t.
    expected = [16 / 20, 16 / 18, 1.0, 14 / 15, 12 / 14, 12 / 14, 12 / 14, 10 / 13, 8 / 12]
    np.testing.assert_allclose(curve.f1, expected)
    assert curve.recall[0] == 1.0 and curve.precision[0] == pytest.approx(8 / 12)
    assert curve.best == 0.3 and curve.best_f1 == 1.0
    # Tail from 0.3: normalised F1 [1, .8, .571, .571, .571, .308, 0] plus normalised x minus 1
    # peaks at 0.7 (0.571 + 4/6 - 1 = 0.238).
    assert curve.knee == 0.7
    assert not curve.f1.flags.writeable


def test_default_grid_is_fine_above_0_9_and_reaches_0_99():
    coarse = [round(0.05 + 0.025 * i, 3) for i in range(35)]        # 0.05 .. 0.90
    fine = [round(0.91 + 0.01 * i, 2) for i in range(9)]            # 0.91 .. 0.99
    assert DEFAULT_THRESHOLDS.tolist() == coarse + fine
    assert coarse[-1] == 0.9 and 0.55 in DEFAULT_THRESHOLDS and 0.95 in DEFAULT_THRESHOLDS


def test_ties_pick_the_middle_and_kneedle_on_textbook_curve():
    assert _pick_best(np.array([0.5, 1.0, 1.0, 1.0, 0.2])) == 2
    assert _pick_best(np.array([0.5, 1.0, 1.0, 0.2])) == 1
    x = np.linspace(0, 1, 11)
    assert _kneedle(x, 1 - x**2) == 5  # max of x - x^2 at 0.5
    assert _kneedle(x[:2], x[:2]) == 0 and _kneedle(x, np.ones(11)) == 0


def test_threshold_curve_reports_every_step_and_reuses_unchanged_masks(monkeypatch):
    import core.metrics as metrics

    heat, truth = crafted_heatmap()
    params, grid = PostprocessParams.paper(cell_diameter=20), [0.1, 0.2, 0.3, 0.4, 0.5]
    # A saturated heatmap: the same mask at every threshold below 0.9.
    flat = np.where(truth > 0, 0.95, 0.0).astype(np.float32)
    calls, steps = [], []
    real = metrics.heatmap_to_labels

    def counted(h, p, *, threshold=None):
        calls.append(threshold)
        return real(h, p, threshold=threshold)

    monkeypatch.setattr(metrics, "heatmap_to_labels", counted)
    curve = threshold_curve([heat, heat, flat], [truth, truth, truth], params, grid,
                            max_distance=10, progress=lambda done, total: steps.append((done, total)))
    assert steps == [(i, len(grid)) for i in range(1, len(grid) + 1)]
    assert len(calls) == 2 * len(grid) + 1     # the saturated image is labelled once
    # One threshold at a time labels everything afresh: the same curve.
    fresh = [threshold_curve([heat, heat, flat], [truth] * 3, params, [t], max_distance=10).f1[0]
             for t in grid]
    np.testing.assert_array_equal(curve.f1, fresh)


def test_threshold_curve_rejects_mismatched_inputs():
    heat, truth = crafted_heatmap()
    with pytest.raises(ValueError, match="as many"):
        threshold_curve([heat, heat], [truth], PostprocessParams.paper())
    with pytest.raises(ValueError, match="ascending"):
        threshold_curve([heat], [truth], PostprocessParams.paper(), [0.5, 0.3])


def test_grouped_hungarian_equals_one_dense_assignment(rng):
    """Solving each group of candidates alone must give the optimum of the whole problem."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    truth, pred = random_labels(rng, 60), random_labels(rng, 70)
    m = match_objects(truth, pred, max_distance=20)
    centre = lambda lab: np.array([np.argwhere(lab == i).mean(axis=0) for i in np.unique(lab)[1:]])
    d = cdist(centre(truth), centre(pred))
    cost = np.where(d <= 20, d, 1e6)
    rows, cols = linear_sum_assignment(cost)
    real = cost[rows, cols] < 1e6
    assert m.tp == real.sum()
    assert sum(p[2] for p in m.pairs) == pytest.approx(cost[rows, cols][real].sum())


# ---- pooled curves and bootstrap intervals ---------------------------------------------------

def test_combined_curves_equal_the_curve_of_all_images_at_once():
    heat, truth = crafted_heatmap()
    other = np.where(truth > 0, 0.3, 0.0).astype(np.float32)
    params, grid = PostprocessParams.paper(cell_diameter=20), [0.1, 0.2, 0.4, 0.6, 0.9]
    a = threshold_curve([heat], [truth], params, grid, max_distance=10)
    b = threshold_curve([other, heat], [truth, np.zeros_like(truth)], params, grid,
                        max_distance=10)
    together = threshold_curve([heat, other, heat], [truth, truth, np.zeros_like(truth)], params,
                               grid, max_distance=10)
    both = combine_curves([a, b])
    for key in ("f1", "precision", "recall", "tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(both, key), getattr(together, key))
    assert (both.best, both.knee) == (together.best, together.knee)
    with pytest.raises(ValueError, match="same threshold grid"):
        combine_curves([a, threshold_curve([heat], [truth], params, [0.1, 0.5], max_distance=10)])


def test_bootstrap_intervals_of_two_images_by_hand():
    # Image a: 1 TP, 2 FP, count error +2. Image b: 3 TP, error 0. A draw of two images is aa,
    # ab/ba or bb (1/4, 1/2, 1/4); the 2.5% and 97.5% points are the aa and bb draws' scores.
    a = Match(tp=1, fp=2, fn=0, n_true=1, n_pred=3, iou=0.5)
    b = Match(tp=3, fp=0, fn=0, n_true=3, n_pred=3, iou=1.0)
    ci = bootstrap_intervals([a, b], resamples=4000, seed=3)
    assert ci["f1"] == pytest.approx((2 * (1 / 3) / (1 / 3 + 1), 1.0))  # aa: P 1/3, R 1
    assert ci["precision"] == pytest.approx((1 / 3, 1.0))
    assert ci["recall"] == (1.0, 1.0)
    assert ci["bias"] == (0.0, 2.0) and ci["mae"] == (0.0, 2.0) and ci["medae"] == (0.0, 2.0)
    assert bootstrap_intervals([a, b], resamples=4000, seed=3) == ci      # seeded: repeatable


def test_bootstrap_intervals_hold_the_estimate_and_vanish_for_identical_images():
    rng = np.random.default_rng(0)
    matches = []
    for _ in range(30):
        tp, fp, fn = rng.integers(0, 8, 3)
        matches.append(Match(tp=int(tp), fp=int(fp), fn=int(fn), n_true=int(tp + fn),
                             n_pred=int(tp + fp), iou=0.5))
    point, ci = score(matches), bootstrap_intervals(matches)
    for key in ("f1", "precision", "recall", "mae", "bias"):
        low, high = ci[key]
        assert low <= getattr(point, key) <= high and low < high
    same = bootstrap_intervals([matches[0]] * 5, resamples=50)
    assert all(low == high for low, high in same.values())
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_intervals([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_intervals(matches, confidence=1.5)
