"""Read-only views the workbench pages need and the rest of ``db`` does not provide.

Every function takes a ``session`` and never commits (CONVENTIONS 5); the science (agreement,
density, doubt, matching) lives in ``core`` and is only called from here. Tables come back as
pandas DataFrames with plain columns, so a page can show them as they are.

- :func:`runs_overview`: every run of a project with its scores (for the dashboard);
- :func:`run_results`: a run's per-image results on its test images;
- :func:`training_data`: how many train/test images and approved masks a new run would use;
- :func:`image_counts` and :func:`group_summary`: counts per image and per animal/region/condition,
  with density per mm² when the project has a pixel size;
- :func:`operator_agreement`: Bland-Altman agreement of blind double reviews, before and after
  adjudication;
- :func:`adjudication_queue`: the experts' open items, most useful first, with operators' votes;
- :func:`model_doubt_candidates`: objects the promoted model is least sure of;
- :func:`image_history`: every mask version, vote and adjudication of one image, oldest first.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from core.agreement import Agreement, bland_altman, doubt, summarize_groups
from db.runs import run_path
from db.models import (AdjudicationDecision, AdjudicationItem, Approval, Image,
                       ImageResult, MaskVersion, ModelRun, ObjectDecision, ObjectOutcome, Project,
                       ReviewAssignment, User)

__all__ = [
    "PAPER_SCORES", "SCORE_KEYS", "runs_overview", "run_results", "training_data", "image_counts",
    "group_summary", "OperatorAgreement", "operator_agreement", "adjudication_queue",
    "model_doubt_candidates", "queue_model_doubts", "image_history", "queue_rank", "ImageOutcome", "image_outcome",
    "recount", "recount_scores", "threshold_curve_for_run", "run_postprocess", "item_crop",
    "outcome_objects", "outcome_overlay", "OUTCOME_COLOURS", "jobs_table", "register_for_count",
    "count_results", "image_rgb", "canvas_region",
]

log = logging.getLogger(__name__)

#: The preprint's test scores (METHOD.md section 7), shown beside every run's.
PAPER_SCORES = {"f1": 0.87, "mae": 0.85, "medae": 1.0, "mean_iou": 0.74}

#: Score columns of :func:`runs_overview`, in display order.
SCORE_KEYS = ("f1", "precision", "recall", "mae", "medae", "bias", "mean_iou", "n_images")

# Other spellings a metrics.json may use for the same score.
_ALIASES = {"medae": ("median_ae", "median_abs_error"), "mae": ("mean_abs_error",),
            "mean_iou": ("iou", "miou"), "n_images": ("images", "n")}

#: Queue order of the reasons an object needs an expert (lower first; see :func:`queue_rank`).
QUEUE_RANKS = {"unsure": 0, "disagree": 1, "sent": 2, "doubt": 3}

# The model's doubt over this counts as "least sure" (core.agreement.doubt is in [0, 1]).
MIN_DOUBT = 0.5


def _metric(metrics: dict, key: str) -> float:
    """One score from a run's metrics, whatever spelling it was stored under; NaN when absent."""
    lower = {str(k).lower(): v for k, v in (metrics or {}).items()}
    for name in (key, *_ALIASES.get(key, ())):
        value = lower.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def runs_overview(session, project_id: int) -> pd.DataFrame:
    """Every run of a project, oldest first, with its test scores.

    Returns
    -------
    DataFrame
        Columns ``run_id, name, created_at, promoted, threshold, run_dir`` and :data:`SCORE_KEYS`
        (NaN where the run's metrics lack a score).
    """
    runs = session.scalars(select(ModelRun).where(ModelRun.project_id == project_id)
                           .order_by(ModelRun.created_at, ModelRun.id)).all()
    rows = []
    for r in runs:
        row = {"run_id": r.id, "name": r.name or f"run {r.id}", "created_at": r.created_at,
               "promoted": bool(r.promoted), "threshold": r.threshold, "run_dir": r.run_dir}
        row.update({k: _metric(r.metrics, k) for k in SCORE_KEYS})
        rows.append(row)
    cols = ["run_id", "name", "created_at", "promoted", "threshold", "run_dir", *SCORE_KEYS]
    return pd.DataFrame(rows, columns=cols)


def run_results(session, run_id: int) -> pd.DataFrame:
    """A run's results on its test images, one row per image, in image order.

    Returns
    -------
    DataFrame
        Columns ``image_id, name, animal, region, condition, width, height, n_true, n_pred, tp,
        fp, fn, iou, error, abs_error, heatmap_path, image_path, version_id`` where ``error`` is
        ``n_pred - n_true``.
    """
    q = (select(ImageResult, Image).join(Image, Image.id == ImageResult.image_id)
         .where(ImageResult.run_id == run_id).order_by(Image.id))
    rows = []
    for res, img in session.execute(q).all():
        rows.append({
            "image_id": img.id, "name": img.original_name or f"image {img.id}",
            "animal": img.animal, "region": img.region, "condition": img.condition,
            "width": img.width, "height": img.height,
            "n_true": res.n_true, "n_pred": res.n_pred, "tp": res.tp, "fp": res.fp, "fn": res.fn,
            "iou": res.iou, "error": res.n_pred - res.n_true, "abs_error": abs(res.n_pred - res.n_true),
            "heatmap_path": res.heatmap_path, "image_path": img.path, "version_id": res.version_id,
        })
    cols = ["image_id", "name", "animal", "region", "condition", "width", "height", "n_true",
            "n_pred", "tp", "fp", "fn", "iou", "error", "abs_error", "heatmap_path", "image_path",
            "version_id"]
    return pd.DataFrame(rows, columns=cols)


