"""Import images and their masks into a project: folders, uploads, FNC v1/v2, VIA and COCO.

Every import is one batch: this module adds an :class:`~db.models.ImportBatch` row, registers
each image once (by pixel hash), stores the masks that came with it as the first version (source
``import``), gives the others an automatic mask (source ``auto``), and writes a report saying, per
file, what was imported and what was skipped and why, in sentences a person can act on. A bad
file never stops the batch.

Sources are first *collected* into :class:`ImportItem` records (nothing touches the database),
then :func:`import_items` writes them. Given an engine, each image is committed in its own short
transaction (the documented exception to "functions never commit"): the file is read, decoded
and stored first, and the transaction only writes rows, so the database is never locked for
longer than a few rows take. An interrupted import leaves its batch ``interrupted``; running the
same import again completes it. Given a session, everything happens in the caller's
transaction::

    report = import_path(engine, settings, "/data/fnc/yellow", project="FNC yellow",
                         anywhere=True)
    print(report.summary())

Masks come as files next to the images or in a masks folder (Cellpose ``_seg.npy``, ImageJ
``.roi``/``.zip``, QuPath ``.geojson``, label or binary TIFF/PNG; see :mod:`core.maskfiles`), or
as VIA/COCO annotations. A mask file that cannot be used is named in the report with the reason,
and its image is not given an automatic mask in its place.

Browser imports read only below ``settings.import_roots``; the command line reads any folder the
person running it can read (``anywhere=True``).
"""
from __future__ import annotations

import io
import logging
import os
import struct
import sys
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import tifffile
from PIL import Image as PILImage
from sqlalchemy import Engine, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import formats, maskfiles
from core import io as core_io
from db.engine import commit_retrying
from db.masks import approve, save_mask_version, versions
from db.models import STAINS, Approval, Image, ImportBatch, MaskVersion, Project
from db.projects import (StoredImage, add_image, batch_state, create_batch, finish_batch,
                         get_project, interrupt_batch, read_options, store_image, touch_batch,
                         unfinished_batch)
from db.settings import Settings
from db.storage import Storage, pixel_hash

