"""Object decisions and adjudication: operators' votes, the experts' queue, and their decisions.

An operator keeps, drops or flags one object of a mask version (:func:`record_decision`). Votes on
objects of different versions that overlap with IoU >= 0.5 share a ``cell_key``: they are votes
on the same cell. An ``unsure`` vote, or a keep and a drop by different users on one cell, puts
the object in the experts' queue; so do a run's errors sent from the Predictions page and the
promoted model's doubts: objects whose peak probability lies near the run's threshold, on
either side (:data:`NEAR_THRESHOLD`), and objects of unusual size. An expert's decision
(:func:`decide_adjudication`) is a new mask version (source ``adjudicated``) and an audit
record.

The queue has one order, :data:`QUEUE_ORDER`: the reason an item waits, most useful first; within
a reason, higher ``priority`` (the model's doubt, for its doubts), then oldest.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core.objects import (ObjectInfo, doubt, edited_labels, label_at, object_info,
                          object_pixels)
from core.render import adjust_display
from core.render import COLORS, crop_around, draw_boxes, draw_outlines
from core.strokes import Edit
from db import audit
from db.masks import (approve, blind_assignment, get_version, ground_truth_versions,
                      head_version, save_mask_version)
from db.models import (VERDICTS, AdjudicationDecision, AdjudicationItem, Image, ImageResult,
                       MaskVersion, ObjectDecision, ObjectOutcome, User)
from db.projects import get_image
from db.runs import get_run, promoted_run, result_for, run_scoring, run_threshold
from db.storage import Storage
from db.users import require_role

__all__ = ["record_decision", "decisions", "visible_decisions", "queue_mask_object",
           "queue_run_object", "adjudication_queue", "pending_adjudications",
           "model_doubt_candidates", "queue_model_doubts", "item_pixels", "item_probability",
           "item_crop", "decide_adjudication", "near_band", "QUEUE_ORDER", "QUEUE_GROUPS",
           "IOU_SAME_CELL", "MIN_DOUBT", "NEAR_THRESHOLD"]

log = logging.getLogger(__name__)

IOU_SAME_CELL = 0.5
#: Why an item waits for an expert, most useful first: the queue's one order.
QUEUE_ORDER = ("unsure", "disagreement", "prediction_fp", "prediction_fn", "uncertain", "size")
#: How the Adjudicate page names each reason's group.
QUEUE_GROUPS = {"unsure": "flagged unsure", "disagreement": "operators disagree",
                "prediction_fp": "sent from Predictions", "prediction_fn": "sent from Predictions",
                "uncertain": "near the threshold", "size": "unusual size"}
#: An object's size doubt over this (core.objects.doubt, in [0, 1]) queues it: with the
#: default size factor 4, an area at least twice or at most half the run's median.
MIN_DOUBT = 0.5
#: How far an object's peak probability may lie from the run's threshold t, on either side, to
#: count as near it: 0.1 (about 26 of the 255 levels a heatmap is stored in), but never more
#: than half the way from t to 0 or to 1 (:func:`near_band`), so that at a high threshold a
#: saturated cell (peak 1.0) is never "near". Below t this finds the near-misses: objects the
#: run's scoring rule makes at t - delta that it does not count at t.
NEAR_THRESHOLD = 0.1
# Votes and items on objects whose centres lie this close (px) are about the same cell.
_SAME_PLACE = 10.0


# --- decisions ---------------------------------------------------------------------------------

def _version_labels(storage: Storage, cache: dict[int, np.ndarray], version: MaskVersion):
    if version.id not in cache:
        cache[version.id] = storage.read_labels(version.path)
    return cache[version.id]


def _pixels(storage: Storage, cache: dict, version: MaskVersion, label: int) -> np.ndarray:
    return object_pixels(_version_labels(storage, cache, version), label,
                         name=f"Mask version {version.id}")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _cell_key(session: Session, storage: Storage, image_id: int, version: MaskVersion,
              label: int, pixels: np.ndarray, cache: dict) -> int:
    """The key of an earlier decision on the same cell (IoU >= 0.5), or a new one."""
    earlier = session.execute(select(ObjectDecision.version_id, ObjectDecision.label,
                                     ObjectDecision.cell_key)
                              .where(ObjectDecision.image_id == image_id).distinct()).all()
    for version_id, other_label, key in earlier:
        if version_id == version.id and other_label == label:
            return key
    for version_id, other_label, key in earlier:
        if version_id == version.id:
            continue
        other = _pixels(storage, cache, get_version(session, version_id), other_label)
        if _iou(pixels, other) >= IOU_SAME_CELL:
            return key
    top = session.scalar(select(func.max(ObjectDecision.cell_key))
                         .where(ObjectDecision.image_id == image_id))
    return (top or 0) + 1


def record_decision(session: Session, storage: Storage, image_id: int, version_id: int, label: int,
                    *, user_id: int | None, verdict: str, reason: str = "") -> ObjectDecision:
    """Record a user's keep, drop or unsure on one object of a mask version.

    An ``unsure`` verdict, or a keep and a drop from different users on the same cell, queues
    the object for the experts.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"Unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}.")
    version = get_version(session, version_id, image_id)
    cache: dict[int, np.ndarray] = {}
    pixels = _pixels(storage, cache, version, label)
    info = object_info(pixels)[0]
    key = _cell_key(session, storage, image_id, version, label, pixels, cache)
    decision = ObjectDecision(image_id=image_id, version_id=version_id, label=label, cell_key=key,
                              centroid_row=info.centroid[0], centroid_col=info.centroid[1],
                              bbox=list(info.bbox), user_id=user_id, verdict=verdict, reason=reason)
    session.add(decision)
    session.flush()
    _queue_after_decision(session, decision)
    return decision


