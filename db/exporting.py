"""Export a project's counts and cells: counts CSV, COCO, VIA-2 and zips of per-image files.

Formats, one mask version per image (each cell = one label of the stored label image):

- ``counts``: CSV, one row per image (:data:`COUNT_COLUMNS`);
- ``masks``: zip of uint16 label PNGs ``masks/<stem>.png`` (0 background, one value per cell),
  plus ``counts.csv``;
- ``labels``: zip of uint16 label TIFFs ``labels/<stem>.tif``, plus ``counts.csv``;
- ``imagej``: zip of ImageJ/Fiji ROI sets ``imagej/<stem>_RoiSet.zip`` (one ROI per cell),
  plus ``counts.csv``;
- ``geojson``: zip of QuPath GeoJSON ``geojson/<stem>.geojson`` (one feature per cell), plus
  ``counts.csv``;
- ``coco``: standard COCO JSON, one annotation per cell (:func:`core.formats.coco_document`);
- ``via``: VIA-2 project JSON, one polygon region per cell (:func:`core.formats.via_document`).

The per-image files (:mod:`core.maskfiles` writers) are what ``python -m db import DIR --masks``
reads back, so an unpacked ``labels/`` (or ``imagej/``, ``geojson/``) folder is a masks folder.

Every export works on the whole project or on a filtered set of images
(:class:`db.projects.ImageFilter`: split, review status, metadata values, ids; the one image
filter of the workbench) and on one mask per image: the current head (default) or the ground
truth (the latest approved version). Images without such a mask are
listed in the counts CSV with an empty count and left out of the mask formats.

Nothing here writes to the database; the caller may use a read-only transaction::

    with Session(engine) as s:
        text = export_counts(s, "FNC yellow", filters=ImageFilter(split="test"))
"""
from __future__ import annotations

import io
import json
import logging
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import formats, maskfiles
from core import io as core_io
from core.plaintext import write_csv
from db.engine import make_engine
from db.masks import latest_approvals
from db.models import AdjudicationItem, Image, MaskVersion, ModelRun, Project, User
from db.projects import ImageFilter, get_project
from db.settings import Settings
from db.storage import Storage

__all__ = ["ExportRow", "EXPORT_KINDS", "FILE_KINDS", "COUNT_COLUMNS", "select_images",
           "count_images", "export_rows", "export_counts", "export_masks_zip", "export_files_zip",
           "export_coco", "export_via", "run_export_cli"]

log = logging.getLogger(__name__)

EXPORT_KINDS = ("counts", "masks", "labels", "imagej", "geojson", "coco", "via")
#: Zips of one file per image: kind -> (folder in the zip, file suffix, writer of the labels).
FILE_KINDS = {"masks": ("masks", ".png", lambda labels: core_io.write_labels(None, labels)),
              "labels": ("labels", ".tif", lambda labels: maskfiles.write_label_tiff(None, labels)),
              "imagej": ("imagej", "_RoiSet.zip",
                         lambda labels: maskfiles.write_imagej_rois(None, labels)),
              "geojson": ("geojson", ".geojson",
                          lambda labels: maskfiles.write_geojson(None, labels))}
COUNT_COLUMNS = ("image", "image_id", "split", "stain", "animal", "region", "condition", "hard",
                 "hand_segmented", "unlabelled", "count", "mask_version", "source", "author",
                 "saved_at", "model_run", "threshold", "review_status", "pending_adjudications",
                 "model_sha256")
_METADATA = ("stain", "animal", "region", "condition")


def _project(session: Session, project: Project | str | int) -> Project:
    return project if isinstance(project, Project) else get_project(session, project)


def select_images(session: Session, project: Project | str | int,
                  filters: ImageFilter | None = None) -> list[Image]:
    """The project's images that pass ``filters``, by id."""
    query = (filters or ImageFilter()).apply(select(Image), _project(session, project).id)
    return list(session.scalars(query.order_by(Image.id)))


def count_images(session: Session, project: Project | str | int,
                 filters: ImageFilter | None = None) -> int:
    """How many of the project's images pass ``filters`` (what an export would hold)."""
    query = (filters or ImageFilter()).apply(select(func.count(Image.id)),
                                             _project(session, project).id)
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class ExportRow:
    """One image with the mask version being exported (None when it has none), its author,
    and the name of the run that predicted it (model masks only)."""

    image: Image
    version: MaskVersion | None
    author: str | None
    run_name: str | None = None


