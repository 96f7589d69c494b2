"""Mask versions, approvals, object decisions, review assignments and adjudication.

Mask versions form an append-only chain per image; the image row points at its head. Saving
takes the version the edit was based on; if the head moved meanwhile, the save is still kept
(flagged as a conflict, not made the head) and :class:`ConflictError` says which two versions
disagree. **Catch it inside the transaction** so the flagged version is committed::

    with Session(engine) as s, s.begin():
        try:
            save_mask_version(s, storage, image_id, mask, based_on=v, source="manual", author_id=u)
        except ConflictError as err:
            conflict = err          # show err.head_id against err.version_id; make_head() picks

Objects are the connected components of a mask (8-connectivity, ``skimage.measure.label``);
an object's ``label`` is its component number in that version. Decisions on objects of
different versions that overlap with IoU >= 0.5 share a ``cell_key``: they are votes on the same
cell. The ground truth of an image is its latest approved version.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from skimage.measure import label as cc_label, regionprops
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import audit
from db.models import (MASK_SOURCES, VERDICTS, AdjudicationDecision, AdjudicationItem, Approval,
                       Image, ImageResult, MaskVersion, ModelRun, ObjectDecision, ObjectOutcome,
                       ReviewAssignment, User)
from db.storage import Storage
from db.users import require_role

__all__ = ["ConflictError", "ObjectInfo", "label_objects", "count_objects", "object_info",
           "save_mask_version", "make_head", "head_version", "versions", "approve",
           "ground_truth", "record_decision", "decisions", "assign_review", "assignments",
           "finish_assignment", "assign_double_review", "blind_assignment", "review_version",
           "visible_decisions", "item_probability", "HistoryEntry", "history", "queue_mask_object", "queue_run_object",
           "adjudication_queue", "pending_adjudications", "item_pixels", "decide_adjudication", "IOU_SAME_CELL",
           "PRIORITY"]

log = logging.getLogger(__name__)

IOU_SAME_CELL = 0.5
# Queue order for the experts: the most useful items first.
PRIORITY = {"unsure": 3.0, "disagreement": 3.0, "prediction_fp": 2.0, "prediction_fn": 2.0,
            "uncertain": 1.0, "size": 1.0}


class ConflictError(Exception):
    """The head moved since the version an edit was based on.

    Attributes
    ----------
    image_id : int
    head_id : int or None
        The image's head now (someone else's save).
    version_id : int
        The version just stored, flagged ``conflict`` and not the head.
    based_on : int or None
        The version the edit started from.
    """

    def __init__(self, image_id: int, head_id: int | None, version_id: int, based_on: int | None):
        self.image_id, self.head_id, self.version_id, self.based_on = (
            image_id, head_id, version_id, based_on)
        super().__init__(
            f"Image {image_id} changed while you edited: version {head_id} was saved after "
            f"version {based_on}. Your edit is kept as version {version_id}; compare the two "
            f"and make one of them the head.")


@dataclass(frozen=True)
class ObjectInfo:
    """One object (connected component) of a mask.

    Attributes
    ----------
    label : int
        Component number in the labelled mask (1-based).
    centroid : tuple of float
        (row, col).
    bbox : tuple of int
        (min_row, min_col, max_row, max_col), max exclusive.
    area : int
        Pixels.
    """

    label: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    area: int


def label_objects(mask: np.ndarray) -> np.ndarray:
    """Label the connected components of a mask (nonzero = foreground), int32.

    >>> label_objects(np.array([[1, 0, 1], [0, 0, 1]])).tolist()
    [[1, 0, 2], [0, 0, 2]]
    """
    return cc_label(np.asarray(mask) != 0, connectivity=2).astype(np.int32)


def count_objects(mask: np.ndarray) -> int:
    """Number of objects (connected components) in a mask.

    >>> count_objects(np.array([[1, 0, 1], [0, 0, 1]]))
    2
    """
    return int(label_objects(mask).max())


def object_info(labels: np.ndarray) -> list[ObjectInfo]:
    """Centroid, bbox and area of every object of a label image, by label."""
    out = []
    for region in regionprops(labels):
        r, c = region.centroid
        out.append(ObjectInfo(int(region.label), (float(r), float(c)),
                              tuple(int(v) for v in region.bbox), int(region.area)))
    return out


def _get_image(session: Session, image_id: int) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise ValueError(f"There is no image with id {image_id}.")
    return image


def _get_version(session: Session, version_id: int, image_id: int | None = None) -> MaskVersion:
    version = session.get(MaskVersion, version_id)
    if version is None or (image_id is not None and version.image_id != image_id):
        raise ValueError(f"Mask version {version_id} does not exist for image {image_id}.")
    return version


def _blind_assignment(session: Session, image_id: int, user_id: int | None) -> ReviewAssignment | None:
    if user_id is None:
        return None
    return session.scalar(select(ReviewAssignment).where(
        ReviewAssignment.image_id == image_id, ReviewAssignment.user_id == user_id,
        ReviewAssignment.blind.is_(True), ReviewAssignment.done.is_(False)))


def save_mask_version(session: Session, storage: Storage, image_id: int, mask: np.ndarray, *,
                      based_on: int | None, source: str, author_id: int | None,
                      note: str = "") -> MaskVersion:
    """Store a new mask version of an image and make it the head if nobody saved meanwhile.

    Parameters
    ----------
    session : Session
    storage : Storage
    image_id : int
    mask : ndarray (rows, cols)
        Nonzero = cell; must match the image's size.
    based_on : int or None
        The version the edit started from (None for the first version).
    source : {'import', 'auto', 'model', 'manual', 'adjudicated'}
    author_id : int or None
    note : str

    Returns
    -------
    MaskVersion
        The new head. A user with an open *blind* review assignment on the image gets a
        version that is recorded on the assignment and never becomes the head.

    Raises
    ------
    ConflictError
        The head is no longer ``based_on``; the version is stored anyway (flag ``conflict``).
    ValueError
        Unknown source, unknown image or version, or a mask of the wrong size.
    """
    if source not in MASK_SOURCES:
        raise ValueError(f"Unknown mask source {source!r}; use one of {', '.join(MASK_SOURCES)}.")
    image = _get_image(session, image_id)
    mask = np.asarray(mask)
    if mask.shape != (image.height, image.width):
        raise ValueError(f"The mask is {mask.shape[::-1]} (width, height) but image "
                         f"{image.original_name or image_id} is {(image.width, image.height)}.")
    if based_on is not None:
        _get_version(session, based_on, image_id)
    stored = storage.put_mask(mask)
    version = MaskVersion(image_id=image_id, parent_id=based_on, source=source, author_id=author_id,
                          path=storage.key(stored.path), sha256=stored.sha256,
                          object_count=count_objects(mask), note=note, conflict=False)
    session.add(version)
    session.flush()
    blind = _blind_assignment(session, image_id, author_id)
    if blind is not None:
        blind.version_id = version.id
        session.flush()
        return version
    _move_head(session, image, version, based_on)
    return version


def _move_head(session: Session, image: Image, version: MaskVersion, based_on: int | None) -> None:
    """Point the image at ``version`` only if its head is still ``based_on`` (one atomic UPDATE)."""
    current = (Image.head_version_id.is_(None) if based_on is None
               else Image.head_version_id == based_on)
    # A new head is no longer what was approved: the image needs review again.
    untouched = version.source in ("import", "auto", "model") and image.review_status == "to_review"
    status = "to_review" if untouched else "in_progress"
    result = session.execute(
        update(Image).where(Image.id == image.id, current)
        .values(head_version_id=version.id, review_status=status)
        .execution_options(synchronize_session=False))
    session.expire(image, ["head_version_id", "review_status"])
    if result.rowcount == 1:
        return
    version.conflict = True
    session.flush()
    head = session.scalar(select(Image.head_version_id).where(Image.id == image.id))
    log.info("Conflict on image %s: head is %s, new version %s was based on %s.",
             image.id, head, version.id, based_on)
    raise ConflictError(image.id, head, version.id, based_on)


def make_head(session: Session, image_id: int, version_id: int, *, user_id: int | None) -> Image:
    """Make any version of an image its head (resolving a conflict); recorded in the audit log."""
    image = _get_image(session, image_id)
    _get_version(session, version_id, image_id)
    old = image.head_version_id
    image.head_version_id = version_id
    if image.review_status == "to_review":
        image.review_status = "in_progress"
    session.flush()
    audit.record(session, user_id=user_id, action="mask.make_head", entity="images",
                 entity_id=image_id, detail={"from": old, "to": version_id})
    return image


def head_version(session: Session, image_id: int) -> MaskVersion | None:
    """The image's current head version, or None before its first mask."""
    image = _get_image(session, image_id)
    return None if image.head_version_id is None else session.get(MaskVersion, image.head_version_id)