def _ground_truth_versions(session, image_ids) -> dict[int, int]:
    """image id -> its latest approved mask version (only images that have one)."""
    ids = list(image_ids)
    if not ids:
        return {}
    latest = (select(Approval.image_id, func.max(Approval.id).label("aid"))
              .where(Approval.image_id.in_(ids)).group_by(Approval.image_id).subquery())
    q = select(Approval.image_id, Approval.version_id).join(latest, Approval.id == latest.c.aid)
    return {image_id: version_id for image_id, version_id in session.execute(q).all()}


def training_data(session, project_id: int) -> dict[str, int]:
    """What a run queued now would learn from and be scored on.

    Returns
    -------
    dict
        ``train_images, test_images, unassigned_images`` (archived images left out) and
        ``train_approved, test_approved``: those with an approved mask, the only ones a run uses.
    """
    q = (select(Image.id, Image.split).where(Image.project_id == project_id,
                                             Image.archived.is_(False)))
    split_of = dict(session.execute(q).all())
    approved = _ground_truth_versions(session, split_of)
    out = {f"{s}_images": 0 for s in ("train", "test", "unassigned")}
    out.update(train_approved=0, test_approved=0)
    for image_id, split in split_of.items():
        out[f"{split}_images"] = out.get(f"{split}_images", 0) + 1
        if image_id in approved and split in ("train", "test"):
            out[f"{split}_approved"] += 1
    return out


def image_counts(session, project_id: int, *, run_id: int | None = None) -> pd.DataFrame:
    """Cell counts per image of a project, with the metadata groups are made from.

    ``count`` is the ground truth (latest approved version) where there is one, else the current
    mask; ``n_pred`` is the run's count where ``run_id`` is given and scored the image.

    Returns
    -------
    DataFrame
        Columns ``image_id, name, animal, region, condition, split, split_locked,
        review_status, area_px, count, approved, n_pred``; ``split_locked`` is True once a run
        was scored on the image (moving it then needs an admin and a reason).
    """
    images = session.scalars(select(Image).where(Image.project_id == project_id,
                                                 Image.archived.is_(False))
                             .order_by(Image.id)).all()
    gt = _ground_truth_versions(session, [i.id for i in images])
    wanted = set(gt.values()) | {i.head_version_id for i in images if i.head_version_id}
    counts = dict(session.execute(select(MaskVersion.id, MaskVersion.object_count)
                                  .where(MaskVersion.id.in_(wanted))).all()) if wanted else {}
    pred = {}
    if run_id is not None:
        pred = dict(session.execute(select(ImageResult.image_id, ImageResult.n_pred)
                                    .where(ImageResult.run_id == run_id)).all())
    rows = []
    for img in images:
        version = gt.get(img.id, img.head_version_id)
        rows.append({
            "image_id": img.id, "name": img.original_name or f"image {img.id}",
            "animal": img.animal, "region": img.region, "condition": img.condition,
            "split": img.split, "split_locked": bool(img.split_locked),
            "review_status": img.review_status,
            "area_px": img.width * img.height,
            "count": counts.get(version, np.nan) if version else np.nan,
            "approved": img.id in gt, "n_pred": pred.get(img.id, np.nan),
        })
    cols = ["image_id", "name", "animal", "region", "condition", "split", "split_locked",
            "review_status", "area_px", "count", "approved", "n_pred"]
    return pd.DataFrame(rows, columns=cols)


