"""Projects, import batches, image registration, metadata and splits.

An image is stored once per project by the hash of its pixels: registering the same picture
again returns the existing row and says so. Splits are assigned by an admin (a seeded random
share, or by hand); once a run has been scored on a test image its split is locked, and moving a
locked image needs an admin, a reason, and leaves an audit record.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import io as core_io
from db import audit
from db.models import (IMPORT_STATUSES, REVIEW_STATUSES, SPLITS, STAINS, Image, ImportBatch,
                       Project, ReviewAssignment, User, utcnow)
from db.storage import Storage
from db.users import require_role

__all__ = ["get_image", "find_image", "read_image_pixels", "ImageFilter", "create_project",
           "set_pixel_size", "get_project", "list_projects", "read_options", "describe_read_options",
           "parse_fnc_name", "Registered", "StoredImage", "store_image", "add_image",
           "register_image", "create_batch", "finish_batch", "touch_batch", "interrupt_batch",
           "unfinished_batch", "batch_state", "archive_batch", "restore_batch", "list_batches",
           "update_metadata", "assign_random_splits", "random_splits", "set_split",
           "move_splits", "lock_splits", "METADATA_FIELDS", "BATCH_STALE_AFTER_S"]

log = logging.getLogger(__name__)

METADATA_FIELDS = ("stain", "animal", "region", "condition", "hard", "hand_segmented", "unlabelled")
#: A running import batch untouched for this long has lost its process: it shows as interrupted.
BATCH_STALE_AFTER_S = 600
_STAIN_LETTER = {"y": "yellow", "r": "red", "g": "green"}
# FNC names look like 'Mar19bS1C4R3_DMR_200x_y.png': animal, slice/col/row, brain region,
# magnification and a stain letter (v2); some v1 names lack the stain letter.
_FNC = re.compile(r"^(?P<animal>[A-Z][a-z]{2}\d{1,2}[a-z]?)S\d+C\d+R\d+_(?P<region>[A-Za-z]+)"
                  r"(?:_\d+x)?(?:_(?P<stain>[yrg]))?(?:_\w+)?$")


def create_project(session: Session, name: str, *, stain: str, pixel_size_um: float | None = None,
                   read: core_io.ReadOptions | None = None,
                   actor_id: int | None = None) -> Project:
    """Create a project for one stain (yellow, red or green).

    Parameters
    ----------
    name, stain : str
    pixel_size_um : float, optional
        Micrometres per pixel, for images whose files do not record it.
    read : core.io.ReadOptions, optional
        How microscopy files become RGB: ``channel`` (shown in the stain's colour) or
        ``composition``, and ``display_range``. Its ``stain`` and ``z`` are not kept (the
        project's stain colours the channel; the plane is chosen per import).
    actor_id : int, optional
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("A project needs a name.")
    if stain not in STAINS:
        raise ValueError(f"Unknown stain {stain!r}; use one of {', '.join(STAINS)}.")
    if pixel_size_um is not None and not (pixel_size_um > 0 and math.isfinite(pixel_size_um)):
        raise ValueError(f"The pixel size must be positive (µm per pixel); got {pixel_size_um}.")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise ValueError(f"A project called {name!r} already exists; pick another name.")
    read = read or core_io.ReadOptions()
    low, high = read.display_range or (None, None)
    composition = (",".join("-" if k is None else str(k) for k in read.composition)
                   if read.composition is not None else None)
    project = Project(name=name, stain=stain, pixel_size_um=pixel_size_um,
                      read_channel=read.channel, read_composition=composition, read_low=low,
                      read_high=high)
    session.add(project)
    session.flush()
    audit.record(session, user_id=actor_id, action="project.create", entity="projects",
                 entity_id=project.id, detail={"name": name, "stain": stain,
                                               "read": describe_read_options(project)})
    return project


def set_pixel_size(session: Session, project_id: int, pixel_size_um: float | None, *,
                   actor: User) -> Project:
    """Set (or, with None, clear) a project's pixel size, in micrometres per pixel (admins only).

    It is the size of the images whose files record none: densities (cells per mm²) use it
    from then on. Images whose files record their own size keep it. The change is audited.

    Raises
    ------
    PermissionError
        When ``actor`` is not an admin.
    ValueError
        When the size is not a positive number, or there is no such project.
    """
    require_role(actor, "admin")
    if pixel_size_um is not None:
        try:
            pixel_size_um = float(pixel_size_um)
        except (TypeError, ValueError):
            pixel_size_um = math.nan
        if not (pixel_size_um > 0 and math.isfinite(pixel_size_um)):
            raise ValueError(f"The pixel size must be a positive number of µm per pixel (e.g. "
                             f"0.65); got {pixel_size_um}. Leave it empty if it is unknown.")
    project = get_project(session, int(project_id))
    before = project.pixel_size_um
    project.pixel_size_um = pixel_size_um
    session.flush()
    audit.record(session, user_id=actor.id, action="project.pixel_size", entity="projects",
                 entity_id=project.id, detail={"from": before, "to": pixel_size_um})
    return project


def read_options(project: Project, *, z: int | str | None = None) -> core_io.ReadOptions:
    """How this project reads microscopy files (``core.io.ReadOptions``), with plane ``z``.

    A chosen channel is shown in the project's stain colour; without one, files are read as
    they are (RGB stays RGB, one channel is grey).

    >>> p = Project(name="p", stain="yellow", read_channel=1, read_low=100.0, read_high=4000.0)
    >>> read_options(p, z="max")
    ReadOptions(channel=1, display_range=(100.0, 4000.0), stain='yellow', composition=None, z='max')
    >>> read_options(Project(name="q", stain="red", read_composition="2,-,0"))
    ReadOptions(channel=None, display_range=None, stain='grey', composition=(2, None, 0), z=None)
    """
    shown = None if project.read_low is None or project.read_high is None else (
        f"{project.read_low}:{project.read_high}")
    options = core_io.ReadOptions.from_text(channel=project.read_channel, display_range=shown,
                                            composition=project.read_composition, z=z)
    if project.read_channel is not None:
        options = dataclasses.replace(options, stain=project.stain)
    return options


def describe_read_options(project: Project) -> str:
    """The project's reading settings in words, for the Import page and the audit log.

    >>> describe_read_options(Project(name="p", stain="red", read_channel=0))
    'channel 0 in red; scaled by the depth each file declares'
    >>> describe_read_options(Project(name="q", stain="red"))
    'as stored (RGB as RGB, one channel in grey); scaled by the depth each file declares'
    """
    if project.read_channel is not None:
        which = f"channel {project.read_channel} in {project.stain}"
    elif project.read_composition:
        which = f"composition {project.read_composition} (red, green, blue)"
    else:
        which = "as stored (RGB as RGB, one channel in grey)"
    if project.read_low is not None and project.read_high is not None:
        return f"{which}; fixed display range {project.read_low:g} to {project.read_high:g}"
    return f"{which}; scaled by the depth each file declares"


def get_project(session: Session, name_or_id: str | int) -> Project:
    """A project by id or name; ValueError naming the known projects when there is none."""
    if isinstance(name_or_id, int):
        project = session.get(Project, name_or_id)
    else:
        project = session.scalar(select(Project).where(Project.name == name_or_id))
    if project is None:
        known = ", ".join(p.name for p in list_projects(session)) or "none yet"
        raise ValueError(f"There is no project {name_or_id!r} (projects: {known}).")
    return project


def get_image(session: Session, image_id: int) -> Image:
    """An image's row (path, size, metadata, split, head version); ValueError when there is none."""
    image = session.get(Image, image_id)
    if image is None:
        raise ValueError(f"There is no image with id {image_id}; pick another from the list.")
    return image


def read_image_pixels(session: Session, storage: Storage, image_id: int) -> np.ndarray:
    """An image of a project as uint8 RGB; ValueError naming the file when it cannot be read."""
    image = get_image(session, image_id)
    try:
        return storage.read_image(image.path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{image.original_name or image.path} cannot be read: {exc}. "
                         "Import it again.") from exc


def find_image(session: Session, image_id: int) -> Image | None:
    """An image's row, or None when there is none."""
    return session.get(Image, image_id)


def _values(value) -> tuple | None:
    return None if value is None else ((value,) if isinstance(value, str) else tuple(value))


@dataclass(frozen=True)
class ImageFilter:
    """Which images of a project a list, a page of the review queue or an export holds.

    Every field is a condition; None means any. ``status`` and ``split`` take one value or
    several.

    Attributes
    ----------
    status : str or tuple of str, optional
        ``to_review``, ``in_progress``, ``approved``.
    split : str or tuple of str, optional
        ``train``, ``test``, ``unassigned``.
    stain, animal, region, condition : str, optional
        Exact metadata values.
    assigned_to : int, optional
        Only images assigned to this user (open review assignments).
    image_ids : tuple of int, optional
    include_archived : bool
        Archived batches are left out unless this is set.
    """

    status: str | tuple[str, ...] | None = None
    split: str | tuple[str, ...] | None = None
    stain: str | None = None
    animal: str | None = None
    region: str | None = None
    condition: str | None = None
    assigned_to: int | None = None
    image_ids: tuple[int, ...] | None = None
    include_archived: bool = False

    def __post_init__(self):
        for name, allowed in (("status", REVIEW_STATUSES), ("split", SPLITS)):
            bad = [v for v in _values(getattr(self, name)) or () if v not in allowed]
            if bad:
                what = "review status" if name == "status" else "split"
                raise ValueError(f"Unknown {what} {bad[0]!r}; use one of {', '.join(allowed)}.")

    def apply(self, query, project_id: int, *, with_status: bool = True):
        """``query`` (over :class:`Image`) narrowed to the project's images that pass."""
        query = query.where(Image.project_id == project_id)
        if not self.include_archived:
            query = query.where(Image.archived.is_(False))
        if with_status and self.status is not None:
            query = query.where(Image.review_status.in_(_values(self.status)))
        if self.split is not None:
            query = query.where(Image.split.in_(_values(self.split)))
        for name in ("stain", "animal", "region", "condition"):
            if getattr(self, name) is not None:
                query = query.where(getattr(Image, name) == getattr(self, name))
        if self.assigned_to is not None:
            query = query.where(Image.id.in_(select(ReviewAssignment.image_id).where(
                ReviewAssignment.user_id == self.assigned_to, ReviewAssignment.done.is_(False))))
        if self.image_ids is not None:
            query = query.where(Image.id.in_([int(i) for i in self.image_ids]))
        return query


def list_projects(session: Session) -> list[Project]:
    """Every project, by name."""
    return list(session.scalars(select(Project).order_by(Project.name)))


def parse_fnc_name(name: str) -> dict[str, str]:
    """Metadata from an FNC-like file name; an empty dict when the name does not fit.

    >>> parse_fnc_name("Mar19bS1C4R3_DMR_200x_y.png")
    {'animal': 'Mar19b', 'region': 'DMR', 'stain': 'yellow'}
    >>> parse_fnc_name("scan 7.tif")
    {}
    """
    match = _FNC.match(Path(name).stem)
    if match is None:
        return {}
    out = {"animal": match["animal"], "region": match["region"]}
    if match["stain"]:
        out["stain"] = _STAIN_LETTER[match["stain"]]
    return out


@dataclass(frozen=True)
class Registered:
    """What :func:`register_image` did.

    Attributes
    ----------
    image : Image
    created : bool
        False when the same pixels were already in the project (nothing changed).
    message : str
        A sentence for the import report.
    """

    image: Image
    created: bool
    message: str


@dataclass(frozen=True)
class StoredImage:
    """An image file already in the store, ready to be registered (:func:`add_image`).

    Attributes
    ----------
    sha256 : str
        Hash of its pixels (what makes it the same image in a project).
    path : str
        Its storage key.
    rows, cols : int
    pixel_size_um : float or None
        Micrometres per pixel the file records (the side of a square pixel of the same area).
    read_info : dict or None
        How the file was read (``core.io.ImageInfo`` as a dict).
    """

    sha256: str
    path: str
    rows: int
    cols: int
    pixel_size_um: float | None = None
    read_info: dict[str, Any] | None = None


def store_image(storage: Storage, rgb: np.ndarray, *, encoded: bytes | None = None,
                info: core_io.ImageInfo | None = None) -> StoredImage:
    """Put an image's pixels in the store (once per content); touches no database.

    Done before the transaction that registers the image, so that no file is written while
    the database is locked.

    Examples
    --------
    >>> import tempfile
    >>> stored = store_image(Storage(tempfile.mkdtemp()), np.zeros((2, 3, 3), np.uint8))
    >>> stored.path[:7], stored.rows, stored.cols
    ('images/', 2, 3)
    """
    stored = storage.put_image(rgb, encoded=encoded)
    size = None
    if info is not None and info.pixel_size_um is not None:
        size = math.sqrt(info.pixel_size_um[0] * info.pixel_size_um[1])
    return StoredImage(stored.sha256, storage.key(stored.path), int(rgb.shape[0]),
                       int(rgb.shape[1]), size,
                       dataclasses.asdict(info) if info is not None else None)


def add_image(session: Session, project_id: int, stored: StoredImage, *, name: str = "",
              batch_id: int | None = None, split: str = "unassigned",
              metadata: dict[str, Any] | None = None) -> Registered:
    """Register an image already in the store; the same pixels twice are one image.

    Reads and writes rows only (no file), so an import can call it inside a short
    transaction. ``metadata`` values (:data:`METADATA_FIELDS`) override what the name gives.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    project = get_project(session, project_id)
    found = session.scalar(select(Image).where(Image.project_id == project.id,
                                               Image.sha256 == stored.sha256))
    if found is not None:
        return Registered(found, False, f"{name or 'The image'} is already in the project as image "
                          f"{found.id} ({found.original_name}); nothing was changed.")
    fields = {"stain": project.stain, **parse_fnc_name(name), **(metadata or {})}
    unknown = set(fields) - set(METADATA_FIELDS)
    if unknown:
        raise ValueError(f"Unknown metadata {sorted(unknown)}; use {', '.join(METADATA_FIELDS)}.")
    image = Image(project_id=project.id, batch_id=batch_id, sha256=stored.sha256,
                  path=stored.path, original_name=name, width=stored.cols, height=stored.rows,
                  split=split, review_status="to_review", pixel_size_um=stored.pixel_size_um,
                  read_info=stored.read_info, **fields)
    session.add(image)
    session.flush()
    return Registered(image, True, f"{name or 'image'} imported as image {image.id}.")


def register_image(session: Session, storage: Storage, project_id: int, source: Any, *,
                   name: str | None = None, batch_id: int | None = None, split: str = "unassigned",
                   metadata: dict[str, Any] | None = None,
                   encoded: bytes | None = None) -> Registered:
    """Store an image once and add it to a project (:func:`store_image`, :func:`add_image`).

    Parameters
    ----------
    source : ndarray, path, bytes or file object
        An RGB uint8 array already read, or anything ``core.io.read_image`` reads.
    encoded : bytes, optional
        The file an array ``source`` was read from, handed to ``Storage.put_image`` so an
        8-bit RGB PNG is kept as it is (bytes given as ``source`` are used so already).
    name : str, optional
        The original file name (metadata is parsed from it where it looks like FNC's).
    split : {'train', 'test', 'unassigned'}
    metadata : dict, optional
        Values for :data:`METADATA_FIELDS`; they override what the name gives.

    Raises
    ------
    core.io.ImageError
        The file is not a readable image (corrupt, truncated, unknown format).
    """
    if name is None and isinstance(source, (str, Path)):
        name = Path(source).name
    rgb = source if isinstance(source, np.ndarray) else core_io.read_image(source, name=name)
    if encoded is None and isinstance(source, (bytes, bytearray)):
        encoded = bytes(source)
    return add_image(session, project_id, store_image(storage, np.asarray(rgb), encoded=encoded),
                     name=name or "", batch_id=batch_id, split=split, metadata=metadata)


def create_batch(session: Session, project_id: int, *, user_id: int | None, source: str,
                 status: str = "running") -> ImportBatch:
    """Open an import batch (one per import; the importer fills its report)."""
    if status not in IMPORT_STATUSES:
        raise ValueError(f"Unknown batch status {status!r}; use one of "
                         f"{', '.join(IMPORT_STATUSES)}.")
    get_project(session, project_id)
    batch = ImportBatch(project_id=project_id, user_id=user_id, source=source, report={},
                        status=status, updated_at=utcnow())
    session.add(batch)
    session.flush()
    return batch


def finish_batch(session: Session, batch: ImportBatch, report: dict[str, Any]) -> ImportBatch:
    """Store an import batch's report (imported, skipped and why), mark it done, audit it."""
    batch.report = dict(report)
    batch.status, batch.updated_at = "done", utcnow()
    session.flush()
    audit.record(session, user_id=batch.user_id, action="import", entity="import_batches",
                 entity_id=batch.id, detail={"source": batch.source,
                                             "imported": len(report.get("imported", []))})
    return batch


def touch_batch(session: Session, batch_id: int, *, status: str = "running") -> None:
    """Stamp a batch as alive (with each committed image), or set it ``interrupted``."""
    session.execute(update(ImportBatch).where(ImportBatch.id == batch_id)
                    .values(status=status, updated_at=utcnow())
                    .execution_options(synchronize_session=False))


def interrupt_batch(session: Session, batch_id: int) -> None:
    """Mark a batch interrupted: its import stopped before the end (run it again to finish)."""
    touch_batch(session, batch_id, status="interrupted")


def unfinished_batch(session: Session, project_id: int, source: str) -> ImportBatch | None:
    """The newest batch of the same source and project that never finished, if any."""
    return session.scalar(select(ImportBatch).where(
        ImportBatch.project_id == project_id, ImportBatch.source == source,
        ImportBatch.status != "done", ImportBatch.archived.is_(False))
        .order_by(ImportBatch.id.desc()).limit(1))


def batch_state(batch: ImportBatch, *, now: dt.datetime | None = None) -> str:
    """``done``, ``running`` or ``interrupted`` for a batch, as the Import page lists it.

    A running batch untouched for :data:`BATCH_STALE_AFTER_S` lost its process (killed, or
    the machine stopped): it is interrupted, and running the same import again completes it.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> b = ImportBatch(status="running", updated_at=t)
    >>> [batch_state(b, now=t + dt.timedelta(seconds=s)) for s in (5, 3600)]
    ['running', 'interrupted']
    """
    if batch.status != "running":
        return batch.status or "done"
    now = now or utcnow()
    fresh = batch.updated_at is not None and (
        now - batch.updated_at).total_seconds() < BATCH_STALE_AFTER_S
    return "running" if fresh else "interrupted"


def list_batches(session: Session, project_id: int) -> list[ImportBatch]:
    """A project's import batches, newest first."""
    return list(session.scalars(select(ImportBatch).where(ImportBatch.project_id == project_id)
                                .order_by(ImportBatch.id.desc())))


def _set_archived(session: Session, batch_id: int, archived: bool, actor_id: int | None) -> int:
    batch = session.get(ImportBatch, batch_id)
    if batch is None:
        raise ValueError(f"There is no import batch {batch_id}.")
    batch.archived = archived
    batch.archived_at = utcnow() if archived else None
    n = session.execute(update(Image).where(Image.batch_id == batch_id)
                        .values(archived=archived)).rowcount
    audit.record(session, user_id=actor_id, action="batch.archive" if archived else "batch.restore",
                 entity="import_batches", entity_id=batch_id, detail={"images": n})
    return n


def archive_batch(session: Session, batch_id: int, *, actor_id: int | None = None) -> int:
    """Hide a batch's images from every list (nothing is deleted); returns how many."""
    return _set_archived(session, batch_id, True, actor_id)


def restore_batch(session: Session, batch_id: int, *, actor_id: int | None = None) -> int:
    """Show an archived batch's images again; returns how many."""
    return _set_archived(session, batch_id, False, actor_id)


def update_metadata(session: Session, image_id: int, *, actor_id: int | None = None,
                    **fields: Any) -> Image:
    """Edit an image's metadata or flags (see :data:`METADATA_FIELDS`); audited."""
    unknown = set(fields) - set(METADATA_FIELDS)
    if unknown:
        raise ValueError(f"Cannot edit {sorted(unknown)}; editable: {', '.join(METADATA_FIELDS)}.")
    image = session.get(Image, image_id)
    if image is None:
        raise ValueError(f"There is no image with id {image_id}.")
    old = {k: getattr(image, k) for k in fields}
    for key, value in fields.items():
        setattr(image, key, value)
    session.flush()
    audit.record(session, user_id=actor_id, action="image.metadata", entity="images",
                 entity_id=image_id, detail={"from": old, "to": fields})
    return image


def assign_random_splits(session: Session, project_id: int, *, test_share: float, seed: int,
                         actor: User, only_unassigned: bool = True) -> dict[str, int]:
    """Assign a seeded random share of a project's unlocked images to test, the rest to train.

    Returns the number of images now in each split. Admins only.
    """
    require_role(actor, "admin")
    return random_splits(session, project_id, test_share=test_share, seed=seed,
                         actor_id=actor.id, only_unassigned=only_unassigned)


def random_splits(session: Session, project_id: int, *, test_share: float, seed: int,
                  actor_id: int | None, only_unassigned: bool = True) -> dict[str, int]:
    """:func:`assign_random_splits` without the role check, audited under ``actor_id``.

    For the command line, whose user holds the database itself (None: no user named); the app
    calls :func:`assign_random_splits`. Locked and archived images are never moved.
    """
    if not 0.0 <= test_share <= 1.0:
        raise ValueError(f"The test share is a fraction between 0 and 1; got {test_share}.")
    query = select(Image.id).where(Image.project_id == project_id, Image.split_locked.is_(False),
                                   Image.archived.is_(False))
    if only_unassigned:
        query = query.where(Image.split == "unassigned")
    ids = np.array(sorted(session.scalars(query)), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(ids.size)
    n_test = int(round(test_share * ids.size))
    test_ids, train_ids = ids[order[:n_test]].tolist(), ids[order[n_test:]].tolist()
    for split, chosen in (("test", test_ids), ("train", train_ids)):
        if chosen:
            session.execute(update(Image).where(Image.id.in_(chosen)).values(split=split))
    audit.record(session, user_id=actor_id, action="split.random", entity="projects",
                 entity_id=project_id, detail={"test_share": test_share, "seed": seed,
                                               "test": len(test_ids), "train": len(train_ids)})
    return {"test": len(test_ids), "train": len(train_ids)}


def set_split(session: Session, image_ids: list[int], split: str, *, actor: User,
              reason: str = "") -> int:
    """Move images to a split by hand (admins only); returns how many moved.

    Locked images (a run was scored on them) move only with a reason, which is logged.
    """
    require_role(actor, "admin")
    return move_splits(session, image_ids, split, actor_id=actor.id, reason=reason)


def move_splits(session: Session, image_ids: list[int], split: str, *, actor_id: int | None,
                reason: str = "") -> int:
    """:func:`set_split` without the role check, audited under ``actor_id`` (the command line).

    Locked images still move only with a reason.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    images = list(session.scalars(select(Image).where(Image.id.in_(list(image_ids)))))
    locked = [im for im in images if im.split_locked and im.split != split]
    if locked and not reason.strip():
        names = ", ".join(im.original_name or str(im.id) for im in locked[:5])
        raise ValueError(f"{len(locked)} image(s) are locked because a run was scored on them "
                         f"({names}); give a reason to move them anyway.")
    moved = 0
    for image in images:
        if image.split == split:
            continue
        audit.record(session, user_id=actor_id, action="split.move", entity="images",
                     entity_id=image.id, detail={"from": image.split, "to": split,
                                                 "locked": image.split_locked, "reason": reason})
        image.split = split
        moved += 1
    session.flush()
    return moved


def lock_splits(session: Session, image_ids: list[int]) -> None:
    """Lock the split of images a run was scored on."""
    if image_ids:
        session.execute(update(Image).where(Image.id.in_(list(image_ids)))
                        .values(split_locked=True))