def decisions(session: Session, image_id: int, *, cell_key: int | None = None) -> list[ObjectDecision]:
    """Object decisions on an image (optionally on one cell), oldest first."""
    query = select(ObjectDecision).where(ObjectDecision.image_id == image_id)
    if cell_key is not None:
        query = query.where(ObjectDecision.cell_key == cell_key)
    return list(session.scalars(query.order_by(ObjectDecision.created_at, ObjectDecision.id)))


def visible_decisions(session: Session, image_id: int, user_id: int | None) -> list[ObjectDecision]:
    """The object decisions a user may see on an image: all of them, or only their own while they
    hold an open blind assignment on it."""
    found = decisions(session, image_id)
    if blind_assignment(session, image_id, user_id) is not None:
        found = [d for d in found if d.user_id == user_id]
    return found


# --- the queue ---------------------------------------------------------------------------------

def _queue(session: Session, image: Image, **fields) -> AdjudicationItem:
    fields.setdefault("priority", 0.0)
    item = AdjudicationItem(project_id=image.project_id, image_id=image.id, status="open", **fields)
    session.add(item)
    session.flush()
    return item


def queue_mask_object(session: Session, storage: Storage, image_id: int, version_id: int,
                      label: int, *, reason: str, user_id: int | None = None,
                      probability: float | None = None, priority: float = 0.0,
                      note: str = "") -> AdjudicationItem:
    """Queue one object of a mask version for the experts.

    ``reason`` says why: ``unsure``, ``disagreement``, ``uncertain`` (the model's probability
    is near its threshold) or ``size``. An object already waiting is not queued twice.
    """
    image = get_image(session, image_id)
    version = get_version(session, version_id, image_id)
    waiting = session.scalar(select(AdjudicationItem).where(
        AdjudicationItem.version_id == version_id, AdjudicationItem.label == label,
        AdjudicationItem.kind == "mask_object", AdjudicationItem.status == "open"))
    if waiting is not None:
        return waiting
    info = object_info(_pixels(storage, {}, version, label))[0]
    return _queue(session, image, kind="mask_object", reason=reason, version_id=version_id,
                  label=label, centroid_row=info.centroid[0], centroid_col=info.centroid[1],
                  bbox=list(info.bbox), geometry={"area": info.area}, probability=probability,
                  priority=priority, created_by=user_id, note=note)


