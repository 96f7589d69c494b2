"""Mask versions, approvals, ground truth and review assignments.

Mask versions form an append-only chain per image; the image row points at its head. Saving
takes the version the edit was based on; if the head moved meanwhile, the save is still kept
(flagged as a conflict, not made the head) and :class:`ConflictError` says which two versions
disagree. **Catch it inside the transaction** so the flagged version is committed::

    with Session(engine) as s, s.begin():
        try:
            save_mask_version(s, storage, image_id, mask, based_on=v, source="manual", author_id=u)
        except ConflictError as err:
            conflict = err          # show err.head_id against err.version_id; make_head() picks

A version is stored as a label image (``Storage.put_mask``: uint16 PNG, one value per cell), so
touching cells stay separate cells; older 0/255 versions are read as their 8-connected components.
A version's objects are those of :mod:`core.objects`; its ``object_count`` (the number of labels
stored) is kept with it.
The ground truth of an image is its latest approved version: the approval with the highest id
(:func:`latest_approvals`, the one query every module uses). A user with an open *blind* review
assignment saves onto the assignment, never onto the head. Object decisions and adjudication
live in :mod:`db.adjudication`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.objects import as_labels, count_objects
from core.strokes import remove_objects
from db import audit
from db.models import MASK_SOURCES, Approval, Image, ImageResult, MaskVersion, ReviewAssignment, User
from db.projects import get_image
from db.storage import Storage
from db.users import require_role

__all__ = ["ConflictError", "MaskProvenance", "save_mask_version", "make_head", "head_version",
           "versions", "get_version", "approve", "ground_truth", "latest_approvals",
           "ground_truth_versions", "scored_version", "assign_review", "assignments",
           "finish_assignment", "assign_double_review", "blind_assignment", "review_version",
           "finish_review"]

log = logging.getLogger(__name__)


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
class MaskProvenance:
    """What predicted a model's mask: stored on its version and carried by the counts CSV.

    Attributes
    ----------
    run_id : int or None
        The run's row.
    threshold : float
        The threshold the run counted with.
    model_sha256 : str or None
        SHA-256 of the model file that predicted it.
    """

    run_id: int | None
    threshold: float
    model_sha256: str | None = None


def get_version(session: Session, version_id: int, image_id: int | None = None) -> MaskVersion:
    """A mask version (of ``image_id`` when given); ValueError when there is none."""
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
                      note: str = "", provenance: MaskProvenance | None = None) -> MaskVersion:
    """Store a new mask version of an image and make it the head if nobody saved meanwhile.

    Parameters
    ----------
    session : Session
    storage : Storage
    image_id : int
    mask : ndarray (rows, cols)
        A label image (0 background, one integer per cell, as edits, imports and models give
        them) or a bool mask (its 8-connected components are the cells); must match the
        image's size. At most 65535 cells.
    based_on : int or None
        The version the edit started from (None for the first version).
    source : {'import', 'auto', 'model', 'manual', 'adjudicated'}
    author_id : int or None
    note : str
    provenance : MaskProvenance, optional
        For a model's mask: the run, threshold and model file that predicted it.

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
        Unknown source, unknown image or version, a mask of the wrong size, or more than
        65535 cells (the message names the image).
    """
    if source not in MASK_SOURCES:
        raise ValueError(f"Unknown mask source {source!r}; use one of {', '.join(MASK_SOURCES)}.")
    image = get_image(session, image_id)
    mask = np.asarray(mask)
    if mask.shape != (image.height, image.width):
        raise ValueError(f"The mask is {mask.shape[::-1]} (width, height) but image "
                         f"{image.original_name or image_id} is {(image.width, image.height)}.")
    if based_on is not None:
        get_version(session, based_on, image_id)
    labels = as_labels(mask, name=f"The mask of image {image.original_name or image_id}")
    stored = storage.put_mask(labels, name=f"The mask of image {image.original_name or image_id}")
    version = MaskVersion(image_id=image_id, parent_id=based_on, source=source, author_id=author_id,
                          path=storage.key(stored.path), sha256=stored.sha256,
                          object_count=count_objects(labels), note=note, conflict=False,
                          run_id=provenance.run_id if provenance else None,
                          threshold=provenance.threshold if provenance else None,
                          model_sha256=provenance.model_sha256 if provenance else None)
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
    image = get_image(session, image_id)
    get_version(session, version_id, image_id)
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
    image = get_image(session, image_id)
    return None if image.head_version_id is None else session.get(MaskVersion, image.head_version_id)


def versions(session: Session, image_id: int) -> list[MaskVersion]:
    """Every version of an image, oldest first."""
    return list(session.scalars(select(MaskVersion).where(MaskVersion.image_id == image_id)
                                .order_by(MaskVersion.id)))


def approve(session: Session, image_id: int, *, user_id: int | None,
            version_id: int | None = None) -> Approval:
    """Approve a version (the head by default) as the image's ground truth."""
    image = get_image(session, image_id)
    version_id = image.head_version_id if version_id is None else version_id
    if version_id is None:
        raise ValueError(f"Image {image.original_name or image_id} has no mask to approve yet.")
    get_version(session, version_id, image_id)
    approval = Approval(image_id=image_id, version_id=version_id, approver_id=user_id)
    session.add(approval)
    if version_id == image.head_version_id:
        image.review_status = "approved"
    session.flush()
    return approval