def versions(session: Session, image_id: int) -> list[MaskVersion]:
    """Every version of an image, oldest first."""
    return list(session.scalars(select(MaskVersion).where(MaskVersion.image_id == image_id)
                                .order_by(MaskVersion.id)))


def approve(session: Session, image_id: int, *, user_id: int | None,
            version_id: int | None = None) -> Approval:
    """Approve a version (the head by default) as the image's ground truth."""
    image = _get_image(session, image_id)
    version_id = image.head_version_id if version_id is None else version_id
    if version_id is None:
        raise ValueError(f"Image {image.original_name or image_id} has no mask to approve yet.")
    _get_version(session, version_id, image_id)
    approval = Approval(image_id=image_id, version_id=version_id, approver_id=user_id)
    session.add(approval)
    if version_id == image.head_version_id:
        image.review_status = "approved"
    session.flush()
    return approval


def ground_truth(session: Session, image_id: int) -> MaskVersion | None:
    """The latest approved version of an image, or None when nothing was approved."""
    version_id = session.scalar(select(Approval.version_id).where(Approval.image_id == image_id)
                                .order_by(Approval.created_at.desc(), Approval.id.desc()).limit(1))
    return None if version_id is None else session.get(MaskVersion, version_id)


def _object_pixels(storage: Storage, cache: dict[int, np.ndarray], version: MaskVersion,
                   label: int) -> np.ndarray:
    if version.id not in cache:
        cache[version.id] = label_objects(storage.read_mask(version.path))
    labels = cache[version.id]
    if not 1 <= label <= labels.max():
        raise ValueError(f"Mask version {version.id} has no object {label} "
                         f"(it has {int(labels.max())}).")
    return labels == label


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
        other = _object_pixels(storage, cache, session.get(MaskVersion, version_id), other_label)
        if _iou(pixels, other) >= IOU_SAME_CELL:
            return key
    top = session.scalar(select(func.max(ObjectDecision.cell_key))
                         .where(ObjectDecision.image_id == image_id))
    return (top or 0) + 1