def queue_run_object(session: Session, outcome_id: int, *, user_id: int | None = None,
                     priority: float = 0.0, note: str = "") -> AdjudicationItem:
    """Queue a run's FP or FN object (from the Predictions page) for the experts."""
    outcome = session.get(ObjectOutcome, outcome_id)
    if outcome is None or outcome.outcome not in ("FP", "FN"):
        raise ValueError(f"Object outcome {outcome_id} is not an FP or FN object; only errors "
                         f"of a run can be sent to the experts.")
    result = session.get(ImageResult, outcome.result_id)
    image = get_image(session, result.image_id)
    kind = "run_fp" if outcome.outcome == "FP" else "run_fn"
    waiting = session.scalar(select(AdjudicationItem).where(
        AdjudicationItem.run_id == result.run_id, AdjudicationItem.kind == kind,
        AdjudicationItem.status == "open", AdjudicationItem.image_id == image.id,
        AdjudicationItem.centroid_row == outcome.centroid_row,
        AdjudicationItem.centroid_col == outcome.centroid_col))
    if waiting is not None:
        return waiting
    return _queue(session, image, kind=kind, reason=f"prediction_{outcome.outcome.lower()}",
                  version_id=result.version_id, run_id=result.run_id,
                  centroid_row=outcome.centroid_row, centroid_col=outcome.centroid_col,
                  bbox=list(outcome.bbox), geometry={"outcome_id": outcome.id, "area": outcome.area},
                  probability=outcome.probability, priority=priority, created_by=user_id,
                  note=note)


def _queue_after_decision(session: Session, decision: ObjectDecision) -> None:
    """Unsure, or a keep and a drop by different users on one cell: the experts decide."""
    image = get_image(session, decision.image_id)
    fields = dict(version_id=decision.version_id, label=decision.label,
                  centroid_row=decision.centroid_row, centroid_col=decision.centroid_col,
                  bbox=list(decision.bbox), geometry={"cell_key": decision.cell_key},
                  created_by=decision.user_id)
    open_for_cell = [i for i in session.scalars(select(AdjudicationItem).where(
        AdjudicationItem.image_id == image.id, AdjudicationItem.kind == "mask_object",
        AdjudicationItem.status == "open"))
        if (i.geometry or {}).get("cell_key") == decision.cell_key]
    if open_for_cell:
        return
    if decision.verdict == "unsure":
        _queue(session, image, kind="mask_object", reason="unsure", note=decision.reason, **fields)
        return
    votes = session.execute(select(ObjectDecision.user_id, ObjectDecision.verdict).where(
        ObjectDecision.image_id == image.id, ObjectDecision.cell_key == decision.cell_key)).all()
    keepers = {u for u, v in votes if v == "keep"}
    droppers = {u for u, v in votes if v == "drop"}
    if keepers and droppers and (keepers | droppers) != keepers & droppers:
        _queue(session, image, kind="mask_object", reason="disagreement", **fields)


def _queue_rank():
    """The SQL rank of an item's reason in :data:`QUEUE_ORDER` (unknown reasons last)."""
    return case({reason: i for i, reason in enumerate(QUEUE_ORDER)},
                value=AdjudicationItem.reason, else_=len(QUEUE_ORDER))


def _votes(session: Session, items) -> dict[int, list[dict]]:
    """item id -> the operators' verdicts on its cell (same version and label, or same cell)."""
    if not items:
        return {}
    image_ids = sorted({i.image_id for i in items})
    q = (select(ObjectDecision, User.name).outerjoin(User, User.id == ObjectDecision.user_id)
         .where(ObjectDecision.image_id.in_(image_ids)).order_by(ObjectDecision.id))
    per_image: dict[int, list] = {}
    for d, user_name in session.execute(q).all():
        per_image.setdefault(d.image_id, []).append((d, user_name))
    out = {}
    for item in items:
        found = per_image.get(item.image_id, [])
        keys = {d.cell_key for d, _ in found
                if item.version_id is not None and d.version_id == item.version_id
                and d.label == item.label}
        if (item.geometry or {}).get("cell_key") is not None:
            keys.add(item.geometry["cell_key"])
        # Without a shared cell key, a vote on an object whose centre is within a few pixels
        # of the item's centre is a vote on the same cell.
        near = {d.id for d, _ in found
                if math.hypot(d.centroid_row - item.centroid_row,
                              d.centroid_col - item.centroid_col) <= _SAME_PLACE}
        # Each user's latest vote once: a repeated click is not a second opinion.
        latest = {}
        for d, name in found:
            if d.cell_key in keys or d.id in near:
                latest.pop(d.user_id, None)
                latest[d.user_id] = {"user": name or "?", "verdict": d.verdict,
                                     "reason": d.reason or "", "at": d.created_at}
        out[item.id] = list(latest.values())
    return out


QUEUE_COLUMNS = ["item_id", "image_id", "name", "kind", "reason", "group", "priority",
                 "probability", "label", "version_id", "run_id", "centroid_row", "centroid_col",
                 "bbox", "note", "created_at", "votes", "geometry"]