def latest_approvals():
    """A subquery of every image's latest approval: ``image_id`` and ``version_id``.

    "Latest" is the approval with the highest id (ids grow with time; two approvals in one
    second keep their order). Every ground-truth lookup joins this one subquery.
    """
    newest = (select(Approval.image_id, func.max(Approval.id).label("approval_id"))
              .group_by(Approval.image_id).subquery())
    return (select(Approval.image_id, Approval.version_id)
            .join(newest, Approval.id == newest.c.approval_id).subquery())


def ground_truth(session: Session, image_id: int) -> MaskVersion | None:
    """The latest approved version of an image, or None when nothing was approved."""
    version_id = ground_truth_versions(session, [image_id]).get(image_id)
    return None if version_id is None else session.get(MaskVersion, version_id)


def ground_truth_versions(session: Session, image_ids) -> dict[int, int]:
    """image id -> its latest approved version, for images that have one.

    The ids are bound in pages of 500, so a whole project's images never exceed what a
    database accepts as parameters of one statement.
    """
    ids = sorted({int(i) for i in image_ids})
    gt = latest_approvals()
    out: dict[int, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        out.update(session.execute(select(gt.c.image_id, gt.c.version_id)
                                   .where(gt.c.image_id.in_(chunk))).all())
    return out


def scored_version(session: Session, result: ImageResult) -> MaskVersion | None:
    """The ground truth a run's result was scored against (today's, if it recorded none)."""
    if result.version_id is not None:
        return session.get(MaskVersion, result.version_id)
    return ground_truth(session, result.image_id)


def assign_review(session: Session, image_id: int, user_id: int, *, blind: bool = False,
                  assigned_by: int | None = None) -> ReviewAssignment:
    """Give an image to a user to review; ``blind`` keeps their versions off the head.

    Two blind assignments on one image let two operators count it independently; their
    versions are kept on the assignments for the agreement figures.
    """
    get_image(session, image_id)
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


def finish_review(session: Session, storage: Storage, image_id: int, user: User, *,
                  version_id: int, dropped=()) -> str:
    """Finish a user's review of an image: approve it, or finish their blind review.

    The objects the reviewer dropped leave the mask first (a new ``manual`` version based on
    ``version_id``; every other cell keeps its label). A blind reviewer's count is the version
    on their assignment, so one is always saved there and the assignment is marked done;
    anyone else approves the resulting version.

    Returns
    -------
    str
        A sentence saying what was done.

    Raises
    ------
    ConflictError
        Someone saved a newer version meanwhile (the reviewer's version is kept beside it).
    """
    require_role(user, "operator", "expert", "admin")
    image = get_image(session, image_id)
    dropped = sorted(int(d) for d in dropped)
    blind = blind_assignment(session, image_id, user.id) is not None
    if blind or dropped:
        labels = storage.read_labels(get_version(session, version_id, image_id).path)
        kept = remove_objects(labels, dropped)
        what = "blind review" if blind else "review"
        version_id = save_mask_version(
            session, storage, image_id, kept, based_on=version_id, source="manual",
            author_id=user.id, note=f"{what}: dropped {len(dropped)} object(s)").id
    name = image.original_name or f"image {image_id}"
    if blind:
        finish_assignment(session, image_id, user.id)
        return f"Finished your blind review of {name}."
    approve(session, image_id, user_id=user.id, version_id=version_id)
    return f"Approved {name}."
