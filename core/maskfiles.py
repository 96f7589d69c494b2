"""Masks from and to other tools: Cellpose, ImageJ/Fiji ROIs, QuPath GeoJSON and label images.

Readers turn one mask file into an ``int32`` label image of the image's shape (0 is background,
one value per cell) plus notes, sentences about what was skipped or changed:

* Cellpose ``<stem>_seg.npy`` (:func:`read_cellpose`): the ``masks`` array of the pickled dict,
  unpickled with a loader that builds nothing but NumPy arrays and plain Python values;
* ImageJ/Fiji ``<stem>.zip``, ``<stem>_RoiSet.zip`` or ``<stem>.roi`` (:func:`read_imagej_rois`):
  polygon, freehand, traced, rectangle, oval and composite ROIs, one ROI = one cell;
* QuPath ``<stem>.geojson`` (:func:`read_geojson`): Polygon and MultiPolygon features, with
  holes; detections (and cells) when there are any, else annotations; one feature = one cell;
* label or binary images, TIFF or PNG (:func:`read_label_image`).

:func:`match_mask_files` pairs the files of a masks folder with the images of an import, refusing
an image with two candidates and naming every file it cannot use, so a supplied mask is never
silently replaced by an automatic one. Writers give one file per image: :func:`write_label_tiff`,
:func:`write_imagej_rois` and :func:`write_geojson`.

Polygon coordinates follow :mod:`core.polygons`: x is the column, y the row, vertices on pixel
corners, origin at the top-left corner of pixel (0, 0); a pixel belongs to a cell when its
centre is inside (even-odd over all of the cell's rings), as in ImageJ and QuPath.

Every problem with a file raises ``ValueError`` naming the file, what is wrong and what to do.
Coordinates are bounded by the image before anything is drawn: a vertex that is not a finite
number, or that lies more than one image size outside the image, refuses the file.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros((6, 8), np.int32); labels[1:3, 1:4] = 1; labels[3:5, 4:7] = 2
>>> back = read_geojson(write_geojson(None, labels), labels.shape, name="a.geojson")
>>> bool(np.array_equal(back.labels, labels)), back.kind
(True, 'geojson')
"""
from __future__ import annotations

import io
import json
import logging
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import roifile
import tifffile
from numpy.lib import format as npy_format
from PIL import Image

from core.objects import as_labels
from core.polygons import CellOutline, label_outlines, rasterise_labels

__all__ = ["MAX_CELLS", "KINDS", "MASK_SUFFIXES", "MaskSizeError", "MaskRead", "MaskFile",
           "MaskMatch", "mask_kind", "read_mask_file", "read_cellpose", "read_imagej_rois",
           "read_geojson", "read_label_image", "match_mask_files", "write_label_tiff",
           "write_imagej_rois", "write_geojson"]

log = logging.getLogger(__name__)

MAX_CELLS = 65535
KINDS = {"cellpose": "Cellpose _seg.npy", "imagej": "ImageJ ROIs",
         "geojson": "QuPath GeoJSON", "image": "mask image"}

_MAX_BYTES = {"cellpose": 4 << 30, "imagej": 512 << 20, "geojson": 256 << 20, "image": 2 << 30}
_IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg")
#: Endings (before the extension) that mark an image file as the mask of the image it names.
MASK_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label")
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NAMING = ("name each mask after its image: <image>_seg.npy, <image>_RoiSet.zip, <image>.zip, "
           "<image>.roi, <image>.geojson, or <image>.png / .tif (optionally <image>_mask.png)")


@dataclass(frozen=True)
class MaskRead:
    """A mask file read into cells.

    Attributes
    ----------
    labels : (H, W) int32 array
        0 is background; every other value is one cell (at most :data:`MAX_CELLS`).
    kind : str
        One of :data:`KINDS`.
    notes : tuple of str
        Sentences about what was skipped, cut or renumbered while reading, for the report.
    """

    labels: np.ndarray
    kind: str
    notes: tuple[str, ...] = ()

    @property
    def n_cells(self) -> int:
        """Number of distinct cells."""
        return int(np.count_nonzero(np.bincount(self.labels.ravel())[1:]))


@dataclass(frozen=True)
class MaskFile:
    """A file of a masks folder matched to an image: its name and :data:`KINDS` key."""

    name: str
    kind: str


@dataclass(frozen=True)
class MaskMatch:
    """What :func:`match_mask_files` made of a masks folder.

    Attributes
    ----------
    found : dict of str to MaskFile
        Image stem -> its one mask file.
    refused : dict of str to str
        Image stem -> why it gets no mask (two or more candidates, each named).
    unusable : dict of str to str
        File name -> why the file cannot be used.
    """

    found: dict[str, MaskFile]
    refused: dict[str, str]
    unusable: dict[str, str]


# ---------------------------------------------------------------------------------------------
# Which file is which


def mask_kind(name: str) -> str | None:
    """The :data:`KINDS` key a mask file's name says it is, or None.

    Examples
    --------
    >>> names = ("a_seg.npy", "a_RoiSet.zip", "a.roi", "a.geojson", "a.TIF", "a.jpg")
    >>> [mask_kind(n) for n in names]
    ['cellpose', 'imagej', 'imagej', 'geojson', 'image', None]
    """
    kind, _ = _parse_name(name)
    return kind


