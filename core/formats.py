"""Annotation formats <-> label images: VIA-2 JSON, COCO (standard and the FNC v2 variant), RLE.

Pure conversions: nothing here touches the database or the file store. The importer reads a
JSON document into :class:`AnnotatedImage` records (a file name, the image shape when the file
states it, and a list of :class:`Region` objects); :func:`regions_to_labels` paints them into an
``int32`` label image once the image's shape is known. The exporter goes the other way with
:func:`coco_document` and :func:`via_document`.

Every annotation (a COCO annotation, a VIA region, an FNC v2 outline) is one object: it gets a
label of its own, so touching cells stay separate cells. Where annotations overlap, the later one
in the file keeps the pixels (and a warning says how many were painted over).

Coordinate conventions:

* Arrays are indexed (row, col). A pixel's centre sits at integer (row, col).
* What CellTally writes (COCO polygons, VIA polygons) runs along pixel *corners*, as
  :mod:`core.polygons` traces it: x is the column, y the row, the origin the top-left corner of
  pixel (0, 0); a pixel belongs to the polygon when its centre is inside. COCO objects that one
  simple polygon cannot describe exactly (a hole, several pieces) are written as RLE, so every
  object survives a round trip pixel for pixel.
* Other tools' VIA files (and the FNC v2 files written with OpenCV) give integer points on the
  object's boundary pixels. Such polygons are rasterised *inclusively*: the pixels on the outline
  count as inside. A VIA file written here says it holds corner vertices (``"_celltally"``), and
  is read by the corner rule instead.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros((8, 8), np.int32); labels[1:4, 1:5] = 1; labels[6, 6] = 2
>>> doc = coco_document([ExportImage("a.png", labels)])
>>> [a["area"] for a in doc["annotations"]]
[12, 1]
>>> (images,) = read_coco(doc)
>>> bool((regions_to_labels(images.regions, images.shape) == labels).all())
True
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage import draw, measure

from core.io import MAX_PIXELS
from core.objects import as_labels
from core.polygons import CellOutline, label_outlines, signed_area

__all__ = [
    "FormatError", "CategoryError", "VIA_MARK", "Region", "PolygonRegion", "EllipseRegion",
    "RectRegion", "MaskRegion", "AnnotatedImage", "ExportImage", "parse_json", "detect_format", "read_annotations",
    "read_via", "read_coco", "regions_to_labels", "object_outlines", "encode_rle",
    "decode_rle", "decode_rle_string", "coco_document", "via_document", "check_points",
]

log = logging.getLogger(__name__)

VIA_SETTINGS = {
    "ui": {"annotation_editor_height": 25, "annotation_editor_fontsize": 0.8,
           "leftsidebar_width": 18, "image_grid": {}, "image": {"region_label": "__via_region_id__"}},
    "core": {"buffer_size": 18, "filepath": {}, "default_filepath": ""},
    "project": {"name": "celltally"},
}


#: The top-level key of a VIA file written here: its polygons run along pixel corners.
VIA_MARK = "_celltally"


class FormatError(ValueError):
    """An annotation file that cannot be read; the message names the file and the problem."""


class CategoryError(FormatError):
    """A COCO file whose categories need a choice (or a chosen name it does not have)."""


# ---------------------------------------------------------------------------------------------
# Regions: one annotated object each, painted once the image shape is known.


class Region:
    """One annotated object; :meth:`pixels` gives its (rows, cols) inside an image of ``shape``.

    :meth:`pixels` refuses (:class:`FormatError`, naming the annotation by its ``where``) an
    object whose numbers are not finite or that reaches more than one image size beyond the
    image's edges: such an object belongs to another image or is damaged, and drawing it could
    ask for gigabytes (see :func:`check_points`).
    """

    def pixels(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def check_points(rows: Sequence[float], cols: Sequence[float], shape: tuple[int, int], *,
                 where: str = "an annotation") -> None:
    """Refuse points that are not finite or lie more than one image size outside the image.

    Parameters
    ----------
    rows, cols : sequence of float
        Pixel-centre coordinates of an annotation's points.
    shape : (int, int)
        The image's (height, width).
    where : str
        The annotation, for the message (file and annotation number).

    Raises
    ------
    FormatError
        With a sentence naming ``where`` and what is wrong.

    Examples
    --------
    >>> check_points([0, 12], [-3, 5], (10, 10))
    >>> try:
    ...     check_points([0, 1e9], [0, 5], (10, 10), where="a.json: region 2")
    ... except FormatError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS
    a.json: region 2 reaches x = 0 to 5, y = 0 to 1e+09, far outside its image (10 x 10 px); ...
    """
    try:
        r = np.asarray(rows, dtype=float).ravel()
        c = np.asarray(cols, dtype=float).ravel()
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{where} has coordinates that are not numbers; fix the file or "
                          f"export it again.") from None
    if not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise FormatError(f"{where} has coordinates that are not finite numbers (NaN or "
                          f"infinity); fix the file or export it again.")
    if r.size == 0 or c.size == 0:
        return
    height, width = int(shape[0]), int(shape[1])
    margin = max(height, width)
    if (r.min() < -margin or c.min() < -margin or r.max() > height + margin
            or c.max() > width + margin):
        raise FormatError(f"{where} reaches x = {c.min():.6g} to {c.max():.6g}, y = "
                          f"{r.min():.6g} to {r.max():.6g}, far outside its image ({width} x "
                          f"{height} px); check that the annotation belongs to this image.")


@dataclass(frozen=True)
class PolygonRegion(Region):
    """A closed polygon in pixel-centre coordinates.

    Parameters
    ----------
    rows, cols : tuple of float
        Vertices. Pixel (r, c) has its centre at (r, c).
    inclusive : bool
        Whether pixels the outline passes through belong to the object (VIA and FNC v2 polygons
        run along the boundary pixels; COCO polygons are read on pixel corners).

    Examples
    --------
    >>> rr, cc = PolygonRegion((1, 1, 3, 3), (1, 3, 3, 1)).pixels((5, 5))
    >>> len(set(zip(rr.tolist(), cc.tolist())))  # the outline may repeat pixels
    9
    """

    rows: tuple[float, ...]
    cols: tuple[float, ...]
    inclusive: bool = True
    where: str = field(default="an annotation", compare=False, repr=False)

    def pixels(self, shape):
        check_points(self.rows, self.cols, shape, where=self.where)
        r = np.asarray(self.rows, dtype=float)
        c = np.asarray(self.cols, dtype=float)
        if len(r) >= 3:
            rr, cc = draw.polygon(r, c, shape=shape)
        else:
            rr = cc = np.zeros(0, dtype=np.intp)
        if self.inclusive and len(r):
            rr, cc = _add_outline(rr, cc, r, c, shape)
        return rr, cc


def _add_outline(rr, cc, r, c, shape):
    """Add the pixels under a polygon's edges (rounded vertices) to (rr, cc), clipped to shape."""
    ri, ci = np.rint(r).astype(int), np.rint(c).astype(int)
    parts_r, parts_c = [rr], [cc]
    for k in range(len(ri)):
        lr, lc = draw.line(ri[k - 1], ci[k - 1], ri[k], ci[k])
        parts_r.append(lr)
        parts_c.append(lc)
    rr, cc = np.concatenate(parts_r), np.concatenate(parts_c)
    keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    return rr[keep], cc[keep]