def adjudication_queue(session: Session, project_id: int, *, limit: int | None = None,
                       offset: int = 0) -> pd.DataFrame:
    """The experts' open items in :data:`QUEUE_ORDER`, with the operators' votes on each.

    Returns
    -------
    DataFrame
        Columns :data:`QUEUE_COLUMNS`; ``group`` names the reason for people
        (:data:`QUEUE_GROUPS`), ``votes`` is a list of ``{"user", "verdict", "reason", "at"}``,
        ``geometry`` what the item keeps of its object (an object near the threshold: its
        ``peak`` probability, the run's ``threshold``, whether it was ``counted``).
    """
    q = (select(AdjudicationItem, Image.original_name)
         .join(Image, Image.id == AdjudicationItem.image_id)
         .where(AdjudicationItem.project_id == project_id, AdjudicationItem.status == "open")
         .order_by(_queue_rank(), AdjudicationItem.priority.desc(),
                   AdjudicationItem.created_at, AdjudicationItem.id)
         .offset(offset))
    if limit is not None:
        q = q.limit(limit)
    got = session.execute(q).all()
    votes = _votes(session, [i for i, _ in got])
    rows = [{
        "item_id": i.id, "image_id": i.image_id, "name": name or f"image {i.image_id}",
        "kind": i.kind, "reason": i.reason, "group": QUEUE_GROUPS.get(i.reason, i.reason),
        "priority": float(i.priority or 0.0), "probability": i.probability, "label": i.label,
        "version_id": i.version_id, "run_id": i.run_id, "centroid_row": i.centroid_row,
        "centroid_col": i.centroid_col, "bbox": list(i.bbox or []), "note": i.note or "",
        "created_at": i.created_at, "votes": votes.get(i.id, []),
        "geometry": dict(i.geometry or {}),
    } for i, name in got]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def pending_adjudications(session: Session, project_id: int, *, image_id: int | None = None) -> int:
    """How many items wait for an expert, in a project or on one image."""
    query = select(func.count(AdjudicationItem.id)).where(
        AdjudicationItem.project_id == project_id, AdjudicationItem.status == "open")
    if image_id is not None:
        query = query.where(AdjudicationItem.image_id == image_id)
    return int(session.scalar(query) or 0)


# --- the model's doubts ------------------------------------------------------------------------

DOUBT_COLUMNS = ["run_id", "image_id", "name", "outcome_id", "outcome", "probability", "area",
                 "doubt", "why", "centroid_row", "centroid_col", "bbox", "version_id",
                 "threshold", "counted", "drawn_at"]


def near_band(threshold: float, delta: float = NEAR_THRESHOLD) -> float:
    """How far from ``threshold`` a peak probability counts as near it: ``delta``, at most half
    the way from the threshold to 0 or to 1.

    >>> near_band(0.5), near_band(0.95), near_band(0.1)
    (0.1, 0.025, 0.05)
    """
    t = float(threshold)
    return round(min(float(delta), t / 2, (1.0 - t) / 2), 6)


def _near_threshold(session: Session, storage: Storage, run):
    """Objects whose peak probability lies within :func:`near_band` of the run's threshold t, on
    the test images it kept heatmaps of: counted ones (the scoring rule's objects at t) and
    near-misses (its objects at t - delta that overlap nothing counted at t).

    Yields ``(result, image name, peak, ObjectInfo, counted, drawn at, doubt)``.
    """
    q = (select(ImageResult, Image.original_name).join(Image, Image.id == ImageResult.image_id)
         .where(ImageResult.run_id == run.id, ImageResult.heatmap_path.is_not(None))
         .order_by(ImageResult.image_id))
    kept = session.execute(q).all()
    if not kept:
        return
    rule = run_scoring(run, storage)
    t = rule.threshold
    delta = near_band(t)
    if delta <= 0:
        return
    for result, name in kept:
        try:
            heat = storage.read_heatmap(result.heatmap_path)
        except (OSError, ValueError) as exc:
            log.warning("run %s: the heatmap of image %s cannot be read: %s", run.id,
                        result.image_id, exc)
            continue
        counted = rule.labels(heat)
        lower = rule.labels(heat, threshold=t - delta)
        for labels, drawn_at, is_counted in ((counted, t, True), (lower, t - delta, False)):
            for info in object_info(labels):
                r0, c0, r1, c1 = info.bbox
                pixels = labels[r0:r1, c0:c1] == info.label
                if not is_counted and counted[r0:r1, c0:c1][pixels].any():
                    continue  # a counted object's wider footprint, not a near-miss
                peak = float(heat[r0:r1, c0:c1][pixels].max())
                if abs(peak - t) <= delta:
                    yield (result, name, peak, info, is_counted, drawn_at,
                           1.0 - abs(peak - t) / delta)