def _parse_name(name: str) -> tuple[str | None, list[str] | str]:
    """(kind, image stems the file may belong to, most specific first), or (None, reason)."""
    lower = name.lower()
    if name.startswith("."):
        return None, "it is a hidden file"
    for ending, kind in (("_seg.npy", "cellpose"), ("_roiset.zip", "imagej"), (".zip", "imagej"),
                         (".roi", "imagej"), (".geojson", "geojson")):
        if lower.endswith(ending):
            return kind, _stems(name[:-len(ending)], ())
    suffix = next((s for s in (".tiff", ".tif", ".png") if lower.endswith(s)), None)
    if suffix:
        return "image", _stems(name[:-len(suffix)], MASK_SUFFIXES)
    if lower.endswith(".npy"):
        return None, ("it is a NumPy file but not a Cellpose '<image>_seg.npy'; save the masks "
                      "from Cellpose, or as a label TIFF")
    if lower.endswith((".jpg", ".jpeg")):
        return None, ("it is a JPEG, whose lossy compression would turn noise into cells; save "
                      "the mask as PNG or TIFF")
    if lower.endswith(".json"):
        return None, ("it is JSON: import COCO or VIA files as annotations (--format coco or "
                      "via), and give QuPath GeoJSON the ending .geojson")
    return None, ("it is not a mask file CellTally reads (Cellpose _seg.npy, ImageJ .roi or "
                  ".zip, QuPath .geojson, or a PNG or TIFF mask)")


def _stems(base: str, mask_suffixes: Iterable[str]) -> list[str]:
    """``base`` and what it becomes without a mask suffix and/or an image extension."""
    found = [base]
    for candidate in list(found):
        lower = candidate.lower()
        for suffix in mask_suffixes:
            if lower.endswith(suffix) and len(candidate) > len(suffix):
                found.append(candidate[:-len(suffix)])
                break
    for candidate in list(found):
        lower = candidate.lower()
        for suffix in _IMAGE_SUFFIXES:
            if lower.endswith(suffix) and len(candidate) > len(suffix):
                found.append(candidate[:-len(suffix)])
                break
    return found


def match_mask_files(stems: Iterable[str], names: Iterable[str]) -> MaskMatch:
    """Pair the files of a masks folder with the images of an import.

    Parameters
    ----------
    stems : iterable of str
        The images' file names without their extension (``"img01"`` for ``img01.tif``).
    names : iterable of str
        The file names in the masks folder (names only, no folders).

    Returns
    -------
    MaskMatch
        ``found`` maps an image stem to its mask file. An image with two or more candidate
        files is in ``refused`` with a sentence naming them all (it gets no mask until one is
        removed). Every other file that cannot be used is in ``unusable`` with the reason.

    Notes
    -----
    A file belongs to the image whose stem it names: ``<stem>_seg.npy`` (Cellpose),
    ``<stem>_RoiSet.zip``, ``<stem>.zip`` or ``<stem>.roi`` (ImageJ), ``<stem>.geojson``
    (QuPath; ``<stem>.tif.geojson`` too, as QuPath names exports after the image file), and
    ``<stem>.png`` / ``.tif`` / ``.tiff``, optionally with ``_mask``, ``_masks``, ``_label``,
    ``_labels`` or ``_cp_masks`` before the extension. A name that is itself an image stem
    wins over a shorter reading of it.

    Examples
    --------
    >>> files = ["a_seg.npy", "b.zip", "b_mask.png", "x.roi", "notes.txt"]
    >>> m = match_mask_files(["a", "b", "c"], files)
    >>> m.found
    {'a': MaskFile(name='a_seg.npy', kind='cellpose')}
    >>> m.refused["b"]
    'b has 2 mask files, b.zip and b_mask.png; keep one of them in the masks folder.'
    >>> sorted(m.unusable)
    ['notes.txt', 'x.roi']
    """
    known = set(stems)
    candidates: dict[str, list[MaskFile]] = {}
    unusable: dict[str, str] = {}
    for name in sorted(set(names)):
        kind, found = _parse_name(name)
        if kind is None:
            unusable[name] = f"{name} cannot be used: {found}."
            continue
        stem = next((s for s in found if s in known), None)
        if stem is None:
            unusable[name] = (f"{name} looks like a {KINDS[kind]} but no image of this import "
                              f"is named {found[-1] or found[0]!r}; {_NAMING}.")
            continue
        candidates.setdefault(stem, []).append(MaskFile(name, kind))
    found_files, refused = {}, {}
    for stem, files in candidates.items():
        if len(files) == 1:
            found_files[stem] = files[0]
        else:
            listed = ", ".join(f.name for f in files[:-1]) + f" and {files[-1].name}"
            refused[stem] = (f"{stem} has {len(files)} mask files, {listed}; keep one of them "
                             f"in the masks folder.")
    return MaskMatch(found_files, refused, unusable)


def read_mask_file(source: str | Path | bytes, shape: tuple[int, int], *, name: str | None = None,
                   kind: str | None = None) -> MaskRead:
    """Read any mask file this module knows, the kind taken from its name unless given.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((4, 4), np.uint16); lab[1:3, 1:3] = 5; lab[0, 3] = 7
    >>> read_mask_file(write_label_tiff(None, lab), (4, 4), name="a_mask.tif").n_cells
    2
    """
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "mask file")
    kind = kind or mask_kind(label)
    readers = {"cellpose": read_cellpose, "imagej": read_imagej_rois, "geojson": read_geojson,
               "image": read_label_image}
    if kind not in readers:
        _, reason = _parse_name(label)
        raise ValueError(f"{label} cannot be read as a mask: {reason}.")
    return readers[kind](source, shape, name=label)


# ---------------------------------------------------------------------------------------------
# Reading: shared pieces


def _load(source: str | Path | bytes, name: str | None, kind: str) -> tuple[bytes, str]:
    """(the file's bytes, its name for messages), refusing files beyond the kind's size limit."""
    limit = _MAX_BYTES[kind]
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), name or "mask file"
    else:
        path = Path(source)
        label = name or path.name
        try:
            if path.stat().st_size > limit:
                raise ValueError(f"{label} is {path.stat().st_size / 2**20:.0f} MiB, more than a "
                                 f"{KINDS[kind]} file for one image should be ({limit >> 20} "
                                 f"MiB); check that it is the right file.")
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{label} cannot be read ({exc.strerror}); check the path.") from None
    if len(data) > limit:
        raise ValueError(f"{label} is {len(data) / 2**20:.0f} MiB, more than a {KINDS[kind]} file "
                         f"for one image should be ({limit >> 20} MiB); check that it is the "
                         f"right file.")
    if not data:
        raise ValueError(f"{label} is empty (0 bytes); export the mask again.")
    return data, label