__all__ = ["ImportRefused", "ImportItem", "ImportOptions", "FileOutcome", "ImportReport",
           "Collected", "collect_folder", "collect_uploads", "collect_fnc", "collect_annotations",
           "import_items", "import_path", "import_uploads", "run_import_cli", "store_for_count",
           "import_counted", "check_import_root", "IMAGE_SUFFIXES", "MIN_SIDE"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
# Read only to be refused with their own reason and the fix (export as OME-TIFF).
_MICROSCOPE_SUFFIXES = (".czi", ".nd2", ".lif")
FORMATS = ("folder", "fnc", "via", "coco")
#: Images narrower or lower than this are refused: they hold no cell, and pages cannot show them.
MIN_SIDE = 2
_SPLIT_WORDS = {"train": "train", "trainval": "train", "training": "train", "test": "test",
                "unassigned": "unassigned"}
_HUMAN_SOURCES = ("manual", "adjudicated")
# A file's pixel size differing from the project's by more than this share is noted.
_PIXEL_SIZE_TOLERANCE = 0.01
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

Progress = Callable[[int, int, str], None]


class ImportRefused(ValueError):
    """The whole import cannot start (a path outside the import roots, an unknown layout...)."""


@dataclass(frozen=True)
class ImportItem:
    """One image to import, with what came with it.

    Attributes
    ----------
    name : str
        The file name shown in the report and stored as the image's original name (control
        characters and undecodable bytes replaced by U+FFFD).
    image : Path or bytes
    mask : Path, bytes or None
        A mask file matched to the image (any kind :mod:`core.maskfiles` reads).
    mask_name : str or None
    mask_kind : str or None
        A :data:`core.maskfiles.KINDS` key; None takes it from ``mask_name``.
    annotation : formats.AnnotatedImage or None
        Objects from a VIA or COCO file; used when there is no mask file.
    split : {'train', 'test', 'unassigned'} or None
    metadata : dict
        Image metadata (stain, animal, region, condition, unlabelled...).
    note : str
        A sentence the report adds to this file's outcome (an FNC image without its mask).
    pixel_size_um : float or None
        The pixel size, when the file itself does not state it (a counted image kept as the
        store's PNG remembers the size its original file stated).
    """

    name: str
    image: Path | bytes
    mask: Path | bytes | None = None
    mask_name: str | None = None
    mask_kind: str | None = None
    annotation: formats.AnnotatedImage | None = None
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    pixel_size_um: float | None = None


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
    z : int, 'max' or None
        For Z-stacks and multi-page TIFFs: the plane to use (from 0) or the maximum projection.
        Without it such files are refused (reason ``several planes``).
    categories : tuple of str or None
        COCO category names to import (``--categories``); None: a file must use one category.
    """

    approved: bool | None = None
    prelabel: bool = True
    prelabel_params: Any = None
    user_id: int | None = None
    z: int | str | None = None
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file.

    Attributes
    ----------
    name : str
    status : {'imported', 'updated', 'skipped'}
        ``updated``: the pixels were already in the project, and the mask that came with them
        was added to that image as a new version.
    reason : str
        Empty when imported; else ``corrupt``, ``duplicate``, ``mask size mismatch``,
        ``unknown format``, ``microscope format`` (CZI, ND2, LIF), ``several planes`` (a
        Z-stack or multi-page TIFF without a plane chosen), ``several channels`` (no channel
        chosen, or one the file lacks), ``two masks``, ``unusable mask``, ``not found``,
        ``no image``, ``too large``, ``too small`` or ``outside import roots``.
    message : str
        A sentence naming the file, the problem and what to do.
    image_id : int or None
        The image the file became; for a ``duplicate``, the image already in the project
        with the same pixels (callers that only need the image, such as counting, use it).
    mask : str or None
        ``import``, ``auto`` or None (no mask).
    read : dict or None
        How the image file was read: ``format``, ``channels``, ``z``, ``scaling``,
        ``scaling_note``, ``pixel_size_um`` (see ``core.io.ImageInfo``).
    notes : tuple of str
        Further sentences about this file (clipped values, a pixel size differing from the
        project's, mask cells cut at the edge...).
    """

    name: str
    status: str
    reason: str
    message: str
    image_id: int | None = None
    mask: str | None = None
    read: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()


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
    def updated(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "updated"]

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
        if self.updated:
            k = len(self.updated)
            text += (f"; added the mask that came with {k} file{'s' if k != 1 else ''} to the "
                     f"image{'s' if k != 1 else ''} already holding {'their' if k != 1 else 'its'} "
                     f"pixels")
        skipped = self.skipped
        if not skipped:
            return text + "."
        reasons: dict[str, int] = {}
        for o in skipped:
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
        why = ", ".join(f"{k} {r}" for r, k in reasons.items())
        return f"{text}; skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} ({why})."

    def read_lines(self) -> list[str]:
        """How the images were read, one line per distinct way (channels, plane, scaling).

        >>> r = ImportReport(1, "x", [FileOutcome("a.tif", "imported", "", "ok", read={
        ...     "channels": "channel 1 in yellow", "z": None,
        ...     "scaling_note": "8-bit values were used as stored."})])
        >>> r.read_lines()
        ['Read 1 image (a.tif): channel 1 in yellow; 8-bit values were used as stored.']
        """
        groups: dict[str, list[str]] = {}
        for o in self.outcomes:
            if o.status == "imported" and o.read:
                how = "; ".join(str(o.read[k]) for k in ("channels", "z", "scaling_note")
                                if o.read.get(k))
                groups.setdefault(how, []).append(o.name)
        out = []
        for how, names in groups.items():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            out.append(f"Read {len(names)} image{'s' if len(names) != 1 else ''} ({shown}): {how}")
        return out

    def all_notes(self) -> list[str]:
        """The notes of every file, then those about the import as a whole."""
        return [n for o in self.outcomes for n in o.notes] + list(self.notes)

    def lines(self) -> list[str]:
        """The summary, then one line per file skipped or updated, how the images were read,
        and every note, for people to read."""
        out = [self.summary()]
        out += [f"- {o.name}: {o.message}" for o in self.outcomes if o.status != "imported"]
        out += [f"- {line}" for line in self.read_lines()]
        out += [f"- {note}" for note in self.all_notes()]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON for the batch row: ``imported``, ``updated`` and ``skipped`` lists, ``notes``,
        ``summary`` (text cleaned of characters a database refuses)."""
        def entry(o: FileOutcome) -> dict[str, Any]:
            out = {"name": o.name, "image_id": o.image_id, "mask": o.mask}
            if o.status != "imported":
                out.update(reason=o.reason, message=o.message)
            if o.read:
                out["read"] = o.read
            if o.notes:
                out["notes"] = list(o.notes)
            return out

        return _clean_json({"source": self.source, "summary": self.summary(),
                            "imported": [entry(o) for o in self.imported],
                            "updated": [entry(o) for o in self.updated],
                            "skipped": [entry(o) for o in self.skipped],
                            "notes": self.all_notes()})


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
    max_pixels : int or None
        Images whose header states more pixels per plane are refused unread (uploads);
        None keeps ``core.io.MAX_PIXELS``.
    resumable : bool
        Whether running the same import again completes an interrupted batch of the same
        source (a path names the same files again; uploads do not).
    as_stored : bool
        The files are the store's own RGB PNGs (counted images added to their project): they
        are read as they are, since the project's reading settings were applied when they
        were first read.
    """

    items: list[ImportItem]
    skipped: list[FileOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: str = "folder"
    max_pixels: int | None = None
    resumable: bool = True
    as_stored: bool = False


# ---------------------------------------------------------------------------------------------
# Names and where a folder import may read


def _clean(text: str) -> str:
    """Text with control characters and undecodable bytes replaced by U+FFFD.

    A file name may hold a NUL byte or bytes that are not UTF-8 (Python keeps them as lone
    surrogates); PostgreSQL refuses both, SQLite the second, so names are cleaned once, here.

    >>> _clean("cells\\x00.png"), _clean("z\\udce4hler.png"), _clean("Zähler.png")
    ('cells\\ufffd.png', 'z\\ufffdhler.png', 'Zähler.png')
    """
    return "".join("\ufffd" if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n"
                   else ch for ch in str(text))


def _clean_json(value: Any) -> Any:
    """``value`` with every string in it cleaned (:func:`_clean`)."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return value


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
    roots = _roots(settings)
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        listed = ", ".join(str(r) for r in roots)
        raise ImportRefused(f"{path} is outside the folders CellTally may import from ({listed}); "
                            f"move the files below one of them, or add a folder to "
                            f"CELLTALLY_IMPORT_ROOTS.")
    return resolved


def _roots(settings: Settings) -> list[Path]:
    return [Path(r).resolve() for r in (settings.import_roots or (settings.data_dir,))]


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
    return Path(str(path)).suffix.lower() in IMAGE_SUFFIXES + _MICROSCOPE_SUFFIXES


def _unknown(name: str) -> FileOutcome:
    return _skip(name, "unknown format",
                 f"{name} is neither an image CellTally reads (PNG, TIFF, JPEG), a mask file "
                 f"(Cellpose, ImageJ, QuPath) nor a VIA or COCO JSON file, so it was left out.")


# ---------------------------------------------------------------------------------------------
# Pairing images with mask files


def _mask_stem(name: str, image_stems: set[str]) -> str | None:
    """The image an image-like file (``a_mask.tif``, ``a_labels.png``) is the mask of, if any.

    >>> _mask_stem("a_mask.png", {"a", "b"}), _mask_stem("b.png", {"a", "b"})
    ('a', None)
    """
    stem = Path(name).stem
    for suffix in maskfiles.MASK_SUFFIXES:
        if stem.lower().endswith(suffix) and stem[:-len(suffix)] in image_stems:
            return stem[:-len(suffix)]
    return None


def _stems_of(name: str) -> list[str]:
    """The stems masks may name an image by: ``a`` for ``a.png``; ``a.ome`` and ``a`` for
    ``a.ome.tif`` (Cellpose keeps ``.ome``, people and QuPath's exports often drop it).

    >>> _stems_of("a.png"), _stems_of("b.ome.tif")
    (['a'], ['b.ome', 'b'])
    """
    stem = Path(name).stem
    if stem.lower().endswith(".ome") and len(stem) > 4:
        return [stem, stem[:-4]]
    return [stem]


def _split_masks(names: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """(images, mask files, other files) among the names of one folder or upload.

    Cellpose, ImageJ and QuPath files are masks; an image file is a mask when its name is
    another image's name plus a mask ending (``_mask``, ``_labels``...).
    """
    names = list(names)
    images = [n for n in names if _is_image(n)]
    tools = [n for n in names if not _is_image(n) and maskfiles.mask_kind(n) is not None]
    others = [n for n in names if not _is_image(n) and maskfiles.mask_kind(n) is None]
    plain = {stem for n in images for stem in _stems_of(n)}
    masks = [n for n in images if _mask_stem(n, plain) is not None]
    return [n for n in images if n not in masks], masks + tools, others


def _pair(images: list[tuple[str, Any]], masks: dict[str, Any], where: str
          ) -> tuple[list[ImportItem], list[FileOutcome]]:
    """Items for ``(name, source)`` images with their mask files (``{name: source}``).

    An image with two candidate masks is refused naming both (it would otherwise get an
    automatic mask in their place); every mask file without an image is named with the reason.
    """
    match = maskfiles.match_mask_files([s for n, _ in images for s in _stems_of(n)], masks)
    items, skipped = [], []
    for name, source in images:
        stems = _stems_of(name)
        refused = [match.refused[s] for s in stems if s in match.refused]
        found = [match.found[s] for s in stems if s in match.found]
        if len(found) > 1:
            refused.append(f"{name} has 2 mask files, {found[0].name} and {found[1].name}; keep "
                           f"one of them.")
        if refused:
            skipped.append(_skip(_clean(name), "two masks", f"{_clean(refused[0])} "
                                 f"{_clean(name)} was not imported, so that it does not get an "
                                 f"automatic mask in their place."))
            continue
        found = found[0] if found else None
        items.append(ImportItem(_clean(name), source, masks[found.name] if found else None,
                                _clean(found.name) if found else None,
                                found.kind if found else None))
    for name, why in match.unusable.items():
        reason = "no image" if maskfiles.mask_kind(name) is not None else "unusable mask"
        skipped.append(_skip(_clean(name), reason, f"{_clean(why)} (in {where})"))
    return items, skipped


# ---------------------------------------------------------------------------------------------
# Collecting sources into items (no database)


def collect_folder(folder: str | Path, masks: str | Path | None = None) -> Collected:
    """Images of a folder (not its subfolders), each with its mask file, if any.

    Mask files are taken from ``masks`` when given, else from the folder itself: Cellpose
    ``<stem>_seg.npy``, ImageJ ``<stem>.roi``/``<stem>.zip``/``<stem>_RoiSet.zip``, QuPath
    ``<stem>.geojson``, and label or binary TIFF/PNG masks named ``<stem>.png`` (in a masks
    folder) or ``<stem>_mask.png``, ``<stem>_labels.tif``... (see
    :func:`core.maskfiles.match_mask_files`). Files that are neither images nor usable masks
    are reported as skipped, with the reason.
    """
    folder = Path(folder)
    files = {p.name: p for p in _files(folder)}
    images, own_masks, others = _split_masks(files)
    skipped = [_unknown(_clean(n)) for n in others]
    if masks is None:
        candidates = {n: files[n] for n in own_masks}
    else:
        masks = Path(masks)
        same = masks.resolve() == folder.resolve()
        candidates = {p.name: p for p in _files(masks) if not (same and p.name in images)}
        for name in own_masks if not same else []:
            skipped.append(_skip(_clean(name), "unusable mask",
                                 f"{_clean(name)} is a mask file among the images, but masks "
                                 f"were taken from {masks}; move it there to use it."))
    items, refused = _pair([(n, files[n]) for n in images], candidates,
                           str(masks if masks is not None else folder))
    return Collected(items, skipped + refused, [], "folder")


def _fnc_layout(root: Path) -> str | None:
    """``fnc-v1``, ``fnc-v2`` or None for a folder."""
    if (root / "all_images" / "images").is_dir():
        return "fnc-v1"
    tops = [root] + [root / s for s in STAINS]
    if any((t / "trainval").is_dir() or (t / "test").is_dir() for t in tops):
        return "fnc-v2"
    return None


def _ground_truth_only(found: Collected, masks: Path) -> list[ImportItem]:
    """FNC items that must have a mask: one without is flagged, so the report says so."""
    return [item if item.mask is not None else replace(
        item, note=f"{item.name} has no mask in {masks.parent.name}/{masks.name}, so it has no "
                   f"ground truth; it was imported like an image without a mask.")
        for item in found.items]


def collect_fnc(root: str | Path, *, stain: str) -> Collected:
    """Items of a Fluorescent Neuronal Cells tree, v1 or v2.

    v1: ``all_images/images/*.png`` with ``all_masks/masks/*.png`` of the same names; splits
    stay unassigned. v2: ``<stain>/{trainval,test}/images`` with
    ``<stain>/{trainval,test}/ground_truths/masks``; trainval becomes ``train``, test ``test``,
    and images under ``<stain>/unlabelled/`` come without masks, flagged unlabelled (the
    metadata files there are not images and are left out quietly). ``root`` may be the data
    set folder or one stain's folder. Only ``stain``'s images are collected (a project is one
    stain); other stains present are mentioned in the notes. A labelled image without its
    mask is imported, and the report says it has no ground truth.
    """
    root = Path(root)
    layout = _fnc_layout(root)
    if layout == "fnc-v1":
        masks = root / "all_masks" / "masks"
        found = collect_folder(root / "all_images" / "images", masks)
        items = [replace(i, metadata={"stain": stain, **i.metadata})
                 for i in _ground_truth_only(found, masks)]
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
        masks = base / part / "ground_truths" / "masks"
        found = collect_folder(base / part / "images", masks)
        items += [replace(i, split=split, metadata={"stain": stain})
                  for i in _ground_truth_only(found, masks)]
        skipped += found.skipped
    unlabelled = base / "unlabelled"
    extra = 0
    for path in sorted(unlabelled.rglob("*")) if unlabelled.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            if _is_image(path):
                items.append(ImportItem(_clean(path.name), path, split="unassigned",
                                        metadata={"stain": stain, "unlabelled": True}))
            else:
                extra += 1
    if extra:
        log.info("FNC %s: %d metadata files under unlabelled/ left out.", base, extra)
    return Collected(items, skipped, notes, "fnc-v2")


def _annotation_split(ann: formats.AnnotatedImage) -> tuple[str | None, dict[str, Any]]:
    """Split and metadata an annotation file carries for an image (our COCO export, FNC v2)."""
    attrs = ann.attributes
    split = _SPLIT_WORDS.get(str(attrs.get("split", "")).lower())
    meta = {k: _clean(str(attrs[k])) for k in ("animal", "region", "condition") if attrs.get(k)}
    if str(attrs.get("stain", "")) in STAINS:
        meta["stain"] = attrs["stain"]
    return split, meta


def _read_json(name: str, data: bytes | Path, *, categories: Sequence[str] | None = None
               ) -> tuple[str, list[formats.AnnotatedImage], FileOutcome | None]:
    """(format, images) of one VIA or COCO file, or the outcome refusing it by name.

    Never raises for a bad file: a malformed or hostile JSON (wrong types, numbers beyond
    floating point, brackets nested 100,000 deep, more than memory holds) is one skipped file.
    A COCO file whose categories need a choice refuses the import (:class:`ImportRefused`,
    listing them), since no file of it can be read without that choice.
    """
    shown = _clean(name)
    try:
        raw = data.read_bytes() if isinstance(data, Path) else data
        kind, images = formats.read_annotations(raw, name=shown, categories=categories)
        return kind, images, None
    except OSError as exc:
        return "", [], _skip(shown, "not found", f"{shown} could not be read ({exc.strerror}); "
                                             f"check that the file is still there.")
    except formats.CategoryError as exc:
        raise ImportRefused(_clean(str(exc))) from None
    except formats.FormatError as exc:
        reason = "unknown format" if "is neither a VIA-2 file" in str(exc) else "corrupt"
        return "", [], _skip(shown, reason, _clean(str(exc)))
    except Exception as exc:  # a file must never stop the import; the log keeps the details
        log.exception("Annotation file %s could not be read", shown)
        return "", [], _skip(shown, "corrupt", f"{shown} could not be read as a VIA or COCO file "
                                           f"({type(exc).__name__}); export it again from the "
                                           f"annotation tool.")


def collect_annotations(path: str | Path, *,
                        categories: Sequence[str] | None = None) -> Collected:
    """Images named in a VIA or COCO file, with their objects.

    ``path`` is the JSON file, or a folder holding one or more. An image is looked for at its
    name relative to the JSON's folder, by its base name there and in ``images/`` below it, and
    the same in up to four parent folders (FNC v2's layout; see :func:`_find_beside`). A JSON
    file that cannot be read is refused by name and the others are imported.
    """
    path = Path(path)
    docs = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not docs:
        raise ImportRefused(f"{path} holds no .json file; give the VIA or COCO file itself.")
    items, skipped, notes, kinds = [], [], [], set()
    for doc in docs:
        kind, images, refused = _read_json(doc.name, doc, categories=categories)
        if refused is not None:
            skipped.append(refused)
            continue
        kinds.add(kind)
        for ann in images:
            notes += [_clean(n) for n in ann.notes]
            found = _find_beside(doc.parent, ann.file_name, ann.attributes.get("path"))
            shown = _clean(Path(ann.file_name.replace("\\", "/")).name)
            if found is None:
                skipped.append(_skip(shown, "not found",
                                     f"{_clean(ann.file_name)} is named in {_clean(doc.name)} but "
                                     f"is not beside it (looked in {doc.parent}, four folders up "
                                     f"and their images/ folders); put the image there and "
                                     f"import again."))
                continue
            split, meta = _annotation_split(ann)
            items.append(ImportItem(_clean(found.name), found, annotation=ann, split=split,
                                    metadata=meta))
    kind = kinds.pop() if len(kinds) == 1 else "annotations"
    return Collected(items, skipped, notes, kind)


def _find_beside(folder: Path, file_name: str, stated_path: Any = None) -> Path | None:
    """The image a JSON entry names, looked for next to the JSON file and a few folders up.

    FNC v2 keeps its JSON files in ``<split>/ground_truths/{COCO,VIA}/`` and the images in
    ``<split>/images/``, and its COCO entries state a ``path`` relative to the data set root,
    so the JSON's folder and up to four of its parents are tried, each with ``images/``.
    """
    if "\x00" in file_name:
        return None
    base = Path(file_name.replace("\\", "/")).name
    tails = [Path(file_name.replace("\\", "/")), Path(base), Path("images") / base]
    if isinstance(stated_path, str) and stated_path and "\x00" not in stated_path:
        tails.append(Path(stated_path.replace("\\", "/")))
    for anchor in [folder, *list(folder.parents)[:4]]:
        for tail in tails:
            candidate = anchor / tail
            try:
                if not tail.is_absolute() and candidate.is_file():
                    return candidate
            except (OSError, ValueError):  # a name too long or otherwise impossible here
                continue
    return None


def collect_uploads(files: Iterable[tuple[str, bytes]], *, limit_mb: float = 200,
                    max_pixels: int | None = None) -> Collected:
    """Items from uploaded ``(name, bytes)`` pairs.

    Images are matched with mask files by name, as in a folder (:func:`collect_folder`):
    Cellpose, ImageJ and QuPath files, and images named ``<stem>_mask.<ext>`` or uploaded from
    a ``masks/`` folder; and with the objects of any VIA or COCO JSON among the uploads, by
    stem. A file above ``limit_mb`` megabytes, or an image whose header states more than
    ``max_pixels`` pixels, is refused by name.
    """
    images: dict[str, bytes] = {}
    masks: dict[str, bytes] = {}
    annotations: dict[str, formats.AnnotatedImage] = {}
    skipped: list[FileOutcome] = []
    notes: list[str] = []
    for raw_name, data in files:
        path = Path(str(raw_name).replace("\\", "/"))
        name = path.name
        if len(data) > limit_mb * 1024 * 1024:
            skipped.append(_skip(_clean(name), "too large",
                                 f"{_clean(name)} is {len(data) / 2**20:.0f} MB, above the "
                                 f"{limit_mb:g} MB upload limit; import it from a folder instead."))
        elif path.suffix.lower() == ".json":
            _kind, found, refused = _read_json(name, data)
            skipped += [refused] if refused is not None else []
            for ann in found:
                annotations[Path(ann.file_name.replace("\\", "/")).stem] = ann
                notes += [_clean(n) for n in ann.notes]
        elif _is_image(name) and ("masks" in path.parts[:-1] or path.stem.endswith("_mask")):
            masks[name] = data
        else:
            images[name] = data
    plain, tool_masks, others = _split_masks(images)
    masks.update({n: images[n] for n in tool_masks})
    skipped += [_unknown(_clean(n)) for n in others]
    items, refused = _pair([(n, images[n]) for n in plain], masks, "the uploads")
    items = [_with_annotation(i, annotations) for i in items]
    return Collected(items, skipped + refused, notes, "uploads", max_pixels=max_pixels,
                     resumable=False)


def _with_annotation(item: ImportItem,
                     annotations: dict[str, formats.AnnotatedImage]) -> ImportItem:
    """An uploaded item with its VIA/COCO objects, when it came without a mask file."""
    ann = next((annotations[s] for s in _stems_of(item.name) if s in annotations), None)
    if ann is None:
        return item
    split, meta = _annotation_split(ann)
    return replace(item, annotation=ann if item.mask is None else None, split=split,
                   metadata=meta)


# ---------------------------------------------------------------------------------------------
# Writing items into a project


class _Skipped(Exception):
    """Carries the outcome of a file that cannot be imported."""

    def __init__(self, outcome: FileOutcome):
        super().__init__(outcome.message)
        self.outcome = outcome


class _Writer:
    """Runs a piece of database work: in the caller's session, or committed on its own.

    Given an engine, each call is one short transaction, retried while the database is locked
    (:func:`db.engine.commit_retrying`). The work passed in never touches a file.
    """

    def __init__(self, bind: Engine | Session):
        self.bind = bind

    @property
    def commits(self) -> bool:
        return isinstance(self.bind, Engine)

    def __call__(self, work: Callable[[Session], Any]) -> Any:
        return commit_retrying(self.bind, work) if self.commits else work(self.bind)


@dataclass(frozen=True)
class _Plan:
    """What every image of one import needs: the project, its reading, the batch."""

    project_id: int
    read: core_io.ReadOptions
    pixel_size_um: float | None
    batch_id: int
    resumed: bool
    options: ImportOptions
    max_pixels: int | None


@dataclass(frozen=True, eq=False)
class _Read:
    """One item's files, read and checked (before any database work)."""

    rgb: np.ndarray
    info: core_io.ImageInfo
    data: bytes
    labels: np.ndarray | None
    notes: tuple[str, ...]


def import_items(bind: Engine | Session, storage: Storage, project: Project | str | int,
                 collected: Collected, *, options: ImportOptions = ImportOptions(),
                 source: str = "", progress: Progress | None = None) -> ImportReport:
    """Import collected items as one batch.

    Parameters
    ----------
    bind : Engine or Session
        An engine commits each image in its own short transaction (files are read, decoded
        and stored before it opens), so other people's saves never wait for the batch; the
        batch stays ``running`` until the report is written, and is ``interrupted`` if the
        import stops early. A session does everything in the caller's transaction.
    storage : Storage
    project : Project, name or id
    collected : Collected
        From one of the ``collect_*`` functions.
    options : ImportOptions
    source : str
        Where the files came from, for the batch row. Importing the same source again (a
        path) completes a batch that was interrupted.
    progress : callable(done, total, name), optional
        Called after each image (after its commit).

    Returns
    -------
    ImportReport
        Also stored (as JSON) on the batch row.
    """
    write = _Writer(bind)
    source = _clean(source or collected.kind)
    plan = write(lambda s: _open_batch(s, project, collected, options, source))
    report = ImportReport(plan.batch_id, source, list(collected.skipped), list(collected.notes))
    if plan.resumed:
        report.notes.append(f"This import completes batch {plan.batch_id}, which was "
                            f"interrupted; images it had already imported are listed as imported.")
    seen: set[int] = set()
    try:
        for done, item in enumerate(collected.items, start=1):
            outcome = _import_one(write, storage, plan, item, seen)
            report.outcomes.append(outcome)
            if outcome.image_id is not None:
                seen.add(outcome.image_id)
            if progress is not None:
                progress(done, len(collected.items), item.name)
    except BaseException:
        if write.commits:
            _mark_interrupted(write, plan.batch_id)
        raise
    write(lambda s: _finish(s, plan.batch_id, report))
    log.info("Import batch %s: %s", plan.batch_id, report.summary())
    return report


def _open_batch(session: Session, project: Project | str | int, collected: Collected,
                options: ImportOptions, source: str) -> _Plan:
    """Resolve the project and its reading settings; open (or reopen) the batch."""
    project = get_project(session, project.id if isinstance(project, Project) else project)
    read = core_io.ReadOptions() if collected.as_stored else read_options(project, z=options.z)
    approved = (options.approved if options.approved is not None
                else collected.kind.startswith("fnc"))
    # A batch another process is still filling is left to it; one that stopped is completed.
    batch = unfinished_batch(session, project.id, source) if collected.resumable else None
    resumed = batch is not None and batch_state(batch) == "interrupted"
    if resumed:
        touch_batch(session, batch.id)
    else:
        batch = create_batch(session, project.id, user_id=options.user_id, source=source)
    return _Plan(project.id, read, project.pixel_size_um, batch.id, resumed,
                 replace(options, approved=approved), collected.max_pixels)


def _finish(session: Session, batch_id: int, report: ImportReport) -> None:
    finish_batch(session, session.get(ImportBatch, batch_id), report.to_dict())


def _mark_interrupted(write: _Writer, batch_id: int) -> None:
    """Best effort: the batch says it stopped early (a later run completes it)."""
    try:
        write(lambda s: interrupt_batch(s, batch_id))
    except Exception:  # the database may be what failed; the stale heartbeat still tells
        log.warning("Could not mark import batch %s interrupted.", batch_id, exc_info=True)


def _import_one(write: _Writer, storage: Storage, plan: _Plan, item: ImportItem,
                seen: set[int]) -> FileOutcome:
    """Read, check and store one item's files, then register it in one short transaction."""
    try:
        read = _read_item(item, plan)
    except _Skipped as skipped:
        return skipped.outcome
    except Exception as exc:  # one file must never stop the import; the log keeps the details
        log.exception("Import of %s failed", item.name)
        return _skip(item.name, "corrupt", f"{item.name} could not be imported: reading it "
                                           f"failed unexpectedly ({type(exc).__name__}). The "
                                           f"server log has the details; export the file again.")
    sha = pixel_hash(read.rgb)
    known = write(lambda s: _holder(s, plan.project_id, sha))
    if known is not None:
        return _known_image(write, storage, plan, item, read, known, seen)
    stored = store_image(storage, read.rgb, encoded=read.data, info=read.info)
    stored = replace(stored, read_info=_clean_json(stored.read_info),
                     pixel_size_um=stored.pixel_size_um or item.pixel_size_um)
    mask, kind = read.labels, "import" if read.labels is not None else None
    if mask is None and plan.options.prelabel:
        from core.prelabel import PrelabelParams, auto_mask

        mask, kind = auto_mask(read.rgb, plan.options.prelabel_params or PrelabelParams()), "auto"
    if mask is not None:
        storage.put_mask(mask)  # stored now, so the transaction below writes no file
    try:
        return write(lambda s: _register(s, storage, plan, item, read, stored, mask, kind))
    except IntegrityError:
        if not write.commits:
            raise
        # Another import registered the same pixels between our look-up and our insert.
        known = write(lambda s: _holder(s, plan.project_id, sha))
        return _known_image(write, storage, plan, item, read, known, seen)


def _holder(session: Session, project_id: int, sha: str) -> tuple[int, int | None] | None:
    """(id, batch id) of the project's image with these pixels, or None."""
    row = session.execute(select(Image.id, Image.batch_id).where(
        Image.project_id == project_id, Image.sha256 == sha)).first()
    return None if row is None else (int(row[0]), row[1])


def _register(session: Session, storage: Storage, plan: _Plan, item: ImportItem, read: _Read,
              stored: StoredImage, mask: np.ndarray | None, kind: str | None) -> FileOutcome:
    """Rows for a new image and its first mask version (runs inside the short transaction)."""
    registered = add_image(session, plan.project_id, stored, name=item.name,
                           batch_id=plan.batch_id, split=item.split or "unassigned",
                           metadata=item.metadata)
    if not registered.created:  # another import took these pixels a moment ago
        return _skip(item.name, "duplicate", registered.message, registered.image.id)
    image = registered.image
    if mask is not None:
        imported = kind == "import"
        version = save_mask_version(
            session, storage, image.id, mask, based_on=None, source=kind,
            author_id=plan.options.user_id if imported else None,
            note="imported with the image" if imported else "automatic threshold mask")
        if imported and plan.options.approved:
            approve(session, image.id, user_id=plan.options.user_id, version_id=version.id)
    touch_batch(session, plan.batch_id)
    said = {"import": " with its mask" + (" (approved ground truth)" if plan.options.approved
                                          else ""),
            "auto": " with an automatic mask to review", None: " without a mask"}[kind]
    return FileOutcome(item.name, "imported", "", f"{item.name} imported as image {image.id}{said}.",
                       image.id, kind, _read_summary(read.info), read.notes)


def _known_image(write: _Writer, storage: Storage, plan: _Plan, item: ImportItem, read: _Read,
                 known: tuple[int, int | None], seen: set[int]) -> FileOutcome:
    """An item whose pixels are already in the project: earlier in this batch, or a duplicate.

    A mask that came with a duplicate is not dropped: it becomes the image's new version when
    nobody has worked on that image's mask yet, and the report says which it was.
    """
    image_id, batch_id = known
    if batch_id == plan.batch_id and plan.resumed and image_id not in seen:
        head = write(lambda s: _head_source(s, image_id))
        return FileOutcome(item.name, "imported", "", f"{item.name} was imported as image "
                           f"{image_id} before the import was interrupted.", image_id, head,
                           _read_summary(read.info), read.notes)
    if read.labels is None:
        message = write(lambda s: _duplicate_message(s, item.name, image_id))
        return _skip(item.name, "duplicate", message, image_id)
    stored = storage.put_mask(read.labels)
    return write(lambda s: _mask_for_duplicate(s, storage, plan, item, read, image_id,
                                               stored.sha256))


def _head_source(session: Session, image_id: int) -> str | None:
    return session.scalar(select(MaskVersion.source).join(
        Image, Image.head_version_id == MaskVersion.id).where(Image.id == image_id))


def _duplicate_message(session: Session, name: str, image_id: int) -> str:
    image = session.get(Image, image_id)
    return (f"{name} is already in the project as image {image_id} ({image.original_name}); "
            f"nothing was changed.")


def _mask_for_duplicate(session: Session, storage: Storage, plan: _Plan, item: ImportItem,
                        read: _Read, image_id: int, mask_sha: str) -> FileOutcome:
    """Add a duplicate's mask to the image holding its pixels, unless people worked on it."""
    image = session.get(Image, image_id)
    chain = versions(session, image_id)
    head = next((v for v in chain if v.id == image.head_version_id), None)
    what = f"the mask that came with it ({item.mask_name or 'its annotations'})"
    base = f"{item.name} is already in the project as image {image_id} ({image.original_name})"
    if head is not None and head.sha256 == mask_sha:
        return _skip(item.name, "duplicate", f"{base}, with the same mask; nothing was changed.",
                     image_id)
    approved = session.scalar(select(exists().where(Approval.image_id == image_id)))
    if approved or any(v.source in _HUMAN_SOURCES for v in chain):
        return _skip(item.name, "duplicate",
                     f"{base}, whose mask people have already reviewed, so {what} was not "
                     f"imported. Open image {image_id} on the Correct page to compare, or "
                     f"import the pair into another project.", image_id)
    version = save_mask_version(session, storage, image_id, read.labels,
                                based_on=image.head_version_id, source="import",
                                author_id=plan.options.user_id,
                                note=f"imported with a copy of the image ({item.name})")
    if plan.options.approved:
        approve(session, image_id, user_id=plan.options.user_id, version_id=version.id)
    touch_batch(session, plan.batch_id)
    return FileOutcome(item.name, "updated", "duplicate",
                       f"{base}; {what} became its mask (version {version.id}), replacing an "
                       f"automatic or imported one.", image_id, "import",
                       _read_summary(read.info), read.notes)


def _read_summary(info: core_io.ImageInfo) -> dict[str, Any]:
    """What the report and the batch row say about how a file was read."""
    return {"format": info.format, "channels": info.channels, "z": info.z,
            "scaling": info.scaling, "scaling_note": info.scaling_note,
            "pixel_size_um": list(info.pixel_size_um) if info.pixel_size_um else None}


# ---------------------------------------------------------------------------------------------
# Reading one item's files (no database)


def _read_item(item: ImportItem, plan: _Plan) -> _Read:
    """The item's pixels, how they were read, and its mask's labels, or :class:`_Skipped`."""
    try:
        data = item.image.read_bytes() if isinstance(item.image, Path) else bytes(item.image)
    except OSError as exc:
        raise _Skipped(_skip(item.name, "not found", f"{item.name} could not be read "
                             f"({exc.strerror}); check that the file is still there.")) from None
    _check_pixels(item.name, data, plan.max_pixels)
    try:
        read = core_io.read_microscopy(data, name=item.name, options=plan.read)
    except core_io.ImageError as exc:
        raise _Skipped(_image_refusal(item.name, str(exc))) from None
    rows, cols = read.rgb.shape[:2]
    if min(rows, cols) < MIN_SIDE:
        raise _Skipped(_skip(item.name, "too small", f"{item.name} is {cols} x {rows} px; an "
                             f"image must be at least {MIN_SIDE} px wide and high to hold cells "
                             f"and be shown. Check that it is the right file."))
    notes = [f"{item.name}: {n}" for n in read.info.notes]
    notes += _pixel_size_notes(item.name, read.info, plan.pixel_size_um)
    labels, mask_notes = _item_labels(item, (rows, cols))
    notes += ([item.note] if item.note else []) + mask_notes
    return _Read(read.rgb, read.info, data, labels, tuple(_clean(n) for n in notes))


def _image_refusal(name: str, text: str) -> FileOutcome:
    """The outcome for an image ``core.io`` refused, with a reason a report can group by."""
    text = _clean(text)
    if "--z K" in text:
        return _skip(name, "several planes", f"{text} On the Import page, choose the plane "
                                             f"under 'Plane of Z-stacks'.")
    if "--channel K" in text or ("channel" in text and "does not exist" in text):
        return _skip(name, "several channels",
                     f"{text} The channel is a project setting: `python -m db project create "
                     f"NAME --stain S --channel K` (or --composition R,G,B).")
    if "as OME-TIFF" in text:
        return _skip(name, "microscope format", text)
    if "CellTally reads PNG" in text:
        return _skip(name, "unknown format", text)
    if "megapixel" in text or "decompression-bomb" in text:
        return _skip(name, "too large", text)
    return _skip(name, "corrupt", text)


def _header_pixels(data: bytes) -> int | None:
    """Pixels per plane a PNG, TIFF or JPEG header states, without decoding; None if unknown.

    >>> _header_pixels(core_io.encode_png(np.zeros((3, 5), np.uint8)))
    15
    """
    try:
        if data.startswith(_PNG_MAGIC) and len(data) >= 24:
            cols, rows = struct.unpack(">II", data[16:24])
            return rows * cols
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages.first
                return int(page.imagewidth) * int(page.imagelength)
        if data.startswith(b"\xff\xd8\xff"):
            with PILImage.open(io.BytesIO(data)) as image:
                return image.width * image.height
    except Exception:  # a damaged header: decoding will say what is wrong
        return None
    return None


def _check_pixels(name: str, data: bytes, limit: int | None) -> None:
    """Refuse an upload whose header states more than ``limit`` pixels, before decoding it."""
    found = _header_pixels(data) if limit else None
    if found is not None and found > limit:
        raise _Skipped(_skip(name, "too large",
                             f"{name} is {found / 1e6:.0f} megapixels, more than the "
                             f"{limit / 1e6:g} megapixels an upload may have "
                             f"(CELLTALLY_MAX_UPLOAD_PIXELS); import it from a folder, which "
                             f"takes up to {core_io.MAX_PIXELS / 1e6:.0f} megapixels, or crop it."))


def _pixel_size_notes(name: str, info: core_io.ImageInfo, project_um: float | None) -> list[str]:
    """Sentences when a file's pixel size is not square or differs from the project's."""
    if info.pixel_size_um is None:
        return []
    rows_um, cols_um = info.pixel_size_um
    notes = []
    if abs(rows_um - cols_um) > _PIXEL_SIZE_TOLERANCE * max(rows_um, cols_um):
        notes.append(f"{name}: its pixels are {cols_um:g} x {rows_um:g} µm (width x height); "
                     f"densities use their area.")
    side = (rows_um * cols_um) ** 0.5
    if project_um and abs(side - project_um) > _PIXEL_SIZE_TOLERANCE * project_um:
        notes.append(f"{name} records {side:.4g} µm per pixel but the project says "
                     f"{project_um:g}; the file's value is used for its density.")
    return notes


def _item_labels(item: ImportItem, shape: tuple[int, int]) -> tuple[np.ndarray | None, list[str]]:
    """The cells that came with an item (mask file or annotations), checked against its size."""
    if item.mask is not None:
        name = item.mask_name or f"mask of {item.name}"
        try:
            found = maskfiles.read_mask_file(item.mask, shape, name=name, kind=item.mask_kind)
        except maskfiles.MaskSizeError as exc:
            raise _Skipped(_skip(item.name, "mask size mismatch",
                                 _mismatch_message(item, exc.found, shape))) from None
        except ValueError as exc:
            raise _Skipped(_skip(item.name, "unusable mask",
                                 f"{_clean(str(exc))} {item.name} was not imported either, so "
                                 f"that it does not get an automatic mask in the mask's place; "
                                 f"fix the mask and import the pair again.")) from None
        return found.labels, list(found.notes)
    if item.annotation is None:
        return None, []
    found_shape = item.annotation.shape or shape
    if tuple(found_shape) != tuple(shape):
        raise _Skipped(_skip(item.name, "mask size mismatch",
                             _mismatch_message(item, found_shape, shape)))
    try:
        return formats.regions_to_labels(item.annotation.regions, shape), []
    except formats.FormatError as exc:
        raise _Skipped(_skip(item.name, "corrupt", f"{_clean(str(exc))} {item.name} was not "
                             f"imported; fix the annotation and import again.")) from None


def _shown(source: Path | bytes | None, name: str) -> str:
    """A file as the report shows it: ``folder/name`` for a file on disk, else its name."""
    if isinstance(source, Path) and source.parent.name:
        return _clean(f"{source.parent.name}/{source.name}")
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
            return Collected([], [_unknown(_clean(path.name))])
        found = collect_folder(path.parent, masks)
        items = [i for i in found.items if i.image == path]
        skipped = [o for o in found.skipped if o.name == _clean(path.name)]
        return Collected(items, skipped, [], "folder")
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


def _readable(path: str | Path, what: str) -> Path:
    """A path the person importing can read, resolved; ImportRefused with the reason if not."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ImportRefused(f"{path} does not exist; check the {what} path.")
    if not os.access(resolved, os.R_OK | (os.X_OK if resolved.is_dir() else 0)):
        raise ImportRefused(f"{path} cannot be read by this user; check its permissions.")
    return resolved


def import_path(bind: Engine | Session, settings: Settings, path: str | Path, *,
                project: Project | str | int, fmt: str | None = None,
                masks: str | Path | None = None, options: ImportOptions = ImportOptions(),
                progress: Progress | None = None, anywhere: bool = False) -> ImportReport:
    """Import a folder, an image file, an FNC tree or a VIA/COCO file as one batch.

    Parameters
    ----------
    bind : Engine or Session
        An engine commits image by image (see :func:`import_items`); a session imports in
        the caller's transaction.
    settings : Settings
    path : str or Path
    project : Project, name or id
    fmt : {'folder', 'fnc', 'via', 'coco'} or None
        None guesses from the path (FNC layout, JSON files, else a folder of images).
    masks : str or Path, optional
        For ``folder``: a folder of mask files matched to the images by file name.
    options : ImportOptions
    progress : callable(done, total, name), optional
    anywhere : bool
        False (the app): ``path`` and ``masks`` must lie below ``settings.import_roots``, and
        files linking outside them are not read. True (the command line): any folder the
        person running it can read.

    Raises
    ------
    ImportRefused
        Outside the import roots, missing, unreadable, an unknown format name, or not the
        layout asked for.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ImportRefused(f"Unknown import format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if not anywhere:
        check_import_root(path, settings)
        if masks is not None:
            check_import_root(masks, settings)
    root = _readable(path, "import")
    masks_dir = _readable(masks, "masks") if masks is not None else None
    stain = _project_stain(bind, project)
    fmt = fmt or _guess_format(root)
    collected = _collect_path(root, fmt, masks_dir, stain, options.categories)
    if not anywhere:
        collected = _within_roots(collected, _roots(settings))
    source = f"{collected.kind}: {root}" + (f" (masks {masks_dir})" if masks_dir else "")
    return import_items(bind, Storage.from_settings(settings), project, collected,
                        options=options, source=source, progress=progress)


def _project_stain(bind: Engine | Session, project: Project | str | int) -> str:
    if isinstance(project, Project):
        return project.stain
    return _Writer(bind)(lambda s: get_project(s, project).stain)


def import_uploads(bind: Engine | Session, settings: Settings, project: Project | str | int,
                   files: Iterable[tuple[str, bytes]], *, options: ImportOptions = ImportOptions(),
                   progress: Progress | None = None) -> ImportReport:
    """Import uploaded ``(name, bytes)`` files as one batch (see :func:`collect_uploads`).

    Images above ``settings.max_upload_pixels`` are refused from their header, unread.
    """
    collected = collect_uploads(files, limit_mb=settings.upload_limit_mb,
                                max_pixels=settings.max_upload_pixels)
    return import_items(bind, Storage.from_settings(settings), project, collected,
                        options=options, source="upload", progress=progress)


def run_import_cli(args: Any, settings: Settings, *, out=None) -> int:
    """``python -m db import PATH --project NAME [--masks DIR] [--format F] [--approved]
    [--no-prelabel] [--z K|max] [--user NAME] [--categories NAME[,NAME]]``.

    Reads any folder the person running it can read (``CELLTALLY_IMPORT_ROOTS`` limits the
    app only), commits image by image, and writes the report. Running the same command again
    completes an interrupted import. ``--user`` names the person the batch, its mask versions
    and approvals are recorded under. Returns the exit status: 0 when the batch ran (even if
    files were skipped), 2 when the import was refused (including an unknown user name).
    """
    from db.engine import make_engine

    out = out or sys.stdout
    engine = make_engine(settings)
    try:
        z = getattr(args, "z", None)
        options = ImportOptions(
            approved=True if getattr(args, "approved", False) else None,
            prelabel=not getattr(args, "no_prelabel", False),
            user_id=_Writer(engine)(lambda s: _cli_user_id(s, getattr(args, "user", None))),
            z=core_io.ReadOptions.from_text(z=z).z if z is not None else None,
            categories=_cli_categories(getattr(args, "categories", None)))
        report = import_path(engine, settings, args.path, project=args.project,
                             fmt=getattr(args, "format", None),
                             masks=getattr(args, "masks", None), options=options,
                             progress=_log_progress, anywhere=True)
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


def _collect_for_count(settings: Settings, uploads, folder) -> Collected:
    """The images of a count: a folder below an import root, or uploads; masks are ignored."""
    if folder:
        root = _readable(check_import_root(folder, settings), "count")
        collected = _within_roots(_collect_path(root, "folder", None, ""), _roots(settings))
    else:
        uploads = list(uploads or [])
        if not uploads:
            raise ValueError("Choose at least one image to count.")
        collected = collect_uploads(uploads, limit_mb=settings.upload_limit_mb,
                                    max_pixels=settings.max_upload_pixels)
    # A count reads only the images; a mask that came with one plays no part in it.
    items = [replace(i, mask=None, mask_name=None, mask_kind=None, annotation=None, note="")
             for i in collected.items]
    return replace(collected, items=items)


def _counted_entry(storage: Storage, plan: _Plan, item: ImportItem) -> dict[str, Any]:
    """Read one image to count and put its pixels in the store; :class:`_Skipped` if refused."""
    try:
        read = _read_item(item, plan)
    except _Skipped:
        raise
    except Exception as exc:  # one file must never stop the count; the log keeps the details
        log.exception("Reading %s to count failed", item.name)
        raise _Skipped(_skip(item.name, "corrupt", f"{item.name} could not be read: reading it "
                             f"failed unexpectedly ({type(exc).__name__}). The server log has "
                             f"the details; export the file again.")) from None
    stored = store_image(storage, read.rgb, encoded=read.data, info=read.info)
    return {"name": item.name, "path": stored.path, "sha256": stored.sha256,
            "height": stored.rows, "width": stored.cols, "pixel_size_um": stored.pixel_size_um}


def store_for_count(session: Session, settings: Settings, project: str | int, *, uploads=None,
                    folder=None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Read the images to count (uploaded ``(name, bytes)`` pairs, or a folder below an
    import root) with the project's reading settings, and keep their pixels in the file store.

    The images do not become project images: the count job names them (its config's
    ``images``), which keeps their files through ``python -m db gc`` while the job exists, and
    :func:`import_counted` adds them to the project when someone asks. Only reads the
    project's row; nothing is written to the database.

    Returns
    -------
    images : list of dict
        ``name, path, sha256, height, width, pixel_size_um`` per readable image (``path``:
        the store key).
    problems : list of dict
        ``file, problem``: every file that cannot be counted, with the sentence saying why.

    Raises
    ------
    ValueError
        No uploads, or the folder lies outside the import roots or does not exist
        (``ImportRefused``).
    """
    collected = _collect_for_count(settings, uploads, folder)
    project = get_project(session, project)
    plan = _Plan(project.id, read_options(project), project.pixel_size_um, batch_id=0,
                 resumed=False, options=ImportOptions(prelabel=False),
                 max_pixels=collected.max_pixels)
    storage = Storage.from_settings(settings)
    images, problems = [], [{"file": o.name, "problem": o.message} for o in collected.skipped]
    for item in collected.items:
        try:
            images.append(_counted_entry(storage, plan, item))
        except _Skipped as skipped:
            problems.append({"file": skipped.outcome.name, "problem": skipped.outcome.message})
    problems += [{"file": "", "problem": _clean(note)} for note in collected.notes]
    return images, problems


def import_counted(bind: Engine | Session, settings: Settings, batch_id: int, *,
                   user_id: int | None = None, progress: Progress | None = None) -> ImportReport:
    """Add the images of count batch ``batch_id`` to its project, as one ordinary import.

    They go through :func:`import_items` like any other import (automatic masks to review,
    duplicates of project images reported as such), read from the store as they were kept
    for the count, with the pixel size their original files stated. Running it again after
    an interruption completes the same batch.

    Raises
    ------
    ValueError
        There is no such count batch, or it names no stored images (an older count of
        project images).
    """
    from db.jobs import counted_images

    storage = Storage.from_settings(settings)
    project_id, images = _Writer(bind)(lambda s: counted_images(s, batch_id))
    if not images:
        raise ValueError(f"Count batch {batch_id} holds no images to add: it counted images "
                         f"that are already the project's.")
    items = [ImportItem(name=e["name"], image=storage.resolve(e["path"]),
                        pixel_size_um=e.get("pixel_size_um")) for e in images]
    collected = Collected(items, kind="count", as_stored=True)
    return import_items(bind, storage, project_id, collected,
                        options=ImportOptions(user_id=user_id),
                        source=f"count batch {batch_id}", progress=progress)