def record_decision(session: Session, storage: Storage, image_id: int, version_id: int, label: int,
                    *, user_id: int | None, verdict: str, reason: str = "") -> ObjectDecision:
    """Record a user's keep, drop or unsure on one object of a mask version.

    An ``unsure`` verdict, or a keep and a drop from different users on the same cell, queues
    the object for the experts (see :func:`db.adjudication.queue_mask_object`).
    """
    if verdict not in VERDICTS:
        raise ValueError(f"Unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}.")
    version = _get_version(session, version_id, image_id)
    cache: dict[int, np.ndarray] = {}
    pixels = _object_pixels(storage, cache, version, label)
    info = object_info(pixels.astype(np.int32))[0]
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


def assign_review(session: Session, image_id: int, user_id: int, *, blind: bool = False,
                  assigned_by: int | None = None) -> ReviewAssignment:
    """Give an image to a user to review; ``blind`` keeps their versions off the head.

    Two blind assignments on one image let two operators count it independently; their
    versions are kept on the assignments for the agreement figures.
    """
    _get_image(session, image_id)
    found = session.scalar(select(ReviewAssignment).where(
        ReviewAssignment.image_id == image_id, ReviewAssignment.user_id == user_id))
    if found is not None:
        found.blind, found.done = blind, False
        session.flush()
        return found
    assignment = ReviewAssignment(image_id=image_id, user_id=user_id, blind=blind,
                                  assigned_by=assigned_by)
    session.add(assignment)
    session.flush()
    return assignment


def assignments(session: Session, *, user_id: int | None = None, image_id: int | None = None,
                open_only: bool = False) -> list[ReviewAssignment]:
    """Review assignments for a user or an image."""
    query = select(ReviewAssignment)
    if user_id is not None:
        query = query.where(ReviewAssignment.user_id == user_id)
    if image_id is not None:
        query = query.where(ReviewAssignment.image_id == image_id)
    if open_only:
        query = query.where(ReviewAssignment.done.is_(False))
    return list(session.scalars(query.order_by(ReviewAssignment.id)))


