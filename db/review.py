"""Review state: the paged review queue, the project's state, counts per image, operator
agreement, and an image's history.

One page of the queue is two indexed queries: the page, with each image's decisions and pending
adjudications counted by correlated subqueries, and the counts per status; it stays well under
100 ms with 10,000 images and 100,000 object decisions (``bench/bench_db.py``).
No query here binds more parameters than a page of images holds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, aliased

from core.density import summarize_groups
from core.objects import label_at
from core.rater_agreement import Agreement, bland_altman
from db.adjudication import visible_decisions
from db.masks import blind_assignment, latest_approvals, review_version
from db.models import (REVIEW_STATUSES, AdjudicationDecision, AdjudicationItem, Approval, Image,
                       ImageResult, MaskVersion, ObjectDecision, ReviewAssignment, User)
from db.projects import ImageFilter, get_image, get_project
from db.runs import promoted_run

__all__ = ["QueueRow", "ReviewPage", "review_queue", "neighbours", "QueuePosition",
           "queue_position", "ReviewScreen", "review_screen", "metadata_values", "project_state",
           "image_counts", "group_summary", "OperatorAgreement", "operator_agreement",
           "image_history", "COUNT_COLUMNS"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueRow:
    """One image in the queue, with its head's count and the work on it."""

    image_id: int
    name: str
    split: str
    status: str
    stain: str | None
    animal: str | None
    region: str | None
    condition: str | None
    head_version_id: int | None
    object_count: int | None
    decisions: int
    unsure: int
    pending_adjudications: int