def model_doubt_candidates(session: Session, storage: Storage, project_id: int, *,
                           limit: int = 20, min_doubt: float = MIN_DOUBT) -> pd.DataFrame:
    """Objects the promoted model is least sure of, on the test images it was scored on.

    - Near the threshold (``why`` = ``uncertain``): objects whose *peak* probability lies
      within :func:`near_band` of the run's threshold t, found on the stored heatmaps through
      the run's scoring rule (:func:`db.runs.run_scoring`): counted objects just above t, and
      near-misses, which the rule makes at t - delta but not at t. ``probability`` is the peak,
      ``counted`` says on which side, ``doubt`` is ``1 - |p - t| / delta``. A result without a
      stored heatmap falls back on its predicted objects' stored mean probability.
    - Unusual size (``why`` = ``size``): predicted objects (TP and FP outcomes) whose area is
      far from the run's median (:func:`core.objects.doubt` at least ``min_doubt``).

    Least sure first; objects already queued (same image, centre within 10 px) are left out.

    Returns
    -------
    DataFrame
        Columns :data:`DOUBT_COLUMNS`; ``threshold`` is the run's, ``drawn_at`` the threshold
        the object's pixels are drawn at (t, or t - delta for a near-miss). Empty without a
        promoted run.
    """
    run = promoted_run(session, project_id)
    if run is None:
        return pd.DataFrame(columns=DOUBT_COLUMNS)
    threshold = run_threshold(run, storage)
    delta = near_band(threshold)

    def row(result, name, outcome_id, outcome, p, info, t, counted, drawn_at, score, why):
        return {"run_id": run.id, "image_id": result.image_id,
                "name": name or f"image {result.image_id}", "outcome_id": outcome_id,
                "outcome": outcome, "probability": p, "area": float(info.area),
                "doubt": float(score), "why": why, "centroid_row": float(info.centroid[0]),
                "centroid_col": float(info.centroid[1]), "bbox": [int(v) for v in info.bbox],
                "version_id": result.version_id, "threshold": t, "counted": counted,
                "drawn_at": drawn_at}

    found = [row(result, name, None, None, peak, info, threshold, counted, drawn_at, score,
                 "uncertain")
             for result, name, peak, info, counted, drawn_at, score
             in _near_threshold(session, storage, run)]
    q = (select(ObjectOutcome, ImageResult, Image.original_name)
         .join(ImageResult, ImageResult.id == ObjectOutcome.result_id)
         .join(Image, Image.id == ImageResult.image_id)
         .where(ImageResult.run_id == run.id, ObjectOutcome.outcome.in_(("TP", "FP"))))
    predicted = session.execute(q).all()
    areas = [float(o.area) for o, _, _ in predicted if o.area]
    typical = max(float(np.median(areas)) if areas else 1.0, 1.0)
    for o, result, name in predicted:
        info = ObjectInfo(0, (o.centroid_row, o.centroid_col), tuple(o.bbox or (0, 0, 0, 0)),
                          int(o.area or 0))
        p = float("nan") if o.probability is None else float(o.probability)
        if not result.heatmap_path and abs(p - threshold) <= delta:  # no heatmap: mean p
            found.append(row(result, name, o.id, o.outcome, p, info, threshold, True, threshold,
                             1.0 - abs(p - threshold) / delta, "uncertain"))
            continue
        # No probability is given, so the threshold plays no part: only the size is judged.
        odd = float(doubt(np.nan, info.area or typical, threshold=0.5, typical_area=typical)[0])
        if odd >= min_doubt:
            found.append(row(result, name, o.id, o.outcome, p, info, threshold, True, threshold,
                             odd, "size"))
    t = pd.DataFrame(found, columns=DOUBT_COLUMNS)
    queued = session.execute(select(AdjudicationItem.image_id, AdjudicationItem.centroid_row,
                                    AdjudicationItem.centroid_col)
                             .where(AdjudicationItem.project_id == project_id)).all()
    if queued and not t.empty:
        def already(row) -> bool:
            return any(i == row.image_id and math.hypot(r - row.centroid_row,
                                                        c - row.centroid_col) <= _SAME_PLACE
                       for i, r, c in queued)
        t = t[[not already(row) for row in t.itertuples()]]
    # One object found twice (near the threshold and of odd size) is queued once.
    t = t.sort_values(["doubt", "image_id"], ascending=[False, True], kind="stable")
    t = t[~t.duplicated(subset=["image_id", "centroid_row", "centroid_col"])]
    return t[DOUBT_COLUMNS].head(limit).reset_index(drop=True)