def finish_assignment(session: Session, image_id: int, user_id: int) -> ReviewAssignment:
    """Mark a user's review of an image done (their last saved version stays on it)."""
    found = session.scalar(select(ReviewAssignment).where(
        ReviewAssignment.image_id == image_id, ReviewAssignment.user_id == user_id))
    if found is None:
        raise ValueError(f"Image {image_id} is not assigned to user {user_id}.")
    found.done = True
    session.flush()
    return found


def assign_double_review(session: Session, image_ids: list[int], operator_ids: list[int], *,
                         actor: User) -> list[ReviewAssignment]:
    """Give each image to two users for blind, independent review (admins only).

    Each of the two reviews the image without seeing the other's votes or versions; their saved
    versions stay on the assignments (never the head) for the agreement figures.

    Raises
    ------
    PermissionError
        ``actor`` is not an enabled admin.
    ValueError
        Not exactly two different, enabled users who may review, or no image.
    """
    require_role(actor, "admin")
    if not image_ids:
        raise ValueError("Pick at least one image to assign for double review.")
    if len(set(operator_ids)) != 2:
        raise ValueError("Pick two different reviewers: a blind double review needs exactly two.")
    reviewers = [session.get(User, uid) for uid in operator_ids]
    for uid, user in zip(operator_ids, reviewers):
        if user is None:
            raise ValueError(f"There is no user with id {uid}.")
        if user.disabled or user.role not in ("operator", "expert", "admin"):
            raise ValueError(f"{user.name} cannot review images (a disabled account or the "
                             f"{user.role} role); pick an enabled operator, expert or admin.")
    made = []
    for image_id in image_ids:
        for user in reviewers:
            made.append(assign_review(session, image_id, user.id, blind=True,
                                      assigned_by=actor.id))
        audit.record(session, user_id=actor.id, action="review.assign_blind", entity="images",
                     entity_id=image_id, detail={"reviewers": [u.id for u in reviewers]})
    return made


def blind_assignment(session: Session, image_id: int, user_id: int | None) -> ReviewAssignment | None:
    """The user's open blind review assignment on the image, or None."""
    return _blind_assignment(session, image_id, user_id)


def review_version(session: Session, image_id: int, user_id: int | None) -> MaskVersion | None:
    """The version a user reviews: the head, or, on an open blind assignment, their own latest
    version on it (the head until they save one; blind versions never become the head, so this is
    never the other blind reviewer's work)."""
    blind = _blind_assignment(session, image_id, user_id)
    if blind is not None and blind.version_id is not None:
        return session.get(MaskVersion, blind.version_id)
    return head_version(session, image_id)


def visible_decisions(session: Session, image_id: int, user_id: int | None) -> list[ObjectDecision]:
    """The object decisions a user may see on an image: all of them, or only their own while they
    hold an open blind assignment on it."""
    found = decisions(session, image_id)
    if _blind_assignment(session, image_id, user_id) is not None:
        found = [d for d in found if d.user_id == user_id]
    return found


@dataclass(frozen=True)
class HistoryEntry:
    """One event in an image's history.

    Attributes
    ----------
    at : datetime
    kind : str
        ``version``, ``approval``, ``decision`` or ``adjudication``.
    user_id : int or None
    user_name : str or None
    version_id : int or None
    detail : dict
    """

    at: dt.datetime
    kind: str
    user_id: int | None
    user_name: str | None
    version_id: int | None
    detail: dict[str, Any]


def history(session: Session, image_id: int) -> list[HistoryEntry]:
    """Every version, approval, object decision and adjudication of an image, in time order."""
    names = dict(session.execute(select(User.id, User.name)).all())
    rows: list[tuple[dt.datetime, int, int, HistoryEntry]] = []
    for v in versions(session, image_id):
        rows.append((v.created_at, 0, v.id, HistoryEntry(
            v.created_at, "version", v.author_id, names.get(v.author_id), v.id,
            {"source": v.source, "parent_id": v.parent_id, "object_count": v.object_count,
             "note": v.note, "conflict": v.conflict})))
    for a in session.scalars(select(Approval).where(Approval.image_id == image_id)):
        rows.append((a.created_at, 1, a.id, HistoryEntry(
            a.created_at, "approval", a.approver_id, names.get(a.approver_id), a.version_id, {})))
    for d in decisions(session, image_id):
        rows.append((d.created_at, 2, d.id, HistoryEntry(
            d.created_at, "decision", d.user_id, names.get(d.user_id), d.version_id,
            {"label": d.label, "cell_key": d.cell_key, "verdict": d.verdict, "reason": d.reason})))
    adjudications = session.execute(
        select(AdjudicationDecision, AdjudicationItem)
        .join(AdjudicationItem, AdjudicationDecision.item_id == AdjudicationItem.id)
        .where(AdjudicationItem.image_id == image_id)).all()
    for dec, item in adjudications:
        rows.append((dec.created_at, 3, dec.id, HistoryEntry(
            dec.created_at, "adjudication", dec.expert_id, names.get(dec.expert_id), dec.version_id,
            {"item_id": item.id, "kind": item.kind, "queued_for": item.reason,
             "verdict": dec.verdict, "reason": dec.reason})))
    rows.sort(key=lambda r: r[:3])
    return [r[3] for r in rows]