class MaskSizeError(ValueError):
    """A mask whose size differs from its image's; ``found`` and ``shape`` are (rows, cols)."""

    def __init__(self, message: str, found: tuple[int, ...], shape: tuple[int, int]):
        super().__init__(message)
        self.found, self.shape = tuple(found), tuple(shape)


def _check_shape(found: tuple[int, ...], shape: tuple[int, int], label: str, what: str) -> None:
    """Refuse a mask whose (rows, cols) differs from the image's."""
    if tuple(found) != tuple(shape):
        raise MaskSizeError(f"{label}: {what} is {found[0]} x {found[1]} px (rows x cols) but the "
                            f"image is {shape[0]} x {shape[1]} px; a mask must match its image "
                            f"pixel for pixel, so check that the file belongs to this image.",
                            found, shape)


def _cell_labels(values: np.ndarray, label: str) -> tuple[np.ndarray, list[str]]:
    """The int32 label image of a mask of any dtype (:func:`core.objects.as_labels`'s rule).

    Floats with whole values and bools are accepted here (files hold them); a note says when
    the file held no cells or when values above 65535 were renumbered.
    """
    values = _whole_numbers(values, label)
    if not values.any():
        return np.zeros(values.shape, np.int32), [f"{label} holds no cells (every pixel is 0)."]
    labels = as_labels(values, name=label)
    if int(values.max()) <= MAX_CELLS:
        return labels, []
    n = int(labels.max())
    return labels, [f"{label} uses cell values up to {int(values.max())}; its {n} cells were "
                    f"renumbered 1 to {n} in the same order."]


def _too_many(label: str, n: int) -> ValueError:
    return ValueError(f"{label} holds {n} cells, more than the {MAX_CELLS} one image can keep; "
                      f"split the image into tiles, or check that it is a label image.")


def _whole_numbers(values: np.ndarray, label: str) -> np.ndarray:
    """``values`` as non-negative integers, or a sentence saying why they are not."""
    if values.dtype == bool:
        return values.view(np.uint8)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ValueError(f"{label} holds NaN or infinite values; a mask holds 0 for "
                             f"background and whole numbers for cells. Save it again as labels.")
        if (values < 0).any() or (values != np.floor(values)).any() or values.max() >= 2.0**53:
            raise ValueError(f"{label} holds fractional or negative values, so it is not a label "
                             f"image or mask; save 0 for background and 1, 2, ... for cells.")
        return values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise ValueError(f"{label} holds {values.dtype} values, not numbers; save the mask as "
                         f"an integer label image.")
    if values.dtype.kind == "i" and values.size and values.min() < 0:
        raise ValueError(f"{label} holds negative values; a label image has 0 for background "
                         f"and positive numbers for cells. Save it again.")
    return values


def _present_values(values: np.ndarray) -> np.ndarray:
    """Sorted distinct non-zero values (counting for small ones, sorting for the rest)."""
    if values.size == 0:
        return np.zeros(0, np.int64)
    top = int(values.max())
    if top < max(values.size, 1 << 16):  # a count per value costs no more than the image
        return np.flatnonzero(np.bincount(values.ravel().astype(np.intp), minlength=1)[1:]) + 1
    found = np.unique(values)
    return found[found != 0]


def _finish(cells: list[list[np.ndarray]], shape: tuple[int, int], label: str, kind: str,
            notes: list[str], what: str) -> MaskRead:
    """Paint checked cells (rings in (row, col)) into labels 1..n; note the ones left empty."""
    if len(cells) > MAX_CELLS:
        raise _too_many(label, len(cells))
    labels = rasterise_labels(cells, shape)
    present = np.bincount(labels.ravel(), minlength=len(cells) + 1) > 0
    present[0] = False
    missing = len(cells) - int(present.sum())
    if missing:
        notes.append(f"{label}: {missing} {what} cover no pixel centre inside the image (or "
                     f"lie wholly under later ones) and were dropped.")
        lookup = np.cumsum(present).astype(np.int32) * present
        labels = lookup[labels]
    return MaskRead(labels, kind, tuple(notes))


def _no_cells(shape: tuple[int, int], kind: str, label: str, notes: list[str]) -> MaskRead:
    """An empty file is a statement too: this image has no cells."""
    notes.append(f"{label} holds no cells.")
    return MaskRead(np.zeros(shape, np.int32), kind, tuple(notes))


def _check_points(points: np.ndarray, shape: tuple[int, int], label: str, where: str) -> bool:
    """Refuse absurd (x, y) points; True when some lie outside the image (the cell is cut).

    Points are bounded by one image size beyond each edge: a file reaching further belongs to
    another, larger image or is damaged, and drawing it would cost memory for nothing.
    """
    if not np.isfinite(points).all():
        raise ValueError(f"{label}: {where} has coordinates that are not finite numbers (NaN or "
                         f"infinity); the file is damaged, export it again.")
    height, width = shape
    margin = max(height, width)
    x, y = points[:, 0], points[:, 1]
    if (x.min() < -margin or y.min() < -margin or x.max() > width + margin
            or y.max() > height + margin):
        raise ValueError(f"{label}: {where} reaches x = {x.min():.6g} to {x.max():.6g}, y = "
                         f"{y.min():.6g} to {y.max():.6g}, far outside the image ({width} px wide, "
                         f"{height} px high); check that the file belongs to this image.")
    return bool(x.min() < 0 or y.min() < 0 or x.max() > width or y.max() > height)