def group_summary(session, project_id: int, by: str, *, run_id: int | None = None,
                  counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts per ``by`` group (``animal``, ``region`` or ``condition``) with density per mm².

    With ``run_id`` the run's predicted counts are summarised (the images it scored); without,
    the ground-truth or current-mask counts of all images. ``counts`` reuses an
    :func:`image_counts` table already loaded.

    Returns
    -------
    DataFrame
        See :func:`core.agreement.summarize_groups`; density is NaN when the project has no
        pixel size.
    """
    if by not in ("animal", "region", "condition", "split"):
        raise ValueError(f"Group by animal, region or condition, not {by!r}.")
    project = session.get(Project, project_id)
    if project is None:
        raise ValueError(f"Project {project_id} does not exist.")
    t = counts if counts is not None else image_counts(session, project_id, run_id=run_id)
    column = "count"
    if run_id is not None:
        t, column = t[t["n_pred"].notna()], "n_pred"
    t = t[t[column].notna()]
    return summarize_groups(t, by, count=column, pixel_size_um=project.pixel_size_um)


@dataclass(frozen=True)
class OperatorAgreement:
    """Agreement between two operators who reviewed the same images blind.

    Attributes
    ----------
    table : DataFrame
        One row per double-reviewed image: ``image_id, name, operator_a, operator_b, count_a,
        count_b, count_a_after, count_b_after, decided`` (``decided`` = adjudicated objects).
    before, after : Agreement or None
        Bland-Altman of ``count_a - count_b`` before and after the experts' decisions replaced
        both operators' calls on the adjudicated objects; None with no such image.
    """

    table: pd.DataFrame
    before: Agreement | None
    after: Agreement | None


def _mask_reader(storage):
    """A reader of stored masks that reads each file once."""
    cache: dict[str, np.ndarray] = {}

    def read(path: str) -> np.ndarray:
        if path not in cache:
            cache[path] = storage.read_mask(path)
        return cache[path]
    return read


def _present(mask: np.ndarray, row: float, col: float) -> bool:
    r = int(np.clip(round(row), 0, mask.shape[0] - 1))
    c = int(np.clip(round(col), 0, mask.shape[1] - 1))
    return bool(mask[r, c])


def operator_agreement(session, storage, project_id: int) -> OperatorAgreement:
    """Bland-Altman agreement of blind double reviews, before and after adjudication.

    An image counts when two blind review assignments on it are done with a saved version. The
    first assignment is operator A. After adjudication, every decided object on the image is
    taken as the expert said in both operators' counts: an object the expert kept and an
    operator's mask lacks adds one to that operator's count, one the expert dropped and the mask
    holds removes one. Objects are matched by their centre pixel.

    Parameters
    ----------
    storage : db.storage.Storage
        Reads the operators' mask files (only for images with decisions).
    """
    q = (select(ReviewAssignment, MaskVersion, User.name)
         .join(Image, Image.id == ReviewAssignment.image_id)
         .join(MaskVersion, MaskVersion.id == ReviewAssignment.version_id)
         .join(User, User.id == ReviewAssignment.user_id)
         .where(Image.project_id == project_id, ReviewAssignment.blind.is_(True),
                ReviewAssignment.done.is_(True), ReviewAssignment.version_id.is_not(None))
         .order_by(ReviewAssignment.image_id, ReviewAssignment.id))
    by_image: dict[int, list] = {}
    for assignment, version, user_name in session.execute(q).all():
        by_image.setdefault(assignment.image_id, []).append((version, user_name))
    pairs = {k: v[:2] for k, v in by_image.items() if len(v) >= 2}
    cols = ["image_id", "name", "operator_a", "operator_b", "count_a", "count_b",
            "count_a_after", "count_b_after", "decided"]
    if not pairs:
        return OperatorAgreement(pd.DataFrame(columns=cols), None, None)
    names = dict(session.execute(select(Image.id, Image.original_name)
                                 .where(Image.id.in_(list(pairs)))).all())
    dq = (select(AdjudicationItem, AdjudicationDecision)
          .join(AdjudicationDecision, AdjudicationDecision.item_id == AdjudicationItem.id)
          .where(AdjudicationItem.image_id.in_(list(pairs)),
                 AdjudicationDecision.verdict.in_(("keep", "drop"))))
    decisions: dict[int, list] = {}
    for item, decision in session.execute(dq).all():
        decisions.setdefault(item.image_id, []).append((item, decision.verdict))
    read = _mask_reader(storage)
    rows = []
    for image_id, ((va, ua), (vb, ub)) in sorted(pairs.items()):
        after = [va.object_count, vb.object_count]
        for item, verdict in decisions.get(image_id, []):
            for i, version in enumerate((va, vb)):
                try:
                    present = _present(read(version.path), item.centroid_row, item.centroid_col)
                except (OSError, ValueError) as exc:  # a missing file must not hide the rest
                    log.warning("mask version %s unreadable: %s", version.id, exc)
                    continue
                if verdict == "keep" and not present:
                    after[i] += 1
                elif verdict == "drop" and present:
                    after[i] -= 1
        rows.append({"image_id": image_id, "name": names.get(image_id) or f"image {image_id}",
                     "operator_a": ua, "operator_b": ub, "count_a": va.object_count,
                     "count_b": vb.object_count, "count_a_after": max(after[0], 0),
                     "count_b_after": max(after[1], 0),
                     "decided": len(decisions.get(image_id, []))})
    table = pd.DataFrame(rows, columns=cols)
    return OperatorAgreement(table, bland_altman(table["count_a"], table["count_b"]),
                             bland_altman(table["count_a_after"], table["count_b_after"]))


def queue_rank(kind: str, reason: str) -> int:
    """Where an adjudication item goes in the queue: 0 flagged unsure, 1 operators disagreed,
    2 sent from the prediction browser (an FP or FN), 3 the model is unsure.

    >>> [queue_rank("mask_object", r) for r in ("unsure", "disagreement", "uncertain", "size")]
    [0, 1, 3, 3]
    >>> queue_rank("run_fp", "prediction_fp")
    2
    """
    reason = (reason or "").lower()
    if "unsure" in reason or "flag" in reason:
        return QUEUE_RANKS["unsure"]
    if "disagree" in reason or "disput" in reason or "conflict" in reason:
        return QUEUE_RANKS["disagree"]
    if ("doubt" in reason or "uncertain" in reason or reason == "size"
            or reason.startswith("model")):
        return QUEUE_RANKS["doubt"]
    return QUEUE_RANKS["sent"]


def _votes(session, items) -> dict[int, list[dict]]:
    """item id -> the operators' verdicts on its cell (same version and label, or same cell)."""
    if not items:
        return {}
    image_ids = {i.image_id for i in items}
    q = (select(ObjectDecision, User.name).outerjoin(User, User.id == ObjectDecision.user_id)
         .where(ObjectDecision.image_id.in_(image_ids)).order_by(ObjectDecision.id))
    per_image: dict[int, list] = {}
    for d, user_name in session.execute(q).all():
        per_image.setdefault(d.image_id, []).append((d, user_name))
    out = {}
    for item in items:
        decisions = per_image.get(item.image_id, [])
        keys = {d.cell_key for d, _ in decisions
                if item.version_id is not None and d.version_id == item.version_id
                and d.label == item.label}
        if (item.geometry or {}).get("cell_key") is not None:
            keys.add(item.geometry["cell_key"])
        # Without a shared cell key, a vote on an object whose centre is within a few pixels
        # of the item's centre is a vote on the same cell.
        near = {d.id for d, _ in decisions
                if math.hypot(d.centroid_row - item.centroid_row,
                              d.centroid_col - item.centroid_col) <= 10.0}
        # Each user's latest vote once: a repeated click is not a second opinion.
        latest = {}
        for d, name in decisions:
            if d.cell_key in keys or d.id in near:
                latest.pop(d.user_id, None)
                latest[d.user_id] = {"user": name or "?", "verdict": d.verdict,
                                     "reason": d.reason or "", "at": d.created_at}
        out[item.id] = list(latest.values())
    return out


def adjudication_queue(session, project_id: int, *, limit: int | None = None) -> pd.DataFrame:
    """The experts' open items, most useful first.

    Order: flagged unsure, then operators disagreed, then FP/FN sent from Predictions, then the
    model's doubts (:func:`queue_rank`); within each, higher ``priority`` first, then oldest.

    Returns
    -------
    DataFrame
        Columns ``item_id, image_id, name, kind, reason, rank, priority, probability, label,
        version_id, run_id, centroid_row, centroid_col, bbox, note, created_at, votes`` where
        ``votes`` is a list of ``{"user", "verdict", "reason", "at"}``.
    """
    q = (select(AdjudicationItem, Image.original_name)
         .join(Image, Image.id == AdjudicationItem.image_id)
         .where(AdjudicationItem.project_id == project_id, AdjudicationItem.status == "open"))
    got = session.execute(q).all()
    items = [i for i, _ in got]
    votes = _votes(session, items)
    rows = [{
        "item_id": i.id, "image_id": i.image_id, "name": name or f"image {i.image_id}",
        "kind": i.kind, "reason": i.reason, "rank": queue_rank(i.kind, i.reason),
        "priority": float(i.priority or 0.0), "probability": i.probability, "label": i.label,
        "version_id": i.version_id, "run_id": i.run_id, "centroid_row": i.centroid_row,
        "centroid_col": i.centroid_col, "bbox": list(i.bbox or []), "note": i.note or "",
        "created_at": i.created_at, "votes": votes.get(i.id, []),
    } for i, name in got]
    cols = ["item_id", "image_id", "name", "kind", "reason", "rank", "priority", "probability",
            "label", "version_id", "run_id", "centroid_row", "centroid_col", "bbox", "note",
            "created_at", "votes"]
    table = pd.DataFrame(rows, columns=cols)
    if table.empty:
        return table
    table = table.sort_values(["rank", "priority", "created_at", "item_id"],
                              ascending=[True, False, True, True], kind="stable")
    table = table.reset_index(drop=True)
    return table.head(limit) if limit else table


def model_doubt_candidates(session, project_id: int, *, limit: int = 20,
                           min_doubt: float = MIN_DOUBT) -> pd.DataFrame:
    """Objects the promoted model is least sure of, on the test images it was scored on.

    Predicted objects (TP and FP outcomes) whose mean probability is near the run's threshold or
    whose area is far from the run's median object area (:func:`core.agreement.doubt`), least
    sure first. Objects already queued (same image, centre within 10 px) are left out.

    Returns
    -------
    DataFrame
        Columns ``run_id, image_id, name, outcome_id, outcome, probability, area, doubt, why,
        centroid_row, centroid_col, bbox, version_id``; ``why`` is ``uncertain`` (probability
        near the threshold) or ``size``. Empty without a promoted run.
    """
    cols = ["run_id", "image_id", "name", "outcome_id", "outcome", "probability", "area",
            "doubt", "why", "centroid_row", "centroid_col", "bbox", "version_id"]
    run = session.scalars(select(ModelRun).where(ModelRun.project_id == project_id,
                                                 ModelRun.promoted.is_(True))
                          .order_by(ModelRun.id.desc())).first()
    if run is None:
        return pd.DataFrame(columns=cols)
    q = (select(ObjectOutcome, ImageResult.image_id, ImageResult.version_id, Image.original_name)
         .join(ImageResult, ImageResult.id == ObjectOutcome.result_id)
         .join(Image, Image.id == ImageResult.image_id)
         .where(ImageResult.run_id == run.id, ObjectOutcome.outcome.in_(("TP", "FP"))))
    got = session.execute(q).all()
    if not got:
        return pd.DataFrame(columns=cols)
    t = pd.DataFrame([{
        "run_id": run.id, "image_id": image_id, "name": name or f"image {image_id}",
        "outcome_id": o.id, "outcome": o.outcome, "probability": o.probability,
        "version_id": version_id,
        "area": float(o.area) if o.area else np.nan, "centroid_row": o.centroid_row,
        "centroid_col": o.centroid_col, "bbox": list(o.bbox or []),
    } for o, image_id, version_id, name in got])
    typical = float(np.nanmedian(t["area"])) if t["area"].notna().any() else 1.0
    threshold = run.threshold if run.threshold and 0 < run.threshold < 1 else 0.5
    probs = t["probability"].astype(float).to_numpy()
    areas = t["area"].fillna(typical).to_numpy()
    kw = dict(threshold=threshold, typical_area=max(typical, 1.0))
    by_prob = doubt(probs, np.full(len(t), max(typical, 1.0)), **kw)
    by_size = doubt(np.full(len(t), np.nan), areas, **kw)
    t["doubt"] = np.maximum(by_prob, by_size)
    t["why"] = np.where(by_prob >= by_size, "uncertain", "size")
    t = t[t["doubt"] >= min_doubt]
    queued = session.execute(select(AdjudicationItem.image_id, AdjudicationItem.centroid_row,
                                    AdjudicationItem.centroid_col)
                             .where(AdjudicationItem.project_id == project_id)).all()
    if queued and not t.empty:
        def already(row) -> bool:
            return any(i == row.image_id and math.hypot(r - row.centroid_row,
                                                        c - row.centroid_col) <= 10.0
                       for i, r, c in queued)
        t = t[[not already(row) for row in t.itertuples()]]
    t = t.sort_values(["doubt", "image_id"], ascending=[False, True], kind="stable")
    return t[cols].head(limit).reset_index(drop=True)


def queue_model_doubts(session, storage, project_id: int, *, user_id: int | None,
                       limit: int = 20, min_doubt: float = MIN_DOUBT) -> int:
    """Put the promoted model's least sure objects in the experts' queue; returns how many.

    A doubtful prediction that matched a true cell (TP) is queued as that object of the ground
    truth it was scored against (reason ``uncertain``, or ``size`` when its size is what is
    odd); a doubtful FP goes in as the run's FP. Writes rows: the caller commits.
    """
    from db import masks

    cands = model_doubt_candidates(session, project_id, limit=limit, min_doubt=min_doubt)
    n = 0
    for c in cands.itertuples():
        if c.outcome == "FP":
            masks.queue_run_object(session, int(c.outcome_id), user_id=user_id,
                                   note=f"model doubt {c.doubt:.2f}")
            n += 1
            continue
        version_id = c.version_id
        if version_id is None or (isinstance(version_id, float) and math.isnan(version_id)):
            version_id = _ground_truth_versions(session, [int(c.image_id)]).get(int(c.image_id))
        if version_id is None:
            continue
        version = session.get(MaskVersion, int(version_id))
        labels = masks.label_objects(storage.read_mask(version.path))
        r = int(np.clip(round(c.centroid_row), 0, labels.shape[0] - 1))
        col = int(np.clip(round(c.centroid_col), 0, labels.shape[1] - 1))
        label = int(labels[r, col])
        if label == 0:
            continue
        masks.queue_mask_object(session, storage, int(c.image_id), version.id, label,
                                reason=c.why, user_id=user_id,
                                probability=c.probability, note=f"model doubt {c.doubt:.2f}")
        n += 1
    return n


def image_history(session, image_id: int) -> pd.DataFrame:
    """Everything that happened to an image's masks, oldest first.

    Returns
    -------
    DataFrame
        Columns ``at, who, what, detail, version_id``: mask versions (with source and count),
        approvals, operators' votes and experts' adjudications (with verdict and reason).
    """
    rows: list[dict[str, Any]] = []
    users = dict(session.execute(select(User.id, User.name)).all())
    for v in session.scalars(select(MaskVersion).where(MaskVersion.image_id == image_id)):
        rows.append({"at": v.created_at, "who": users.get(v.author_id, ""),
                     "what": f"version ({v.source})",
                     "detail": f"{v.object_count} cells" + (f"; {v.note}" if v.note else "")
                     + ("; saved over a newer version" if v.conflict else ""),
                     "version_id": v.id})
    for a in session.scalars(select(Approval).where(Approval.image_id == image_id)):
        rows.append({"at": a.created_at, "who": users.get(a.approver_id, ""), "what": "approved",
                     "detail": "", "version_id": a.version_id})
    for d in session.scalars(select(ObjectDecision).where(ObjectDecision.image_id == image_id)):
        rows.append({"at": d.created_at, "who": users.get(d.user_id, ""),
                     "what": f"vote: {d.verdict}",
                     "detail": f"object {d.label} at ({d.centroid_row:.0f}, {d.centroid_col:.0f})"
                     + (f": {d.reason}" if d.reason else ""), "version_id": d.version_id})
    q = (select(AdjudicationDecision, AdjudicationItem)
         .join(AdjudicationItem, AdjudicationItem.id == AdjudicationDecision.item_id)
         .where(AdjudicationItem.image_id == image_id))
    for d, item in session.execute(q).all():
        rows.append({"at": d.created_at, "who": users.get(d.expert_id, ""),
                     "what": f"adjudicated: {d.verdict}",
                     "detail": f"{item.reason} object at ({item.centroid_row:.0f}, "
                               f"{item.centroid_col:.0f}): {d.reason}",
                     "version_id": d.version_id})
    table = pd.DataFrame(rows, columns=["at", "who", "what", "detail", "version_id"])
    return table.sort_values("at", kind="stable").reset_index(drop=True)


# --- Counts at another threshold, from the stored heatmaps ----------------------------------

@dataclass(frozen=True)
class ImageOutcome:
    """One test image of a run, matched at some threshold.

    Attributes
    ----------
    image_id : int
    threshold : float
    heatmap : ndarray of float32, (H, W)
        The stored probability map.
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


def run_postprocess(run: ModelRun, storage=None):
    """The post-processing params a run counts with (from its config, else its run directory,
    found through ``storage`` when the run is recorded below the data dir)."""
    from core.postprocess import PostprocessParams

    params = (run.config or {}).get("postprocess")
    if isinstance(params, dict):
        try:
            return PostprocessParams.from_dict(params)
        except (TypeError, KeyError, ValueError):
            log.warning("run %s: postprocess params in the database are invalid", run.id)
    from core.run import load_run
    return load_run(run_path(run, storage), with_model=False).postprocess


def _get_run(session, run_id: int) -> ModelRun:
    run = session.get(ModelRun, run_id)
    if run is None:
        raise ValueError(f"Run {run_id} does not exist; pick another run.")
    return run


def _truth_labels(session, storage, result: ImageResult, shape) -> np.ndarray:
    """The ground truth the run was scored against, as labelled objects."""
    from skimage.measure import label as cc_label

    version_id = result.version_id or _ground_truth_versions(session, [result.image_id]).get(
        result.image_id)
    if version_id is None:
        return np.zeros(shape, np.int32)
    version = session.get(MaskVersion, version_id)
    mask = storage.read_mask(version.path)
    # 8-connected components, as db.masks counts objects.
    return cc_label(mask, connectivity=2).astype(np.int32)


def image_outcome(session, storage, run_id: int, image_id: int,
                  threshold: float | None = None) -> ImageOutcome:
    """Match one test image of a run at ``threshold`` (the run's own by default).

    Raises
    ------
    ValueError
        When the run did not score the image or its heatmap file cannot be read; the message
        names the image and says what to do.
    """
    from core.metrics import match_objects
    from core.postprocess import heatmap_to_labels

    run = _get_run(session, run_id)
    result = session.scalars(select(ImageResult).where(ImageResult.run_id == run_id,
                                                       ImageResult.image_id == image_id)).first()
    if result is None:
        raise ValueError(f"Run {run_id} was not scored on image {image_id}; pick one of its "
                         "test images.")
    if not result.heatmap_path:
        raise ValueError(f"Run {run_id} kept no heatmap for image {image_id}; evaluate the run "
                         "again to store heatmaps.")
    try:
        heat = storage.read_heatmap(result.heatmap_path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"The heatmap of image {image_id} ({result.heatmap_path}) cannot be "
                         f"read: {exc}. Evaluate the run again.") from exc
    t = float(threshold if threshold is not None else (run.threshold or 0.5))
    if not 0.0 < t < 1.0:
        raise ValueError(f"The threshold must be between 0 and 1, got {t}.")
    params = run_postprocess(run, storage)
    pred = heatmap_to_labels(heat, params, threshold=t)
    truth = _truth_labels(session, storage, result, heat.shape)
    max_distance = float((run.config or {}).get("match_distance", 50.0))
    return ImageOutcome(image_id, t, heat, truth, pred,
                        match_objects(truth, pred, max_distance=max_distance))


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
    ids = image_ids
    if ids is None:
        ids = session.scalars(select(ImageResult.image_id).where(ImageResult.run_id == run_id)
                              .order_by(ImageResult.image_id)).all()
    ids = list(ids)
    rows = []
    for n, image_id in enumerate(ids):
        try:
            o = image_outcome(session, storage, run_id, image_id, threshold)
            m = o.match
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
    from core.metrics import Match, score

    ok = table[table["problem"].fillna("") == ""]
    s = score(Match(tp=int(r.tp), fp=int(r.fp), fn=int(r.fn), n_true=int(r.n_true),
                    n_pred=int(r.n_pred), iou=float(r.iou)) for r in ok.itertuples())
    return s.to_dict()


CURVE_FILE = "threshold_curve_test.json"


def threshold_curve_for_run(session, storage, run_id: int, *, compute: bool = False):
    """F1, precision and recall against threshold for a run, with its best, knee and chosen.

    The curve of the run's own tuning (``metrics["threshold_curve"]``, from the training
    images) is used when the run stored one. Otherwise the curve over its test heatmaps is read
    from ``threshold_curve_test.json`` in the run directory; with ``compute=True`` it is
    computed (seconds per image) and kept there for the next time.

    Returns
    -------
    dict or None
        ``thresholds, f1, precision, recall`` (lists), ``best, knee, chosen`` (floats or None) and
        ``source`` ("training images" or "test images"); None when nothing is stored and
        ``compute`` is False.
    """
    run = _get_run(session, run_id)
    marks = _run_thresholds(run, storage)
    stored = _tuning_curve(run, storage)
    if stored is not None:
        return {**_curve_lists(stored), **marks, "source": "training images"}
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
    from core.metrics import threshold_curve

    results = session.scalars(select(ImageResult).where(ImageResult.run_id == run_id,
                                                        ImageResult.heatmap_path.is_not(None))
                              .order_by(ImageResult.image_id)).all()
    if not results:
        raise ValueError(f"Run {run_id} kept no heatmaps; evaluate it again to draw its curve.")
    heats = [storage.read_heatmap(r.heatmap_path) for r in results]
    truths = [_truth_labels(session, storage, r, h.shape) for r, h in zip(results, heats)]
    c = threshold_curve(heats, truths, run_postprocess(run, storage))
    got = {"thresholds": c.thresholds.tolist(), "f1": c.f1.tolist(),
           "precision": c.precision.tolist(), "recall": c.recall.tolist(),
           "best": c.best, "knee": c.knee}
    try:
        cache.write_text(json.dumps(got))
    except OSError as exc:
        log.warning("cannot keep the curve in %s: %s", cache, exc)
    return {**_curve_lists(got), **marks, "knee": marks["knee"] or c.knee,
            "best": marks["best"] or c.best, "source": "test images"}


def _curve_lists(d: dict) -> dict:
    return {k: [float(v) for v in d[k]] for k in ("thresholds", "f1", "precision", "recall")
            if k in d}


def _thresholds_file(run: ModelRun, storage) -> dict:
    """The run's thresholds.json, or {} when it is missing or unreadable."""
    try:
        got = json.loads((run_path(run, storage) / "thresholds.json").read_text())
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _run_thresholds(run: ModelRun, storage) -> dict:
    """best, knee and chosen of a run: its thresholds.json where readable, else the database."""
    t = _thresholds_file(run, storage)
    marks = {"best": t.get("best"), "knee": t.get("knee"), "chosen": run.threshold}
    if run.threshold is None:
        marks["chosen"] = t.get("chosen")
    return marks


def _tuning_curve(run: ModelRun, storage) -> dict | None:
    """The F1 curve of the run's own threshold tuning (training images), where it kept one.

    Training writes it into ``thresholds.json`` (``curve``: thresholds and f1); runs may also
    carry one in their metrics (``threshold_curve``, with precision and recall).
    """
    for curve in ((run.metrics or {}).get("threshold_curve"),
                  _thresholds_file(run, storage).get("curve")):
        if isinstance(curve, dict) and curve.get("thresholds") and curve.get("f1"):
            return curve
    return None


# --- What an expert looks at ------------------------------------------------------------------

#: Outline colours of the adjudication crop: the item's object, and the other cells around it.
ITEM_COLOUR = (255, 255, 0)
CONTEXT_COLOUR = (0, 200, 255)


def item_crop(session, storage, item_id: int, *, margin: int = 40, zoom: int = 4) -> np.ndarray:
    """A magnified crop around an adjudication item: its object outlined in yellow, the other
    cells of the current mask in cyan, so the expert sees the object in context.

    Parameters
    ----------
    margin : int
        Pixels of context around the object's box.
    zoom : int
        Nearest-neighbour magnification (pixels stay square and sharp).

    Returns
    -------
    ndarray of uint8, (h * zoom, w * zoom, 3)

    Raises
    ------
    ValueError
        When the item, its image or its mask cannot be read; the message names the file.
    """
    from core.render import crop_around, draw_boxes, draw_outlines
    from db import masks

    item = session.get(AdjudicationItem, item_id)
    if item is None:
        raise ValueError(f"Adjudication item {item_id} does not exist; reload the queue.")
    image = session.get(Image, item.image_id)
    try:
        rgb = storage.read_image(image.path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"The image {image.original_name or image.path} cannot be read: {exc}. "
                         "Import it again.") from exc
    r0, c0, r1, c1 = (int(v) for v in (item.bbox or [item.centroid_row, item.centroid_col,
                                                      item.centroid_row + 1,
                                                      item.centroid_col + 1]))
    h, w = rgb.shape[:2]
    bbox = (r0, c0, r1, c1)
    head = masks.head_version(session, image.id)
    context = storage.read_mask(head.path) if head is not None else np.zeros((h, w), bool)
    try:
        obj = masks.item_pixels(session, storage, item, (h, w))
    except (OSError, ValueError) as exc:  # the crop still helps; the box marks where to look
        log.warning("Adjudication item %s: its object cannot be drawn: %s", item.id, exc)
        obj = np.zeros((h, w), bool)
    # One label image, 1 = the other cells, 2 = the item's object, so each gets its own colour.
    labels = np.where(obj, 2, np.where(context, 1, 0)).astype(np.uint8)
    crop = crop_around(rgb, bbox, margin=margin, scale=zoom)
    crop = draw_outlines(crop, crop_around(labels, bbox, margin=margin, scale=zoom),
                         color=CONTEXT_COLOUR, colors={2: ITEM_COLOUR})
    if not obj.any():  # nothing to outline (e.g. an FN already erased): mark the box instead
        top, left = max(r0 - margin, 0), max(c0 - margin, 0)
        box = [((r0 - top) * zoom, (c0 - left) * zoom, (r1 - top) * zoom, (c1 - left) * zoom)]
        crop = draw_boxes(crop, box, color=ITEM_COLOUR, thickness=1)
    return crop


#: Paper Fig. 7: TP green, FP red, FN blue.
OUTCOME_COLOURS = {"TP": (0, 220, 0), "FP": (255, 40, 40), "FN": (60, 120, 255)}
#: The heatmap layer of :func:`outcome_overlay`.
HEATMAP_COLOUR = (255, 0, 80)


def outcome_objects(outcome: ImageOutcome) -> pd.DataFrame:
    """Every object of a matched image with its outcome and box, for boxes and tables.

    Returns
    -------
    DataFrame
        Columns ``outcome, label, r0, c0, r1, c1`` (box max exclusive): TP and FP are predicted
        objects (``label`` in ``pred_labels``), FN are true objects (in ``true_labels``).
    """
    from core.render import OutcomeBox, outcome_boxes

    boxes = outcome_boxes(outcome.match, outcome.true_labels, outcome.pred_labels)
    return pd.DataFrame(boxes, columns=list(OutcomeBox._fields))


def outcome_overlay(rgb: np.ndarray, outcome: ImageOutcome, *, boxes: bool = True,
                    heatmap: bool = False, outlines: bool = False, pad: int = 3,
                    width: int = 2) -> np.ndarray:
    """The image with the run's objects drawn on it (a new uint8 RGB array).

    Boxes around objects, TP green, FP red, FN blue (paper Fig. 7); optionally the heatmap blended
    in red and the predicted objects' outlines in yellow.
    """
    from core.render import draw_outcome_boxes, draw_outlines, heatmap_overlay

    out = np.array(rgb, dtype=np.uint8, copy=True)
    if heatmap:
        # One colour whose opacity grows with p: only likely cells are tinted.
        out = heatmap_overlay(out, outcome.heatmap, alpha=0.5, colormap=[HEATMAP_COLOUR],
                              fade=True)
    if outlines:
        out = draw_outlines(out, outcome.pred_labels > 0, color=ITEM_COLOUR)
    if boxes:
        out = draw_outcome_boxes(out, outcome.match, outcome.true_labels, outcome.pred_labels,
                                 thickness=width, pad=pad, colors=OUTCOME_COLOURS)
    return out


# --- Jobs ----------------------------------------------------------------------------------------

def jobs_table(session, project_id: int, *, kinds=None, limit: int = 50, now=None) -> pd.DataFrame:
    """A project's jobs, newest first, with how long each ran.

    Returns
    -------
    DataFrame
        Columns ``job_id, kind, status, progress, message, created_at, started_at, finished_at,
        duration_s, error, log_tail, run_id, run_dir, created_by``; ``duration_s`` runs to now
        for a running job and is NaN for one not started.
    """
    from db.models import Job, utcnow

    now = now or utcnow()
    q = select(Job).where(Job.project_id == project_id)
    if kinds is not None:
        q = q.where(Job.kind.in_(list(kinds)))
    users = dict(session.execute(select(User.id, User.name)).all())
    rows = []
    for j in session.scalars(q.order_by(Job.id.desc()).limit(limit)):
        end = j.finished_at or (now if j.status == "running" else None)
        result = j.result or {}
        rows.append({
            "job_id": j.id, "kind": j.kind, "status": j.status, "progress": float(j.progress or 0),
            "message": j.message or "", "created_at": j.created_at, "started_at": j.started_at,
            "finished_at": j.finished_at,
            "duration_s": (end - j.started_at).total_seconds() if end and j.started_at
            else np.nan,
            "error": j.error or "", "log_tail": j.log_tail or "",
            "run_id": result.get("run_id"), "run_dir": result.get("run_dir"),
            "created_by": users.get(j.created_by, ""),
        })
    cols = ["job_id", "kind", "status", "progress", "message", "created_at", "started_at",
            "finished_at", "duration_s", "error", "log_tail", "run_id", "run_dir", "created_by"]
    return pd.DataFrame(rows, columns=cols)


# --- Counting new images -------------------------------------------------------------------------

def register_for_count(session, settings, project_id: int, *, uploads=None, folder=None,
                       user_id: int | None = None) -> tuple[list[tuple[str, int]], pd.DataFrame]:
    """Register the images to count (uploaded ``(name, bytes)`` pairs, or a folder below an
    import root) as one import batch, without automatic masks.

    Images already in the project are counted as they are. Writes rows: the caller commits.

    Returns
    -------
    images : list of (name, image id)
    problems : DataFrame
        ``file, problem``: every file that cannot be counted, with the sentence saying why.

    Raises
    ------
    ValueError
        The folder lies outside the import roots or does not exist (``ImportRefused``).
    """
    from db import importing

    options = importing.ImportOptions(prelabel=False, approved=False, user_id=user_id)
    if folder:
        report = importing.import_path(session, settings, folder, project=project_id,
                                       fmt="folder", options=options)
    else:
        uploads = list(uploads or [])
        if not uploads:
            raise ValueError("Choose at least one image to count.")
        report = importing.import_uploads(session, settings, project_id, uploads,
                                          options=options)
    images, problems = [], []
    for o in report.outcomes:
        # A duplicate names the image already holding its pixels: that one is counted.
        if o.image_id is not None and (o.status == "imported" or o.reason == "duplicate"):
            images.append((o.name, int(o.image_id)))
        else:
            problems.append({"file": o.name, "problem": o.message})
    problems += [{"file": "", "problem": note} for note in report.notes]
    return images, pd.DataFrame(problems, columns=["file", "problem"])


def count_results(session, storage, job_id: int, *, rois: dict | None = None) -> pd.DataFrame:
    """The counts a finished count job produced, with density per mm² and optional regions.

    Parameters
    ----------
    rois : dict of image id -> bool mask, optional
        A region of interest per image: only cells whose centre lies inside count, and the
        density is over the region's area. The labels are rebuilt from the job's stored heatmap
        with the run's post-processing and threshold.

    Returns
    -------
    DataFrame
        Columns ``file, image_id, count, region, area_mm2, density_per_mm2, model, threshold,
        problem`` (``problem`` says why an image has no count).
    """
    from core.agreement import count_density, count_in_region
    from core.postprocess import heatmap_to_labels
    from db.models import Job

    job = session.get(Job, job_id)
    if job is None:
        raise ValueError(f"There is no count job {job_id}.")
    result = job.result or {}
    project = session.get(Project, job.project_id) if job.project_id else None
    pixel = project.pixel_size_um if project is not None else None
    recorded = result.get("run_dir")
    # The job may name the run by its key or by an absolute path; the row holds one of them.
    run = (session.scalars(select(ModelRun).where(ModelRun.run_dir.in_(
        {recorded, storage.key(storage.resolve(recorded))}))).first() if recorded else None)
    rows = []
    for entry in result.get("counts", []):
        image = session.get(Image, int(entry["image_id"]))
        area = image.width * image.height if image is not None else np.nan
        count, region, problem = entry.get("count"), "whole image", ""
        roi = (rois or {}).get(int(entry["image_id"]))
        if roi is not None:
            try:
                heat = storage.read_heatmap(entry["heatmap_path"])
                params = run_postprocess(run, storage) if run is not None else None
                if params is None:
                    from core.run import load_run
                    params = load_run(storage.resolve(result["run_dir"]),
                                      with_model=False).postprocess
                labels = heatmap_to_labels(heat, params, threshold=result.get("threshold"))
                count, area, region = count_in_region(labels, roi), int(roi.sum()), "region"
            except (OSError, ValueError, KeyError) as exc:
                problem = f"The region could not be applied: {exc}"
        area_mm2 = area * (pixel / 1000.0) ** 2 if pixel else np.nan
        rows.append({"file": entry.get("name") or f"image {entry['image_id']}",
                     "image_id": int(entry["image_id"]), "count": count, "region": region,
                     "area_mm2": area_mm2,
                     "density_per_mm2": count_density(count, area, pixel) if count is not None
                     else np.nan,
                     "model": result.get("model", ""), "threshold": result.get("threshold"),
                     "problem": problem})
    cols = ["file", "image_id", "count", "region", "area_mm2", "density_per_mm2", "model",
            "threshold", "problem"]
    return pd.DataFrame(rows, columns=cols)


def image_rgb(session, storage, image_id: int) -> np.ndarray:
    """An image of the project as uint8 RGB; ValueError naming the file when it cannot be read."""
    image = session.get(Image, image_id)
    if image is None:
        raise ValueError(f"There is no image {image_id}.")
    try:
        return storage.read_image(image.path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{image.original_name or image.path} cannot be read: {exc}. "
                         "Import it again.") from exc


def canvas_region(objects, shape, scale: float) -> np.ndarray:
    """A region of interest from shapes drawn on a canvas showing the whole image at ``scale``
    canvas pixels per image pixel: the union of the filled shapes, in full-resolution pixels.

    Raises
    ------
    ValueError
        When nothing closed was drawn.
    """
    from core.strokes import Window, objects_to_edits

    h, w = int(shape[0]), int(shape[1])
    window = Window(row=0, col=0, height=h, width=w, scale=float(scale))
    region = np.zeros((h, w), bool)
    for edit in objects_to_edits(list(objects or []), window, (h, w)):
        if edit.kind == "add":
            region[edit.rows, edit.cols] = True
    if not region.any():
        raise ValueError("Draw a polygon around the region first (click its corners, "
                         "right-click to close it).")
    return region
