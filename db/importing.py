"""Import images and their masks into a project: folders, uploads, FNC v1/v2, VIA and COCO.

Every import is one batch: the caller opens one transaction, this module adds an
:class:`~db.models.ImportBatch` row, registers each image once (by pixel hash), stores the masks
that came with it as the first version (source ``import``), gives the others an automatic mask
(source ``auto``), and writes a report saying, per file, what was imported and what was skipped
and why, in sentences a person can act on. A bad file never stops the batch.

Sources are first *collected* into :class:`ImportItem` records (nothing touches the database),
then :func:`import_items` writes them::

    with Session(engine) as s, s.begin():
        report = import_path(s, settings, "/data/fnc/yellow", project="FNC yellow")
    print(report.summary())

Folder imports only read below ``settings.import_roots``.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sqlalchemy.orm import Session

from core import io as core_io
from core import formats
from db.masks import approve, save_mask_version
from db.models import STAINS, Image, Project
from db.projects import create_batch, finish_batch, get_project, register_image
from db.settings import Settings
from db.storage import Storage

__all__ = ["ImportRefused", "ImportItem", "ImportOptions", "FileOutcome", "ImportReport",
           "Collected", "collect_folder", "collect_uploads", "collect_fnc", "collect_annotations",
           "import_items", "import_path", "import_uploads", "run_import_cli", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
FORMATS = ("folder", "fnc", "via", "coco")
_SPLIT_WORDS = {"train": "train", "trainval": "train", "training": "train", "test": "test",
                "unassigned": "unassigned"}

Progress = Callable[[int, int, str], None]


class ImportRefused(ValueError):
    """The whole import cannot start (a path outside the import roots, an unknown layout...)."""


@dataclass(frozen=True)
class ImportItem:
    """One image to import, with what came with it.

    Attributes
    ----------
    name : str
        The file name shown in the report and stored as the image's original name.
    image : Path or bytes
    mask : Path, bytes or None
        A mask file (nonzero = cell) matched to the image.
    mask_name : str or None
    annotation : formats.AnnotatedImage or None
        Objects from a VIA or COCO file; used when there is no mask file.
    split : {'train', 'test', 'unassigned'} or None
    metadata : dict
        Image metadata (stain, animal, region, condition, unlabelled...).
    """

    name: str
    image: Path | bytes
    mask: Path | bytes | None = None
    mask_name: str | None = None
    annotation: formats.AnnotatedImage | None = None
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportOptions:
    """How to import.

    Attributes
    ----------
    approved : bool or None
        Mark imported masks as approved ground truth. None: yes for FNC (its masks are the
        data set's ground truth), no otherwise.
    prelabel : bool
        Give images that arrive without a mask an automatic threshold mask (source ``auto``).
    prelabel_params : core.prelabel.PrelabelParams or None
        None: the defaults.
    user_id : int or None
        Who imports (recorded on the batch, the mask versions and the approvals).
    categories : tuple of str or None
        COCO category names to import (``--categories``); None: a file must use one category.
    """

    approved: bool | None = None
    prelabel: bool = True
    prelabel_params: Any = None
    user_id: int | None = None
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file.

    Attributes
    ----------
    name : str
    status : {'imported', 'skipped'}
    reason : str
        Empty when imported; else ``corrupt``, ``duplicate``, ``mask size mismatch``,
        ``unknown format``, ``not found``, ``no image``, ``too large`` or ``outside import roots``.
    message : str
        A sentence naming the file, the problem and what to do.
    image_id : int or None
        The image the file became; for a ``duplicate``, the image already in the project
        with the same pixels (callers that only need the image, such as counting, use it).
    mask : str or None
        ``import``, ``auto`` or None (no mask).
    """

    name: str
    status: str
    reason: str
    message: str
    image_id: int | None = None
    mask: str | None = None


def _skip(name: str, reason: str, message: str, image_id: int | None = None) -> FileOutcome:
    return FileOutcome(name, "skipped", reason, message, image_id)


@dataclass
class ImportReport:
    """The report of one import batch.

    Attributes
    ----------
    batch_id : int or None
    source : str
    outcomes : list of FileOutcome
        One per file, in the order they were handled.
    notes : list of str
        Sentences about the import as a whole (folders left out, entries skipped in a JSON).
    """

    batch_id: int | None
    source: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def imported(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "imported"]

    @property
    def skipped(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "skipped"]

    def summary(self) -> str:
        """One sentence: how many imported, how many skipped and why.

        >>> r = ImportReport(1, "x", [FileOutcome("a", "imported", "", "ok"),
        ...     _skip("b", "corrupt", "b is damaged."), _skip("c", "corrupt", "c is damaged.")])
        >>> r.summary()
        'Imported 1 image; skipped 2 files (2 corrupt).'
        """
        n = len(self.imported)
        text = f"Imported {n} image{'s' if n != 1 else ''}"
        skipped = self.skipped
        if not skipped:
            return text + "."
        reasons: dict[str, int] = {}
        for o in skipped:
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
        why = ", ".join(f"{k} {r}" for r, k in reasons.items())
        return f"{text}; skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} ({why})."

    def lines(self) -> list[str]:
        """The summary, then one line per skipped file and per note, for people to read."""
        out = [self.summary()]
        out += [f"- {o.name}: {o.message}" for o in self.skipped]
        out += [f"- {note}" for note in self.notes]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON for the batch row: ``imported`` and ``skipped`` lists, ``notes``, ``summary``."""
        return {"source": self.source, "summary": self.summary(),
                "imported": [{"name": o.name, "image_id": o.image_id, "mask": o.mask}
                             for o in self.imported],
                "skipped": [{"name": o.name, "reason": o.reason, "message": o.message,
                             **({"image_id": o.image_id} if o.image_id is not None else {})}
                            for o in self.skipped],
                "notes": list(self.notes)}


@dataclass(frozen=True)
class Collected:
    """Items ready to import, plus files already turned away while collecting them.

    Attributes
    ----------
    items : list of ImportItem
    skipped : list of FileOutcome
    notes : list of str
    kind : str
        ``folder``, ``uploads``, ``fnc-v1``, ``fnc-v2``, ``via`` or ``coco``.
    """

    items: list[ImportItem]
    skipped: list[FileOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: str = "folder"


# ---------------------------------------------------------------------------------------------
# Where a folder import may read


def check_import_root(path: str | Path, settings: Settings) -> Path:
    """The resolved path, or :class:`ImportRefused` when it lies outside every import root.

    >>> s = Settings(data_dir=Path("/srv/ct"), db_url="sqlite://", import_roots=(Path("/srv/ct"),))
    >>> check_import_root("/srv/ct/in", s)
    PosixPath('/srv/ct/in')
    >>> check_import_root("/etc", s)
    Traceback (most recent call last):
    ...
    db.importing.ImportRefused: /etc is outside the folders CellTally may import from (/srv/ct); move the files below one of them, or add a folder to CELLTALLY_IMPORT_ROOTS.
    """
    resolved = Path(path).expanduser().resolve()
    roots = [Path(r).resolve() for r in (settings.import_roots or (settings.data_dir,))]
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        listed = ", ".join(str(r) for r in roots)
        raise ImportRefused(f"{path} is outside the folders CellTally may import from ({listed}); "
                            f"move the files below one of them, or add a folder to "
                            f"CELLTALLY_IMPORT_ROOTS.")
    return resolved


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether a file (after following links) still lies below one of ``roots``."""
    real = path.resolve()
    return any(real == r or real.is_relative_to(r) for r in roots)


def _files(folder: Path) -> list[Path]:
    """Visible regular files of a folder, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _is_image(path: Path | str) -> bool:
    return Path(str(path)).suffix.lower() in IMAGE_SUFFIXES


def _unknown(name: str) -> FileOutcome:
    return _skip(name, "unknown format",
                 f"{name} is neither an image CellTally reads (PNG, TIFF, JPEG) nor a VIA or "
                 f"COCO JSON file, so it was left out.")


# ---------------------------------------------------------------------------------------------
# Collecting sources into items (no database)


def collect_folder(folder: str | Path, masks: str | Path | None = None) -> Collected:
    """Images of a folder (not its subfolders), each with the mask of the same stem from ``masks``.

    A mask matches an image when its stem equals the image's stem, or the image's stem plus
    ``_mask``. Masks with no image and files that are not images are reported as skipped.
    """
    folder = Path(folder)
    mask_index: dict[str, Path] = {}
    for path in _files(Path(masks)) if masks is not None else []:
        if _is_image(path):
            stem = path.stem[:-5] if path.stem.endswith("_mask") else path.stem
            mask_index[stem] = path
    items, skipped = [], []
    for path in _files(folder):
        if not _is_image(path):
            skipped.append(_unknown(path.name))
            continue
        mask = mask_index.pop(path.stem, None)
        items.append(ImportItem(path.name, path, mask, mask.name if mask else None))
    for stem, path in mask_index.items():
        skipped.append(_skip(path.name, "no image",
                             f"Mask {path.name} has no image called {stem} in {folder}; it was "
                             f"left out. Put the image beside the others or rename the mask."))
    return Collected(items, skipped, [], "folder")


def _fnc_layout(root: Path) -> str | None:
    """``fnc-v1``, ``fnc-v2`` or None for a folder."""
    if (root / "all_images" / "images").is_dir():
        return "fnc-v1"
    tops = [root] + [root / s for s in STAINS]
    if any((t / "trainval").is_dir() or (t / "test").is_dir() for t in tops):
        return "fnc-v2"
    return None


def collect_fnc(root: str | Path, *, stain: str) -> Collected:
    """Items of a Fluorescent Neuronal Cells tree, v1 or v2.

    v1: ``all_images/images/*.png`` with ``all_masks/masks/*.png`` of the same names; splits
    stay unassigned. v2: ``<stain>/{trainval,test}/images`` with
    ``<stain>/{trainval,test}/ground_truths/masks``; trainval becomes ``train``, test ``test``,
    and images under ``<stain>/unlabelled/`` come without masks, flagged unlabelled. ``root``
    may be the data set folder or one stain's folder. Only ``stain``'s images are collected
    (a project is one stain); other stains present are mentioned in the notes.
    """
    root = Path(root)
    layout = _fnc_layout(root)
    if layout == "fnc-v1":
        found = collect_folder(root / "all_images" / "images", root / "all_masks" / "masks")
        items = [replace(i, metadata={"stain": stain, **i.metadata}) for i in found.items]
        return Collected(items, found.skipped, found.notes, "fnc-v1")
    if layout is None:
        raise ImportRefused(f"{root} is not a Fluorescent Neuronal Cells folder: it has neither "
                            f"all_images/images (v1) nor trainval/ or test/ folders (v2). Point "
                            f"the import at the data set's folder, or import it as a plain folder.")
    return _collect_fnc_v2(root, stain)


def _collect_fnc_v2(root: Path, stain: str) -> Collected:
    """See :func:`collect_fnc`; ``root`` is known to hold a v2 layout."""
    notes = []
    if (root / "trainval").is_dir() or (root / "test").is_dir():
        base = root
        if root.name in STAINS and root.name != stain:
            notes.append(f"{root.name}/ holds {root.name} images but the project is {stain}; "
                         f"they were imported with stain {root.name}.")
            stain = root.name
    else:
        base = root / stain
        others = [s for s in STAINS if s != stain and (root / s).is_dir()]
        if not base.is_dir():
            raise ImportRefused(f"{root} has no {stain}/ folder (it has {', '.join(others)}); "
                                f"import it into a project of that stain.")
        if others:
            notes.append(f"{', '.join(o + '/' for o in others)} left out: this project counts "
                         f"{stain} cells; import them into a project of their own.")
    items, skipped = [], []
    for part, split in (("trainval", "train"), ("test", "test")):
        found = collect_folder(base / part / "images", base / part / "ground_truths" / "masks")
        items += [replace(i, split=split, metadata={"stain": stain}) for i in found.items]
        skipped += found.skipped
    unlabelled = base / "unlabelled"
    for path in sorted(unlabelled.rglob("*")) if unlabelled.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            if _is_image(path):
                items.append(ImportItem(path.name, path, split="unassigned",
                                        metadata={"stain": stain, "unlabelled": True}))
            else:
                skipped.append(_unknown(path.name))
    return Collected(items, skipped, notes, "fnc-v2")


def _annotation_split(ann: formats.AnnotatedImage) -> tuple[str | None, dict[str, Any]]:
    """Split and metadata an annotation file carries for an image (our COCO export, FNC v2)."""
    attrs = ann.attributes
    split = _SPLIT_WORDS.get(str(attrs.get("split", "")).lower())
    meta = {k: attrs[k] for k in ("animal", "region", "condition") if attrs.get(k)}
    if str(attrs.get("stain", "")) in STAINS:
        meta["stain"] = attrs["stain"]
    return split, meta


def collect_annotations(path: str | Path, *,
                        categories: Sequence[str] | None = None) -> Collected:
    """Images named in a VIA or COCO file, with their objects.

    ``path`` is the JSON file, or a folder holding one or more. An image is looked for at its
    name relative to the JSON's folder, by its base name there and in ``images/`` below it, and
    the same in up to four parent folders (FNC v2's layout; see :func:`_find_beside`).
    """
    path = Path(path)
    docs = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not docs:
        raise ImportRefused(f"{path} holds no .json file; give the VIA or COCO file itself.")
    items, skipped, notes, kinds = [], [], [], set()
    for doc in docs:
        try:
            kind, images = formats.read_annotations(doc.read_bytes(), name=doc.name,
                                                    categories=categories)
        except formats.CategoryError as exc:
            raise ImportRefused(str(exc)) from None
        except formats.FormatError as exc:
            skipped.append(_skip(doc.name, "unknown format", str(exc)))
            continue
        kinds.add(kind)
        for ann in images:
            notes += list(ann.notes)
            found = _find_beside(doc.parent, ann.file_name, ann.attributes.get("path"))
            if found is None:
                skipped.append(_skip(Path(ann.file_name).name, "not found",
                                     f"{ann.file_name} is named in {doc.name} but is not beside it "
                                     f"(looked in {doc.parent}, four folders up and their images/ "
                                     f"folders); put the image there and import again."))
                continue
            split, meta = _annotation_split(ann)
            items.append(ImportItem(found.name, found, annotation=ann, split=split, metadata=meta))
    kind = kinds.pop() if len(kinds) == 1 else "annotations"
    return Collected(items, skipped, notes, kind)


def _find_beside(folder: Path, file_name: str, stated_path: Any = None) -> Path | None:
    """The image a JSON entry names, looked for next to the JSON file and a few folders up.

    FNC v2 keeps its JSON files in ``<split>/ground_truths/{COCO,VIA}/`` and the images in
    ``<split>/images/``, and its COCO entries state a ``path`` relative to the data set root,
    so the JSON's folder and up to four of its parents are tried, each with ``images/``.
    """
    base = Path(file_name.replace("\\", "/")).name
    tails = [Path(file_name.replace("\\", "/")), Path(base), Path("images") / base]
    if isinstance(stated_path, str) and stated_path:
        tails.append(Path(stated_path.replace("\\", "/")))
    for anchor in [folder, *list(folder.parents)[:4]]:
        for tail in tails:
            candidate = anchor / tail
            if not tail.is_absolute() and candidate.is_file():
                return candidate
    return None


def collect_uploads(files: Iterable[tuple[str, bytes]], *, limit_mb: float = 200) -> Collected:
    """Items from uploaded ``(name, bytes)`` pairs.

    Images are matched with masks named ``<stem>_mask.<ext>`` (or uploaded from a ``masks/``
    folder) and with the objects of any VIA or COCO JSON among the uploads, by stem.
    """
    images: dict[str, tuple[str, bytes]] = {}
    masks: dict[str, tuple[str, bytes]] = {}
    annotations: dict[str, formats.AnnotatedImage] = {}
    skipped: list[FileOutcome] = []
    notes: list[str] = []
    for raw_name, data in files:
        name = Path(str(raw_name).replace("\\", "/"))
        if len(data) > limit_mb * 1024 * 1024:
            skipped.append(_skip(name.name, "too large",
                                 f"{name.name} is {len(data) / 2**20:.0f} MB, above the "
                                 f"{limit_mb:g} MB upload limit; import it from a folder instead."))
        elif name.suffix.lower() == ".json":
            _read_upload_json(name.name, data, annotations, skipped, notes)
        elif not _is_image(name):
            skipped.append(_unknown(name.name))
        elif name.stem.endswith("_mask") or "masks" in name.parts[:-1]:
            stem = name.stem[:-5] if name.stem.endswith("_mask") else name.stem
            masks[stem] = (name.name, data)
        else:
            images[name.stem] = (name.name, data)
    return Collected(_pair_uploads(images, masks, annotations, skipped), skipped, notes, "uploads")


def _read_upload_json(name: str, data: bytes, annotations: dict, skipped: list, notes: list) -> None:
    """Add an uploaded VIA/COCO file's images to ``annotations`` by stem (or report it)."""
    try:
        _kind, images = formats.read_annotations(data, name=name)
    except formats.FormatError as exc:
        skipped.append(_skip(name, "unknown format", str(exc)))
        return
    for ann in images:
        annotations[Path(ann.file_name.replace("\\", "/")).stem] = ann
        notes += list(ann.notes)


def _pair_uploads(images, masks, annotations, skipped) -> list[ImportItem]:
    """Match uploaded images with their masks and annotations."""
    items = []
    for stem, (name, data) in images.items():
        mask = masks.pop(stem, None)
        ann = annotations.get(stem)
        split, meta = _annotation_split(ann) if ann is not None else (None, {})
        items.append(ImportItem(name, data, mask[1] if mask else None, mask[0] if mask else None,
                                ann if mask is None else None, split, meta))
    for stem, (name, _data) in masks.items():
        skipped.append(_skip(name, "no image", f"Mask {name} came without an image called "
                                               f"{stem}; upload them together."))
    return items


# ---------------------------------------------------------------------------------------------
# Writing items into a project


class _Skipped(Exception):
    """Carries the outcome of a file that cannot be imported."""

    def __init__(self, outcome: FileOutcome):
        super().__init__(outcome.message)
        self.outcome = outcome


def import_items(session: Session, storage: Storage, project: Project | str | int,
                 collected: Collected, *, options: ImportOptions = ImportOptions(),
                 source: str = "", progress: Progress | None = None) -> ImportReport:
    """Import collected items as one batch; the caller's transaction commits it.

    Parameters
    ----------
    session : Session
    storage : Storage
    project : Project, name or id
    collected : Collected
        From one of the ``collect_*`` functions.
    options : ImportOptions
    source : str
        Where the files came from, for the batch row.
    progress : callable(done, total, name), optional
        Called after each image.

    Returns
    -------
    ImportReport
        Also stored (as JSON) on the new import batch row.
    """
    if not isinstance(project, Project):
        project = get_project(session, project)
    approved = options.approved if options.approved is not None else collected.kind.startswith("fnc")
    options = replace(options, approved=approved)
    batch = create_batch(session, project.id, user_id=options.user_id,
                         source=source or collected.kind)
    report = ImportReport(batch.id, batch.source, list(collected.skipped), list(collected.notes))
    total = len(collected.items)
    for done, item in enumerate(collected.items, start=1):
        try:
            outcome = _import_one(session, storage, project, batch.id, item, options)
        except _Skipped as skipped:
            outcome = skipped.outcome
        report.outcomes.append(outcome)
        if progress is not None:
            progress(done, total, item.name)
    finish_batch(session, batch, report.to_dict())
    log.info("Import batch %s into %s: %s", batch.id, project.name, report.summary())
    return report


def _import_one(session: Session, storage: Storage, project: Project, batch_id: int,
                item: ImportItem, options: ImportOptions) -> FileOutcome:
    """Validate one item fully, then register it and give it its first mask."""
    rgb, data = _read_image(item)
    mask = _item_mask(item, rgb.shape[:2])
    # The file's own bytes go along: the store keeps an 8-bit RGB PNG as it is (re-encoding
    # a 1600x1200 image costs several times more than the check).
    registered = register_image(session, storage, project.id, rgb, name=item.name,
                                batch_id=batch_id, split=item.split or "unassigned",
                                metadata=item.metadata, encoded=data)
    if not registered.created:
        return _skip(item.name, "duplicate", registered.message, registered.image.id)
    image = registered.image
    kind = _first_mask(session, storage, image, rgb, mask, options)
    said = {"import": " with its mask" + (" (approved ground truth)" if options.approved else ""),
            "auto": " with an automatic mask to review", None: " without a mask"}[kind]
    return FileOutcome(item.name, "imported", "", f"{item.name} imported as image {image.id}{said}.",
                       image.id, kind)


def _read_image(item: ImportItem) -> tuple[np.ndarray, bytes]:
    """The item's pixels and file bytes, or :class:`_Skipped` (corrupt, unknown format)."""
    try:
        data = item.image.read_bytes() if isinstance(item.image, Path) else bytes(item.image)
    except OSError as exc:
        raise _Skipped(_skip(item.name, "not found", f"{item.name} could not be read "
                             f"({exc.strerror}); check that the file is still there.")) from None
    try:
        return core_io.read_image(data, name=item.name), data
    except core_io.ImageError as exc:
        text = str(exc)
        reason = "unknown format" if "reads PNG" in text else "corrupt"
        raise _Skipped(_skip(item.name, reason, text)) from None


def _item_mask(item: ImportItem, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask that came with an item (file or annotation), checked against the image size."""
    if item.mask is not None:
        name = item.mask_name or f"mask of {item.name}"
        try:
            mask = core_io.read_labels(item.mask, name=name)
        except core_io.ImageError as exc:
            raise _Skipped(_skip(item.name, "corrupt", f"{exc} {item.name} was not imported "
                                 f"either; fix the mask and import the pair again.")) from None
        found = mask.shape
    elif item.annotation is not None:
        found = item.annotation.shape or shape
    else:
        return None
    if tuple(found) != tuple(shape):
        raise _Skipped(_skip(item.name, "mask size mismatch", _mismatch_message(item, found, shape)))
    if item.mask is not None:
        return mask
    try:
        return formats.regions_to_labels(item.annotation.regions, shape)
    except formats.FormatError as exc:
        raise _Skipped(_skip(item.name, "corrupt", str(exc))) from None


def _shown(source: Path | bytes | None, name: str) -> str:
    """A file as the report shows it: ``folder/name`` for a file on disk, else its name."""
    if isinstance(source, Path) and source.parent.name:
        return f"{source.parent.name}/{source.name}"
    return name


def _mismatch_message(item: ImportItem, found: Sequence[int], shape: Sequence[int]) -> str:
    """Why an item's mask (or annotations) and image were skipped: which is which, and sizes."""
    image = _shown(item.image, item.name)
    if item.mask is not None:
        what = f"Mask {_shown(item.mask, item.mask_name or 'of ' + item.name)}"
        fix = ("Check that the mask belongs to this image, save it at the image's size, and "
               "import the pair again.")
    else:
        what = f"The annotations of {item.name} describe an image that"
        fix = "Fix the image size in the annotation file and import it again."
    return (f"{what} is {found[1]} x {found[0]} px but image {image} is {shape[1]} x "
            f"{shape[0]} px (width x height); neither was imported. {fix}")


def _first_mask(session: Session, storage: Storage, image: Image, rgb: np.ndarray,
                mask: np.ndarray | None, options: ImportOptions) -> str | None:
    """Store the imported mask (approving it if asked) or an automatic one; its source."""
    if mask is not None:
        version = save_mask_version(session, storage, image.id, mask, based_on=None,
                                    source="import", author_id=options.user_id,
                                    note="imported with the image")
        if options.approved:
            approve(session, image.id, user_id=options.user_id, version_id=version.id)
        return "import"
    if not options.prelabel:
        return None
    from core.prelabel import PrelabelParams, auto_mask

    auto = auto_mask(rgb, options.prelabel_params or PrelabelParams())
    save_mask_version(session, storage, image.id, auto, based_on=None, source="auto",
                      author_id=None, note="automatic threshold mask")
    return "auto"


# ---------------------------------------------------------------------------------------------
# Entry points: a path, uploads, the command line


def _guess_format(path: Path) -> str:
    """``fnc``, ``via`` (any annotation JSON) or ``folder`` for a path."""
    if path.is_file():
        return "via" if path.suffix.lower() == ".json" else "folder"
    if _fnc_layout(path) is not None:
        return "fnc"
    if any(path.glob("*.json")):
        return "via"
    return "folder"


def _collect_path(path: Path, fmt: str, masks: Path | None, stain: str,
                  categories: Sequence[str] | None = None) -> Collected:
    """Collect the items of a path in the given format."""
    if fmt == "fnc":
        return collect_fnc(path, stain=stain)
    if fmt in ("via", "coco"):
        return collect_annotations(path, categories=categories)
    if path.is_file():
        if not _is_image(path):
            return Collected([], [_unknown(path.name)])
        mask = None
        if masks is not None:
            mask = next((m for m in _files(masks) if m.stem in (path.stem, path.stem + "_mask")), None)
        return Collected([ImportItem(path.name, path, mask, mask.name if mask else None)])
    return collect_folder(path, masks)


def _within_roots(collected: Collected, roots: Sequence[Path]) -> Collected:
    """Turn away items whose files lead (through links) outside the import roots."""
    keep, skipped = [], list(collected.skipped)
    for item in collected.items:
        paths = [p for p in (item.image, item.mask) if isinstance(p, Path)]
        if all(_inside(p, roots) for p in paths):
            keep.append(item)
        else:
            skipped.append(_skip(item.name, "outside import roots",
                                 f"{item.name} (or its mask) links to a file outside the import "
                                 f"folders, so it was not read; copy the file itself there."))
    return replace(collected, items=keep, skipped=skipped)


def import_path(session: Session, settings: Settings, path: str | Path, *,
                project: Project | str | int, fmt: str | None = None,
                masks: str | Path | None = None, options: ImportOptions = ImportOptions(),
                progress: Progress | None = None) -> ImportReport:
    """Import a folder, an image file, an FNC tree or a VIA/COCO file as one batch.

    Parameters
    ----------
    session, settings
    path : str or Path
        Must lie below one of ``settings.import_roots``.
    project : Project, name or id
    fmt : {'folder', 'fnc', 'via', 'coco'} or None
        None guesses from the path (FNC layout, JSON files, else a folder of images).
    masks : str or Path, optional
        For ``folder``: a folder of masks matched to the images by file stem.
    options : ImportOptions
    progress : callable(done, total, name), optional

    Raises
    ------
    ImportRefused
        Outside the import roots, missing, an unknown format name, or not the layout asked for.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ImportRefused(f"Unknown import format {fmt!r}; use one of {', '.join(FORMATS)}.")
    root = check_import_root(path, settings)
    masks_dir = check_import_root(masks, settings) if masks is not None else None
    for p in (root, masks_dir):
        if p is not None and not p.exists():
            raise ImportRefused(f"{p} does not exist; check the path.")
    if not isinstance(project, Project):
        project = get_project(session, project)
    fmt = fmt or _guess_format(root)
    roots = [Path(r).resolve() for r in (settings.import_roots or (settings.data_dir,))]
    collected = _within_roots(_collect_path(root, fmt, masks_dir, project.stain,
                                            options.categories), roots)
    return import_items(session, Storage.from_settings(settings), project, collected,
                        options=options, source=f"{collected.kind}: {root}", progress=progress)


def import_uploads(session: Session, settings: Settings, project: Project | str | int,
                   files: Iterable[tuple[str, bytes]], *, options: ImportOptions = ImportOptions(),
                   progress: Progress | None = None) -> ImportReport:
    """Import uploaded ``(name, bytes)`` files as one batch (see :func:`collect_uploads`)."""
    collected = collect_uploads(files, limit_mb=settings.upload_limit_mb)
    return import_items(session, Storage.from_settings(settings), project, collected,
                        options=options, source="upload", progress=progress)


def run_import_cli(args: Any, settings: Settings, *, out=None) -> int:
    """``python -m db import PATH --project NAME [--masks DIR] [--format F] [--approved]
    [--no-prelabel] [--user NAME] [--categories NAME[,NAME]]``.

    Runs the import in one transaction and writes the report. ``--user`` names the person the
    batch, its mask versions and approvals are recorded under. Returns the exit status: 0 when
    the batch ran (even if files were skipped), 2 when the import was refused (including an
    unknown user name).
    """
    from db.engine import make_engine

    out = out or sys.stdout
    engine = make_engine(settings)
    try:
        with Session(engine) as session, session.begin():
            options = ImportOptions(approved=True if getattr(args, "approved", False) else None,
                                    prelabel=not getattr(args, "no_prelabel", False),
                                    user_id=_cli_user_id(session, getattr(args, "user", None)),
                                    categories=_cli_categories(getattr(args, "categories", None)))
            report = import_path(session, settings, args.path, project=args.project,
                                 fmt=getattr(args, "format", None),
                                 masks=getattr(args, "masks", None), options=options,
                                 progress=_log_progress)
    except ValueError as exc:
        sys.stderr.write(f"Import refused: {exc}\n")
        return 2
    finally:
        engine.dispose()
    out.write("\n".join(report.lines()) + "\n")
    return 0


def _cli_categories(text: str | None) -> tuple[str, ...] | None:
    """``--categories a,b`` as names (None when not given)."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    return names or None


def _cli_user_id(session: Session, name: str | None) -> int | None:
    """The id of the user called ``name`` (None for no name), or a ValueError saying who exists."""
    if not name:
        return None
    from db.users import get_user, list_users

    found = get_user(session, name)
    if found is None:
        known = ", ".join(u.name for u in list_users(session)) or "none yet"
        raise ValueError(f"There is no user {name!r} to record the import under (users: "
                         f"{known}); add one with `python -m db user add {name}` or leave out "
                         f"--user.")
    return found.id


def _log_progress(done: int, total: int, name: str) -> None:
    """Progress for the command line: a log line every 25 images and at the end."""
    if done == total or done % 25 == 0:
        log.info("Imported %d of %d (%s).", done, total, name)


def import_for_count(session: Session, settings: Settings, project_id: int, *, uploads=None,
                     folder=None, user_id: int | None = None) -> tuple[list[tuple[str, int]], list[dict]]:
    """Register the images to count (uploaded ``(name, bytes)`` pairs, or a folder below an
    import root) as one import batch, without automatic masks.

    Images already in the project are counted as they are. Writes rows: the caller commits.

    Returns
    -------
    images : list of (name, image id)
    problems : list of dict
        ``file, problem``: every file that cannot be counted, with the sentence saying why.

    Raises
    ------
    ValueError
        The folder lies outside the import roots or does not exist (``ImportRefused``).
    """
    options = ImportOptions(prelabel=False, approved=False, user_id=user_id)
    if folder:
        report = import_path(session, settings, folder, project=project_id, fmt="folder",
                             options=options)
    else:
        uploads = list(uploads or [])
        if not uploads:
            raise ValueError("Choose at least one image to count.")
        report = import_uploads(session, settings, project_id, uploads, options=options)
    images, problems = [], []
    for o in report.outcomes:
        # A duplicate names the image already holding its pixels: that one is counted.
        if o.image_id is not None and (o.status == "imported" or o.reason == "duplicate"):
            images.append((o.name, int(o.image_id)))
        else:
            problems.append({"file": o.name, "problem": o.message})
    problems += [{"file": "", "problem": note} for note in report.notes]
    return images, problems