def _cut_note(label: str, cut: int, what: str) -> list[str]:
    if not cut:
        return []
    return [f"{label}: {cut} {what} reach beyond the image's edge and were cut there."]


# ---------------------------------------------------------------------------------------------
# Cellpose


def _pickle_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled dict of NumPy arrays names, under NumPy 1's and 2's module names.

    The functions are taken from NumPy's own pickling, so they are right for this version.
    """
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = np.zeros(1).__reduce__()[0]
        allowed[(f"{prefix}.multiarray", "scalar")] = np.float64(0).__reduce__()[0]
        allowed[(f"{prefix}.numeric", "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]
    return allowed


_PICKLE_GLOBALS = _pickle_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays, scalars and plain containers; refuses every other global.

    A Cellpose ``_seg.npy`` is a pickled dict of arrays, numbers, strings and lists; nothing
    else may be constructed, so a crafted file cannot run code.
    """

    def find_class(self, module, name):
        found = _PICKLE_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return found


def read_cellpose(source: str | Path | bytes, shape: tuple[int, int], *,
                  name: str | None = None) -> MaskRead:
    """Read the ``masks`` of a Cellpose ``_seg.npy``.

    Parameters
    ----------
    source : path or bytes
    shape : (int, int)
        (rows, cols) of the image; the masks must have it.
    name : str, optional
        The file name used in messages.

    Returns
    -------
    MaskRead
        The masks under the binary-or-labels rule (Cellpose numbers cells 1..n already).

    Notes
    -----
    The file is a pickled dict, and unpickling can run code; it is read with a loader that
    builds only NumPy arrays and plain Python values, so anything else in it refuses the file
    before it is built. A plain (not pickled) 2-D integer ``.npy`` array is read as labels too.

    Examples
    --------
    >>> import io, numpy as np
    >>> masks = np.zeros((4, 5), np.uint16); masks[0, :2] = 1; masks[2:, 3:] = 2
    >>> buffer = io.BytesIO(); np.save(buffer, {"masks": masks, "filename": "a.tif"})
    >>> read_cellpose(buffer.getvalue(), (4, 5), name="a_seg.npy").labels.tolist()[0]
    [1, 1, 0, 0, 0]
    """
    data, label = _load(source, name, "cellpose")
    masks = _cellpose_masks(_read_npy(data, label), label)
    if masks.ndim == 3 and masks.shape[0] == 1:
        masks = masks[0]
    if masks.ndim != 2:
        raise ValueError(f"{label} holds masks of shape {masks.shape}, a stack; CellTally reads "
                         f"2-D masks: segment one plane, or save the plane you want.")
    _check_shape(masks.shape, shape, label, "its 'masks' array")
    labels, notes = _cell_labels(masks, label)
    return MaskRead(labels, "cellpose", tuple(notes))


def _read_npy(data: bytes, label: str) -> Any:
    """The object in a ``.npy`` file, unpickling (NumPy values only) when it holds objects."""
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        read_header = {(1, 0): npy_format.read_array_header_1_0,
                       (2, 0): npy_format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"version {version}")
        array_shape, fortran, dtype = read_header(stream)
        if not dtype.hasobject:
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
        if array_shape != ():
            raise ValueError("an array of objects")
        return _NumpyOnlyUnpickler(stream).load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{label} holds Python objects of type {exc} besides arrays, numbers "
                         f"and text, so it is not a Cellpose _seg.npy and was not opened; save "
                         f"the segmentation again from Cellpose.") from None
    except Exception as exc:  # numpy and pickle raise many types on damaged input
        raise ValueError(f"{label} is not a readable Cellpose _seg.npy ({exc}); save the "
                         f"segmentation again from Cellpose.") from None


def _cellpose_masks(found: Any, label: str) -> np.ndarray:
    """The integer ``masks`` array of what a ``_seg.npy`` held, or a sentence why not."""
    if isinstance(found, np.ndarray) and found.dtype.hasobject and found.shape == ():
        found = found.item()
    if isinstance(found, np.ndarray) and found.dtype.kind in "iub":
        return found
    masks = found.get("masks") if isinstance(found, dict) else None
    if not isinstance(masks, np.ndarray) or masks.dtype.kind not in "iub":
        what = (f"a dict with keys {sorted(map(str, found))[:8]}" if isinstance(found, dict)
                else f"a {type(found).__name__}")
        raise ValueError(f"{label} holds {what} without an integer 'masks' array, so it is not "
                         f"a Cellpose _seg.npy; save the segmentation again from Cellpose.")
    return masks


# ---------------------------------------------------------------------------------------------
# ImageJ / Fiji ROIs


