"""Export a project's counts and masks: counts CSV, masks zip, standard COCO, VIA-2 JSON.

Every export works on the whole project or on a filtered set of images (:class:`ExportFilter`:
split, review status, metadata values, ids) and on one mask per image: the current head
(default) or the ground truth (the latest approved version). Images without such a mask are
listed in the counts CSV with an empty count and left out of the mask formats.

Nothing here writes to the database; the caller may use a read-only transaction::

    with Session(engine) as s:
        text = export_counts(s, "FNC yellow", filters=ExportFilter(split="test"))
"""
from __future__ import annotations

import csv
import io
import json
import logging
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import formats
from db.masks import label_objects
from db.models import (REVIEW_STATUSES, SPLITS, AdjudicationItem, Approval, Image, MaskVersion,
                       ModelRun, Project, User)
from db.projects import get_project
from db.settings import Settings
from db.storage import Storage

__all__ = ["ExportFilter", "ExportRow", "EXPORT_KINDS", "COUNT_COLUMNS", "select_images",
           "export_rows", "export_counts", "export_masks_zip", "export_coco", "export_via",
           "run_export_cli"]

log = logging.getLogger(__name__)

EXPORT_KINDS = ("counts", "masks", "coco", "via")
COUNT_COLUMNS = ("image", "image_id", "split", "stain", "animal", "region", "condition", "hard",
                 "hand_segmented", "unlabelled", "count", "mask_version", "source", "author",
                 "saved_at", "model_run", "threshold", "review_status", "pending_adjudications")
_METADATA = ("stain", "animal", "region", "condition")


@dataclass(frozen=True)
class ExportFilter:
    """Which images to export.

    Attributes
    ----------
    split : str or None
        ``train``, ``test`` or ``unassigned``.
    status : str or None
        Review status: ``to_review``, ``in_progress`` or ``approved``.
    metadata : dict
        Exact values of ``stain``, ``animal``, ``region`` or ``condition``.
    image_ids : tuple of int or None
    include_archived : bool
        Archived batches are left out unless this is set.
    """

    split: str | None = None
    status: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    image_ids: tuple[int, ...] | None = None
    include_archived: bool = False

    def check(self) -> None:
        """Raise ValueError with a sentence for a value no image can have."""
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {', '.join(SPLITS)}.")
        if self.status is not None and self.status not in REVIEW_STATUSES:
            raise ValueError(f"Unknown review status {self.status!r}; use one of "
                             f"{', '.join(REVIEW_STATUSES)}.")
        unknown = set(self.metadata) - set(_METADATA)
        if unknown:
            raise ValueError(f"Cannot filter on {sorted(unknown)}; use {', '.join(_METADATA)}.")


def select_images(session: Session, project: Project | str | int,
                  filters: ExportFilter | None = None) -> list[Image]:
    """The project's images that pass ``filters``, by id."""
    filters = filters or ExportFilter()
    filters.check()
    if not isinstance(project, Project):
        project = get_project(session, project)
    query = select(Image).where(Image.project_id == project.id)
    if not filters.include_archived:
        query = query.where(Image.archived.is_(False))
    if filters.split is not None:
        query = query.where(Image.split == filters.split)
    if filters.status is not None:
        query = query.where(Image.review_status == filters.status)
    for key, value in filters.metadata.items():
        query = query.where(getattr(Image, key) == value)
    if filters.image_ids is not None:
        query = query.where(Image.id.in_(list(filters.image_ids)))
    return list(session.scalars(query.order_by(Image.id)))


@dataclass(frozen=True)
class ExportRow:
    """One image with the mask version being exported (None when it has none)."""

    image: Image
    version: MaskVersion | None
    author: str | None


