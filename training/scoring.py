"""Scoring runs: predict, tune the threshold, score test images, and re-score stored heatmaps.

Every score here goes through a run's :class:`core.run.Scoring` (its threshold, post-processing
and match distance), the one scoring path, so evaluation, threshold tuning, the Predictions
recount, the dashboard's curves and count regions agree image by image. Heatmaps are compared
on their uint8 levels, so a stored heatmap scores exactly as the fresh one did.

Two halves:

- in memory, for training and evaluation jobs: :func:`predict_samples`, :func:`tune_threshold`,
  :func:`score_samples` (:class:`ImageScore` per image);
- from the database and the stored heatmaps, for the pages: :func:`image_outcome`,
  :func:`recount`, :func:`recount_scores`, :func:`threshold_curve_for_run`,
  :func:`run_reliability` (intervals and the bias warning), :func:`count_results`,
  :func:`counted_image`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.density import count_density, count_in_region
from core.metrics import DEFAULT_THRESHOLDS, Match, bootstrap_intervals, combine_curves, score
from core.objects import count_objects
from core.postprocess import PostprocessParams
from core.run import CHOSEN_ON, Scoring
from db import jobs as job_rows
from db import masks, projects, runs
from db.runs import run_path, run_scoring

__all__ = ["Cancelled", "ImageScore", "scoring_for", "predict_samples", "tune_threshold",
           "MIN_VALIDATION_CELLS", "score_samples", "ImageOutcome", "image_outcome", "recount",
           "recount_scores",
           "threshold_curve_for_run", "CURVE_LABELS", "Reliability", "bias_limit",
           "run_reliability", "runs_table", "Promotion", "compare_for_promotion",
           "MIN_TEST_IMAGES", "MIN_TEST_CELLS", "few_data_caution", "count_results",
           "CountedImage", "counted_image", "CURVE_FILE"]

log = logging.getLogger(__name__)

Progress = Callable[[dict], None]

#: The test-image curve of a run that kept no tuning curve, computed once and kept here.
CURVE_FILE = "threshold_curve_test.json"


class Cancelled(Exception):
    """Work stopped because ``should_cancel()`` returned True."""


def check_cancel(should_cancel, when: str) -> None:
    """Raise :class:`Cancelled` (saying ``when``) if someone asked to stop."""
    if should_cancel is not None and should_cancel():
        raise Cancelled(f"cancelled {when}")


@dataclass(frozen=True)
class ImageScore:
    """One scored image, in memory.

    Attributes
    ----------
    key : str
        The sample's key (``image:<id>``).
    heatmap : float32 array (H, W)
    labels : int32 array (H, W)
        Predicted objects at the run's threshold.
    match : core.metrics.Match
        Against the ground truth.
    """

    key: str
    heatmap: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    match: Any


def scoring_for(config, threshold: float | None = None) -> Scoring:
    """The scoring rule a training config describes: its preset, cell diameter and threshold.

    ``config`` is a :class:`training.config.TrainConfig`; without ``threshold`` the preset's
    own (0.55 for ``paper``) stands until tuning picks one.
    """
    params = PostprocessParams.from_preset(config.postprocess_preset,
                                           cell_diameter=config.cell_diameter)
    return Scoring(params, params.threshold if threshold is None else float(threshold))


def predict_samples(model, samples, *, stage: str, progress: Progress | None = None,
                    should_cancel: Callable[[], bool] | None = None):
    """Full-size heatmaps of samples (float32), reporting ``stage`` and the image count.

    ``should_cancel`` is asked before every image: a full-size prediction takes seconds on a
    CPU, so a cancel is honoured within one image rather than after the whole stage.
    """
    from core.predict import predict_heatmap

    heatmaps = []
    for i, sample in enumerate(samples):
        check_cancel(should_cancel, f"during {stage} after {i} of {len(samples)} images")
        heatmaps.append(predict_heatmap(model, sample.image))
        if progress:
            progress({"stage": stage, "step": i + 1, "steps": len(samples)})
    return heatmaps


#: Validation images must hold at least this many true cells for the threshold to be chosen
#: on them alone. Below it a curve moves in coarse steps (one cell is more than 2% of recall)
#: and its maximum is mostly noise: at a recall near 0.9 the binomial standard error over 50
#: cells is 4 points, as large as the differences across an F1 curve's flat top. Then the
#: train images are pooled in, as the paper did, and the run says so.
MIN_VALIDATION_CELLS = 50


def _curve_dict(curve, samples) -> dict:
    """A curve as thresholds.json keeps it, with how many images and cells it rests on."""
    return {"thresholds": np.asarray(curve.thresholds).tolist(),
            "f1": np.asarray(curve.f1).tolist(),
            "precision": np.asarray(curve.precision).tolist(),
            "recall": np.asarray(curve.recall).tolist(),
            **{k: np.asarray(getattr(curve, k)).tolist() for k in ("tp", "fp", "fn")},
            "best": float(curve.best), "images": len(samples),
            "cells": int(sum(count_objects(s.labels) for s in samples))}


def tune_threshold(validation, train, scoring: Scoring, *, min_cells: int = MIN_VALIDATION_CELLS,
                   progress: Progress | None = None,
                   should_cancel: Callable[[], bool] | None = None) -> dict:
    """Choose the threshold on held-out whole images; keep the fitted images' curve beside it.

    The threshold of best F1 on the validation images (never those the weights were fitted
    on) is chosen when they hold at least ``min_cells`` true cells; otherwise the validation
    and train images are pooled and ``chosen_on`` says so. Both curves go through ``scoring``
    (the run's rule) on :data:`core.metrics.DEFAULT_THRESHOLDS`.

    Parameters
    ----------
    validation, train : (heatmaps, samples)
        Full-size heatmaps and their samples: the held-out images and the fitted ones. Either
        may be empty, not both.
    scoring : core.run.Scoring
    min_cells : int
        See :data:`MIN_VALIDATION_CELLS`.
    progress : callable, optional
        Called with stage ``tuning`` after every threshold of each curve (a sweep over an
        untrained model's heatmaps takes minutes); ``should_cancel`` is asked there too.

    Returns
    -------
    dict
        ``best``, ``knee`` and ``chosen`` (= best) of the curve chosen on; ``chosen_on`` (one
        of :data:`core.run.CHOSEN_ON`); ``min_cells``; ``images`` (the keys of each set);
        ``curves``: ``validation`` and ``train`` (None for an empty set), and
        ``train+validation`` when the choice fell back to it, each with ``thresholds``,
        ``f1``, ``precision``, ``recall``, the pooled ``tp``, ``fp`` and ``fn`` (so curves can
        be pooled again later), ``best``, ``images`` and ``cells``.
    """
    sets = {"validation": (list(validation[0]), list(validation[1])),
            "train": (list(train[0]), list(train[1]))}
    if not sets["validation"][1] and not sets["train"][1]:
        raise ValueError("Tuning the threshold needs images: the run has neither validation "
                         "nor train images with ground truth.")
    total = sum(len(DEFAULT_THRESHOLDS) for _, samples in sets.values() if samples)
    done = [0]

    def step(_done: int, _total: int) -> None:
        done[0] += 1
        if progress:
            progress({"stage": "tuning", "step": done[0], "steps": total})
        check_cancel(should_cancel,
                     f"while tuning the threshold after {done[0]} of {total} steps")

    curves = {name: (scoring.curve(heats, [s.labels for s in samples], progress=step)
                     if samples else None) for name, (heats, samples) in sets.items()}
    out = {name: (_curve_dict(c, sets[name][1]) if c is not None else None)
           for name, c in curves.items()}
    held_out = out["validation"]["cells"] if out["validation"] else 0
    if held_out >= min_cells:
        chosen_on, curve = CHOSEN_ON[0], curves["validation"]
    else:
        chosen_on = CHOSEN_ON[1]
        curve = combine_curves([c for c in curves.values() if c is not None])
        out[chosen_on] = _curve_dict(curve, sets["validation"][1] + sets["train"][1])
        log.warning("threshold chosen on train+validation images: the validation images hold "
                    "%d cells, fewer than %d", held_out, min_cells)
    knee = None if curve.knee is None or not np.isfinite(curve.knee) else float(curve.knee)
    return {"best": float(curve.best), "knee": knee, "chosen": float(curve.best),
            "chosen_on": chosen_on, "min_cells": int(min_cells),
            "images": {name: [s.key for s in samples] for name, (_, samples) in sets.items()},
            "curves": out}


def score_samples(model, samples, scoring: Scoring, *, progress: Progress | None = None,
                  heatmaps=None, should_cancel: Callable[[], bool] | None = None):
    """Predict, count and match every sample with ``scoring``; returns (metrics, ImageScores).

    The metrics are the pooled scores (:func:`core.metrics.score`), the threshold, the mean
    true count per image, and ``intervals``: bootstrap 95% intervals over images
    (:func:`core.metrics.bootstrap_intervals`, seed 0) of F1, precision, recall, MAE, MedAE and
    bias, as ``[low, high]``. ``should_cancel`` is asked before every image's prediction and
    post-processing.
    """
    if heatmaps is None:
        heatmaps = predict_samples(model, samples, stage="test", progress=progress,
                                   should_cancel=should_cancel)
    results = []
    for i, (sample, heat) in enumerate(zip(samples, heatmaps)):
        check_cancel(should_cancel, f"while scoring after {i} of {len(samples)} images")
        labels = scoring.labels(heat)
        results.append(ImageScore(sample.key, heat, labels, scoring.match(sample.labels, labels)))
    if not results:
        return {"n_images": 0, "threshold": scoring.threshold}, results
    matches = [r.match for r in results]
    scores = dataclasses.asdict(score(matches))
    intervals = {k: list(v) for k, v in bootstrap_intervals(matches).items()}
    return {**scores, "threshold": scoring.threshold, "intervals": intervals,
            "mean_true_count": float(np.mean([m.n_true for m in matches]))}, results


# --- Scores at another threshold, from the stored heatmaps -------------------------------------

@dataclass(frozen=True)
class ImageOutcome:
    """One test image of a run, matched at some threshold.

    Attributes
    ----------
    image_id : int
    threshold : float
    heatmap : ndarray of uint8, (H, W)
        The stored probability map (p x 255).
    true_labels, pred_labels : ndarray of int32, (H, W)
        Ground truth objects and the objects predicted at ``threshold``.
    match : core.metrics.Match
        TP pairs and the unmatched ids (FN among the true, FP among the predicted).
    """

    image_id: int
    threshold: float
    heatmap: np.ndarray
    true_labels: np.ndarray
    pred_labels: np.ndarray
    match: Any


def _stored_heatmap(storage, result, run_id: int, image_id: int) -> np.ndarray:
    if result is None:
        raise ValueError(f"Run {run_id} was not scored on image {image_id}; pick one of its "
                         "test images.")
    if not result.heatmap_path:
        raise ValueError(f"Run {run_id} kept no heatmap for image {image_id}; evaluate the run "
                         "again to store heatmaps.")
    try:
        return storage.read_heatmap(result.heatmap_path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"The heatmap of image {image_id} ({result.heatmap_path}) cannot be "
                         f"read: {exc}. Evaluate the run again.") from exc


def _truth_labels(session, storage, result, shape) -> np.ndarray:
    """The ground truth a run was scored against, as labels (empty when there is none)."""
    version = masks.scored_version(session, result)
    if version is None:
        return np.zeros(shape, np.int32)
    return storage.read_labels(version.path)


def image_outcome(session, storage, run_id: int, image_id: int,
                  threshold: float | None = None) -> ImageOutcome:
    """Match one test image of a run at ``threshold`` (the run's own by default).

    Raises
    ------
    ValueError
        When the run did not score the image or its heatmap file cannot be read; the message
        names the image and says what to do.
    """
    rule = run_scoring(runs.get_run(session, run_id), storage)
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"The threshold must be between 0 and 1, got {threshold}.")
        rule = rule.with_threshold(threshold)
    result = runs.result_for(session, run_id, image_id)
    heat = _stored_heatmap(storage, result, run_id, image_id)
    pred = rule.labels(heat)
    truth = _truth_labels(session, storage, result, heat.shape)
    return ImageOutcome(image_id, rule.threshold, heat, truth, pred, rule.match(truth, pred))


def recount(session, storage, run_id: int, threshold: float, *, image_ids=None,
            progress=None) -> pd.DataFrame:
    """Counts, TP, FP and FN of a run's test images at another threshold.

    Parameters
    ----------
    threshold : float
        In (0, 1).
    image_ids : iterable of int, optional
        Only these images (default: all the run scored).
    progress : callable(done, total), optional

    Returns
    -------
    DataFrame
        Columns ``image_id, n_true, n_pred, tp, fp, fn, iou, error, abs_error, problem``;
        an image whose files cannot be read keeps NaN counts and says why in ``problem``.
    """
    ids = list(runs.scored_image_ids(session, run_id) if image_ids is None else image_ids)
    rows = []
    for n, image_id in enumerate(ids):
        try:
            m = image_outcome(session, storage, run_id, image_id, threshold).match
            rows.append({"image_id": image_id, "n_true": m.n_true, "n_pred": m.n_pred,
                         "tp": m.tp, "fp": m.fp, "fn": m.fn, "iou": m.iou,
                         "error": m.n_pred - m.n_true, "abs_error": abs(m.n_pred - m.n_true),
                         "problem": ""})
        except ValueError as exc:
            rows.append({"image_id": image_id, "problem": str(exc)})
        if progress is not None:
            progress(n + 1, len(ids))
    cols = ["image_id", "n_true", "n_pred", "tp", "fp", "fn", "iou", "error", "abs_error",
            "problem"]
    return pd.DataFrame(rows, columns=cols)


def recount_scores(table: pd.DataFrame) -> dict[str, float]:
    """Pooled scores of a :func:`recount` table (the images it could read)."""
    ok = table[table["problem"].fillna("") == ""]
    s = score(Match(tp=int(r.tp), fp=int(r.fp), fn=int(r.fn), n_true=int(r.n_true),
                    n_pred=int(r.n_pred), iou=float(r.iou)) for r in ok.itertuples())
    return s.to_dict()


def _curve_lists(d: dict) -> dict:
    return {k: [float(v) for v in d[k]] for k in ("thresholds", "f1", "precision", "recall")
            if k in d}


def _is_curve(d) -> bool:
    return isinstance(d, dict) and bool(d.get("thresholds")) and bool(d.get("f1"))


#: How the Dashboard names each curve a run can hold.
CURVE_LABELS = {"validation": "validation images (held out)",
                "train": "train images (fitted)",
                "train+validation": "train + validation images",
                "test": "test images"}


def _run_marks(run, storage) -> tuple[dict, dict]:
    """(best/knee/chosen of a run, its thresholds.json) where readable, else the database's."""
    try:
        got = json.loads((run_path(run, storage) / "thresholds.json").read_text())
        stored = got if isinstance(got, dict) else {}
    except (OSError, ValueError):
        stored = {}
    chosen = run.threshold if run.threshold is not None else stored.get("chosen")
    return {"best": stored.get("best"), "knee": stored.get("knee"), "chosen": chosen}, stored


def _tuning_curves(run, stored: dict) -> dict | None:
    """The curves a run kept from its own tuning, by name, and which one it chose on.

    Runs since issue 9 keep ``curves`` (validation, train, maybe their pool); older ones one
    ``curve`` over train + validation images (or ``metrics["threshold_curve"]``).
    """
    kept = stored.get("curves")
    if isinstance(kept, dict) and any(_is_curve(c) for c in kept.values()):
        curves = {k: c for k, c in kept.items() if _is_curve(c)}
        chosen_on = stored.get("chosen_on")
        primary = chosen_on if chosen_on in curves else next(iter(curves))
        return {"curves": curves, "primary": primary,
                "chosen_on": chosen_on if chosen_on in CHOSEN_ON else primary}
    for old in (stored.get("curve"), (run.metrics or {}).get("threshold_curve")):
        if _is_curve(old):
            return {"curves": {"train+validation": old}, "primary": "train+validation",
                    "chosen_on": "train+validation"}
    return None


def _shaped(curves: dict, primary: str, marks: dict, chosen_on: str) -> dict:
    """The dict :func:`threshold_curve_for_run` returns."""
    return {**_curve_lists(curves[primary]), **marks,
            "curves": {CURVE_LABELS.get(k, k): _curve_lists(c) for k, c in curves.items()},
            "chosen_on": chosen_on, "source": CURVE_LABELS.get(chosen_on, chosen_on)}


def threshold_curve_for_run(session, storage, run_id: int, *, compute: bool = False):
    """F1, precision and recall against threshold for a run, with its best, knee and chosen.

    The curves of the run's own tuning (``thresholds.json``: the held-out validation images
    and the fitted train images; one ``curve`` in older runs) are used when the run kept them.
    Otherwise the curve over its test heatmaps is read from :data:`CURVE_FILE` in the run
    directory; with ``compute=True`` it is computed through the run's scoring rule (seconds
    per image) and kept there.

    Returns
    -------
    dict or None
        ``curves``: {label (see :data:`CURVE_LABELS`): {``thresholds, f1, precision,
        recall``}}; the same four lists of the curve the threshold was chosen on (when the
        run kept it) at the top level; ``best, knee, chosen`` (floats or None); ``chosen_on`` (``validation``,
        ``train+validation`` or ``test``); ``source`` (the label of that curve). None when
        nothing is stored and ``compute`` is False.
    """
    run = runs.get_run(session, run_id)
    marks, stored = _run_marks(run, storage)
    tuned = _tuning_curves(run, stored)
    if tuned is not None:
        return _shaped(tuned["curves"], tuned["primary"], marks, tuned["chosen_on"])
    cache = run_path(run, storage) / CURVE_FILE
    if cache.is_file():
        try:
            got = json.loads(cache.read_text())
            marks = {**marks, "knee": marks["knee"] or got.get("knee")}
            return _shaped({"test": got}, "test", marks, "test")
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable %s", cache)
    if not compute:
        return None
    results = runs.stored_heatmap_results(session, run_id)
    if not results:
        raise ValueError(f"Run {run_id} kept no heatmaps; evaluate it again to draw its curve.")
    heats = [storage.read_heatmap(r.heatmap_path) for r in results]
    truths = [_truth_labels(session, storage, r, h.shape) for r, h in zip(results, heats)]
    c = run_scoring(run, storage).curve(heats, truths)
    got = {"thresholds": c.thresholds.tolist(), "f1": c.f1.tolist(),
           "precision": c.precision.tolist(), "recall": c.recall.tolist(),
           "best": c.best, "knee": c.knee}
    try:
        cache.write_text(json.dumps(got))
    except OSError as exc:
        log.warning("cannot keep the curve in %s: %s", cache, exc)
    return _shaped({"test": got}, "test", {**marks, "knee": marks["knee"] or c.knee,
                                           "best": marks["best"] or c.best}, "test")


# --- How far a run's scores can be trusted -------------------------------------------------------

@dataclass(frozen=True)
class Reliability:
    """A run's test scores with their uncertainty, and whether its counts lean one way.

    Attributes
    ----------
    intervals : dict
        ``{score: (low, high)}``, bootstrap 95% intervals over the test images
        (:func:`core.metrics.bootstrap_intervals`); empty when the run has no test results.
    n_images : int
        Test images the scores rest on.
    n_cells : int
        True cells in them.
    mean_true_count : float
        Mean true cells per test image (NaN without results).
    bias : float
        Mean of predicted minus true count per test image (NaN without results).
    warning : str or None
        A sentence when ``|bias|`` exceeds :func:`bias_limit` of the mean true count.
    """

    intervals: dict
    n_images: int
    n_cells: int
    mean_true_count: float
    bias: float
    warning: str | None


def bias_limit(mean_true_count: float) -> float:
    """The largest |bias| a run may have before the Count page warns: max(1, 5% of the mean count).

    One cell per image is within what two careful annotators disagree on; on crowded images 5%
    of the count is.

    >>> bias_limit(8.0), bias_limit(60.0)
    (1.0, 3.0)
    """
    return max(1.0, 0.05 * float(mean_true_count))


def run_reliability(session, run_id: int) -> Reliability:
    """Intervals and the bias check of a run, from its stored per-image test results.

    A run without stored results falls back to the ``intervals``, ``bias`` and
    ``mean_true_count`` of its metrics (what training wrote).
    """
    run = runs.get_run(session, run_id)
    table = runs.run_results(session, run_id)
    metrics = run.metrics or {}
    if not table.empty:
        matches = [Match(tp=int(r.tp), fp=int(r.fp), fn=int(r.fn), n_true=int(r.n_true),
                         n_pred=int(r.n_pred), iou=float(r.iou)) for r in table.itertuples()]
        intervals = bootstrap_intervals(matches)
        n_images, n_cells = len(matches), int(table["n_true"].sum())
        mean_true, bias = float(table["n_true"].mean()), float(table["error"].mean())
    else:
        intervals = {k: tuple(v) for k, v in (metrics.get("intervals") or {}).items()}
        n_images, n_cells = int(metrics.get("n_images") or 0), 0
        mean_true = float(metrics.get("mean_true_count", np.nan))
        bias = float(metrics.get("bias", np.nan))
    warning = None
    if np.isfinite(bias) and np.isfinite(mean_true) and abs(bias) > bias_limit(mean_true):
        way = "over-counts" if bias > 0 else "under-counts"
        low, high = intervals.get("bias", (np.nan, np.nan))
        warning = (f"This model {way}: on its {n_images} test images it counted {abs(bias):.1f} "
                   f"cells per image {'more' if bias > 0 else 'fewer'} than the ground truth "
                   f"(mean true count {mean_true:.1f}; bias 95% interval {low:+.1f} to "
                   f"{high:+.1f}). Expect its counts to run {'high' if bias > 0 else 'low'}: "
                   "check them on the Predictions page, or retrain with more approved masks.")
    return Reliability(intervals, n_images, n_cells, mean_true, bias, warning)


def _interval_text(interval, digits: int = 2) -> str:
    if not interval or not all(np.isfinite(interval)):
        return ""
    return f"{interval[0]:.{digits}f} to {interval[1]:.{digits}f}"


def runs_table(session, storage, project_id: int) -> pd.DataFrame:
    """A project's runs (``db.runs.runs_overview``) with their intervals and threshold choice.

    Returns
    -------
    DataFrame
        The overview's columns plus ``f1_ci``, ``mae_ci`` and ``bias_ci`` (95% intervals as
        text, empty without test results), ``chosen_on`` (``validation``,
        ``train+validation``, or empty when the run's ``thresholds.json`` does not say; runs
        from before issue 9 kept one ``curve`` over train + validation) and ``validation_cells``
        (true cells in the validation images; NaN when unknown).
    """
    table = runs.runs_overview(session, project_id)
    extra = []
    for run_id in table["run_id"]:
        run = runs.get_run(session, int(run_id))
        ci = run_reliability(session, int(run_id)).intervals
        _, stored = _run_marks(run, storage)
        validation = (stored.get("curves") or {}).get("validation") or {}
        chosen_on = stored.get("chosen_on") or ("train+validation" if "curve" in stored else "")
        extra.append({"f1_ci": _interval_text(ci.get("f1")),
                      "mae_ci": _interval_text(ci.get("mae")),
                      "bias_ci": _interval_text(ci.get("bias")), "chosen_on": chosen_on,
                      "validation_cells": validation.get("cells", np.nan)})
    columns = ["f1_ci", "mae_ci", "bias_ci", "chosen_on", "validation_cells"]
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(extra, columns=columns)], axis=1)


@dataclass(frozen=True)
class Promotion:
    """What an admin weighs before promoting a run: both runs' held-out test scores.

    Attributes
    ----------
    table : DataFrame
        One row for the run promoted now (``role`` "promoted now", absent when there is none or
        it is the candidate) and one for the ``candidate``: ``role, run, F1, F1 95% CI, MAE,
        MAE 95% CI, bias, bias 95% CI, test images``.
    warning : str or None
        A sentence when the candidate scores worse on its test images (lower F1 or higher MAE)
        or has no test score at all.
    """

    table: pd.DataFrame
    warning: str | None


PROMOTION_COLUMNS = ("role", "run", "F1", "F1 95% CI", "MAE", "MAE 95% CI", "bias",
                     "bias 95% CI", "test images")


def _worse(candidate, current) -> str | None:
    if pd.isna(candidate["f1"]):
        return (f"{candidate['name']} has no held-out test score; promoting it replaces a model "
                "whose quality is known with one whose quality is not.")
    if current is None:
        return None
    if pd.notna(current["f1"]) and candidate["f1"] < current["f1"]:
        return (f"{candidate['name']} has a lower held-out F1 ({candidate['f1']:.2f}) than "
                f"{current['name']}, the model now ({current['f1']:.2f}).")
    if (pd.notna(current["mae"]) and pd.notna(candidate["mae"])
            and candidate["mae"] > current["mae"]):
        return (f"{candidate['name']} miscounts more on the held-out test images (MAE "
                f"{candidate['mae']:.2f}) than {current['name']}, the model now "
                f"({current['mae']:.2f}).")
    return None


def compare_for_promotion(overview: pd.DataFrame, run_id: int) -> Promotion:
    """Set the candidate ``run_id`` beside the project's promoted run, to be confirmed.

    Parameters
    ----------
    overview : DataFrame
        A project's runs as :func:`runs_table` gives them.
    run_id : int
        The run an admin means to promote.

    Examples
    --------
    >>> overview = pd.DataFrame({"run_id": [1, 2], "name": ["a", "b"], "promoted": [True, False],
    ...     "f1": [0.93, 0.52], "mae": [0.8, 4.5], "bias": [0.1, -3.9], "n_images": [12, 12],
    ...     "f1_ci": ["0.90 to 0.95", ""], "mae_ci": ["", ""], "bias_ci": ["", ""]})
    >>> check = compare_for_promotion(overview, 2)
    >>> list(check.table["role"]), check.warning.startswith("b has a lower held-out F1")
    (['promoted now', 'candidate'], True)
    """
    picked = overview[overview["run_id"] == run_id]
    if picked.empty:
        raise ValueError(f"Run {run_id} is not one of this project's runs; pick it again.")
    candidate = picked.iloc[0]
    now = overview[overview["promoted"] & (overview["run_id"] != run_id)]
    current = None if now.empty else now.iloc[0]
    rows = [(role, r) for role, r in (("promoted now", current), ("candidate", candidate))
            if r is not None]
    table = pd.DataFrame([(role, r["name"], r["f1"], r["f1_ci"], r["mae"], r["mae_ci"],
                           r["bias"], r["bias_ci"], r["n_images"]) for role, r in rows],
                         columns=list(PROMOTION_COLUMNS))
    return Promotion(table, _worse(candidate, current))


#: Below either figure a score's interval is wide: the pages say so beside it.
MIN_TEST_IMAGES = 10
MIN_TEST_CELLS = 100


def few_data_caution(n_images: int, n_cells: int | None) -> str | None:
    """A caution when a score rests on fewer than :data:`MIN_TEST_IMAGES` test images or fewer
    than :data:`MIN_TEST_CELLS` true cells (``n_cells`` None or 0 when not known), else None.

    >>> few_data_caution(12, 400) is None
    True
    >>> few_data_caution(4, 400).startswith("Few test data: these scores rest on 4 test images")
    True
    """
    short = []
    if n_images < MIN_TEST_IMAGES:
        short.append(f"{n_images} test images (fewer than {MIN_TEST_IMAGES})")
    if n_cells and n_cells < MIN_TEST_CELLS:
        short.append(f"{n_cells} true cells (fewer than {MIN_TEST_CELLS})")
    if not short:
        return None
    return (f"Few test data: these scores rest on {' and '.join(short)}. One image more or less "
            "can move them a lot; read them with their intervals, and approve more masks of test "
            "images before trusting small differences.")


# --- Counts of a count job ---------------------------------------------------------------------

def _entry_geometry(session, entry: dict) -> tuple[float, float | None]:
    """Area in pixels and the pixel size a count entry records (an older entry: its image's)."""
    if entry.get("width") and entry.get("height"):
        return float(entry["width"]) * float(entry["height"]), entry.get("pixel_size_um")
    image = (projects.find_image(session, int(entry["image_id"]))
             if entry.get("image_id") is not None else None)
    if image is None:
        return np.nan, None
    return float(image.width * image.height), image.pixel_size_um


def _entry_item(entry: dict) -> int:
    """An entry's place in its batch; an older entry of a project image: the image id."""
    return int(entry["item"] if entry.get("item") is not None else entry["image_id"])


def count_results(session, storage, job_id: int, *, rois: dict | None = None) -> pd.DataFrame:
    """The counts a finished count job produced, with density per mm² and optional regions.

    Parameters
    ----------
    rois : dict of item -> bool mask, optional
        A region of interest per counted image (keyed by ``item``): only cells whose centre
        lies inside count, and the density is over the region's area. The cells are the job's
        run's objects of its stored heatmap, at the threshold the job counted with.

    Returns
    -------
    DataFrame
        Columns ``file, item, count, region, area_mm2, density_per_mm2, model, threshold,
        problem``: ``item`` is the image's place in its batch (an older count of project
        images: the image id); ``problem`` says why an image has no count.
    """
    job = job_rows.get_job(session, job_id)
    result = job.result or {}
    project = projects.get_project(session, job.project_id) if job.project_id else None
    project_pixel = project.pixel_size_um if project is not None else None
    rule = _job_scoring(session, storage, result) if rois else None
    rows = []
    for entry in result.get("counts", []):
        item = _entry_item(entry)
        area, own_pixel = _entry_geometry(session, entry)
        # The pixel size the image's file records wins over the project's.
        pixel = own_pixel or project_pixel
        count, region, problem = entry.get("count"), "whole image", ""
        roi = (rois or {}).get(item)
        if roi is not None:
            try:
                if isinstance(rule, str):
                    raise ValueError(rule)
                labels = rule.labels(storage.read_heatmap(entry["heatmap_path"]))
                count, area, region = count_in_region(labels, roi), int(roi.sum()), "region"
            except (OSError, ValueError, KeyError) as exc:
                problem = f"The region could not be applied: {exc}"
        rows.append({"file": entry.get("name") or f"image {item}", "item": item,
                     "count": count, "region": region,
                     "area_mm2": area * (pixel / 1000.0) ** 2 if pixel else np.nan,
                     "density_per_mm2": count_density(count, area, pixel) if count is not None
                     else np.nan,
                     "model": result.get("model", ""), "threshold": result.get("threshold"),
                     "problem": problem})
    cols = ["file", "item", "count", "region", "area_mm2", "density_per_mm2", "model",
            "threshold", "problem"]
    return pd.DataFrame(rows, columns=cols)


@dataclass(frozen=True)
class CountedImage:
    """A counted image and the cells its count found.

    Attributes
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    labels : ndarray of int, shape (rows, cols)
        The cells, as the count job's run finds them in the stored heatmap at the job's
        threshold (one value per cell).
    name : str
    stain : str or None
        The project's stain, for an outline colour that stands out on it.
    """

    rgb: np.ndarray
    labels: np.ndarray
    name: str
    stain: str | None = None


def counted_image(session, storage, batch_id: int, item: int) -> CountedImage:
    """Image ``item`` of count batch ``batch_id`` with the cells the count found on it.

    Raises
    ------
    ValueError
        The batch has not counted that image, or its image, heatmap or run cannot be read;
        the sentence says which.
    """
    chunks = job_rows.batch_jobs(session, batch_id)
    found = next(((j, e) for j in chunks for e in (j.result or {}).get("counts", [])
                  if _entry_item(e) == int(item)), None)
    if found is None:
        raise ValueError(f"Count batch {batch_id} has no counted image {item} (yet).")
    job, entry = found
    name = entry.get("name") or f"image {item}"
    rule = _job_scoring(session, storage, job.result or {})
    if isinstance(rule, str):
        raise ValueError(f"The cells of {name} cannot be shown: {rule}.")
    path = entry.get("path") or projects.get_image(session, int(entry["image_id"])).path
    try:
        rgb = storage.read_image(path)
        labels = rule.labels(storage.read_heatmap(entry["heatmap_path"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{name} or its count's heatmap cannot be read ({exc}); count it "
                         f"again.") from exc
    project = projects.get_project(session, job.project_id) if job.project_id else None
    return CountedImage(rgb, labels, name, project.stain if project is not None else None)


def _job_scoring(session, storage, result: dict) -> Scoring | str:
    """The scoring rule a count job counted with, or a sentence saying why it is gone."""
    from core.run import load_run

    recorded = result.get("run_dir")
    if not recorded:
        return "the count job names no run"
    row = runs.find_run(session, storage, recorded)
    try:
        rule = (run_scoring(row, storage) if row is not None
                else load_run(storage.resolve(recorded), with_model=False).scoring)
    except ValueError as exc:
        return str(exc)
    threshold = result.get("threshold")
    return rule if threshold is None else rule.with_threshold(threshold)