# --- adjudication ---------------------------------------------------------------------------

def _queue(session: Session, image: Image, **fields) -> AdjudicationItem:
    fields.setdefault("priority", PRIORITY.get(fields["reason"], 0.0))
    item = AdjudicationItem(project_id=image.project_id, image_id=image.id, status="open", **fields)
    session.add(item)
    session.flush()
    return item


def queue_mask_object(session: Session, storage: Storage, image_id: int, version_id: int,
                      label: int, *, reason: str, user_id: int | None = None,
                      probability: float | None = None, note: str = "") -> AdjudicationItem:
    """Queue one object of a mask version for the experts.

    ``reason`` says why: ``unsure``, ``disagreement``, ``uncertain`` (the model's probability
    is near its threshold) or ``size``. An object already waiting is not queued twice.
    """
    image = _get_image(session, image_id)
    version = _get_version(session, version_id, image_id)
    waiting = session.scalar(select(AdjudicationItem).where(
        AdjudicationItem.version_id == version_id, AdjudicationItem.label == label,
        AdjudicationItem.kind == "mask_object", AdjudicationItem.status == "open"))
    if waiting is not None:
        return waiting
    info = object_info(_object_pixels(storage, {}, version, label).astype(np.int32))[0]
    return _queue(session, image, kind="mask_object", reason=reason, version_id=version_id,
                  label=label, centroid_row=info.centroid[0], centroid_col=info.centroid[1],
                  bbox=list(info.bbox), geometry={"area": info.area}, probability=probability,
                  created_by=user_id, note=note)


def queue_run_object(session: Session, outcome_id: int, *, user_id: int | None = None,
                     note: str = "") -> AdjudicationItem:
    """Queue a run's FP or FN object (from the Predictions page) for the experts."""
    outcome = session.get(ObjectOutcome, outcome_id)
    if outcome is None or outcome.outcome not in ("FP", "FN"):
        raise ValueError(f"Object outcome {outcome_id} is not an FP or FN object; only errors "
                         f"of a run can be sent to the experts.")
    result = session.get(ImageResult, outcome.result_id)
    image = _get_image(session, result.image_id)
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
                  probability=outcome.probability, created_by=user_id, note=note)


def _queue_after_decision(session: Session, decision: ObjectDecision) -> None:
    """Unsure, or a keep and a drop by different users on one cell: the experts decide."""
    image = _get_image(session, decision.image_id)
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


def adjudication_queue(session: Session, project_id: int, *, status: str = "open",
                       limit: int = 50, offset: int = 0) -> list[AdjudicationItem]:
    """Items waiting for (or settled by) the experts, most useful first."""
    query = (select(AdjudicationItem)
             .where(AdjudicationItem.project_id == project_id, AdjudicationItem.status == status)
             .order_by(AdjudicationItem.priority.desc(), AdjudicationItem.id)
             .limit(limit).offset(offset))
    return list(session.scalars(query))


def pending_adjudications(session: Session, project_id: int, *, image_id: int | None = None) -> int:
    """How many items wait for an expert, in a project or on one image."""
    query = select(func.count(AdjudicationItem.id)).where(
        AdjudicationItem.project_id == project_id, AdjudicationItem.status == "open")
    if image_id is not None:
        query = query.where(AdjudicationItem.image_id == image_id)
    return int(session.scalar(query) or 0)