@dataclass(frozen=True)
class EllipseRegion(Region):
    """An ellipse (VIA ``circle`` and ``ellipse``), pixel-centre coordinates.

    ``rotation`` is VIA's ``theta``: radians, turning the column axis towards the row axis
    (clockwise on screen, where rows grow downwards).

    Examples
    --------
    >>> rr, cc = EllipseRegion(5, 5, 2, 2).pixels((11, 11))
    >>> len(rr)
    13
    """

    row: float
    col: float
    row_radius: float
    col_radius: float
    rotation: float = 0.0
    where: str = field(default="an annotation", compare=False, repr=False)

    def pixels(self, shape):
        # Its bounding box is what gets drawn: that box must lie within the bounds.
        sizes = np.asarray([self.row_radius, self.col_radius, self.rotation], dtype=float)
        reach = float(np.abs(sizes[:2]).max()) if np.isfinite(sizes).all() else np.nan
        check_points([self.row - reach, self.row + reach], [self.col - reach, self.col + reach],
                     shape, where=self.where)
        if self.row_radius <= 0 or self.col_radius <= 0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        # skimage keeps centres strictly inside; the small margin takes those on the outline too.
        # skimage turns counter-clockwise on screen, VIA clockwise.
        return draw.ellipse(self.row, self.col, self.row_radius + 0.01, self.col_radius + 0.01,
                            shape=shape, rotation=-self.rotation)


@dataclass(frozen=True)
class RectRegion(Region):
    """An axis-aligned box: ``height`` x ``width`` pixels from pixel (``row``, ``col``).

    Examples
    --------
    >>> rr, cc = RectRegion(1, 2, 3, 4).pixels((10, 10))
    >>> len(rr), int(rr.min()), int(cc.max())
    (12, 1, 5)
    """

    row: float
    col: float
    height: float
    width: float
    where: str = field(default="an annotation", compare=False, repr=False)

    def pixels(self, shape):
        check_points([self.row, self.row + self.height], [self.col, self.col + self.width], shape,
                     where=self.where)
        r0, c0 = max(int(round(self.row)), 0), max(int(round(self.col)), 0)
        r1 = min(int(round(self.row + self.height)), shape[0])
        c1 = min(int(round(self.col + self.width)), shape[1])
        if r1 <= r0 or c1 <= c0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        grid_r, grid_c = np.mgrid[r0:r1, c0:c1]
        return grid_r.ravel(), grid_c.ravel()


@dataclass(frozen=True)
class MaskRegion(Region):
    """An object given as an RLE (COCO ``segmentation`` dict), decoded when painted."""

    rle: Mapping[str, Any] = field(hash=False, compare=False)
    name: str = "COCO file"

    def pixels(self, shape):
        return np.nonzero(decode_rle(self.rle, name=self.name, shape=shape))