@dataclass(frozen=True)
class ReviewPage:
    """A page of the queue: its rows, how many images match, and counts by status."""

    rows: list[QueueRow]
    total: int
    page: int
    page_size: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, -(-self.total // self.page_size))


def review_queue(session: Session, project_id: int, filters: ImageFilter = ImageFilter(), *,
                 page: int = 0, page_size: int = 50) -> ReviewPage:
    """One page of a project's images (by id), with totals and counts per review status.

    ``counts`` ignores the status filter, so the page can show how many images are in each
    status beside the one picked.
    """
    if page < 0 or not 1 <= page_size <= 1000:
        raise ValueError(f"Pages start at 0 and hold 1 to 1000 images; got page {page}, "
                         f"size {page_size}.")
    # The work on each image comes as correlated counts in the page query itself, so one page
    # reads one page of rows, whatever the project holds.
    decided = (select(func.count(ObjectDecision.id)).where(ObjectDecision.image_id == Image.id)
               .correlate(Image).scalar_subquery())
    unsure = (select(func.count(ObjectDecision.id)).where(ObjectDecision.image_id == Image.id,
                                                          ObjectDecision.verdict == "unsure")
              .correlate(Image).scalar_subquery())
    pending = (select(func.count(AdjudicationItem.id))
               .where(AdjudicationItem.image_id == Image.id, AdjudicationItem.status == "open")
               .correlate(Image).scalar_subquery())
    # Keyset: the page's first id comes from a narrow, index-only query; the wide one (with its
    # counts) then reads exactly one page, however deep, instead of computing and skipping every
    # row before it.
    start = session.scalar(filters.apply(select(Image.id), project_id).order_by(Image.id)
                           .offset(page * page_size).limit(1))
    found = []
    if start is not None:
        query = (filters.apply(select(Image, MaskVersion.object_count, decided, unsure, pending),
                               project_id)
                 .where(Image.id >= start)
                 .outerjoin(MaskVersion, MaskVersion.id == Image.head_version_id)
                 .order_by(Image.id).limit(page_size))
        found = session.execute(query).all()
    counts = dict(session.execute(filters.apply(
        select(Image.review_status, func.count(Image.id)), project_id, with_status=False)
        .group_by(Image.review_status)).all())
    statuses = REVIEW_STATUSES if filters.status is None else (
        (filters.status,) if isinstance(filters.status, str) else tuple(filters.status))
    total = sum(counts.get(s, 0) for s in statuses)
    rows = [QueueRow(im.id, im.original_name, im.split, im.review_status, im.stain, im.animal,
                     im.region, im.condition, im.head_version_id, n, int(d or 0), int(u or 0),
                     int(p or 0)) for im, n, d, u, p in found]
    return ReviewPage(rows, total, page, page_size, {s: counts.get(s, 0) for s in REVIEW_STATUSES})


def neighbours(session: Session, project_id: int, image_id: int,
               filters: ImageFilter = ImageFilter()) -> tuple[int | None, int | None]:
    """The previous and next image id in the filtered queue (None at either end)."""
    base = filters.apply(select(Image.id), project_id)
    prev_id = session.scalar(base.where(Image.id < image_id).order_by(Image.id.desc()).limit(1))
    next_id = session.scalar(base.where(Image.id > image_id).order_by(Image.id).limit(1))
    return prev_id, next_id


@dataclass(frozen=True)
class QueuePosition:
    """Where an image stands in the filtered queue: its page and its neighbours.

    Attributes
    ----------
    page : ReviewPage
        The page holding ``image_id`` (the first page when the image does not pass the filter).
    image_id : int or None
        The image shown: the one asked for when it passes the filter, else the page's first.
    previous, next : int or None
        The images before and after it in the filtered queue (None at either end).
    """

    page: ReviewPage
    image_id: int | None
    previous: int | None
    next: int | None


def queue_position(session: Session, project_id: int, image_id: int | None,
                   filters: ImageFilter = ImageFilter(), *, page_size: int = 50) -> QueuePosition:
    """The page of the filtered queue that holds ``image_id``, and the images around it.

    What one click on the Review or Correct page reads: a count to find the page, the page
    itself (:func:`review_queue`) and one row on either side, so its cost does not grow with the
    project.
    """
    page = 0
    passes = image_id is not None and session.scalar(
        filters.apply(select(Image.id), project_id).where(Image.id == image_id)) is not None
    if passes:
        before = session.scalar(filters.apply(select(func.count(Image.id)), project_id)
                                .where(Image.id < image_id)) or 0
        page = int(before) // page_size
    found = review_queue(session, project_id, filters, page=page, page_size=page_size)
    if not passes:
        image_id = found.rows[0].image_id if found.rows else None
    previous = following = None
    if image_id is not None:
        previous, following = neighbours(session, project_id, image_id, filters)
    return QueuePosition(found, image_id, previous, following)


@dataclass(frozen=True)
class ReviewScreen:
    """Everything one rerun of the Review page reads from the database.

    Attributes
    ----------
    position : QueuePosition
        The page of the filtered queue, the image shown and its neighbours.
    image : Image or None
        The image shown (None when nothing passes the filter).
    version : MaskVersion or None
        What the user reviews: the head, or their own version on an open blind assignment.
    votes : list of ObjectDecision
        The decisions the user may see on it (only their own while blind).
    blind : bool
        The user holds an open blind assignment on the image.
    """

    position: QueuePosition
    image: Image | None
    version: MaskVersion | None
    votes: list
    blind: bool


def review_screen(session: Session, project_id: int, image_id: int | None, user_id: int,
                  filters: ImageFilter = ImageFilter(), *, page_size: int = 50) -> ReviewScreen:
    """What the Review page shows for one click: one page of the queue and one image.

    Its cost does not grow with the project: at most a page of queue rows and the image's own
    version and votes are read (``tests/db/test_review_click.py`` counts them on SQLite and
    PostgreSQL).
    """
    where = queue_position(session, project_id, image_id, filters, page_size=page_size)
    if where.image_id is None:
        return ReviewScreen(where, None, None, [], False)
    image = get_image(session, where.image_id)
    blind = blind_assignment(session, image.id, user_id) is not None
    return ReviewScreen(where, image, review_version(session, image.id, user_id),
                        visible_decisions(session, image.id, user_id), blind)


#: The metadata the Review page filters by.
METADATA_FIELDS = ("animal", "region", "condition")


def metadata_values(session: Session, project_id: int) -> list[tuple[str, str]]:
    """The distinct (field, value) pairs of the project's animal, region and condition.

    Each field is read by a loose index scan (a recursive query that jumps from one value to the
    next through the ``(project_id, field)`` index), so its cost follows the number of distinct
    values, not of images: a few animals among 100,000 images cost a few index seeks.
    """
    out = []
    for name in METADATA_FIELDS:
        values = session.execute(text(_NEXT_VALUE.format(column=name)), {"p": project_id})
        out += [(name, v) for (v,) in values if v is not None]
    return out


# Each step asks the index for the smallest value above the last one; '' is the floor, so NULL
# and empty values are never listed.
_NEXT_VALUE = """
WITH RECURSIVE found(value) AS (
    SELECT (SELECT min({column}) FROM images WHERE project_id = :p AND {column} > '')
    UNION ALL
    SELECT (SELECT min({column}) FROM images WHERE project_id = :p AND {column} > found.value)
    FROM found WHERE found.value IS NOT NULL
)
SELECT value FROM found WHERE value IS NOT NULL
"""


def project_state(session: Session, project_id: int) -> dict[str, Any]:
    """What the sidebar shows: images, share reviewed, pending adjudications, promoted model.

    Keys: n_images, n_approved, share_reviewed, pending_adjudications, model_run_id,
    model_name, f1, mae.
    """
    counts = dict(session.execute(
        select(Image.review_status, func.count(Image.id))
        .where(Image.project_id == project_id, Image.archived.is_(False))
        .group_by(Image.review_status)).all())
    n = sum(counts.values())
    pending = session.scalar(select(func.count(AdjudicationItem.id)).where(
        AdjudicationItem.project_id == project_id, AdjudicationItem.status == "open")) or 0
    run = promoted_run(session, project_id)
    metrics = (run.metrics or {}) if run is not None else {}
    return {"n_images": n, "n_approved": counts.get("approved", 0),
            "share_reviewed": counts.get("approved", 0) / n if n else 0.0,
            "pending_adjudications": int(pending),
            "model_run_id": run.id if run else None, "model_name": run.name if run else None,
            "f1": metrics.get("f1"), "mae": metrics.get("mae")}


COUNT_COLUMNS = ["image_id", "name", "animal", "region", "condition", "split", "split_locked",
                 "review_status", "area_px", "pixel_size_um", "area_mm2", "count", "approved",
                 "n_pred"]


def image_counts(session: Session, project_id: int, *, run_id: int | None = None,
                 filters: ImageFilter = ImageFilter()) -> pd.DataFrame:
    """Cell counts per image of a project, with the metadata groups are made from.

    ``count`` is the ground truth's (latest approved version) where there is one, else the
    current mask's; ``n_pred`` is the run's count where ``run_id`` is given and scored the
    image. One joined query, whatever the number of images.

    Returns
    -------
    DataFrame
        Columns :data:`COUNT_COLUMNS`; ``split_locked`` is True once a run was scored on the
        image (moving it then needs an admin and a reason). ``pixel_size_um`` is the one the
        image's file records, else the project's; ``area_mm2`` is NaN without either.
    """
    project_um = get_project(session, project_id).pixel_size_um
    gt = latest_approvals()
    truth, head = aliased(MaskVersion), aliased(MaskVersion)
    pred = ImageResult.n_pred if run_id is not None else None
    q = (select(Image, truth.object_count, head.object_count, gt.c.version_id,
                *([pred] if pred is not None else []))
         .outerjoin(gt, gt.c.image_id == Image.id)
         .outerjoin(truth, truth.id == gt.c.version_id)
         .outerjoin(head, head.id == Image.head_version_id))
    if run_id is not None:
        q = q.outerjoin(ImageResult, (ImageResult.image_id == Image.id)
                        & (ImageResult.run_id == run_id))
    rows = []
    for img, n_truth, n_head, gt_version, *n_pred in session.execute(
            filters.apply(q, project_id).order_by(Image.id)).all():
        count = n_truth if gt_version is not None else n_head
        um = img.pixel_size_um or project_um
        rows.append({
            "image_id": img.id, "name": img.original_name or f"image {img.id}",
            "animal": img.animal, "region": img.region, "condition": img.condition,
            "split": img.split, "split_locked": bool(img.split_locked),
            "review_status": img.review_status, "area_px": img.width * img.height,
            "pixel_size_um": um if um else np.nan,
            "area_mm2": img.width * img.height * (um / 1000.0) ** 2 if um else np.nan,
            "count": np.nan if count is None else count, "approved": gt_version is not None,
            "n_pred": n_pred[0] if n_pred and n_pred[0] is not None else np.nan})
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def group_summary(session: Session, project_id: int, by: str, *, run_id: int | None = None,
                  counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts per ``by`` group (``animal``, ``region`` or ``condition``) with density per mm².

    With ``run_id`` the run's predicted counts are summarised (the images it scored); without,
    the ground-truth or current-mask counts of all images. ``counts`` reuses an
    :func:`image_counts` table already loaded.

    Returns
    -------
    DataFrame
        See :func:`core.density.summarize_groups`; density pools each group's cells over its
        area in mm², every image at its own pixel size (the file's, else the project's); NaN
        when an image of the group has no pixel size.
    """
    if by not in ("animal", "region", "condition", "split"):
        raise ValueError(f"Group by animal, region or condition, not {by!r}.")
    get_project(session, project_id)  # a sentence, not an empty table, for an unknown project
    t = counts if counts is not None else image_counts(session, project_id, run_id=run_id)
    column = "count"
    if run_id is not None:
        t, column = t[t["n_pred"].notna()], "n_pred"
    t = t[t[column].notna()].copy()
    # A group's density needs every one of its images' areas: cells over part of the area
    # would overstate it.
    whole = t.groupby(t[by].astype(str), dropna=False)["area_mm2"].transform(
        lambda a: a.notna().all())
    t.loc[~whole.astype(bool), "area_mm2"] = np.nan
    # Areas are already in mm², each image at its own pixel size: read as "pixels" of
    # 1000 µm (1 mm), they give cells per mm² unchanged.
    return summarize_groups(t, by, count=column, area="area_mm2", pixel_size_um=1000.0)


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


def operator_agreement(session: Session, storage, project_id: int) -> OperatorAgreement:
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
                                 .where(Image.project_id == project_id)
                                 .where(Image.id.in_(select(ReviewAssignment.image_id)
                                                     .where(ReviewAssignment.blind.is_(True))))
                                 ).all())
    dq = (select(AdjudicationItem, AdjudicationDecision)
          .join(AdjudicationDecision, AdjudicationDecision.item_id == AdjudicationItem.id)
          .where(AdjudicationItem.project_id == project_id,
                 AdjudicationDecision.verdict.in_(("keep", "drop"))))
    decided: dict[int, list] = {}
    for item, decision in session.execute(dq).all():
        if item.image_id in pairs:
            decided.setdefault(item.image_id, []).append((item, decision.verdict))
    labels: dict[str, Any] = {}
    rows = []
    for image_id, ((va, ua), (vb, ub)) in sorted(pairs.items()):
        after = [va.object_count, vb.object_count]
        for item, verdict in decided.get(image_id, []):
            for i, version in enumerate((va, vb)):
                try:
                    if version.path not in labels:
                        labels[version.path] = storage.read_labels(version.path)
                    present = label_at(labels[version.path], item.centroid_row,
                                       item.centroid_col) != 0
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
                     "decided": len(decided.get(image_id, []))})
    table = pd.DataFrame(rows, columns=cols)
    return OperatorAgreement(table, bland_altman(table["count_a"], table["count_b"]),
                             bland_altman(table["count_a_after"], table["count_b_after"]))


def image_history(session: Session, image_id: int) -> pd.DataFrame:
    """Everything that happened to an image's masks, oldest first.

    Returns
    -------
    DataFrame
        Columns ``at, who, what, detail, version_id``: mask versions (with source, count and,
        for a model's mask, the run and threshold), approvals, operators' votes and experts'
        adjudications (with verdict and reason).
    """
    rows: list[dict[str, Any]] = []
    users = dict(session.execute(select(User.id, User.name)).all())
    for v in session.scalars(select(MaskVersion).where(MaskVersion.image_id == image_id)
                             .order_by(MaskVersion.id)):
        model = (f"; run {v.run_id} at threshold {v.threshold:.3f}" if v.threshold is not None
                 else "")
        rows.append({"at": v.created_at, "who": users.get(v.author_id, ""),
                     "what": f"version ({v.source})",
                     "detail": f"{v.object_count} cells" + model + (f"; {v.note}" if v.note else "")
                     + ("; saved over a newer version" if v.conflict else ""),
                     "version_id": v.id})
    for a in session.scalars(select(Approval).where(Approval.image_id == image_id)
                             .order_by(Approval.id)):
        rows.append({"at": a.created_at, "who": users.get(a.approver_id, ""), "what": "approved",
                     "detail": "", "version_id": a.version_id})
    for d in session.scalars(select(ObjectDecision).where(ObjectDecision.image_id == image_id)
                             .order_by(ObjectDecision.id)):
        rows.append({"at": d.created_at, "who": users.get(d.user_id, ""),
                     "what": f"vote: {d.verdict}",
                     "detail": f"object {d.label} at ({d.centroid_row:.0f}, {d.centroid_col:.0f})"
                     + (f": {d.reason}" if d.reason else ""), "version_id": d.version_id})
    q = (select(AdjudicationDecision, AdjudicationItem)
         .join(AdjudicationItem, AdjudicationItem.id == AdjudicationDecision.item_id)
         .where(AdjudicationItem.image_id == image_id).order_by(AdjudicationDecision.id))
    for d, item in session.execute(q).all():
        rows.append({"at": d.created_at, "who": users.get(d.expert_id, ""),
                     "what": f"adjudicated: {d.verdict}",
                     "detail": f"{item.reason} object at ({item.centroid_row:.0f}, "
                               f"{item.centroid_col:.0f}): {d.reason}",
                     "version_id": d.version_id})
    table = pd.DataFrame(rows, columns=["at", "who", "what", "detail", "version_id"])
    return table.sort_values("at", kind="stable").reset_index(drop=True)