def queue_model_doubts(session: Session, storage: Storage, project_id: int, *,
                       user_id: int | None, limit: int = 20, min_doubt: float = MIN_DOUBT) -> int:
    """Put the promoted model's least sure objects in the experts' queue; returns how many.

    An object near the threshold found on a heatmap is queued as the run's object (kind
    ``run_near``: its pixels are the scoring rule's object at ``drawn_at``), with its peak
    probability and the run's threshold, reason ``uncertain``. One of unusual size that matched
    a true cell (TP) is queued as that object of the ground truth it was scored against (reason
    ``size``); an FP goes in as the run's FP. The doubt is the item's priority.
    """
    cands = model_doubt_candidates(session, storage, project_id, limit=limit, min_doubt=min_doubt)
    n = 0
    for c in cands.itertuples():
        note = (f"peak p {c.probability:.2f}, t {c.threshold:.2f}" if c.why == "uncertain"
                else f"area {c.area:.0f} px")
        if c.why == "uncertain" and c.outcome_id is None:
            image = get_image(session, int(c.image_id))
            _queue(session, image, kind="run_near", reason="uncertain", version_id=c.version_id,
                   run_id=int(c.run_id), centroid_row=c.centroid_row, centroid_col=c.centroid_col,
                   bbox=list(c.bbox), probability=c.probability, priority=c.doubt,
                   geometry={"area": c.area, "threshold": c.threshold, "counted": bool(c.counted),
                             "drawn_at": c.drawn_at, "peak": c.probability},
                   created_by=user_id, note=note)
            n += 1
            continue
        if c.outcome == "FP":
            queue_run_object(session, int(c.outcome_id), user_id=user_id, priority=c.doubt,
                             note=note)
            n += 1
            continue
        version_id = c.version_id
        if version_id is None or (isinstance(version_id, float) and math.isnan(version_id)):
            version_id = ground_truth_versions(session, [int(c.image_id)]).get(int(c.image_id))
        if version_id is None:
            continue
        version = get_version(session, int(version_id))
        label = label_at(storage.read_labels(version.path), c.centroid_row, c.centroid_col)
        if label == 0:
            continue
        queue_mask_object(session, storage, int(c.image_id), version.id, label, reason=c.why,
                          user_id=user_id, probability=c.probability, priority=c.doubt,
                          note=note)
        n += 1
    return n


# --- what an expert looks at ---------------------------------------------------------------------

def _label_in_box(labels: np.ndarray, bbox) -> np.ndarray:
    """The object of ``labels`` that fills most of ``bbox`` (empty when none is there)."""
    r0, c0, r1, c1 = (int(v) for v in bbox)
    inside = labels[r0:r1, c0:c1]
    ids, counts = np.unique(inside[inside > 0], return_counts=True)
    if ids.size == 0:
        return np.zeros(labels.shape, dtype=bool)
    return labels == ids[np.argmax(counts)]