@dataclass(frozen=True)
class AnnotatedImage:
    """The annotations one file holds for one image.

    Attributes
    ----------
    file_name : str
        As written in the file (may carry folders; match images by its stem).
    regions : tuple of Region
        One per object, in file order (later objects paint over earlier ones).
    shape : (int, int) or None
        (height, width) when the file states it (COCO); None for VIA.
    attributes : dict
        Extra per-image fields of the file (COCO image entry extras, VIA file attributes).
    notes : tuple of str
        Sentences about what was skipped or guessed while reading this image's entry.
    """

    file_name: str
    regions: tuple[Region, ...]
    shape: tuple[int, int] | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    notes: tuple[str, ...] = ()


def regions_to_labels(regions: Sequence[Region], shape: tuple[int, int]) -> np.ndarray:
    """Paint regions into an ``int32`` label image: region k (1-based, file order) is label k.

    Every region is one object, even when it touches another or comes in several parts.
    Where two regions overlap, the later one wins the shared pixels, and a warning is logged
    saying how many regions lost pixels that way (a region painted over entirely is gone).
    Parts outside the image are clipped.

    Examples
    --------
    >>> lab = regions_to_labels([RectRegion(0, 0, 2, 2), RectRegion(1, 1, 2, 2)], (4, 4))
    >>> lab.tolist()
    [[1, 1, 0, 0], [1, 2, 2, 0], [0, 2, 2, 0], [0, 0, 0, 0]]
    """
    shape = (int(shape[0]), int(shape[1]))
    labels = np.zeros(shape, dtype=np.int32)
    painted = np.zeros(len(regions) + 1, dtype=np.int64)
    for k, region in enumerate(regions, start=1):
        rr, cc = region.pixels(shape)
        labels[rr, cc] = k
        painted[k] = np.unique(np.asarray(rr, np.int64) * shape[1] + cc).size
    kept = np.bincount(labels.ravel(), minlength=len(painted))
    covered = np.flatnonzero((kept < painted)[1:]) + 1
    if covered.size:
        gone = int(np.count_nonzero(kept[covered] == 0))
        log.warning("%d of %d annotations overlap later ones, which keep the shared pixels%s.",
                    covered.size, len(regions),
                    f"; {gone} lie entirely under later ones and are lost" if gone else "")
    return labels


# ---------------------------------------------------------------------------------------------
# Label images -> outlines


def object_outlines(labels: np.ndarray, *, snap: bool = False) -> list[tuple[int, list[np.ndarray]]]:
    """Outer outlines of every object of a label image, holes dropped.

    Parameters
    ----------
    labels : (H, W) int or bool array
        Objects are label ids (bool masks are split into 8-connected components).
    snap : bool
        False: vertices on the mask's 0.5 iso-line, half a pixel outside the object's pixel
        centres (COCO style, rasterise non-inclusively). True: integer vertices on the object's
        boundary pixels (VIA / OpenCV style, rasterise inclusively).

    Returns
    -------
    list of (label, [contour, ...])
        One entry per present label, in label order. Each contour is an (N, 2) array of
        (row, col) vertices, not closed (last != first). An object in several 8-connected
        pieces has several contours, largest first.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((5, 5), int); lab[2, 2] = 7
    >>> [(k, c.tolist()) for k, (c,) in object_outlines(lab)]
    [(7, [[2.5, 2.0], [2.0, 1.5], [1.5, 2.0], [2.0, 2.5]])]
    >>> [(k, c.tolist()) for k, (c,) in object_outlines(lab, snap=True)]
    [(7, [[2, 2]])]
    """
    labels = as_labels(labels)
    out = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        crop = ndi.binary_fill_holes(np.pad(labels[box] == index, 1))
        contours = measure.find_contours(crop.astype(np.uint8), 0.5, fully_connected="high")
        contours = [c[:-1] for c in contours if len(c) > 2]
        contours.sort(key=lambda c: -abs(_shoelace(c)))
        if snap:
            contours = [_snap_to_pixels(c, crop) for c in contours]
        offset = np.array([box[0].start - 1, box[1].start - 1])
        out.append((index, [c + offset for c in contours]))
    return out


def _shoelace(contour: np.ndarray) -> float:
    """Signed area of a closed polygon given as an (N, 2) array of vertices."""
    r, c = contour[:, 0], contour[:, 1]
    return 0.5 * float(np.dot(r, np.roll(c, -1)) - np.dot(c, np.roll(r, -1)))