def read_imagej_rois(source: str | Path | bytes, shape: tuple[int, int], *,
                     name: str | None = None) -> MaskRead:
    """Read an ImageJ/Fiji ROI set (``.zip``) or single ROI (``.roi``), one ROI per cell.

    Parameters
    ----------
    source : path or bytes
    shape : (int, int)
        (rows, cols) of the image.
    name : str, optional
        The file name used in messages.

    Returns
    -------
    MaskRead
        Cell k is the k-th area ROI in the file; later ROIs win where they overlap.

    Notes
    -----
    Polygon, freehand and traced ROIs (including ellipses and rotated rectangles, stored as
    polygons), rectangles, ovals, and composite ROIs (pieces and holes, even-odd, as ImageJ
    fills them) make cells; ovals take the pixels whose centre is inside the ellipse, as
    ImageJ does. Lines, points and text have no area and are skipped with a note.

    Examples
    --------
    >>> import numpy as np, roifile
    >>> roi = roifile.ImagejRoi.frompoints(np.array([[1, 1], [4, 1], [4, 3], [1, 3]]))
    >>> read_imagej_rois(roi.tobytes(), (4, 5), name="a.roi").labels.sum(axis=0).tolist()
    [0, 2, 2, 2, 0]
    """
    data, label = _load(source, name, "imagej")
    entries, notes = _roi_entries(data, label)
    cells, skipped, cut = [], {}, 0
    for where, roi in entries:
        rings, kind = _roi_rings(roi, shape, label, where)
        if rings is None:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        cut += any(_check_points(r[:, ::-1], shape, label, where) for r in rings)
        cells.append(rings)
    if skipped:
        listed = ", ".join(f"{kind}: {n}" for kind, n in sorted(skipped.items()))
        notes.append(f"{label}: ROIs without an area were skipped ({listed}).")
    if not cells and not skipped:
        return _no_cells(shape, "imagej", label, notes)
    if not cells:
        raise ValueError(f"{label} holds no area ROI (polygon, freehand, traced, rectangle, "
                         f"oval or composite); outline the cells as areas and save the ROI set "
                         f"again.")
    return _finish(cells, shape, label, "imagej", notes + _cut_note(label, cut, "ROIs"), "ROIs")


def _roi_entries(data: bytes, label: str) -> tuple[list[tuple[str, roifile.ImagejRoi]], list[str]]:
    """(where, ROI) pairs from a ROI zip or a single ``.roi``, and notes; damaged ones refused."""
    if data[:4] == b"Iout":
        return [("the ROI", _decode_roi(data, label, "the ROI"))], []
    if not data.startswith(b"PK"):
        raise ValueError(f"{label} is neither an ImageJ ROI nor a ROI set (zip); save the ROIs "
                         f"from ImageJ's ROI Manager (More > Save).")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [i for i in archive.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{label} is a damaged zip file ({exc}); save the ROI set "
                         f"again.") from None
    rois = [i for i in entries if i.filename.lower().endswith(".roi")]
    others = [i.filename for i in entries if i not in rois]
    if not entries:
        return [], []
    if not rois:
        raise ValueError(f"{label} holds no .roi files ({', '.join(others[:3]) or 'it is empty'}); "
                         f"save the ROIs from ImageJ's ROI Manager (More > Save).")
    if len(rois) > MAX_CELLS:
        raise _too_many(label, len(rois))
    unpacked = sum(i.file_size for i in rois)
    if unpacked > _MAX_BYTES["imagej"]:
        raise ValueError(f"{label} unpacks to {unpacked >> 20} MiB, far more than the outlines "
                         f"of one image's cells; check that it is the right file.")
    found = []
    for info in rois:
        try:
            raw = archive.read(info)
        except Exception as exc:  # zipfile raises several types on damaged members
            raise ValueError(f"{label}: {info.filename} cannot be unpacked ({exc}); save the ROI "
                             f"set again.") from None
        found.append((f"ROI {info.filename}", _decode_roi(raw, label, f"ROI {info.filename}")))
    notes = [f"{label}: {len(others)} files in the zip that are not ROIs were ignored "
             f"({', '.join(others[:3])})."] if others else []
    return found, notes


def _decode_roi(raw: bytes, label: str, where: str) -> roifile.ImagejRoi:
    try:
        return roifile.ImagejRoi.frombytes(raw)
    except Exception as exc:  # roifile raises ValueError, struct.error, ... on damaged data
        raise ValueError(f"{label}: {where} is not a readable ImageJ ROI ({exc}); save the ROIs "
                         f"from ImageJ again.") from None


_AREA_ROIS = (roifile.ROI_TYPE.POLYGON, roifile.ROI_TYPE.FREEHAND, roifile.ROI_TYPE.TRACED)
_NOT_AREAS = (roifile.ROI_SUBTYPE.TEXT, roifile.ROI_SUBTYPE.IMAGE, roifile.ROI_SUBTYPE.ARROW)


def _roi_rings(roi: roifile.ImagejRoi, shape: tuple[int, int], label: str,
               where: str) -> tuple[list[np.ndarray] | None, str]:
    """The rings ((row, col) corner coordinates) of one ROI, or (None, what it is)."""
    if roi.subtype in _NOT_AREAS:
        return None, roi.subtype.name.lower()
    if roi.composite:
        return _path_rings(roi.multi_coordinates, label, where), "composite"
    if roi.roitype in _AREA_ROIS:
        xy = np.asarray(roi.coordinates(), dtype=float)
        if len(xy) < 3:
            return None, "polygon of fewer than 3 points"
        return [xy[:, ::-1]], "polygon"
    if roi.roitype in (roifile.ROI_TYPE.RECT, roifile.ROI_TYPE.OVAL):
        if roi.subpixelrect:
            x0, y0, x1, y1 = roi.xd, roi.yd, roi.xd + roi.widthd, roi.yd + roi.heightd
        else:
            x0, y0, x1, y1 = roi.left, roi.top, roi.right, roi.bottom
        corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
        if roi.roitype == roifile.ROI_TYPE.RECT:
            return [corners], "rectangle"
        _check_points(corners[:, ::-1], shape, label, where)
        return _oval_rings((x0, y0, x1, y1), shape), "oval"
    return None, roi.roitype.name.lower()


def _oval_rings(box: tuple[float, float, float, float],
                shape: tuple[int, int]) -> list[np.ndarray]:
    """Exact outline of the pixels (within the image) whose centre lies in the ellipse
    inscribed in ``box`` = (x0, y0, x1, y1), ImageJ's rule for oval ROIs."""
    x0, y0, x1, y1 = box
    a, b = (x1 - x0) / 2, (y1 - y0) / 2
    top, left = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
    bottom, right = min(int(np.ceil(y1)), shape[0]), min(int(np.ceil(x1)), shape[1])
    if a <= 0 or b <= 0 or top >= bottom or left >= right:
        return []
    rows = np.arange(top, bottom)[:, None] + 0.5
    cols = np.arange(left, right)[None, :] + 0.5
    inside = ((cols - x0 - a) / a) ** 2 + ((rows - y0 - b) / b) ** 2 <= 1.0
    outline = label_outlines(inside.astype(np.uint8)).get(1)
    return [] if outline is None else [ring + [top, left] for ring in outline.rings()]