def _component_in_box(binary: np.ndarray, bbox) -> np.ndarray:
    """The connected component of ``binary`` that fills most of ``bbox``."""
    r0, c0, r1, c1 = (int(v) for v in bbox)
    labels = label_objects(binary)
    inside = labels[r0:r1, c0:c1]
    ids, counts = np.unique(inside[inside > 0], return_counts=True)
    if ids.size == 0:
        return np.zeros_like(binary, dtype=bool)
    return labels == ids[np.argmax(counts)]


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
    run = session.scalar(select(ModelRun).where(ModelRun.project_id == item.project_id,
                                                ModelRun.promoted.is_(True)))
    if run is None:
        return None
    image = _get_image(session, item.image_id)
    stored = session.scalar(select(ImageResult.heatmap_path).where(
        ImageResult.run_id == run.id, ImageResult.image_id == item.image_id,
        ImageResult.heatmap_path.is_not(None)))
    if stored is not None:
        heat = storage.read_heatmap(stored)
    elif predict is not None:
        heat = np.asarray(predict(run.run_dir, image.path), dtype=np.float32)
        stored = storage.key(storage.put_heatmap(heat).path)
    else:
        return None
    pixels = item_pixels(session, storage, item, heat.shape)
    if not pixels.any():
        return None
    item.probability = float(heat[pixels].mean())
    item.geometry = {**(item.geometry or {}), "probability_run": run.id, "heatmap": str(stored)}
    session.flush()
    return item.probability


def item_pixels(session: Session, storage: Storage, item: AdjudicationItem,
                shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the object an adjudication item is about.

    Parameters
    ----------
    session : Session
    storage : Storage
    item : AdjudicationItem
    shape : (rows, cols)
        The image's shape, for items that name nothing to look in.

    Returns
    -------
    ndarray of bool, shape ``shape``
        For a ``mask_object``, object ``item.label`` of its mask version. For a predicted
        object (``run_fp``), the component of the run's thresholded heatmap that fills most of
        the item's box. Otherwise (a missed cell, ``run_fn``), the component of the item's
        version (the ground truth it was scored against) filling most of the box. Empty when
        the item names no version or has no box to look in.

    Raises
    ------
    ValueError
        When the version, the object or the run's heatmap the item names is not there.
    """
    if item.kind == "mask_object":
        version = _get_version(session, item.version_id, item.image_id)
        return _object_pixels(storage, {}, version, item.label)
    if item.kind == "run_fp":
        result = session.scalar(select(ImageResult).where(
            ImageResult.run_id == item.run_id, ImageResult.image_id == item.image_id))
        run = session.get(ModelRun, item.run_id)
        if result is None or not result.heatmap_path or item.bbox is None:
            raise ValueError(f"Run {item.run_id} kept no heatmap for image {item.image_id}; "
                             f"the predicted object cannot be drawn.")
        prob = storage.read_heatmap(result.heatmap_path)
        return _component_in_box(prob > (run.threshold or 0.5), item.bbox)
    if item.version_id is None or item.bbox is None:
        return np.zeros(shape, dtype=bool)
    truth = storage.read_mask(_get_version(session, item.version_id, item.image_id).path)
    return _component_in_box(truth, item.bbox)


def decide_adjudication(session: Session, storage: Storage, item_id: int, *, expert: User,
                        verdict: str, reason: str) -> AdjudicationDecision:
    """Settle an item: ``keep`` puts the object in the mask, ``drop`` takes it out.

    The result is a new head version (source ``adjudicated``), approved when the image was
    approved, plus the decision and an audit record. Only experts and admins may decide.
    """
    from db.users import require_role

    require_role(expert, "expert", "admin")
    if verdict not in ("keep", "drop"):
        raise ValueError(f"An expert decides 'keep' or 'drop'; got {verdict!r}.")
    if not (reason or "").strip():
        raise ValueError("Give a reason for the decision; it is kept with the history.")
    item = session.get(AdjudicationItem, item_id)
    if item is None or item.status != "open":
        raise ValueError(f"Adjudication item {item_id} is not waiting for a decision.")
    image = _get_image(session, item.image_id)
    head = head_version(session, image.id)
    mask = (storage.read_mask(head.path) if head is not None
            else np.zeros((image.height, image.width), dtype=bool))
    pixels = item_pixels(session, storage, item, mask.shape)
    mask = (mask | pixels) if verdict == "keep" else (mask & ~pixels)
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