def _snap_to_pixels(contour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Move each half-pixel outline vertex onto the object pixel beside it.

    Every vertex of a 0.5 iso-line of a 0/1 image lies midway between an object pixel and a
    background pixel; taking the object one gives integer boundary-pixel centres, the outline
    OpenCV draws and FNC v2 stores.
    """
    low = np.floor(contour).astype(int)
    high = np.ceil(contour).astype(int)
    snapped = np.where(mask[low[:, 0], low[:, 1]][:, None], low, high)
    keep = np.ones(len(snapped), dtype=bool)
    keep[1:] = np.any(snapped[1:] != snapped[:-1], axis=1)
    snapped = snapped[keep]
    while len(snapped) > 1 and np.array_equal(snapped[0], snapped[-1]):
        snapped = snapped[:-1]
    return snapped


# ---------------------------------------------------------------------------------------------
# COCO run-length encoding (column-major, starting with a run of zeros)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a 2-D mask.

    Runs are counted down the columns (column-major, as COCO does) and alternate background,
    object, background, ...; the first run is background and may be 0.

    Examples
    --------
    >>> import numpy as np
    >>> encode_rle(np.array([[0, 1], [1, 1]], bool))
    {'size': [2, 2], 'counts': [1, 3]}
    >>> encode_rle(np.array([[1, 0]], bool))
    {'size': [1, 2], 'counts': [0, 1, 1]}
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE needs a 2-D mask; got shape {mask.shape}.")
    flat = mask.astype(bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(n) for n in counts]}


def decode_rle(rle: Mapping[str, Any], *, name: str = "COCO file",
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a COCO RLE (``counts`` a list, or COCO's compressed string) to a bool mask.

    The size is checked before anything is decoded: against ``shape`` when given (the image
    the annotation belongs to), and against ``core.io.MAX_PIXELS`` always, so a file that
    states an enormous size costs nothing.

    Examples
    --------
    >>> decode_rle({"size": [2, 2], "counts": [1, 3]}).astype(int).tolist()
    [[0, 1], [1, 1]]
    >>> decode_rle({"size": [1, 2], "counts": "011"}).astype(int).tolist()
    [[1, 0]]
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"{name}: an RLE segmentation needs 'size' [height, width] and "
                          f"'counts'; this one has {sorted(rle) if isinstance(rle, Mapping) else rle!r}.") from exc
    if shape is not None and (h, w) != (int(shape[0]), int(shape[1])):
        raise FormatError(f"{name}: an RLE mask is {h}x{w} but the image is {shape[0]}x"
                          f"{shape[1]}; check that the annotation belongs to this image.")
    if h <= 0 or w <= 0 or h * w > MAX_PIXELS:
        raise FormatError(f"{name}: an RLE mask states a size of {h}x{w}, which no image "
                          f"CellTally reads has; the annotation is damaged.")
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts, name=name)
    try:
        counts = np.asarray(counts, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{name}: RLE counts must be whole numbers; the annotation is "
                          f"damaged.") from None
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != h * w:
        raise FormatError(f"{name}: RLE counts add up to {int(counts.sum())} pixels but its size "
                          f"is {h}x{w} = {h * w}; the annotation is damaged.")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape((h, w), order="F")


def decode_rle_string(text: str | bytes, *, name: str = "COCO file") -> list[int]:
    """Counts of COCO's compressed RLE string.

    Each count is split into 5-bit groups, least significant first, each stored as a character
    ``48 + group`` with bit 0x20 meaning "more groups follow" and bit 0x10 of the last group the
    sign; from the third count on, a count is stored as its difference to the count two before.

    Examples
    --------
    >>> decode_rle_string("1232")
    [1, 2, 3, 4]
    >>> decode_rle_string("151M")
    [1, 5, 1, 2]
    """
    try:
        data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError:
        raise FormatError(f"{name}: a compressed RLE string holds characters other than COCO's "
                          f"letters and digits; the annotation is damaged.") from None
    counts: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise FormatError(f"{name}: a compressed RLE string ends in the middle of a "
                                  f"number; the annotation is damaged.")
            group = data[pos] - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


# ---------------------------------------------------------------------------------------------
# Reading


def parse_json(data: bytes | str | Mapping[str, Any], *, name: str = "annotation file") -> Any:
    """Parse JSON bytes or text (a dict passes through), with a sentence when it is not JSON.

    Examples
    --------
    >>> parse_json(b'{"a": 1}')
    {'a': 1}
    >>> parse_json("[", name="x.json")
    Traceback (most recent call last):
    ...
    core.formats.FormatError: x.json is not valid JSON (line 1, column 2: Expecting value); export it again from the annotation tool.
    """
    if isinstance(data, Mapping):
        return data
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8-sig", errors="replace")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}); export it again from the annotation tool.") from None
    except RecursionError:
        raise FormatError(f"{name} nests its brackets deeper than any annotation file does; it "
                          f"is damaged or not an annotation file.") from None
    except MemoryError:
        raise FormatError(f"{name} is too large to read as JSON here; split it into smaller "
                          f"files.") from None


def _refuse_malformed(read):
    """Make a reader turn what a malformed document makes Python raise into a FormatError.

    Any JSON value may stand where a list or a number is expected; rather than guard every
    access, a wrong type anywhere refuses the file with one sentence naming it.
    """
    @functools.wraps(read)
    def guarded(data, *, name: str | None = None, **options):
        label = name or read.__kwdefaults__["name"]
        try:
            return read(data, name=label, **options)
        except FormatError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                RecursionError, MemoryError) as exc:
            raise FormatError(f"{label} does not have the structure of a VIA or COCO file "
                              f"({type(exc).__name__}: {str(exc)[:120]}); export it again from "
                              f"the annotation tool.") from None
    return guarded


def _via_metadata(doc: Any) -> Mapping[str, Any] | None:
    """The per-image part of a VIA document: a project's ``_via_img_metadata``, or the bare
    dictionary VIA's "export annotations as JSON" (and FNC v2) writes."""
    if not isinstance(doc, Mapping):
        return None
    meta = doc.get("_via_img_metadata")
    if isinstance(meta, Mapping):
        return meta
    entries = [v for v in doc.values() if isinstance(v, Mapping)]
    if entries and len(entries) == len(doc) and all("filename" in v and "regions" in v
                                                    for v in entries):
        return doc
    return None


def detect_format(doc: Any) -> str | None:
    """``"via"``, ``"coco"`` or None for a parsed JSON document.

    Examples
    --------
    >>> detect_format({"_via_img_metadata": {}}), detect_format({"images": []}), detect_format([])
    ('via', 'coco', None)
    """
    if _via_metadata(doc) is not None:
        return "via"
    if isinstance(doc, Mapping) and isinstance(doc.get("images"), list):
        return "coco"
    return None


def read_annotations(data: bytes | str | Mapping[str, Any], *, name: str = "annotation file",
                     categories: Sequence[str] | None = None) -> tuple[str, list[AnnotatedImage]]:
    """Read a VIA or COCO document, whichever it is: ``(format, images)``.

    ``categories`` chooses COCO categories by name (see :func:`read_coco`); VIA ignores it.

    Raises
    ------
    FormatError
        When the document is neither, with a sentence saying what was expected.
    CategoryError
        A COCO file with several categories and none chosen, or a chosen name it lacks.
    """
    doc = parse_json(data, name=name)
    kind = detect_format(doc)
    if kind == "via":
        return kind, read_via(doc, name=name)
    if kind == "coco":
        return kind, read_coco(doc, name=name, categories=categories)
    raise FormatError(f"{name} is neither a VIA-2 file (no '_via_img_metadata') nor a COCO file "
                      f"(no 'images' list); export VIA-2 JSON or COCO instances JSON instead.")


@_refuse_malformed
def read_via(data: bytes | str | Mapping[str, Any], *,
             name: str = "VIA file") -> list[AnnotatedImage]:
    """Read VIA-2 annotations (a project file or an exported annotation JSON).

    Polygons and polylines become inclusive :class:`PolygonRegion` objects (boundary-pixel
    points, as OpenCV and FNC v2 write them), or, in a file :func:`via_document` wrote (marked
    ``"_celltally"``), polygons on pixel corners; ``circle`` and ``ellipse`` become
    :class:`EllipseRegion`, ``rect`` :class:`RectRegion`; points and unknown shapes are skipped
    with a note. VIA 1's ``regions`` dictionary is accepted as well as a list. Each region is
    one object.

    Examples
    --------
    >>> doc = {"_via_img_metadata": {"a.png1": {"filename": "a.png", "size": 1, "regions": [
    ...     {"shape_attributes": {"name": "rect", "x": 1, "y": 2, "width": 3, "height": 2}},
    ...     {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}]}}}
    >>> (img,) = read_via(doc)
    >>> img.file_name, img.regions, img.notes[0][:30]
    ('a.png', (RectRegion(row=2.0, col=1.0, height=2.0, width=3.0),), 'a.png: region 2 is a point, wh')
    """
    doc = parse_json(data, name=name)
    meta = _via_metadata(doc)
    corners = isinstance(doc, Mapping) and isinstance(doc.get(VIA_MARK), Mapping) and \
        doc[VIA_MARK].get("vertices") == "pixel corners"
    if meta is None:
        raise FormatError(f"{name} is not a VIA-2 file: it has no '_via_img_metadata' entries "
                          f"with 'filename' and 'regions'; export it from VIA as JSON.")
    return [_via_image(key, entry, name, corners=corners) for key, entry in meta.items()
            if isinstance(entry, Mapping)]


def _via_image(key: str, entry: Mapping[str, Any], name: str, *,
               corners: bool = False) -> AnnotatedImage:
    """One VIA image entry -> :class:`AnnotatedImage` (raises what a malformed entry makes)."""
    file_name = str(entry.get("filename") or key)
    raw = entry.get("regions") or []
    raw = list(raw.values()) if isinstance(raw, Mapping) else list(raw)
    regions, notes = [], []
    for k, region in enumerate(raw, start=1):
        made, note = _via_region(region, f"{file_name}: region {k}", name, corners=corners)
        if made is not None:
            regions.append(made)
        if note:
            notes.append(note)
    attrs = entry.get("file_attributes")
    attrs = attrs if isinstance(attrs, Mapping) else {}
    return AnnotatedImage(file_name, tuple(regions), None, dict(attrs), tuple(notes))


def _via_region(region: Any, where: str, source: str, *,
                corners: bool = False) -> tuple[Region | None, str | None]:
    """One VIA region -> (Region or None, a note when it was skipped).

    ``corners``: polygon points lie on pixel corners (a file written here), not on boundary
    pixels.
    """
    shape = region.get("shape_attributes") if isinstance(region, Mapping) else None
    if not isinstance(shape, Mapping):
        return None, f"{where} has no 'shape_attributes' and was skipped."
    kind = str(shape.get("name", "")).lower()
    at = f"{source}: {where}"
    try:
        if kind in ("polygon", "polyline"):
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            if len(xs) != len(ys) or len(xs) == 0:
                return None, f"{where} has {len(xs)} x and {len(ys)} y points and was skipped."
            if corners:  # pixel corners -> pixel-centre coordinates, centres strictly inside
                return PolygonRegion(tuple(float(y) - 0.5 for y in ys),
                                     tuple(float(x) - 0.5 for x in xs), False, at), None
            return PolygonRegion(tuple(map(float, ys)), tuple(map(float, xs)), True, at), None
        if kind == "circle":
            r = float(shape["r"])
            return EllipseRegion(float(shape["cy"]), float(shape["cx"]), r, r, 0.0, at), None
        if kind == "ellipse":
            return EllipseRegion(float(shape["cy"]), float(shape["cx"]), float(shape["ry"]),
                                 float(shape["rx"]), float(shape.get("theta", 0.0)), at), None
        if kind == "rect":
            return RectRegion(float(shape["y"]), float(shape["x"]), float(shape["height"]),
                              float(shape["width"]), at), None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        return None, f"{where} is a {kind} without a usable {exc} value and was skipped."
    what = f"a {kind}" if kind else "a shape without a name"
    return None, (f"{where} is {what}, which has no area to make a mask from, and was skipped; "
                  f"draw cells as polygons, circles, ellipses or rectangles.")


@_refuse_malformed
def read_coco(data: bytes | str | Mapping[str, Any], *, name: str = "COCO file",
              categories: Sequence[str] | None = None) -> list[AnnotatedImage]:
    """Read COCO instance annotations, standard or as FNC v2 writes them.

    Categories: with ``categories`` (names), only annotations of those categories are read;
    without, a file whose annotations use one category (or none, as FNC v2's) is read whole, and
    one whose annotations use several is refused with :class:`CategoryError` listing them.

    Standard COCO has one annotation per object whose ``segmentation`` is a list of flat
    ``[x1, y1, x2, y2, ...]`` polygons (the parts of that object, in pixel-corner coordinates) or
    an RLE dict. FNC v2 writes one annotation per *image* whose ``segmentation`` lists one
    ``[[x, y], ...]`` outline per object, integer boundary-pixel points, and no ``categories``;
    each of those outlines becomes its own object. Image ids may be numbers or strings.

    Examples
    --------
    >>> fnc = {"images": [{"id": "a", "file_name": "a.png", "height": 6, "width": 6}],
    ...        "annotations": [{"image_id": "a", "segmentation": [
    ...            [[1, 1], [3, 1], [3, 3], [1, 3]], [[5, 5], [5, 5], [5, 5]]]}]}
    >>> (img,) = read_coco(fnc)
    >>> regions_to_labels(img.regions, img.shape)[:, :].max(), img.shape
    (np.int32(2), (6, 6))
    """
    doc = parse_json(data, name=name)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("images"), list):
        raise FormatError(f"{name} is not a COCO file: it has no 'images' list; export COCO "
                          f"instances JSON from the annotation tool.")
    entries: dict[str, dict[str, Any]] = {}
    for k, image in enumerate(doc["images"], start=1):
        if not isinstance(image, Mapping) or "file_name" not in image:
            raise FormatError(f"{name}: image entry {k} has no 'file_name'; every COCO image "
                              f"needs 'id' and 'file_name'.")
        key = str(image.get("id", image["file_name"]))
        entries[key] = {"image": image, "regions": [], "notes": []}
    if not isinstance(doc.get("annotations") or [], list):
        raise FormatError(f"{name}: 'annotations' is not a list; export COCO instances JSON "
                          f"from the annotation tool.")
    wanted = _wanted_categories(doc, categories, name)
    for k, ann in enumerate(doc.get("annotations") or [], start=1):
        if wanted is not None and isinstance(ann, Mapping) and \
                str(ann.get("category_id")) not in wanted:
            continue
        target = entries.get(str(ann.get("image_id"))) if isinstance(ann, Mapping) else None
        if target is None:
            log.warning("%s: annotation %d names no listed image and was skipped.", name, k)
            continue
        regions, note = _coco_segmentation(ann, f"{name}: annotation {k}")
        target["regions"].extend(regions)
        if note:
            target["notes"].append(note)
    return [_coco_image(e, name) for e in entries.values()]


