"""The review queue and the project's state, as the Review page and the sidebar need them.

One page of the queue is three indexed queries (the page, the total and the counts per status),
plus one grouped query over the page's own images for decisions and pending adjudications; it
stays well under 100 ms with 10,000 images and 100,000 object decisions (``bench/bench_db.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (REVIEW_STATUSES, SPLITS, AdjudicationItem, Image, MaskVersion, ModelRun,
                       ObjectDecision, ReviewAssignment)

__all__ = ["ReviewFilter", "QueueRow", "ReviewPage", "review_queue", "neighbours", "project_state"]


@dataclass(frozen=True)
class ReviewFilter:
    """Which images the queue shows; None means any.

    Attributes
    ----------
    status : str or None
        ``to_review``, ``in_progress`` or ``approved``.
    split : str or None
    stain, animal, region, condition : str or None
        Exact metadata values.
    assigned_to : int or None
        Only images assigned to this user (open assignments).
    include_archived : bool
    """

    status: str | None = None
    split: str | None = None
    stain: str | None = None
    animal: str | None = None
    region: str | None = None
    condition: str | None = None
    assigned_to: int | None = None
    include_archived: bool = False

    def __post_init__(self):
        if self.status is not None and self.status not in REVIEW_STATUSES:
            raise ValueError(f"Unknown review status {self.status!r}; use one of "
                             f"{', '.join(REVIEW_STATUSES)}.")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {', '.join(SPLITS)}.")


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


def _filtered(query, project_id: int, filters: ReviewFilter, *, with_status: bool = True):
    query = query.where(Image.project_id == project_id)
    if not filters.include_archived:
        query = query.where(Image.archived.is_(False))
    if with_status and filters.status is not None:
        query = query.where(Image.review_status == filters.status)
    for name in ("split", "stain", "animal", "region", "condition"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(getattr(Image, name) == value)
    if filters.assigned_to is not None:
        query = query.where(Image.id.in_(select(ReviewAssignment.image_id).where(
            ReviewAssignment.user_id == filters.assigned_to, ReviewAssignment.done.is_(False))))
    return query


def _work_on(session: Session, image_ids: list[int]) -> tuple[dict, dict]:
    """Decisions (all, unsure) and open adjudication items per image, for a page's images."""
    if not image_ids:
        return {}, {}
    unsure = func.sum((ObjectDecision.verdict == "unsure").cast(Image.id.type))
    votes = {i: (n, int(u or 0)) for i, n, u in session.execute(
        select(ObjectDecision.image_id, func.count(ObjectDecision.id), unsure)
        .where(ObjectDecision.image_id.in_(image_ids)).group_by(ObjectDecision.image_id))}
    pending = dict(session.execute(
        select(AdjudicationItem.image_id, func.count(AdjudicationItem.id))
        .where(AdjudicationItem.image_id.in_(image_ids), AdjudicationItem.status == "open")
        .group_by(AdjudicationItem.image_id)).all())
    return votes, pending


def review_queue(session: Session, project_id: int, filters: ReviewFilter = ReviewFilter(), *,
                 page: int = 0, page_size: int = 50) -> ReviewPage:
    """One page of a project's images (by id), with totals and counts per review status.

    ``counts`` ignores the status filter, so the page can show how many images are in each
    status beside the one picked.
    """
    if page < 0 or not 1 <= page_size <= 1000:
        raise ValueError(f"Pages start at 0 and hold 1 to 1000 images; got page {page}, "
                         f"size {page_size}.")
    query = (_filtered(select(Image, MaskVersion.object_count), project_id, filters)
             .outerjoin(MaskVersion, MaskVersion.id == Image.head_version_id)
             .order_by(Image.id).limit(page_size).offset(page * page_size))
    found = session.execute(query).all()
    counts = dict(session.execute(_filtered(
        select(Image.review_status, func.count(Image.id)), project_id, filters, with_status=False)
        .group_by(Image.review_status)).all())
    total = (counts.get(filters.status, 0) if filters.status is not None
             else sum(counts.values()))
    votes, pending = _work_on(session, [im.id for im, _ in found])
    rows = [QueueRow(im.id, im.original_name, im.split, im.review_status, im.stain, im.animal,
                     im.region, im.condition, im.head_version_id, n,
                     votes.get(im.id, (0, 0))[0], votes.get(im.id, (0, 0))[1],
                     pending.get(im.id, 0)) for im, n in found]
    return ReviewPage(rows, total, page, page_size, {s: counts.get(s, 0) for s in REVIEW_STATUSES})


def neighbours(session: Session, project_id: int, image_id: int,
               filters: ReviewFilter = ReviewFilter()) -> tuple[int | None, int | None]:
    """The previous and next image id in the filtered queue (None at either end)."""
    base = _filtered(select(Image.id), project_id, filters)
    prev_id = session.scalar(base.where(Image.id < image_id).order_by(Image.id.desc()).limit(1))
    next_id = session.scalar(base.where(Image.id > image_id).order_by(Image.id).limit(1))
    return prev_id, next_id


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
    run = session.scalar(select(ModelRun).where(ModelRun.project_id == project_id,
                                                ModelRun.promoted.is_(True)))
    metrics = (run.metrics or {}) if run is not None else {}
    return {"n_images": n, "n_approved": counts.get("approved", 0),
            "share_reviewed": counts.get("approved", 0) / n if n else 0.0,
            "pending_adjudications": int(pending),
            "model_run_id": run.id if run else None, "model_name": run.name if run else None,
            "f1": metrics.get("f1"), "mae": metrics.get("mae")}