def _path_rings(values: np.ndarray | None, label: str, where: str) -> list[np.ndarray]:
    """Rings of a composite ROI's path (java.awt PathIterator segments), curves flattened."""
    values = [] if values is None else np.asarray(values, dtype=float).tolist()
    widths = {0: 2, 1: 2, 2: 4, 3: 6, 4: 0}
    rings, points, k = [], [], 0
    while k < len(values):
        op = int(values[k]) if values[k] == values[k] else -1
        if op not in widths or k + 1 + widths[op] > len(values):
            raise ValueError(f"{label}: {where} is a composite ROI with a damaged outline "
                             f"(segment {values[k]!r} at {k}); save the ROI again.")
        args = values[k + 1:k + 1 + widths[op]]
        if op == 0 and points:
            rings.append(points)
            points = []
        if op in (0, 1):
            points.append(args)
        elif op in (2, 3):
            start = points[-1] if points else args[:2]
            points.extend(_bezier([start, *zip(args[::2], args[1::2])]))
        k += 1 + widths[op]
    if points:
        rings.append(points)
    return [np.asarray(r, dtype=float)[:, ::-1] for r in rings if len(r) >= 3]


def _bezier(control: list, steps: int = 16) -> list[list[float]]:
    """Points along a quadratic or cubic Bezier curve after its first control point."""
    p = np.asarray(control, dtype=float)
    t = np.linspace(0, 1, steps + 1)[1:, None]
    if len(p) == 3:
        curve = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
    else:
        curve = ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
                 + t ** 3 * p[3])
    return curve.tolist()


# ---------------------------------------------------------------------------------------------
# QuPath GeoJSON


def read_geojson(source: str | Path | bytes, shape: tuple[int, int], *,
                 name: str | None = None) -> MaskRead:
    """Read QuPath GeoJSON: one Polygon or MultiPolygon feature (holes kept) per cell.

    Parameters
    ----------
    source : path or bytes
        A FeatureCollection, a single Feature, a list of Features (QuPath's export without
        "FeatureCollection" ticked) or a bare Polygon / MultiPolygon.
    shape : (int, int)
        (rows, cols) of the image.
    name : str, optional
        The file name used in messages.

    Returns
    -------
    MaskRead
        Cell k is the k-th cell feature; later features win where they overlap.

    Notes
    -----
    The object type is read from ``properties.objectType`` (QuPath 0.3 and later) or
    ``properties.object_type`` (0.2). When the file holds detections or cells, those are the
    cells and annotations are left out (they usually outline the region the detections were
    found in), with a note; otherwise annotations and untyped features are the cells. Tiles
    and TMA cores are never cells. Lines and points are skipped with a note.

    Examples
    --------
    >>> doc = {"type": "Feature", "properties": {"objectType": "annotation"},
    ...        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [3, 0], [3, 2], [0, 0]]]}}
    >>> read_geojson(json.dumps(doc).encode(), (2, 3), name="a.geojson").labels.tolist()
    [[0, 1, 1], [0, 0, 1]]
    """
    data, label = _load(source, name, "geojson")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{label} is not valid JSON ({exc}); export the objects from QuPath "
                         f"again (File > Export objects as GeoJSON).") from None
    features, notes = _cell_features(_features(doc, label), label)
    cells, skipped, cut = [], {}, 0
    for where, geometry in features:
        rings, kind = _geometry_rings(geometry, label, where)
        if not rings:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        cut += any(_check_points(r[:, ::-1], shape, label, where) for r in rings)
        cells.append(rings)
    if skipped:
        listed = ", ".join(f"{kind}: {n}" for kind, n in sorted(skipped.items()))
        notes.append(f"{label}: features without an area were skipped ({listed}).")
    if not cells and not skipped:
        return _no_cells(shape, "geojson", label, notes)
    if not cells:
        raise ValueError(f"{label} holds no Polygon or MultiPolygon objects; export the cells "
                         f"(detections or annotations) from QuPath as GeoJSON.")
    return _finish(cells, shape, label, "geojson", notes + _cut_note(label, cut, "features"),
                   "features")