def _wanted_categories(doc: Mapping[str, Any], chosen: Sequence[str] | None,
                       name: str) -> set[str] | None:
    """The category ids (as text) whose annotations are read; None reads every annotation.

    Examples
    --------
    >>> doc = {"categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "glia"}],
    ...        "annotations": [{"category_id": 1}, {"category_id": 2}]}
    >>> _wanted_categories(doc, ["glia"], "c.json")
    {'2'}
    >>> _wanted_categories(doc, None, "c.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    core.formats.CategoryError: c.json holds annotations of 2 categories: cell, glia. ...
    """
    listed = doc.get("categories") if isinstance(doc.get("categories"), list) else []
    names = {str(c.get("id")): str(c.get("name", c.get("id"))) for c in listed
             if isinstance(c, Mapping)}
    anns = [a for a in doc.get("annotations") or [] if isinstance(a, Mapping)]
    used = sorted({str(a.get("category_id")) for a in anns if a.get("category_id") is not None}
                  & set(names), key=lambda i: names[i])
    if chosen:
        chosen = [str(c).strip() for c in chosen if str(c).strip()]
        unknown = [c for c in chosen if c not in names.values()]
        if names and unknown:
            raise CategoryError(f"{name} has no category {', '.join(unknown)}; its categories "
                                f"are {', '.join(sorted(set(names.values())))}.")
        # A file without categories (FNC v2) has nothing to choose from: read it whole.
        return {i for i, n in names.items() if n in chosen} if names else None
    if len(used) > 1:
        listed_names = ", ".join(names[i] for i in used)
        raise CategoryError(f"{name} holds annotations of {len(used)} categories: {listed_names}. "
                            f"Choose which are cells with --categories NAME[,NAME] "
                            f"(e.g. --categories {names[used[0]]}).")
    return None


