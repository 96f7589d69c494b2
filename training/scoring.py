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
  :func:`count_results`.
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
from core.metrics import Match, score
from core.postprocess import PostprocessParams
from core.run import Scoring
from db import jobs as job_rows
from db import masks, projects, runs
from db.runs import run_path, run_scoring

__all__ = ["Cancelled", "ImageScore", "scoring_for", "predict_samples", "tune_threshold",
           "score_samples", "ImageOutcome", "image_outcome", "recount", "recount_scores",
           "threshold_curve_for_run", "count_results", "CURVE_FILE"]

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


def tune_threshold(heatmaps, samples, scoring: Scoring, *, progress: Progress | None = None,
                   should_cancel: Callable[[], bool] | None = None) -> dict:
    """Best and knee thresholds of F1 on the given images; ``chosen`` is the best.

    Reports stage ``tuning`` after every threshold of the grid (a sweep over an untrained
    model's heatmaps takes minutes) and asks ``should_cancel`` there too.
    """
    def step(done: int, total: int) -> None:
        if progress:
            progress({"stage": "tuning", "step": done, "steps": total})
        check_cancel(should_cancel, f"while tuning the threshold after {done} of {total} steps")

    curve = scoring.curve(heatmaps, [s.labels for s in samples], progress=step)
    knee = None if curve.knee is None or not np.isfinite(curve.knee) else float(curve.knee)
    return {"best": float(curve.best), "knee": knee, "chosen": float(curve.best),
            "curve": {"thresholds": np.asarray(curve.thresholds).tolist(),
                      "f1": np.asarray(curve.f1).tolist(),
                      "precision": np.asarray(curve.precision).tolist(),
                      "recall": np.asarray(curve.recall).tolist()}}


def score_samples(model, samples, scoring: Scoring, *, progress: Progress | None = None,
                  heatmaps=None, should_cancel: Callable[[], bool] | None = None):
    """Predict, count and match every sample with ``scoring``; returns (metrics, ImageScores).

    ``should_cancel`` is asked before every image's prediction and post-processing.
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
    scores = dataclasses.asdict(score(r.match for r in results))
    return {**scores, "threshold": scoring.threshold}, results


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


def _run_marks(run, storage) -> tuple[dict, dict]:
    """(best/knee/chosen of a run, its thresholds.json) where readable, else the database's."""
    try:
        got = json.loads((run_path(run, storage) / "thresholds.json").read_text())
        stored = got if isinstance(got, dict) else {}
    except (OSError, ValueError):
        stored = {}
    chosen = run.threshold if run.threshold is not None else stored.get("chosen")
    return {"best": stored.get("best"), "knee": stored.get("knee"), "chosen": chosen}, stored


def threshold_curve_for_run(session, storage, run_id: int, *, compute: bool = False):
    """F1, precision and recall against threshold for a run, with its best, knee and chosen.

    The curve of the run's own tuning (``thresholds.json["curve"]``, or a
    ``metrics["threshold_curve"]``) is used when the run kept one. Otherwise the curve over its
    test heatmaps is read from :data:`CURVE_FILE` in the run directory; with ``compute=True``
    it is computed through the run's scoring rule (seconds per image) and kept there.

    Returns
    -------
    dict or None
        ``thresholds, f1, precision, recall`` (lists), ``best, knee, chosen`` (floats or None) and
        ``source`` ("training images" or "test images"); None when nothing is stored and
        ``compute`` is False.
    """
    run = runs.get_run(session, run_id)
    marks, stored = _run_marks(run, storage)
    for curve in ((run.metrics or {}).get("threshold_curve"), stored.get("curve")):
        if isinstance(curve, dict) and curve.get("thresholds") and curve.get("f1"):
            return {**_curve_lists(curve), **marks, "source": "training images"}
    cache = run_path(run, storage) / CURVE_FILE
    if cache.is_file():
        try:
            got = json.loads(cache.read_text())
            return {**_curve_lists(got), **marks, "knee": marks["knee"] or got.get("knee"),
                    "source": "test images"}
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
    return {**_curve_lists(got), **marks, "knee": marks["knee"] or c.knee,
            "best": marks["best"] or c.best, "source": "test images"}


# --- Counts of a count job ---------------------------------------------------------------------

def count_results(session, storage, job_id: int, *, rois: dict | None = None) -> pd.DataFrame:
    """The counts a finished count job produced, with density per mm² and optional regions.

    Parameters
    ----------
    rois : dict of image id -> bool mask, optional
        A region of interest per image: only cells whose centre lies inside count, and the
        density is over the region's area. The cells are the job's run's objects of its stored
        heatmap, at the threshold the job counted with.

    Returns
    -------
    DataFrame
        Columns ``file, image_id, count, region, area_mm2, density_per_mm2, model, threshold,
        problem`` (``problem`` says why an image has no count).
    """
    job = job_rows.get_job(session, job_id)
    result = job.result or {}
    project = projects.get_project(session, job.project_id) if job.project_id else None
    project_pixel = project.pixel_size_um if project is not None else None
    rule = _job_scoring(session, storage, result) if rois else None
    rows = []
    for entry in result.get("counts", []):
        image = projects.find_image(session, int(entry["image_id"]))
        area = image.width * image.height if image is not None else np.nan
        # The pixel size the image's file records wins over the project's.
        pixel = (image.pixel_size_um if image is not None and image.pixel_size_um
                 else project_pixel)
        count, region, problem = entry.get("count"), "whole image", ""
        roi = (rois or {}).get(int(entry["image_id"]))
        if roi is not None:
            try:
                if isinstance(rule, str):
                    raise ValueError(rule)
                labels = rule.labels(storage.read_heatmap(entry["heatmap_path"]))
                count, area, region = count_in_region(labels, roi), int(roi.sum()), "region"
            except (OSError, ValueError, KeyError) as exc:
                problem = f"The region could not be applied: {exc}"
        rows.append({"file": entry.get("name") or f"image {entry['image_id']}",
                     "image_id": int(entry["image_id"]), "count": count, "region": region,
                     "area_mm2": area * (pixel / 1000.0) ** 2 if pixel else np.nan,
                     "density_per_mm2": count_density(count, area, pixel) if count is not None
                     else np.nan,
                     "model": result.get("model", ""), "threshold": result.get("threshold"),
                     "problem": problem})
    cols = ["file", "image_id", "count", "region", "area_mm2", "density_per_mm2", "model",
            "threshold", "problem"]
    return pd.DataFrame(rows, columns=cols)


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