def _features(doc: Any, label: str) -> list[dict]:
    """The Feature objects of a GeoJSON document, whichever form QuPath wrote."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        doc = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") in ("Polygon", "MultiPolygon"):
        doc = [{"type": "Feature", "geometry": doc, "properties": {}}]
    elif isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(f, dict) and f.get("type") == "Feature"
                                            for f in doc):
        raise ValueError(f"{label} is JSON but not GeoJSON features (a FeatureCollection, a "
                         f"Feature or a list of Features); export the objects from QuPath with "
                         f"File > Export objects as GeoJSON.")
    return doc


def _cell_features(features: list[dict], label: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """(where, geometry) of the features that are cells, and a note on what was left out."""
    typed = []
    for k, feature in enumerate(features, start=1):
        props = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
        kind = props.get("objectType", props.get("object_type", feature.get("objectType", "")))
        kind = str(kind or "").lower().replace("_", "")
        named = isinstance(props.get("name"), str)
        what = f"feature {k}" + (f" ({props['name']})" if named else "")
        typed.append((kind, what, feature.get("geometry")))
    detections = [t for t in typed if t[0] in ("detection", "cell")]
    never = sum(t[0] in ("tile", "tmacore", "root") for t in typed)
    notes = [f"{label}: {never} tiles or TMA cores were left out."] if never else []
    if detections:
        others = len(typed) - len(detections) - never
        if others:
            notes.append(f"{label}: the {len(detections)} detections are the cells; the "
                         f"{others} annotations were left out, taken as the regions the "
                         f"detections were found in.")
        return [(w, g) for _, w, g in detections], notes
    return [(w, g) for kind, w, g in typed if kind not in ("tile", "tmacore", "root")], notes


def _geometry_rings(geometry: Any, label: str, where: str) -> tuple[list[np.ndarray], str]:
    """All rings ((row, col)) of a Polygon, MultiPolygon or GeometryCollection's polygons."""
    if not isinstance(geometry, dict):
        return [], "no geometry"
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        rings = [r for g in geometry.get("geometries") or []
                 for r in _geometry_rings(g, label, where)[0]]
        return rings, "GeometryCollection"
    if kind not in ("Polygon", "MultiPolygon"):
        return [], str(kind)
    polygons = geometry.get("coordinates")
    polygons = [polygons] if kind == "Polygon" else polygons
    try:
        rings = [np.asarray(ring, dtype=float) for polygon in polygons for ring in polygon]
        if any(r.ndim != 2 or r.shape[1] < 2 for r in rings):
            raise ValueError("not a list of [x, y] positions")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{label}: {where} has {kind} coordinates that are not lists of [x, y] "
                         f"positions ({exc}); export the objects from QuPath again.") from None
    return [r[:, 1::-1] for r in rings if len(r) >= 3], f"{kind} of fewer than 3 points"


# ---------------------------------------------------------------------------------------------
# Label images (TIFF, PNG)


def read_label_image(source: str | Path | bytes, shape: tuple[int, int], *,
                     name: str | None = None) -> MaskRead:
    """Read a label or binary mask image (TIFF through tifffile, or PNG).

    Parameters
    ----------
    source : path or bytes
    shape : (int, int)
        (rows, cols) of the image; the mask must have it (checked from the header before any
        pixel is decoded).
    name : str, optional
        The file name used in messages.

    Returns
    -------
    MaskRead
        Under the binary-or-labels rule: one distinct non-zero value makes a binary mask whose
        8-connected components are the cells; two or more make a label image, each value one
        cell (renumbered when above 65535). A colour mask counts each distinct colour as a
        value, so a white-on-black mask is binary and a colour-coded one is labels.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((3, 5), np.uint8); mask[:, 0] = 255; mask[:, 3:] = 255
    >>> read_label_image(write_label_tiff(None, mask), (3, 5), name="m.tif").labels[0].tolist()
    [1, 0, 0, 2, 2]
    """
    data, label = _load(source, name, "image")
    if data.startswith(_TIFF_MAGICS):
        values = _tiff_values(data, label, shape)
    elif data.startswith(_PNG_MAGIC):
        values = _png_values(data, label, shape)
    else:
        raise ValueError(f"{label} is not a TIFF or PNG image; save the mask as a label TIFF or "
                         f"PNG.")
    if values.ndim == 3:
        values = _colour_values(values, label)
    labels, notes = _cell_labels(values, label)
    return MaskRead(labels, "image", tuple(notes))


def _tiff_values(data: bytes, label: str, shape: tuple[int, int]) -> np.ndarray:
    """The pixel values of a TIFF mask: (rows, cols) or (rows, cols, colours)."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            kept = [(n, a) for n, a in zip(series.shape, series.axes) if n > 1 or a in "YX"]
            axes = "".join(a for _, a in kept)
            if axes != "YX" and not (axes == "YXS" and kept[2][0] in (3, 4)):
                raise ValueError(f"{label} has shape {series.shape} (axes {series.axes}), more "
                                 f"than one plane; save the mask as a single 2-D label image.")
            _check_shape(tuple(n for n, _ in kept[:2]), shape, label, "the mask")
            values = series.asarray()
    except ValueError as exc:
        if str(exc).startswith(label):
            raise
        raise ValueError(f"{label} cannot be decoded as a TIFF ({exc}); save the mask as an "
                         f"uncompressed or deflate-compressed TIFF.") from None
    except Exception as exc:  # tifffile raises many types on damaged input
        raise ValueError(f"{label} is a damaged TIFF ({exc}); save the mask again.") from None
    return values.reshape(tuple(shape) + ((kept[2][0],) if axes == "YXS" else ()))


def _png_values(data: bytes, label: str, shape: tuple[int, int]) -> np.ndarray:
    """The pixel values of a PNG mask; the size is checked before decoding."""
    if len(data) > 25 and data[24] == 16 and data[25] in (2, 6):
        raise ValueError(f"{label} is a 16-bit colour PNG; save the labels as a single-channel "
                         f"16-bit PNG or a label TIFF.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_shape((image.height, image.width), shape, label, "the mask")
            if image.mode in ("RGB", "RGBA", "LA", "P", "PA", "L", "1", "I", "I;16", "I;16B", "F"):
                image.load()
                values = np.asarray(image)
            else:
                values = np.asarray(image.convert("RGB"))
    except ValueError as exc:
        if str(exc).startswith(label):
            raise
        raise ValueError(f"{label} is a damaged PNG ({exc}); save the mask again.") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ... on damaged input
        raise ValueError(f"{label} is a damaged PNG ({exc}); save the mask again.") from None
    if values.ndim == 3 and values.shape[2] == 2:  # grey + alpha
        values = values[..., 0]
    return values


def _colour_values(values: np.ndarray, label: str) -> np.ndarray:
    """One integer per pixel from its colour (alpha ignored), so each colour is one value."""
    if values.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{label} is a {values.dtype} colour image; save the mask as a "
                         f"single-channel label image.")
    bits = values.dtype.itemsize * 8
    rgb = values[..., :3].astype(np.uint64)
    return (rgb[..., 0] << (2 * bits)) | (rgb[..., 1] << bits) | rgb[..., 2]


# ---------------------------------------------------------------------------------------------
# Writing


def _write(path: str | Path | None, data: bytes) -> bytes:
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _cells_of(labels: np.ndarray) -> dict[int, CellOutline]:
    """Outlines of a label image's cells, refusing more than one image can hold."""
    cells = label_outlines(labels)
    if len(cells) > MAX_CELLS:
        raise ValueError(f"The label image holds {len(cells)} cells, more than the {MAX_CELLS} "
                         f"one file can keep.")
    return cells