def _coco_image(entry: Mapping[str, Any], name: str) -> AnnotatedImage:
    """Build one :class:`AnnotatedImage` from a collected COCO image entry."""
    image = entry["image"]
    shape = None
    try:
        if image.get("height") is not None and image.get("width") is not None:
            shape = (int(image["height"]), int(image["width"]))
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{name}: image {image['file_name']!r} has height "
                          f"{image.get('height')!r} and width {image.get('width')!r}; "
                          f"both must be whole numbers.") from None
    skip = {"id", "file_name", "height", "width"}
    attrs = {k: v for k, v in image.items() if k not in skip}
    return AnnotatedImage(str(image["file_name"]), tuple(entry["regions"]), shape, attrs,
                          tuple(entry["notes"]))


def _depth(value: Any) -> int:
    """Nesting depth of the first elements of nested lists: 3 for [[[x, y], ...]]."""
    depth = 0
    while isinstance(value, (list, tuple)) and value:
        depth += 1
        value = value[0]
    return depth


def _coco_segmentation(ann: Mapping[str, Any], where: str) -> tuple[list[Region], str | None]:
    """Regions of one COCO annotation and a note when something was skipped or guessed."""
    seg = ann.get("segmentation")
    box = ann.get("bbox")
    if isinstance(seg, Mapping):
        return [MaskRegion(seg, where)], None
    if _empty(seg) and _empty(box):
        return [], None  # FNC v2's entry for an image without cells: nothing to skip or note
    depth = _depth(seg)
    try:
        if depth == 3:  # FNC v2: one [[x, y], ...] outline per object
            polys = [np.asarray(p, dtype=float).reshape(-1, 2) for p in seg if len(p)]
            return [PolygonRegion(tuple(p[:, 1]), tuple(p[:, 0]), True, where)
                    for p in polys], None
        if depth in (1, 2):  # standard: flat polygons, all parts of one object
            parts = [seg] if depth == 1 else [p for p in seg if len(p) >= 6]
            return [_coco_polygon_parts(parts, where)] if parts else [], None
        if (isinstance(box, (list, tuple)) and len(box) == 4
                and not isinstance(box[0], (list, tuple))):
            x, y, w, h = (float(v) for v in box)
            return [RectRegion(y, x, h, w, where)], (f"{where} has no segmentation, only a box; "
                                                     f"the box was used as the object's outline.")
    except (TypeError, ValueError, OverflowError):
        return [], (f"{where} has a segmentation or box that is not a list of numbers and was "
                    f"skipped.")
    return [], f"{where} has neither a segmentation nor a box and was skipped."