def item_pixels(session: Session, storage: Storage, item: AdjudicationItem,
                shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the object an adjudication item is about.

    Returns
    -------
    ndarray of bool, shape ``shape``
        For a ``mask_object``, object ``item.label`` of its mask version. For a predicted
        object (``run_fp``), the run's counted object (its scoring rule on the stored heatmap,
        at the threshold the run was scored with) that fills most of the item's box. Otherwise
        (a missed cell, ``run_fn``), the object of the item's version (the ground truth it was
        scored against) filling most of the box. For an object near the threshold
        (``run_near``), the scoring rule's object at the threshold it was found at
        (``geometry["drawn_at"]``) filling most of the box. Empty when the item names no version
        or box.

    Raises
    ------
    ValueError
        When the version, the object or the run's heatmap the item names is not there.
    """
    if item.kind == "mask_object":
        version = get_version(session, item.version_id, item.image_id)
        return _pixels(storage, {}, version, item.label)
    if item.kind in ("run_fp", "run_near"):
        run = get_run(session, item.run_id)
        result = result_for(session, item.run_id, item.image_id)
        if result is None or not result.heatmap_path or item.bbox is None:
            raise ValueError(f"Run {item.run_id} kept no heatmap for image {item.image_id}; "
                             f"the predicted object cannot be drawn.")
        rule = run_scoring(run, storage)
        scored_at = (run.metrics or {}).get("threshold")
        if item.kind == "run_near":
            scored_at = (item.geometry or {}).get("drawn_at")
        if isinstance(scored_at, (int, float)) and 0.0 < scored_at < 1.0:
            rule = rule.with_threshold(scored_at)  # the object as it was counted and stored
        return _label_in_box(rule.labels(storage.read_heatmap(result.heatmap_path)), item.bbox)
    if item.version_id is None or item.bbox is None:
        return np.zeros(shape, dtype=bool)
    truth = storage.read_labels(get_version(session, item.version_id, item.image_id).path)
    return _label_in_box(truth, item.bbox)


def item_probability(session: Session, storage: Storage, item_id: int,
                     predict: Callable[[str, str], np.ndarray] | None = None) -> float | None:
    """The promoted model's mean probability over an item's object, worked out once and kept.

    An item queued without one (flagged unsure, disputed) gets it from the promoted run's stored
    heatmap of the image, or else from ``predict(run_dir, image_path)`` (a float heatmap; the
    caller loads and caches the model). The heatmap is stored (``Storage.put_heatmap``) and its
    key, with the run, kept on the item; the probability goes into ``item.probability``.

    Returns None when there is no promoted run, or no stored heatmap and no ``predict``.
    """
    item = session.get(AdjudicationItem, item_id)
    if item is None:
        raise ValueError(f"There is no adjudication item {item_id}; it may have been decided.")
    if item.probability is not None:
        return float(item.probability)
    run = promoted_run(session, item.project_id)
    if run is None:
        return None
    image = get_image(session, item.image_id)
    result = result_for(session, run.id, item.image_id)
    stored = result.heatmap_path if result is not None else None
    if stored:
        heat = storage.read_heatmap(stored)
    elif predict is not None:
        heat = np.asarray(predict(run.run_dir, image.path), dtype=np.float32)
        stored = storage.key(storage.put_heatmap(heat).path)
        heat = storage.read_heatmap(stored)  # the stored levels, as every other surface reads
    else:
        return None
    pixels = item_pixels(session, storage, item, heat.shape)
    if not pixels.any():
        return None
    item.probability = float(heat[pixels].mean())
    item.geometry = {**(item.geometry or {}), "probability_run": run.id, "heatmap": str(stored)}
    session.flush()
    return item.probability


def item_crop(session: Session, storage: Storage, item_id: int, *, margin: int = 40,
              zoom: int = 4, display: dict | None = None) -> np.ndarray:
    """A magnified crop around an adjudication item: its object outlined in
    ``COLORS["item"]``, the other cells of the current mask in ``COLORS["context"]``.

    Parameters
    ----------
    margin : int
        Pixels of context around the object's box.
    zoom : int
        Nearest-neighbour magnification (pixels stay square and sharp).
    display : dict, optional
        ``brightness``, ``contrast``, ``gamma`` for :func:`core.render.adjust_display`, applied
        to the image before the outlines are drawn (the stored image is not changed).

    Returns
    -------
    ndarray of uint8, (h * zoom, w * zoom, 3)

    Raises
    ------
    ValueError
        When the item, its image or its mask cannot be read; the message names the file.
    """
    item = session.get(AdjudicationItem, item_id)
    if item is None:
        raise ValueError(f"Adjudication item {item_id} does not exist; reload the queue.")
    image = get_image(session, item.image_id)
    try:
        rgb = storage.read_image(image.path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"The image {image.original_name or image.path} cannot be read: {exc}. "
                         "Import it again.") from exc
    r0, c0, r1, c1 = (int(v) for v in (item.bbox or [item.centroid_row, item.centroid_col,
                                                      item.centroid_row + 1,
                                                      item.centroid_col + 1]))
    h, w = rgb.shape[:2]
    head = head_version(session, image.id)
    context = storage.read_labels(head.path) > 0 if head is not None else np.zeros((h, w), bool)
    try:
        obj = item_pixels(session, storage, item, (h, w))
    except (OSError, ValueError) as exc:  # the crop still helps; the box marks where to look
        log.warning("Adjudication item %s: its object cannot be drawn: %s", item.id, exc)
        obj = np.zeros((h, w), bool)
    # One label image, 1 = the other cells, 2 = the item's object, so each gets its own colour.
    labels = np.where(obj, 2, np.where(context, 1, 0)).astype(np.uint8)
    bbox = (r0, c0, r1, c1)
    crop = crop_around(rgb, bbox, margin=margin, scale=zoom)
    if display:
        crop = adjust_display(crop, **display)
    crop = draw_outlines(crop, crop_around(labels, bbox, margin=margin, scale=zoom),
                         color=COLORS["context"], colors={2: COLORS["item"]})
    if not obj.any():  # nothing to outline (e.g. an FN already erased): mark the box instead
        top, left = max(r0 - margin, 0), max(c0 - margin, 0)
        box = [((r0 - top) * zoom, (c0 - left) * zoom, (r1 - top) * zoom, (c1 - left) * zoom)]
        crop = draw_boxes(crop, box, color=COLORS["item"], thickness=1)
    return crop


def _decided_labels(labels: np.ndarray, pixels: np.ndarray, verdict: str) -> np.ndarray:
    """The head's labels after a verdict on the object at ``pixels``, by the edit rule.

    ``drop`` erases the object's pixels; ``keep`` leaves a cell that already is the object (IoU
    >= :data:`IOU_SAME_CELL`) as it is, adding the object's uncovered pixels to it, and otherwise
    makes the object a new label (erase its place, add it). Either way the other cells keep
    their labels, and one that the change cuts into pieces follows
    :func:`core.objects.edited_labels`.
    """
    rows, cols = np.nonzero(pixels)
    if verdict == "drop":
        return edited_labels(labels, [Edit("erase", rows, cols)])
    for label in np.unique(labels[pixels]):
        if label and _iou(labels == label, pixels) >= IOU_SAME_CELL:
            out = labels.copy()
            out[pixels & (out == 0)] = label
            return out
    return edited_labels(labels, [Edit("erase", rows, cols), Edit("add", rows, cols)])


def decide_adjudication(session: Session, storage: Storage, item_id: int, *, expert: User,
                        verdict: str, reason: str) -> AdjudicationDecision:
    """Settle an item: ``keep`` puts the object in the mask as a cell, ``drop`` takes it out.

    The result is a new head version (source ``adjudicated``; the other cells keep their labels,
    see :func:`_decided_labels`), approved when the image was approved, plus the decision and an
    audit record. Only experts and admins may decide.
    """
    require_role(expert, "expert", "admin")
    if verdict not in ("keep", "drop"):
        raise ValueError(f"An expert decides 'keep' or 'drop'; got {verdict!r}.")
    if not (reason or "").strip():
        raise ValueError("Give a reason for the decision; it is kept with the history.")
    item = session.get(AdjudicationItem, item_id)
    if item is None or item.status != "open":
        raise ValueError(f"Adjudication item {item_id} is not waiting for a decision.")
    image = get_image(session, item.image_id)
    head = head_version(session, image.id)
    labels = (storage.read_labels(head.path) if head is not None
              else np.zeros((image.height, image.width), dtype=np.int32))
    pixels = item_pixels(session, storage, item, labels.shape)
    mask = _decided_labels(labels, pixels, verdict)
    was_approved = image.review_status == "approved"
    version = save_mask_version(session, storage, image.id, mask, based_on=image.head_version_id,
                                source="adjudicated", author_id=expert.id,
                                note=f"{verdict} ({item.reason}): {reason}")
    if was_approved:
        approve(session, image.id, user_id=expert.id, version_id=version.id)
    decision = AdjudicationDecision(item_id=item.id, expert_id=expert.id, verdict=verdict,
                                    reason=reason, version_id=version.id)
    item.status = "decided"
    session.add(decision)
    session.flush()
    audit.record(session, user_id=expert.id, action="adjudication.decide", entity="adjudication_items",
                 entity_id=item.id, detail={"verdict": verdict, "reason": reason,
                                            "image_id": image.id, "version_id": version.id})
    return decision