def write_label_tiff(path: str | Path | None, labels: np.ndarray) -> bytes:
    """Write a uint16 label TIFF (deflate-compressed); return its bytes.

    Labels up to 65535 keep their values; larger ones are renumbered 1..n in order.

    Examples
    --------
    >>> import numpy as np, tifffile, io
    >>> lab = np.array([[0, 3], [70000, 3]])
    >>> tifffile.imread(io.BytesIO(write_label_tiff(None, lab))).tolist()
    [[0, 1], [2, 1]]
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"A label image must be 2-D (rows, cols); got shape {labels.shape}.")
    values = _whole_numbers(labels, "The label image")
    present = _present_values(values)
    if len(present) > MAX_CELLS:
        raise _too_many("The label image", len(present))
    if len(present) and present[-1] > MAX_CELLS:
        values = np.where(values != 0, np.searchsorted(present, values) + 1, 0)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, values.astype(np.uint16), photometric="minisblack",
                     compression="zlib")
    return _write(path, buffer.getvalue())


def write_imagej_rois(path: str | Path | None, labels: np.ndarray) -> bytes:
    """Write an ImageJ ROI set (zip), one ROI per cell; return its bytes.

    A cell that one simple polygon represents becomes a traced ROI (pixel-edge polygon, as
    ImageJ's wand makes); a cell with holes or several pieces becomes a composite ROI whose
    rings ImageJ fills even-odd, so the holes stay holes. ROIs are named ``cell-<label>``.

    Examples
    --------
    >>> import io, zipfile, numpy as np, roifile
    >>> lab = np.zeros((5, 5), int); lab[1:4, 1:4] = 7; lab[2, 2] = 0
    >>> data = write_imagej_rois(None, lab)
    >>> (entry,) = zipfile.ZipFile(io.BytesIO(data)).namelist()
    >>> roi = roifile.ImagejRoi.frombytes(zipfile.ZipFile(io.BytesIO(data)).read(entry))
    >>> entry, roi.composite, len(roi.coordinates(multi=True))
    ('cell-00007.roi', True, 2)
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for cell in _cells_of(labels).values():
            roi = _cell_roi(cell)
            archive.writestr(f"{roi.name}.roi", roi.tobytes())
    return _write(path, buffer.getvalue())


def _cell_roi(cell: CellOutline) -> roifile.ImagejRoi:
    """One cell as an ImageJ ROI: traced when simple, composite (even-odd path) otherwise."""
    name = f"cell-{cell.label:05d}"
    if cell.simple:
        roi = roifile.ImagejRoi.frompoints(cell.parts[0].exterior[:, ::-1], name=name)
        roi.roitype = roifile.ROI_TYPE.TRACED
        # ImageJ's bounds of a traced outline end at its last corner; frompoints adds one.
        roi.right, roi.bottom = roi.right - 1, roi.bottom - 1
        # frompoints turns on overlay label flags; keep only what the coordinates need.
        roi.options &= roifile.ROI_OPTIONS.SUB_PIXEL_RESOLUTION
        return roi
    path: list[float] = []
    for ring in cell.rings():
        xy = ring[:, ::-1].astype(float)
        path += [0.0, *xy[0]]
        for x, y in xy[1:]:
            path += [1.0, x, y]
        path.append(4.0)
    corners = np.concatenate(cell.rings())
    roi = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, name=name,
                            top=int(corners[:, 0].min()), left=int(corners[:, 1].min()),
                            bottom=int(corners[:, 0].max()), right=int(corners[:, 1].max()))
    roi.multi_coordinates = np.asarray(path, dtype=np.float32)
    roi.shape_roi_size = len(path)
    return roi


def write_geojson(path: str | Path | None, labels: np.ndarray, *,
                  object_type: str = "detection") -> bytes:
    """Write a QuPath GeoJSON FeatureCollection, one feature per cell; return its bytes.

    Each feature has a Polygon (one piece) or MultiPolygon (several) geometry with its holes,
    rings closed and oriented by the right-hand rule, and properties ``objectType``
    (``object_type``), ``name`` (``cell <label>``) and ``label``.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((3, 3), int); lab[0, 0] = 4; lab[1, 1] = 4
    >>> (f,) = json.loads(write_geojson(None, lab))["features"]
    >>> f["geometry"]["type"], len(f["geometry"]["coordinates"]), f["properties"]["label"]
    ('MultiPolygon', 2, 4)
    """
    features = []
    for cell in _cells_of(labels).values():
        polygons = [[_closed_xy(part.exterior), *(_closed_xy(h) for h in part.holes)]
                    for part in cell.parts]
        geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                    else {"type": "MultiPolygon", "coordinates": polygons})
        features.append({"type": "Feature", "geometry": geometry,
                         "properties": {"objectType": object_type, "name": f"cell {cell.label}",
                                        "label": cell.label}})
    doc = {"type": "FeatureCollection", "features": features}
    return _write(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))


def _closed_xy(ring: np.ndarray) -> list[list[int]]:
    """A (row, col) ring as GeoJSON positions [x, y], first position repeated at the end."""
    xy = ring[:, ::-1].tolist()
    return xy + xy[:1]