def _empty(value: Any) -> bool:
    """None, or (nested) lists holding nothing: ``[]``, ``[[]]``.

    >>> _empty(None), _empty([[], []]), _empty([[0, 0, 1, 0, 1, 1]])
    (True, True, False)
    """
    if value is None:
        return True
    return isinstance(value, (list, tuple)) and all(_empty(v) for v in value)


@dataclass(frozen=True)
class _MultiPolygonRegion(Region):
    """Several polygon parts of one COCO object."""

    parts: tuple[PolygonRegion, ...]

    def pixels(self, shape):
        found = [p.pixels(shape) for p in self.parts]
        return (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]))


def _coco_polygon_parts(parts: Sequence[Sequence[float]], where: str) -> Region:
    """Flat pixel-corner COCO polygons -> one region in pixel-centre coordinates."""
    regions = []
    for part in parts:
        xy = np.asarray(part, dtype=float)
        if xy.size % 2:
            raise ValueError("odd number of coordinates")
        xy = xy.reshape(-1, 2) - 0.5  # pixel corners -> pixel centres
        regions.append(PolygonRegion(tuple(xy[:, 1]), tuple(xy[:, 0]), False, where))
    return regions[0] if len(regions) == 1 else _MultiPolygonRegion(tuple(regions))


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class ExportImage:
    """One image to write: its file name, its label image and extra fields.

    Attributes
    ----------
    file_name : str
        Name the annotation refers to (the image's original name).
    labels : (H, W) int or bool array
        Objects as label ids (bool masks are split into 8-connected components).
    size : int
        File size in bytes, for VIA's image key; -1 when unknown (VIA's own convention).
    attributes : dict
        Extra fields: added to the COCO image entry, and as VIA file attributes.
    """

    file_name: str
    labels: np.ndarray = field(repr=False, compare=False)
    size: int = -1
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False)


def _coco_annotation(cell: CellOutline, labels: np.ndarray, rle: bool) -> dict[str, Any]:
    """``segmentation``, ``bbox`` and ``area`` of one cell: its corner polygon when that is
    exact (one piece, no hole) and ``rle`` is False, else its uncompressed RLE."""
    corners = np.concatenate(cell.rings())
    top, left = (int(v) for v in corners.min(axis=0))
    bottom, right = (int(v) for v in corners.max(axis=0))
    if rle or not cell.simple:
        segmentation: Any = encode_rle(labels == cell.label)
    else:  # (row, col) corners -> flat [x, y, ...]
        segmentation = [cell.parts[0].exterior[:, ::-1].astype(float).ravel().tolist()]
    return {"segmentation": segmentation, "bbox": [left, top, right - left, bottom - top],
            "area": int(cell.area)}