def export_rows(session: Session, project: Project | str | int, *,
                filters: ExportFilter | None = None, which: str = "head") -> list[ExportRow]:
    """Images passing ``filters`` with their head version or ground truth (``which``)."""
    if which not in ("head", "ground_truth"):
        raise ValueError(f"Export which mask {which!r}? Use 'head' or 'ground_truth'.")
    images = select_images(session, project, filters)
    ids = [im.id for im in images]
    if which == "head":
        wanted = {im.id: im.head_version_id for im in images}
    else:
        latest = (select(Approval.image_id, func.max(Approval.id).label("aid"))
                  .where(Approval.image_id.in_(ids)).group_by(Approval.image_id).subquery())
        wanted = dict(session.execute(select(Approval.image_id, Approval.version_id)
                                      .join(latest, Approval.id == latest.c.aid)).all())
    version_ids = [v for v in wanted.values() if v is not None]
    versions = {v.id: v for v in session.scalars(
        select(MaskVersion).where(MaskVersion.id.in_(version_ids)))} if version_ids else {}
    authors = dict(session.execute(select(User.id, User.name)).all())
    rows = []
    for im in images:
        version = versions.get(wanted.get(im.id))
        author = authors.get(version.author_id) if version is not None else None
        rows.append(ExportRow(im, version, author))
    return rows


def _promoted_run(session: Session, project_id: int) -> ModelRun | None:
    """The project's promoted model run (the newest one if several are flagged)."""
    return session.scalar(select(ModelRun).where(ModelRun.project_id == project_id,
                                                 ModelRun.promoted.is_(True))
                          .order_by(ModelRun.id.desc()).limit(1))


def _pending(session: Session, image_ids: list[int]) -> dict[int, int]:
    """Open adjudication items per image."""
    if not image_ids:
        return {}
    return dict(session.execute(
        select(AdjudicationItem.image_id, func.count(AdjudicationItem.id))
        .where(AdjudicationItem.image_id.in_(image_ids), AdjudicationItem.status == "open")
        .group_by(AdjudicationItem.image_id)).all())


def export_counts(session: Session, project: Project | str | int, *,
                  filters: ExportFilter | None = None, which: str = "head") -> str:
    """Counts CSV: one row per image, columns :data:`COUNT_COLUMNS`.

    ``count`` is the object count of the exported mask version (empty when the image has
    none); ``model_run`` and ``threshold`` stamp the project's promoted model, so a count can be
    traced to what produced and reviewed it.
    """
    if not isinstance(project, Project):
        project = get_project(session, project)
    rows = export_rows(session, project, filters=filters, which=which)
    run = _promoted_run(session, project.id)
    pending = _pending(session, [r.image.id for r in rows])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COUNT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        im, v = row.image, row.version
        writer.writerow({
            "image": im.original_name, "image_id": im.id, "split": im.split, "stain": im.stain,
            "animal": im.animal, "region": im.region, "condition": im.condition,
            "hard": int(im.hard), "hand_segmented": int(im.hand_segmented),
            "unlabelled": int(im.unlabelled),
            "count": v.object_count if v else "", "mask_version": v.id if v else "",
            "source": v.source if v else "", "author": row.author or "",
            "saved_at": v.created_at.isoformat(timespec="seconds") if v else "",
            "model_run": (run.name or f"run {run.id}") if run else "",
            "threshold": "" if run is None or run.threshold is None else f"{run.threshold:g}",
            "review_status": im.review_status, "pending_adjudications": pending.get(im.id, 0)})
    return buffer.getvalue()


def _unique_names(rows: Iterable[ExportRow], suffix: str) -> list[tuple[ExportRow, str]]:
    """A file name per row from the original name's stem; repeats get ``_<image id>``."""
    seen: set[str] = set()
    out = []
    for row in rows:
        stem = Path(row.image.original_name or f"image_{row.image.id}").stem
        name = f"{stem}{suffix}"
        if name in seen:
            name = f"{stem}_{row.image.id}{suffix}"
        seen.add(name)
        out.append((row, name))
    return out


def export_masks_zip(session: Session, storage: Storage, project: Project | str | int, *,
                     filters: ExportFilter | None = None, which: str = "head") -> bytes:
    """A zip of 0/255 PNG masks named after their images (``<stem>.png``), plus counts.csv."""
    rows = [r for r in export_rows(session, project, filters=filters, which=which) if r.version]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for row, name in _unique_names(rows, ".png"):
            # Stored masks are already 0/255 PNGs: copy the file rather than re-encode it.
            zf.writestr(f"masks/{name}", storage.resolve(row.version.path).read_bytes())
        zf.writestr("counts.csv", export_counts(session, project, filters=filters, which=which))
    return buffer.getvalue()