def export_rows(session: Session, project: Project | str | int, *,
                filters: ImageFilter | None = None, which: str = "head") -> list[ExportRow]:
    """Images passing ``filters`` with their head version or ground truth (``which``)."""
    if which not in ("head", "ground_truth"):
        raise ValueError(f"Export which mask {which!r}? Use 'head' or 'ground_truth'.")
    project = _project(session, project)
    if which == "head":
        wanted = Image.head_version_id
        query = select(Image, MaskVersion)
    else:
        gt = latest_approvals()
        wanted = gt.c.version_id
        query = select(Image, MaskVersion).outerjoin(gt, gt.c.image_id == Image.id)
    query = (query.outerjoin(MaskVersion, MaskVersion.id == wanted)
             .outerjoin(User, User.id == MaskVersion.author_id)
             .outerjoin(ModelRun, ModelRun.id == MaskVersion.run_id)
             .add_columns(User.name, ModelRun.name, ModelRun.id))
    query = (filters or ImageFilter()).apply(query, project.id).order_by(Image.id)
    return [ExportRow(im, version, author, (run_name or f"run {run_id}") if run_id else None)
            for im, version, author, run_name, run_id in session.execute(query).all()]


def _pending(session: Session, project_id: int) -> dict[int, int]:
    """Open adjudication items per image of a project."""
    return dict(session.execute(
        select(AdjudicationItem.image_id, func.count(AdjudicationItem.id))
        .where(AdjudicationItem.project_id == project_id, AdjudicationItem.status == "open")
        .group_by(AdjudicationItem.image_id)).all())


def export_counts(session: Session, project: Project | str | int, *,
                  filters: ImageFilter | None = None, which: str = "head") -> str:
    """Counts CSV: one row per image, columns :data:`COUNT_COLUMNS`.

    ``count`` is the object count of the exported mask version (empty when the image has
    none). ``model_run``, ``threshold`` and ``model_sha256`` say which run, at which threshold
    and with which model file, predicted that version; they are empty for a mask that no model
    made (imported, automatic, drawn), so a count is traced to what really produced it.
    """
    project = _project(session, project)
    rows = export_rows(session, project, filters=filters, which=which)
    pending = _pending(session, project.id)
    buffer = io.StringIO()
    write_csv(buffer, COUNT_COLUMNS, (_count_row(row, pending) for row in rows))
    return buffer.getvalue()


def _count_row(row: ExportRow, pending: dict[int, int]) -> dict[str, Any]:
    """One image's line of the counts CSV."""
    im, v = row.image, row.version
    return {
        "image": im.original_name, "image_id": im.id, "split": im.split, "stain": im.stain,
        "animal": im.animal, "region": im.region, "condition": im.condition,
        "hard": int(im.hard), "hand_segmented": int(im.hand_segmented),
        "unlabelled": int(im.unlabelled),
        "count": v.object_count if v else "", "mask_version": v.id if v else "",
        "source": v.source if v else "", "author": row.author or "",
        "saved_at": v.created_at.isoformat(timespec="seconds") if v else "",
        "model_run": row.run_name or "",
        "threshold": "" if v is None or v.threshold is None else f"{v.threshold:g}",
        "review_status": im.review_status, "pending_adjudications": pending.get(im.id, 0),
        "model_sha256": (v.model_sha256 or "") if v else ""}


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


def export_files_zip(session: Session, storage: Storage, project: Project | str | int,
                     kind: str, *, filters: ImageFilter | None = None,
                     which: str = "head") -> bytes:
    """A zip of one file per image that has a mask, in the format ``kind`` names, plus counts.

    Parameters
    ----------
    kind : {'masks', 'labels', 'imagej', 'geojson'}
        uint16 label PNGs, uint16 label TIFFs, ImageJ ROI sets or QuPath GeoJSON
        (:data:`FILE_KINDS`); files are named after their images' stems (a repeated stem gets
        ``_<image id>``) inside a folder named after the kind.
    which : {'head', 'ground_truth'}
        The current mask, or the latest approved one.

    Returns
    -------
    bytes
        The zip, with ``counts.csv`` (:func:`export_counts`) at its root.
    """
    if kind not in FILE_KINDS:
        raise ValueError(f"Unknown file export {kind!r}; use one of {', '.join(FILE_KINDS)}.")
    folder, suffix, write = FILE_KINDS[kind]
    rows = [r for r in export_rows(session, project, filters=filters, which=which) if r.version]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for row, name in _unique_names(rows, suffix):
            stored = storage.resolve(row.version.path)
            data = stored.read_bytes() if kind == "masks" else b""
            if not (kind == "masks" and len(data) > 24 and data[24] == 16):
                # Older 0/255 versions (and every other format) are written from their cells.
                data = write(storage.read_labels(row.version.path))
            zf.writestr(f"{folder}/{name}", data)
        zf.writestr("counts.csv", export_counts(session, project, filters=filters, which=which))
    return buffer.getvalue()