def coco_document(images: Iterable[ExportImage], *, category: str = "cell", rle: bool = False,
                  description: str = "CellTally export") -> dict[str, Any]:
    """A standard COCO instances document: one annotation per cell (label), ``iscrowd`` 0.

    Parameters
    ----------
    images : iterable of ExportImage
    category : str
        Name of the single category (id 1).
    rle : bool
        Write every cell as an uncompressed RLE. Without it, a cell that one simple polygon
        describes exactly is a polygon on pixel corners (x = column, y = row, origin at the
        top-left corner of pixel (0, 0), as :mod:`core.polygons` traces it), and a cell with a
        hole or in several pieces is an uncompressed, column-major RLE with ``size`` [h, w]
        (COCO polygons have no holes, and pieces as polygon parts would overlap nothing but
        still lose their holes). Either way ``pycocotools``' ``annToMask`` gives back exactly the
        cell's pixels.
    description : str
        Goes into the ``info`` block.

    Returns
    -------
    dict
        ``info``, ``images`` (ids from 1, with ``height``, ``width`` and the extra attributes),
        ``annotations`` (ids from 1; ``segmentation``, ``bbox`` [x, y, w, h], ``area`` in pixels,
        ``iscrowd`` 0, ``category_id`` 1) and ``categories``.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((4, 4), int); lab[1:3, 1:3] = 1
    >>> ann = coco_document([ExportImage("a.png", lab)])["annotations"][0]
    >>> ann["segmentation"], ann["bbox"], ann["area"]
    ([[1.0, 1.0, 3.0, 1.0, 3.0, 3.0, 1.0, 3.0]], [1, 1, 2, 2], 4)
    >>> coco_document([ExportImage("a.png", lab)], rle=True)["annotations"][0]["segmentation"]
    {'size': [4, 4], 'counts': [5, 2, 2, 2, 5]}
    """
    doc: dict[str, Any] = {"info": {"description": description, "version": "1.0"},
                           "licenses": [], "images": [], "annotations": [],
                           "categories": [{"id": 1, "name": category, "supercategory": category}]}
    for image_id, item in enumerate(images, start=1):
        labels = as_labels(item.labels)
        entry = {"id": image_id, "file_name": item.file_name,
                 "height": int(labels.shape[0]), "width": int(labels.shape[1])}
        entry.update({k: v for k, v in item.attributes.items() if k not in entry})
        doc["images"].append(entry)
        for cell in label_outlines(labels).values():
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "category_id": 1, **_coco_annotation(cell, labels, rle),
                                       "iscrowd": 0})
    return doc


def via_document(images: Iterable[ExportImage], *, project: str = "celltally") -> dict[str, Any]:
    """A VIA-2 project: one polygon region per cell, vertices on pixel corners.

    Vertices follow :mod:`core.polygons` (x = column, y = row, origin at the top-left corner of
    pixel (0, 0)); the file is marked (``"_celltally": {"vertices": "pixel corners"}``) so
    :func:`read_via` reads it back by that rule. A VIA region is one polygon without holes, so
    a cell that is not one simple polygon gets the outer outline of its largest piece: its
    holes are filled and its smaller pieces left out. Regions are written largest filled area
    first, so a cell lying in another's hole comes later and, painted in file order (later
    wins, as :func:`regions_to_labels` and VIA draw them), keeps its pixels. File attributes
    carry ``attributes`` as strings.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((5, 5), int); lab[1:3, 1:4] = 1
    >>> doc = via_document([ExportImage("a.png", lab, size=10)])
    >>> doc["_via_image_id_list"], doc["_via_img_metadata"]["a.png10"]["regions"][0]["shape_attributes"]
    (['a.png10'], {'name': 'polygon', 'all_points_x': [1, 4, 4, 1], 'all_points_y': [1, 1, 3, 3]})
    """
    meta: dict[str, Any] = {}
    for item in images:
        outer = [(cell.parts[0].exterior, abs(signed_area(cell.parts[0].exterior)))
                 for cell in label_outlines(as_labels(item.labels)).values()]
        outer.sort(key=lambda ring_area: -ring_area[1])
        regions = [{"shape_attributes": {"name": "polygon",
                                         "all_points_x": [int(v) for v in ring[:, 1]],
                                         "all_points_y": [int(v) for v in ring[:, 0]]},
                    "region_attributes": {}} for ring, _ in outer]
        key = f"{item.file_name}{int(item.size)}"
        meta[key] = {"filename": item.file_name, "size": int(item.size), "regions": regions,
                     "file_attributes": {k: "" if v is None else str(v)
                                         for k, v in item.attributes.items()}}
    settings = json.loads(json.dumps(VIA_SETTINGS))
    settings["project"]["name"] = project
    return {"_via_settings": settings, "_via_img_metadata": meta,
            "_via_attributes": {"region": {}, "file": {}}, "_via_data_format_version": "2.0.10",
            "_via_image_id_list": list(meta), VIA_MARK: {"vertices": "pixel corners"}}