def _export_images(session: Session, storage: Storage, project, filters, which):
    """:class:`formats.ExportImage` for every exported image that has a mask."""
    out = []
    for row in export_rows(session, project, filters=filters, which=which):
        if row.version is None:
            continue
        im = row.image
        attrs = {"celltally_image_id": im.id, "split": im.split, "mask_version": row.version.id,
                 "source": row.version.source, "review_status": im.review_status}
        attrs.update({k: getattr(im, k) for k in _METADATA if getattr(im, k)})
        labels = label_objects(storage.read_mask(row.version.path))
        out.append(formats.ExportImage(im.original_name or f"image_{im.id}.png", labels,
                                       attributes=attrs))
    return out


def export_coco(session: Session, storage: Storage, project: Project | str | int, *,
                filters: ExportFilter | None = None, which: str = "head",
                rle: bool = False) -> dict[str, Any]:
    """Standard COCO: one annotation per object (polygon, or RLE with ``rle=True``).

    Image entries carry the split, stain and metadata as extra fields; the single category is
    named after the project's stain (``yellow cell``...).
    """
    if not isinstance(project, Project):
        project = get_project(session, project)
    images = _export_images(session, storage, project, filters, which)
    return formats.coco_document(images, category=f"{project.stain} cell", rle=rle,
                                 description=f"CellTally project {project.name}")


def export_via(session: Session, storage: Storage, project: Project | str | int, *,
               filters: ExportFilter | None = None, which: str = "head") -> dict[str, Any]:
    """A VIA-2 project: one polygon region per object, metadata as file attributes."""
    if not isinstance(project, Project):
        project = get_project(session, project)
    images = _export_images(session, storage, project, filters, which)
    return formats.via_document(images, project=project.name)


def _cli_filters(args: Any) -> ExportFilter:
    """An :class:`ExportFilter` from argparse attributes that may or may not exist."""
    meta = {k: getattr(args, k) for k in ("animal", "region", "condition")
            if getattr(args, k, None)}
    for pair in getattr(args, "metadata", None) or []:
        key, _, value = str(pair).partition("=")
        meta[key.strip()] = value.strip()
    return ExportFilter(split=getattr(args, "split", None), status=getattr(args, "status", None),
                        metadata=meta, include_archived=bool(getattr(args, "archived", False)))


def run_export_cli(args: Any, settings: Settings, *, out=None) -> int:
    """``python -m db export counts|masks|coco|via --project NAME --out PATH [filters]``.

    Filters read from ``args`` when present: ``split``, ``status``, ``animal``, ``region``,
    ``condition``, ``metadata`` (``KEY=VALUE`` strings), ``archived``; ``ground_truth`` exports
    approved masks instead of the heads; ``rle`` writes COCO objects as RLE. Returns 0 on success,
    2 with a sentence on stderr when the export cannot be made.
    """
    from db.engine import make_engine

    out = out or sys.stdout
    which = "ground_truth" if getattr(args, "ground_truth", False) else "head"
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            data, n = _export_kind(session, Storage.from_settings(settings), args, which)
        target = Path(args.out)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"Export failed: {exc}\n")
        return 2
    finally:
        engine.dispose()
    out.write(f"Wrote {args.kind} for {n} image{'s' if n != 1 else ''} to {args.out}.\n")
    return 0


def _export_kind(session: Session, storage: Storage, args: Any, which: str) -> tuple[bytes, int]:
    """The bytes of one export kind and how many images it covers."""
    kind, filters = args.kind, _cli_filters(args)
    if kind not in EXPORT_KINDS:
        raise ValueError(f"Unknown export {kind!r}; use one of {', '.join(EXPORT_KINDS)}.")
    project = get_project(session, args.project)
    if kind == "counts":
        text = export_counts(session, project, filters=filters, which=which)
        return text.encode("utf-8"), text.count("\n") - 1
    if kind == "masks":
        n = sum(1 for r in export_rows(session, project, filters=filters, which=which) if r.version)
        return export_masks_zip(session, storage, project, filters=filters, which=which), n
    if kind == "coco":
        doc = export_coco(session, storage, project, filters=filters, which=which,
                          rle=bool(getattr(args, "rle", False)))
    else:
        doc = export_via(session, storage, project, filters=filters, which=which)
    n = len(doc["images"]) if kind == "coco" else len(doc["_via_img_metadata"])
    return json.dumps(doc).encode("utf-8"), n