def export_masks_zip(session: Session, storage: Storage, project: Project | str | int, *,
                     filters: ImageFilter | None = None, which: str = "head") -> bytes:
    """A zip of uint16 label PNGs ``masks/<stem>.png`` plus counts.csv (:func:`export_files_zip`).

    A version stored as a label PNG is copied as it is; an older 0/255 one is written as the
    label PNG of its 8-connected components.
    """
    return export_files_zip(session, storage, project, "masks", filters=filters, which=which)


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
        labels = storage.read_labels(row.version.path)
        out.append(formats.ExportImage(im.original_name or f"image_{im.id}.png", labels,
                                       attributes=attrs))
    return out


def export_coco(session: Session, storage: Storage, project: Project | str | int, *,
                filters: ImageFilter | None = None, which: str = "head",
                rle: bool = False) -> dict[str, Any]:
    """Standard COCO: one annotation per cell (label), ``iscrowd`` 0.

    Polygons on pixel corners where one simple polygon is exact, uncompressed column-major RLE
    for cells with holes or several pieces, RLE for all with ``rle=True``
    (:func:`core.formats.coco_document`). Image entries carry the split, stain and metadata as
    extra fields; the single category is named after the project's stain (``yellow cell``...).
    """
    if not isinstance(project, Project):
        project = get_project(session, project)
    images = _export_images(session, storage, project, filters, which)
    return formats.coco_document(images, category=f"{project.stain} cell", rle=rle,
                                 description=f"CellTally project {project.name}")


def export_via(session: Session, storage: Storage, project: Project | str | int, *,
               filters: ImageFilter | None = None, which: str = "head") -> dict[str, Any]:
    """A VIA-2 project: one polygon region per cell, metadata as file attributes.

    A cell that is not one simple polygon gets its largest piece's outer outline (holes filled;
    see :func:`core.formats.via_document`).
    """
    if not isinstance(project, Project):
        project = get_project(session, project)
    images = _export_images(session, storage, project, filters, which)
    return formats.via_document(images, project=project.name)


def _cli_filters(args: Any) -> ImageFilter:
    """An :class:`ImageFilter` from argparse attributes that may or may not exist."""
    meta = {k: getattr(args, k) for k in ("animal", "region", "condition")
            if getattr(args, k, None)}
    for pair in getattr(args, "metadata", None) or []:
        key, _, value = str(pair).partition("=")
        if key.strip() not in ("stain", "animal", "region", "condition"):
            raise ValueError(f"Filter by stain, animal, region or condition, not {key.strip()!r}.")
        meta[key.strip()] = value.strip()
    return ImageFilter(split=getattr(args, "split", None), status=getattr(args, "status", None),
                       include_archived=bool(getattr(args, "archived", False)), **meta)


def run_export_cli(args: Any, settings: Settings, *, out=None) -> int:
    """``python -m db export KIND --project NAME --out PATH [filters]``, KIND in :data:`EXPORT_KINDS`.

    Filters read from ``args`` when present: ``split``, ``status``, ``animal``, ``region``,
    ``condition``, ``metadata`` (``KEY=VALUE`` strings), ``archived``; ``ground_truth`` exports
    approved masks instead of the heads; ``rle`` writes COCO objects as RLE. Returns 0 on success,
    2 with a sentence on stderr when the export cannot be made.
    """
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
    if kind in FILE_KINDS:
        n = sum(1 for r in export_rows(session, project, filters=filters, which=which) if r.version)
        return export_files_zip(session, storage, project, kind, filters=filters, which=which), n
    if kind == "coco":
        doc = export_coco(session, storage, project, filters=filters, which=which,
                          rle=bool(getattr(args, "rle", False)))
    else:
        doc = export_via(session, storage, project, filters=filters, which=which)
    n = len(doc["images"]) if kind == "coco" else len(doc["_via_img_metadata"])
    return json.dumps(doc).encode("utf-8"), n
