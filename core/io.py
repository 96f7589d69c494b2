"""Reading and writing images and masks, with checks a lab user can act on.

:func:`read_microscopy` turns a PNG, a TIFF (plain, ImageJ or OME) or a JPEG into the 8-bit RGB
image CellTally counts on, and says how it did: which channel and plane, which rule mapped the
file's values to 0-255, and the pixel size when the file records one. :func:`read_image` is its
short form for callers that need only the pixels; :func:`read_mask` gives bool (rows, cols) and
:func:`read_labels` the cells of a mask or label image (:func:`write_labels` writes 16-bit label
PNGs, the form mask versions are stored in).
Anything wrong with the input raises :class:`ImageError` with a sentence that names the file, says
what is wrong and what to do, so a page can show it with ``st.error`` and the counting CLI can
write it into its CSV. No decoder exception escapes raw.

Two guards run before any pixel is decoded: the pixel count from the header against
``MAX_PIXELS``, and for PNG the compressed data against the byte count its header allows
(inflated in bounded steps, at most one byte past that count), so a small file that claims or
inflates to something enormous (a decompression bomb) costs next to nothing.

Values are never stretched by an image's own maximum, so a dim field stays dim. The scale comes
from, in this order: a fixed display range, the significant bits the file declares (OME
``SignificantBits``, TIFF ``BitsPerSample``, PNG ``sBIT``), the depth of its container.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from core.objects import MAX_LABELS, as_labels

logger = logging.getLogger(__name__)

MAX_PIXELS = 100_000_000
#: Colour of a single channel, as 0/1 weights for red, green, blue.
STAINS = {"grey": (1, 1, 1), "gray": (1, 1, 1), "red": (1, 0, 0), "green": (0, 1, 0),
          "yellow": (1, 1, 0)}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_MAGIC = b"\xff\xd8\xff"
# Formats we recognise only to say so in the message; they are not read.
_OTHER_MAGICS = {b"GIF8": "GIF", b"BM": "BMP", b"%PDF": "PDF", b"\x00\x00\x00\x0cjP": "JPEG 2000"}
# Microscope formats: no well-kept reader without a JVM exists, Fiji's Bio-Formats exports them.
_VENDOR_MAGICS = {b"ZISRAWFILE": "Zeiss CZI", b"\xda\xce\xbe\x0a": "Nikon ND2"}
_FIX = "Export it again as PNG, TIFF or JPEG"
_RGB_NAMES = ("red", "green", "blue")

# PNG: samples per pixel and legal bit depths per colour type, and the Adam7 passes as
# (first row, first column, row step, column step).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
          (1, 0, 2, 1))
_INFLATE_STEP = 1 << 22  # bytes inflated (and dropped) per step of the PNG size check

_TIFF_DIRECT = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
_TIFF_ALPHA = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
_MAX_WHOLE_SERIES_BYTES = 2 << 30  # a series that cannot be read page by page is read whole
# Micrometres per unit, keyed by the unit names OME and ImageJ write (lower case).
_MICROMETRES = {"um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "\\u00b5m": 1.0, "micron": 1.0,
                "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "mm": 1e3,
                "cm": 1e4, "m": 1e6}


class ImageError(ValueError):
    """An image or mask file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ReadOptions:
    """How a microscopy file becomes the 8-bit RGB image CellTally counts on.

    Parameters
    ----------
    channel : int, optional
        The channel to count on, from 0 (in an RGB image 0, 1 and 2 are red, green and blue).
        Without it an RGB image stays RGB, a single channel is used as it is, and a file with two
        or more other channels is refused until a channel or a ``composition`` is chosen.
    display_range : (float, float), optional
        The raw values that become 0 and 255; values outside are clipped. Without it the file's
        declared depth decides (see :func:`read_microscopy`).
    stain : {"grey", "yellow", "red", "green"}
        The colour a single channel is shown in ("gray" is accepted too).
    composition : (int or None, int or None, int or None), optional
        The channels that become red, green and blue (None leaves that colour dark). Not
        together with ``channel``.
    z : int or "max", optional
        For a Z-stack or a multi-page TIFF: the plane to use (from 0), or ``"max"`` for the
        maximum projection over all planes. Ignored for a single-plane image.

    Examples
    --------
    >>> ReadOptions(channel=1, display_range=(100, 4000), stain="yellow").display_range
    (100.0, 4000.0)
    >>> ReadOptions.from_text(composition="1,0,-", z="max").composition
    (1, 0, None)
    """

    channel: int | None = None
    display_range: tuple[float, float] | None = None
    stain: str = "grey"
    composition: tuple[int | None, int | None, int | None] | None = None
    z: int | str | None = None

    def __post_init__(self):
        if self.channel is not None and not _is_index(self.channel):
            raise ValueError(f"channel must be a whole number from 0; got {self.channel!r}")
        if self.display_range is not None:
            object.__setattr__(self, "display_range", _checked_range(self.display_range))
        if self.stain not in STAINS:
            raise ValueError(f"stain must be one of {', '.join(STAINS)}; got {self.stain!r}")
        if self.composition is not None:
            object.__setattr__(self, "composition", _checked_composition(self.composition))
            if self.channel is not None:
                raise ValueError("choose either one channel or an RGB composition, not both")
        if self.z is not None and self.z != "max" and not _is_index(self.z):
            raise ValueError(f"z must be a plane number from 0 or 'max'; got {self.z!r}")

    @classmethod
    def from_text(cls, *, channel=None, display_range=None, stain=None, composition=None,
                  z=None):
        """Build options from command-line text: ``"1"``, ``"100:4000"``, ``"1,0,-"``, ``"max"``.

        Examples
        --------
        >>> ReadOptions.from_text(channel="2", display_range="0:4095", z="3")
        ReadOptions(channel=2, display_range=(0.0, 4095.0), stain='grey', composition=None, z=3)
        """
        def number(text, flag):
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{flag} takes a whole number; got {text!r}") from None

        if display_range is not None:
            text = str(display_range)
            low, sep, high = text.partition(":")
            try:
                display_range = (float(low), float(high))
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"--display-range takes LO:HI, e.g. 100:4000; got {text!r}")
        if composition is not None:
            parts = str(composition).split(",")
            composition = tuple(None if p.strip() in ("", "-") else number(p, "--composition")
                                for p in parts)
        return cls(channel=None if channel is None else number(channel, "--channel"),
                   display_range=display_range, stain=stain or "grey", composition=composition,
                   z=None if z is None else "max" if str(z).strip() == "max" else number(z, "--z"))


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_microscopy` read from a file, for the import report and the metadata.

    Attributes
    ----------
    format : str
        ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"OME-TIFF"`` or ``"ImageJ TIFF"``.
    dtype : str
        The stored sample type, e.g. ``"uint16"``.
    bits : int
        Bits per sample the stored values use: the declared significant bits (e.g. 12 in a
        16-bit container), else the container's depth.
    scaling : str
        The rule that mapped values to 0-255: ``"display range"``, ``"significant bits"``,
        ``"container depth"`` or ``"as stored"`` (8-bit values kept).
    scaling_note : str
        A sentence saying how the values became 0-255.
    channels : str
        Which channel(s) made the RGB image, in words.
    z : str or None
        The plane used or the projection, when the file holds several planes.
    pixel_size_um : (float, float) or None
        Micrometres per pixel along rows and columns, from OME or ImageJ metadata.
    notes : tuple of str
        Further sentences for the import report.
    """

    format: str
    dtype: str
    bits: int
    scaling: str
    scaling_note: str
    channels: str
    z: str | None = None
    pixel_size_um: tuple[float, float] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ImageRead:
    """Pixels and what was read: ``rgb`` uint8 (rows, cols, 3) and ``info`` (:class:`ImageInfo`)."""

    rgb: np.ndarray
    info: ImageInfo


@dataclass(frozen=True, eq=False)
class _Stack:
    """A decoded file before channels are chosen and values scaled: (rows, cols, channels)."""

    pixels: np.ndarray
    format: str
    rgb: bool = False
    names: tuple = ()
    significant: tuple[int, str] | None = None  # (bits, where the file declares them)
    pixel_size_um: tuple[float, float] | None = None
    z: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Scale:
    rule: str
    note: str
    bits: int
    low: float = 0.0
    high: float = 255.0
    shift: int = 0


def read_microscopy(source, *, name=None, options=ReadOptions()):
    """Read a microscopy image as 8-bit RGB, and say how it was read.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A PNG, TIFF (plain, ImageJ or OME; any compression tifffile knows) or JPEG file, as a
        path or the file's contents.
    name : str, optional
        The file name used in messages (defaults to the path's name, or ``"<bytes>"``).
    options : ReadOptions, optional
        Channel, display range, stain colour or composition, and Z plane.

    Returns
    -------
    ImageRead
        ``rgb``: uint8 (rows, cols, 3); ``info``: :class:`ImageInfo`.

    Raises
    ------
    ImageError
        Not an image, an unsupported format (CZI, ND2 and LIF: export as OME-TIFF), truncated,
        zero-sized, above ``MAX_PIXELS``, a PNG whose data inflates past its header, several
        planes without ``z``, several non-RGB channels without ``channel``, a channel or plane
        that does not exist, floating-point values beyond 0-1 without a display range.

    Notes
    -----
    Values become 0-255 by the first rule that applies, never by the image's own maximum:

    1. ``options.display_range`` (lo, hi): ``(v - lo) * 255 / (hi - lo)``, clipped;
    2. significant bits b declared by the file, fewer than the container holds: OME
       ``SignificantBits`` or TIFF ``BitsPerSample`` (values 0 to 2**b - 1), or PNG ``sBIT``
       (the standard stores those values scaled to the full depth, so the unused low bits are
       shifted away first);
    3. the container: 8-bit as stored, 16-bit 0-65535 (v / 257), other integers their positive
       range, 1-bit as 0/255, floating point 0-1.

    Every rule rounds to the nearest integer, halves up. Alpha is dropped. The pixel count is
    checked from the header against ``MAX_PIXELS`` before any pixel is decoded; Pillow's own,
    lower warning level (about 89 megapixels) is silenced because that check already guards.

    Examples
    --------
    >>> import numpy as np
    >>> read = read_microscopy(encode_png(np.array([[0, 257, 65535]], np.uint16)))
    >>> read.rgb[0, :, 0].tolist(), read.info.scaling
    ([0, 1, 255], 'container depth')
    >>> red = ReadOptions(display_range=(0, 4000), stain="red")
    >>> png = encode_png(np.array([[0, 2000]], np.uint16))
    >>> read_microscopy(png, options=red).rgb[0, 1].tolist()
    [128, 0, 0]
    """
    if not isinstance(options, ReadOptions):
        raise TypeError(f"options must be a ReadOptions, not {type(options).__name__}")
    data, label = _load(source, name)
    stack = _read_stack(data, label, options.z)
    order, channels = _choose_channels(stack, options, label)
    used = sorted({k for k in order if k is not None})
    scale = _choose_scale(stack, options, used, label)
    if order == (0, 1, 2) and scale.rule == "as stored" and stack.pixels.shape[-1] == 3:
        rgb = np.ascontiguousarray(stack.pixels)
    else:
        scaled = {k: _scale_to_uint8(stack.pixels[..., k], scale) for k in used}
        dark = np.zeros(stack.pixels.shape[:2], np.uint8)
        rgb = np.dstack([dark if k is None else scaled[k] for k in order])
    notes = stack.notes + _clipping_notes(stack, used, scale)
    info = ImageInfo(format=stack.format, dtype=str(stack.pixels.dtype), bits=scale.bits,
                     scaling=scale.rule, scaling_note=scale.note, channels=channels, z=stack.z,
                     pixel_size_um=stack.pixel_size_um, notes=notes)
    return ImageRead(rgb, info)


def read_image(source, *, name=None):
    """Read a PNG, TIFF or JPEG image as 8-bit RGB (:func:`read_microscopy`'s pixels).

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file path, or the file's contents.
    name : str, optional
        The file name used in error messages (defaults to the path's name, or
        ``"<bytes>"``).

    Returns
    -------
    rgb : ndarray of uint8, shape (rows, cols, 3)
        8-bit values as stored; grayscale is replicated to three channels and alpha is dropped.
        Deeper values are scaled by the bits the file declares or its container's depth (16-bit:
        0-65535 to 0-255), never by the image's own maximum (see :func:`read_microscopy`).

    Raises
    ------
    ImageError
        Not an image, an unsupported format, truncated, zero-sized, above ``MAX_PIXELS``, or
        a file that needs a choice of plane or channel (:func:`read_microscopy` takes one).

    Examples
    --------
    >>> import numpy as np
    >>> gray16 = np.array([[0, 32896, 65535]], dtype=np.uint16)
    >>> read_image(encode_png(gray16))[0, :, 0].tolist()
    [0, 128, 255]
    """
    return read_microscopy(source, name=name).rgb


def read_mask(source, *, shape=None, name=None):
    """Read a mask image: any nonzero pixel, in any colour channel, is foreground.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file path, or the file's contents.
    shape : tuple of int, optional
        The (rows, cols[, ...]) shape of the image the mask belongs to; a mask of
        another size raises ``ImageError``.
    name : str, optional
        The file name used in error messages.

    Returns
    -------
    mask : ndarray of bool, shape (rows, cols)

    Notes
    -----
    Nonzero is tested on the decoded values before any rescaling, so a 16-bit label
    image with small ids keeps every object. The alpha channel is ignored. A TIFF mask is
    read from its first page. JPEG masks are lossy: compression noise around objects becomes
    foreground, so a warning is logged.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[0, 1], [7, 0]], dtype=np.uint16)
    >>> read_mask(encode_png(labels), shape=(2, 2)).tolist()
    [[False, True], [True, False]]
    """
    raw, label = _mask_values(source, shape, name)
    return raw != 0 if raw.ndim == 2 else np.any(raw != 0, axis=-1)


def read_labels(source, *, shape=None, name=None):
    """Read a mask or label image as the label image of its cells.

    The objects follow :func:`core.objects.as_labels`: a grey file with one distinct non-zero
    value (a 0/255 mask) is binary and its 8-connected components are the cells; two or more
    values (a uint16 label PNG or TIFF) make one cell per value. A colour file is binary: any
    non-zero channel is foreground. The size checks of :func:`read_mask` apply.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file path, or the file's contents.
    shape : tuple of int, optional
        The (rows, cols[, ...]) shape of the image the mask belongs to.
    name : str, optional
        The file name used in error messages.

    Returns
    -------
    labels : ndarray of int32, shape (rows, cols)
        0 is background.

    Raises
    ------
    ImageError
        Unreadable, of another size than ``shape``, or more than 65535 cells.

    Examples
    --------
    >>> import numpy as np
    >>> touching = np.array([[1, 1, 0, 2, 2]], dtype=np.uint16)
    >>> touching[0, 2] = 2
    >>> read_labels(write_labels(None, touching)).tolist()       # two cells, touching
    [[1, 1, 2, 2, 2]]
    >>> read_labels(write_mask(None, touching == 1)).tolist()     # 0/255: its components
    [[255, 255, 0, 0, 0]]
    """
    raw, label = _mask_values(source, shape, name)
    if raw.ndim == 3:
        raw = np.any(raw != 0, axis=-1)
    elif raw.dtype.kind == "f":
        # A float file holding whole numbers is a label image saved as floats; else binary.
        whole = np.isfinite(raw).all() and (raw >= 0).all() and (raw == np.round(raw)).all()
        raw = raw.astype(np.int64) if whole else raw != 0
    try:
        labels = as_labels(raw, name=label)
    except ValueError as exc:
        raise ImageError(str(exc)) from None
    if labels.max(initial=0) > MAX_LABELS:
        raise ImageError(f"{label} holds {int(labels.max())} separate objects; at most "
                         f"{MAX_LABELS} fit in a mask. Split the image into tiles.")
    return labels


def _mask_values(source, shape, name):
    """A mask file's decoded values without alpha, checked against ``shape``; and its label."""
    data, label = _load(source, name)
    if data.startswith(_JPEG_MAGIC):
        logger.warning("mask %s is a JPEG: compression noise will count as foreground", label)
    raw = _drop_alpha(_decode(data, label), label)
    if shape is not None and raw.shape[:2] != tuple(shape[:2]):
        rows, cols = shape[:2]
        raise ImageError(
            f"Mask {label} is {raw.shape[0]} x {raw.shape[1]} px (rows x cols) but its "
            f"image is {rows} x {cols} px. A mask must match its image pixel for pixel: "
            "export the mask at the image's size."
        )
    return raw, label


def encode_png(array, *, compress_level=6):
    """Encode an array as PNG bytes, losslessly.

    Parameters
    ----------
    array : ndarray
        bool (stored as 0/255), uint8 of shape (rows, cols), (rows, cols, 3) or
        (rows, cols, 4), or uint16 of shape (rows, cols).
    compress_level : int, optional
        zlib level 0-9 (Pillow's default 6). Level 1 encodes a noisy 1600x1200 RGB image
        about 6x faster for files about 20% larger; the pixels are the same at every level.

    Returns
    -------
    png : bytes

    Examples
    --------
    >>> import numpy as np
    >>> encode_png(np.zeros((2, 3), dtype=np.uint8))[:4]
    b'\\x89PNG'
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    modes = {(np.uint8, 2): "L", (np.uint8, 3): "RGB", (np.uint8, 4): "RGBA", (np.uint16, 2): "I;16"}
    channels = 2 if array.ndim == 2 else array.shape[-1] if array.ndim == 3 else -1
    mode = modes.get((array.dtype.type, channels))
    if mode is None or array.size == 0:
        raise ValueError(
            f"encode_png takes bool, uint8 (rows, cols[, 3|4]) or uint16 (rows, cols); "
            f"got {array.dtype} of shape {array.shape}"
        )
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG",
                                                      compress_level=int(compress_level))
    return buffer.getvalue()


def write_image(path, rgb):
    """Encode an RGB image as PNG, write it to ``path`` if one is given, return the bytes.

    Parameters
    ----------
    path : str, os.PathLike or None
        Where to write; ``None`` only encodes. The file is replaced atomically.
    rgb : ndarray of uint8, shape (rows, cols, 3)

    Returns
    -------
    png : bytes

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    >>> read_image(write_image(None, rgb)).shape
    (4, 5, 3)
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"write_image takes uint8 (rows, cols, 3); got {rgb.dtype} {rgb.shape}")
    return _write(path, encode_png(rgb))


def write_mask(path, mask):
    """Encode a mask as a 0/255 grayscale PNG, write it if ``path`` is given, return the bytes.

    Parameters
    ----------
    path : str, os.PathLike or None
        Where to write; ``None`` only encodes. The file is replaced atomically.
    mask : ndarray, shape (rows, cols)
        Nonzero pixels are foreground (a label image works too).

    Returns
    -------
    png : bytes

    Examples
    --------
    >>> import numpy as np
    >>> png = write_mask(None, np.array([[0, 3], [0, 0]]))
    >>> read_image(png)[..., 0].tolist()
    [[0, 255], [0, 0]]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"write_mask takes a (rows, cols) mask; got shape {mask.shape}")
    return _write(path, encode_png(mask != 0))


def write_labels(path, labels):
    """Encode a label image as a 16-bit grey PNG, write it if ``path`` is given, return the bytes.

    Parameters
    ----------
    path : str, os.PathLike or None
        Where to write; ``None`` only encodes. The file is replaced atomically.
    labels : ndarray, shape (rows, cols)
        A label image or a mask; its cells (:func:`core.objects.as_labels`) are written as
        values 1..65535 on 0 (background). A bool or single-valued mask is written as its
        8-connected components.

    Returns
    -------
    png : bytes

    Raises
    ------
    ValueError
        Not 2-D, not integers or bools, or more than 65535 cells.

    Examples
    --------
    >>> import numpy as np
    >>> png = write_labels(None, np.array([[0, 3], [300, 3]]))
    >>> png[24], read_labels(png).tolist()        # bit depth 16, values kept
    (16, [[0, 3], [300, 3]])
    """
    labels = as_labels(labels, name="The label image")
    if labels.max(initial=0) > MAX_LABELS:
        raise ValueError(f"The label image holds {int(labels.max())} cells; at most "
                         f"{MAX_LABELS} fit in a 16-bit PNG. Split the image into tiles.")
    return _write(path, encode_png(labels.astype(np.uint16)))


def default_file_mode() -> int:
    """The mode a plainly created file gets under this process's umask (e.g. 0o644).

    Temp files from ``tempfile.mkstemp`` are 0o600; files renamed into place from them get this
    mode instead, so a worker running as another user on a shared data dir writes files the app
    can read. The umask is read from /proc (no ``os.umask`` round trip, which races threads).

    >>> oct(default_file_mode() & 0o600)
    '0o600'
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _write(path, data):
    """Write bytes so that a reader never sees a half-written file."""
    if path is not None:
        path = Path(path)
        if path.suffix.lower() in {".tif", ".tiff", ".jpg", ".jpeg"}:
            raise ValueError(f"{path.name}: the writers produce PNG; use a .png name")
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return data


def _load(source, name):
    """Return (bytes, label for messages) from a path or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{label}: file not found at {path}. Check the path.") from None
        except OSError as exc:
            raise ImageError(f"{label}: cannot read the file ({exc.strerror}).") from None
        return data, label
    raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")


def _format_of(data, label):
    """"PNG", "TIFF" or "JPEG" from the magic bytes; anything else is refused with a sentence."""
    if not data:
        raise ImageError(f"{label} is empty (0 bytes): the file holds no image. {_FIX}.")
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_TIFF_MAGICS):
        return "TIFF"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    vendor = next((fmt for magic, fmt in _VENDOR_MAGICS.items() if data.startswith(magic)), None)
    if vendor is None and data[:4] == b"\x70\x00\x00\x00" and data[8:9] == b"\x2a":
        vendor = "Leica LIF"
    if vendor:
        raise ImageError(f"{label} is a {vendor} file; CellTally reads PNG, TIFF and JPEG. Open "
                         "it in Fiji (Bio-Formats) or the microscope's software and export it "
                         "as OME-TIFF.")
    known = next((fmt for magic, fmt in _OTHER_MAGICS.items() if data.startswith(magic)), None)
    if known is None and data[8:12] == b"WEBP":
        known = "WebP"
    what = f"a {known} file" if known else "not a PNG, TIFF or JPEG image"
    raise ImageError(f"{label} is {what}; CellTally reads PNG, TIFF and JPEG. {_FIX}.")


def _decode(data, label):
    """The raw decoded array of a mask file (a TIFF's first page), values as stored."""
    kind = _format_of(data, label)
    if kind == "PNG":
        return _decode_png(data, label)[0]
    if kind == "TIFF":
        return _decode_tiff_page(data, label)
    return _decode_pil(data, label)


def _read_stack(data, label, z):
    """Decode an image file into a :class:`_Stack`, choosing the plane(s) ``z`` names."""
    kind = _format_of(data, label)
    if kind == "PNG":
        raw, header = _decode_png(data, label)
        sbit = header["sbit"]
        significant = (sbit, "PNG sBIT") if header["depth"] == 16 and sbit and sbit < 16 else None
        return _stack_from_array(raw, "PNG", label, significant=significant)
    if kind == "TIFF":
        return _tiff_stack(data, label, z)
    return _stack_from_array(_decode_pil(data, label), "JPEG", label)


def _stack_from_array(raw, fmt, label, **fields):
    """A stack from a grey, grey+alpha, RGB or RGBA array (PNG, JPEG, Pillow's TIFFs)."""
    raw = _drop_alpha(raw, label)
    rgb = raw.ndim == 3
    pixels = raw if rgb else raw[..., None]
    return _Stack(pixels, fmt, rgb=rgb, names=_RGB_NAMES if rgb else (), **fields)


def _check_size(label, rows, cols):
    """Refuse empty and oversized images using header dimensions only."""
    if rows <= 0 or cols <= 0:
        raise ImageError(f"{label} is zero-sized ({cols} x {rows} px): it holds no pixels. {_FIX}.")
    if rows * cols > MAX_PIXELS:
        raise ImageError(
            f"{label} is {cols} x {rows} px = {rows * cols / 1e6:.0f} megapixels, more than the "
            f"{MAX_PIXELS / 1e6:.0f}-megapixel limit (a guard against decompression bombs). "
            "Crop or downscale it before import."
        )


def _truncated(label, detail):
    return ImageError(
        f"{label} is truncated or damaged ({detail}). Copy or export the file again."
    )


# --- PNG ---------------------------------------------------------------------------------

def _png_chunks(data, label):
    """Walk the PNG chunks; return (header fields, IDAT bytes), refusing truncated files."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _truncated(label, "the PNG header is incomplete")
    cols, rows, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    _check_size(label, rows, cols)
    if depth not in _PNG_DEPTHS.get(colour, ()) or interlace > 1:
        raise _truncated(label, f"the PNG header is invalid: bit depth {depth}, colour type "
                                f"{colour}, interlace {interlace}")
    header = {"rows": rows, "cols": cols, "depth": depth, "colour": colour,
              "interlace": interlace, "sbit": None}
    pos, idat = 8, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            break
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif kind == b"sBIT" and colour != 3:
            # One byte per colour sample (alpha last, ignored): the most any colour uses.
            colours = _PNG_SAMPLES[colour] - (colour in (4, 6))
            header["sbit"] = max(data[pos + 8:pos + 8 + min(length, colours)], default=None)
        elif kind == b"IEND":
            return header, b"".join(idat)
        pos += 12 + length
    raise _truncated(label, "the PNG ends before its IEND chunk")


def _png_data_size(header):
    """Bytes the IDAT stream inflates to for this header: filter byte + packed samples per row.

    >>> _png_data_size({"rows": 2, "cols": 3, "depth": 16, "colour": 2, "interlace": 0})
    38
    >>> _png_data_size({"rows": 1, "cols": 1, "depth": 8, "colour": 0, "interlace": 1})
    2
    """
    bits = header["depth"] * _PNG_SAMPLES[header["colour"]]
    passes = _ADAM7 if header["interlace"] else ((0, 0, 1, 1),)
    total = 0
    for row0, col0, row_step, col_step in passes:
        rows = (header["rows"] - row0 + row_step - 1) // row_step
        cols = (header["cols"] - col0 + col_step - 1) // col_step
        if rows > 0 and cols > 0:  # an empty Adam7 pass has no filter bytes either
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def _check_png_data(idat, header, label):
    """Refuse IDAT data that inflates to more or less than the header allows.

    libpng (through imagecodecs) only warns about surplus data and inflates all of it: a 1 MB
    file that unpacks to 1 GiB costs seconds, and a decoder that keeps the stream, gigabytes.
    Here the stream is inflated in bounded steps whose output is dropped, and at most one
    byte past the header's count, so time and memory follow the header, not the data.
    """
    expected = _png_data_size(header)
    inflater = zlib.decompressobj()
    produced, pending = 0, idat
    try:
        while produced < expected:
            step = min(expected - produced, _INFLATE_STEP)
            got = len(inflater.decompress(pending, step))
            produced, pending = produced + got, inflater.unconsumed_tail
            if got < step:  # the input is used up, or the stream ended
                break
        # A match cut at the limit can still hold output with no input left, so probe anyway.
        surplus = b"" if inflater.eof else inflater.decompress(pending, 1)
    except zlib.error as exc:
        raise _truncated(label, f"compressed data: {exc}") from None
    if produced < expected:
        raise _truncated(label, "the pixel data is shorter than the header claims")
    if surplus or inflater.unconsumed_tail:
        raise ImageError(f"{label}: the PNG's compressed data is larger than its "
                         f"{header['cols']} x {header['rows']} header allows; export the image "
                         "again")
    if not inflater.eof:
        raise _truncated(label, "the compressed data ends early")


def _decode_png(data, label):
    """Decode a PNG after the size checks; return (raw array, header fields).

    16-bit PNGs go to imagecodecs (libpng), which keeps every bit of every colour type; Pillow
    keeps only the high byte of 16-bit colour. Other depths go to Pillow.
    """
    header, idat = _png_chunks(data, label)
    _check_png_data(idat, header, label)
    if header["depth"] != 16:
        return _decode_pil(data, label), header
    try:
        return imagecodecs.png_decode(data), header
    except Exception as exc:  # imagecodecs.PngError and friends on damaged data
        raise _truncated(label, f"PNG: {exc}") from None


# --- TIFF --------------------------------------------------------------------------------

def _decode_tiff_page(data, label):
    """A TIFF's first page as stored (masks), or Pillow's reading of colour models like palette."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = _first_page(tif, data, label)
            if page.photometric not in _TIFF_DIRECT:
                return _decode_pil(data, label)
            return _samples_last(page.asarray(), page.axes)
    except ImageError:
        raise
    except Exception as exc:  # tifffile raises many types on damaged input
        raise _tiff_error(label, exc) from None


def _tiff_stack(data, label, z):
    """A TIFF's first series as a stack: plane(s) chosen by ``z``, channels last."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            _first_page(tif, data, label)
            if not tif.series:
                raise _truncated(label, "the TIFF holds no readable image")
            series = tif.series[0]
            key = series.keyframe
            if key.photometric not in _TIFF_DIRECT:
                if len(series.pages) > 1:
                    model = getattr(key.photometric, "name", key.photometric)
                    raise ImageError(f"{label} holds {len(series.pages)} pages of {model} "
                                     "images; export the page to count as its own TIFF.")
                return _stack_from_array(_decode_pil(data, label), "TIFF", label)
            _check_series(series, data, label)
            pixels, z_text = _tiff_planes(series, z, label)
            return _tiff_describe(tif, series, pixels, z_text, label)
    except ImageError:
        raise
    except Exception as exc:  # tifffile and the codecs raise many types on damaged input
        raise _tiff_error(label, exc) from None


def _first_page(tif, data, label):
    """The first page, its size checked from the header and its data inside the file."""
    page = tif.pages.first
    _check_size(label, page.imagelength, page.imagewidth)
    _check_offsets(page, data, label)
    return page


def _check_offsets(page, data, label):
    if max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0) > len(data):
        raise _truncated(label, "the pixel data runs past the end of the file")


def _check_series(series, data, label):
    axes, shape = series.axes, series.shape
    if "Y" not in axes or "X" not in axes:
        raise _truncated(label, f"the TIFF's image has axes {axes}, without rows and columns")
    _check_size(label, shape[axes.index("Y")], shape[axes.index("X")])
    for page in series.pages:
        if page is not None:
            _check_offsets(page, data, label)


def _tiff_error(label, exc):
    text = str(exc)
    if "COMPRESSION" in text.upper() or "imagecodecs" in text:
        return ImageError(f"{label} uses a TIFF compression CellTally cannot decode ({text}). "
                          "Export it again as an uncompressed, LZW, deflate or zstd TIFF.")
    return _truncated(label, f"TIFF: {text}")


def _tiff_reader(series):
    """(outer axes, their sizes, read): read(index) gives one (rows, cols[, samples]) plane.

    The outer axes are all but Y, X and S (samples). When each plane is one page, only the
    pages asked for are decoded, so a plane or a projection of a large stack stays small.
    """
    axes, shape, page_axes = series.axes, series.shape, series.keyframe.axes
    outer = len(axes) - len(page_axes)
    if (axes.endswith(page_axes) and set(page_axes) <= set("YXS")
            and math.prod(shape[:outer]) == len(series.pages)):
        def read(index):
            key = int(np.ravel_multi_index(index, shape[:outer])) if outer else 0
            return _samples_last(series.asarray(key=key).reshape(series.keyframe.shape), page_axes)
        return axes[:outer], shape[:outer], read
    if series.nbytes > _MAX_WHOLE_SERIES_BYTES:
        raise ImageError(f"the image series (axes {axes}, shape {shape}) is too large to read "
                         "at once; export the plane or channel you need as its own TIFF.")
    order = [i for i, a in enumerate(axes) if a not in "YXS"] + [axes.index(a) for a in "YXS"
                                                                 if a in axes]
    whole = series.asarray().transpose(order)
    names = "".join(axes[i] for i in order)
    rest = names.rstrip("YXS")
    return rest, whole.shape[:len(rest)], lambda index: whole[index]


def _samples_last(array, axes):
    return np.moveaxis(array, axes.index("S"), -1) if "S" in axes else array


def _tiff_planes(series, z, label):
    """The chosen plane (or the maximum over planes), as (rows, cols, channels); its wording."""
    try:
        outer, sizes, read = _tiff_reader(series)
    except ImageError as exc:
        raise ImageError(f"{label}: {exc}") from None
    plane_axes = [i for i, a in enumerate(outer) if a in "ZIQ"]
    _refuse_other_axes(outer, sizes, label)
    if len(plane_axes) > 1:
        raise ImageError(f"{label} has planes along several axes ({series.axes}); export one "
                         "Z-stack or one plane as TIFF.")
    plane = plane_axes[0] if plane_axes else None
    count = sizes[plane] if plane is not None else 1
    z_text, chosen = _choose_planes(label, outer[plane] if plane is not None else "", count, z)
    channel = outer.find("C")
    image = None
    for p in chosen:
        index = [0] * len(outer)
        if plane is not None:
            index[plane] = p
        parts = []
        for c in range(sizes[channel] if channel >= 0 else 1):
            if channel >= 0:
                index[channel] = c
            parts.append(read(tuple(index)))
        planes = np.stack(parts, axis=-1) if channel >= 0 else parts[0]
        image = planes if image is None else np.maximum(image, planes)
    if image.ndim == 4:
        raise ImageError(f"{label} has both channels and colour samples ({series.axes}); "
                         "export each channel as its own plane.")
    return image, z_text


def _refuse_other_axes(outer, sizes, label):
    for axis, size in zip(outer, sizes):
        if axis == "T":
            raise ImageError(f"{label} holds {size} time points; CellTally counts one image per "
                             "file. Export one time point as TIFF.")
        if axis not in "ZIQC":
            raise ImageError(f"{label} has an axis '{axis}' of {size} images (axes "
                             f"{outer}); CellTally reads planes (Z) and channels (C). Export "
                             "one image as TIFF.")


def _choose_planes(label, axis, count, z):
    """(wording or None, plane numbers) for ``z`` among ``count`` planes along ``axis``."""
    if count == 1:
        return None, [0]
    what = (f"a Z-stack of {count} planes" if axis == "Z"
            else f"a multi-page TIFF of {count} pages without axes")
    if z is None:
        raise ImageError(f"{label} is {what}, and CellTally counts one image per file. Pass "
                         f"--z K to use plane K (0 to {count - 1}), or --z max for the maximum "
                         "projection over all planes.")
    if z == "max":
        return f"maximum projection over {count} planes", list(range(count))
    if z >= count:
        raise ImageError(f"{label} is {what}; plane {z} does not exist. Pass --z K with K from "
                         f"0 to {count - 1}, or --z max.")
    return f"plane {z} of {count} (counting from 0)", [z]


def _tiff_describe(tif, series, pixels, z_text, label):
    """Wrap decoded TIFF planes with their channel names, declared bits and pixel size."""
    key = series.keyframe
    notes = []
    if len(tif.series) > 1:
        notes.append(f"The file holds {len(tif.series)} image series; the first (axes "
                     f"{series.axes}, shape {series.shape}) was read.")
    extra = len(key.extrasamples) if "S" in series.axes else 0
    colour = key.photometric == tifffile.PHOTOMETRIC.RGB
    if colour:
        pixels = pixels[..., :3]  # RGB has three colour samples; the rest is alpha or extra
    elif extra and key.extrasamples[-1] in _TIFF_ALPHA:
        pixels = pixels[..., :-1]
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    ome = _ome_pixels(tif) if series.kind == "ome" else None
    names = _RGB_NAMES if colour else ()
    if ome is not None:
        channel_names = tuple(c.get("Name") for c in ome if _local(c.tag) == "Channel")
        names = names or (channel_names if len(channel_names) == pixels.shape[-1] else ())
    declared = _ome_bits(ome) or (key.bitspersample, "TIFF BitsPerSample")
    stored = pixels.dtype.itemsize * 8
    significant = declared if pixels.dtype.kind in "ui" and declared[0] < stored else None
    size = _ome_pixel_size(ome) if ome is not None else _imagej_pixel_size(tif, key)
    fmt = {"ome": "OME-TIFF", "imagej": "ImageJ TIFF"}.get(series.kind, "TIFF")
    return _Stack(pixels, fmt, rgb=colour and pixels.shape[-1] == 3, names=names,
                  significant=significant, pixel_size_um=size, z=z_text, notes=tuple(notes))


def _local(tag):
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _ome_pixels(tif):
    """The first OME Image's Pixels element, or None when the OME-XML is missing or unreadable."""
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except (ElementTree.ParseError, TypeError, ValueError):
        logger.warning("unreadable OME-XML in %s; its metadata is ignored", tif.filename)
        return None
    return next((e for e in root.iter() if _local(e.tag) == "Pixels"), None)


def _ome_bits(pixels):
    bits = None if pixels is None else _positive(pixels.get("SignificantBits"))
    return (int(bits), "OME SignificantBits") if bits and bits == int(bits) else None


def _ome_pixel_size(pixels):
    """(row, col) micrometres from PhysicalSizeY/X and their units (OME's default: µm)."""
    sizes = []
    for axis in "YX":
        value = _positive(pixels.get(f"PhysicalSize{axis}"))
        scale = _MICROMETRES.get(pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m").strip().lower())
        sizes.append(None if value is None or scale is None else value * scale)
    if sizes[1] is None:
        return None
    return (sizes[0] or sizes[1], sizes[1])  # Y alone missing: square pixels, as OME tools assume


def _imagej_pixel_size(tif, page):
    """(row, col) micrometres from an ImageJ file's unit and X/YResolution (pixels per unit)."""
    unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
    scale = _MICROMETRES.get(unit)
    if scale is None:
        return None
    sizes = []
    for tag in ("YResolution", "XResolution"):
        found = page.tags.get(tag)
        numerator, denominator = found.value if found is not None else (0, 0)
        if numerator <= 0 or denominator <= 0:
            return None
        sizes.append(denominator / numerator * scale)
    return tuple(sizes)


def _positive(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


# --- Pillow ------------------------------------------------------------------------------

def _decode_pil(data, label):
    """Decode with Pillow; its decompression-bomb guard is turned into ImageError too."""
    try:
        with warnings.catch_warnings():
            # Our own header check enforces MAX_PIXELS; Pillow's 89 MP warning would
            # otherwise refuse legal 89-100 MP images.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(label, image.height, image.width)
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"{label} is too large for Pillow's decompression-bomb guard ({exc}). "
            "Crop or downscale it before import."
        ) from None
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{label} is not an image Pillow can identify. {_FIX}.") from None
    except Exception as exc:  # OSError "truncated", SyntaxError "broken PNG", ...
        raise _truncated(label, str(exc) or type(exc).__name__) from None
    return _pil_to_array(image)


def _pil_to_array(image):
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        image = image.convert("RGB")
    elif image.mode == "La":
        image = image.convert("LA")
    return np.asarray(image)


def _drop_alpha(raw, label):
    """Return (rows, cols) or (rows, cols, 3) without alpha."""
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2:
        return raw
    if raw.ndim == 3 and raw.shape[-1] in (2, 3, 4):
        return raw[..., 0] if raw.shape[-1] == 2 else raw[..., :3]
    raise ImageError(
        f"{label} has shape {raw.shape}; expected a single grayscale or RGB(A) image. "
        "Save one plane as PNG or TIFF."
    )


# --- Channels and scaling ----------------------------------------------------------------

def _choose_channels(stack, options, label):
    """(channel for red, green, blue or None each; wording) as ``options`` ask."""
    count = stack.pixels.shape[-1]

    def named(k):
        name = stack.names[k] if k < len(stack.names) else None
        return f"channel {k} ({name})" if name else f"channel {k}"

    listing = ", ".join(f"{k}: {stack.names[k]}" if k < len(stack.names) and stack.names[k]
                        else str(k) for k in range(count))
    for k in options.composition or (options.channel,):
        if k is not None and k >= count:
            raise ImageError(f"{label} has {count} channel{'s' * (count != 1)} ({listing}); "
                             f"channel {k} does not exist. Choose one from 0 to {count - 1}.")
    if options.composition is not None:
        words = ", ".join(f"{colour}: {'dark' if k is None else named(k)}"
                          for colour, k in zip(_RGB_NAMES, options.composition))
        return options.composition, f"composition ({words})"
    if options.channel is None and stack.rgb:
        return (0, 1, 2), "RGB as stored"
    if options.channel is None and count > 1:
        raise ImageError(f"{label} has {count} channels ({listing}) and CellTally counts on one "
                         "image. Choose a channel with --channel K, or compose red, green and "
                         "blue from them.")
    k = options.channel or 0
    weights = STAINS[options.stain]
    which = named(k) if count > 1 or options.channel is not None else "the single channel"
    return tuple(k if w else None for w in weights), f"{which} in {options.stain}"


def _choose_scale(stack, options, used, label):
    """The rule that maps this stack's values to 0-255 (see :func:`read_microscopy`)."""
    dtype = stack.pixels.dtype
    stored = dtype.itemsize * 8
    if options.display_range is not None:
        low, high = options.display_range
        bits = stack.significant[0] if stack.significant else stored
        return _Scale("display range", f"The fixed display range {low:g} to {high:g} was mapped "
                      "to 0 to 255.", bits, low, high)
    if dtype == bool:
        return _Scale("container depth", "1-bit values were shown as 0 and 255.", 1, 0, 1)
    if dtype.kind == "f":
        top = max((float(np.nanmax(stack.pixels[..., k])) for k in used), default=0.0)
        if top > 1:
            raise ImageError(f"{label} holds floating-point values up to {top:g}, which have no "
                             "fixed scale. Set a display range (--display-range LO:HI) saying "
                             "which values are black and which white.")
        return _Scale("container depth", "Floating-point values 0 to 1 were mapped to 0 to 255.",
                      stored, 0, 1)
    if dtype.kind not in "ui":
        raise ImageError(f"{label} holds {dtype} values, which CellTally cannot show. {_FIX}.")
    if stack.significant is not None:
        bits, where = stack.significant
        top = 2 ** bits - 1
        shift = stored - bits if where == "PNG sBIT" else 0
        stored_as = f", stored in the top bits of {stored}" if shift else ""
        return _Scale("significant bits", f"{bits} significant bits ({where}{stored_as}): 0 to "
                      f"{top} was mapped to 0 to 255.", bits, 0, top, shift)
    if dtype == np.uint8:
        return _Scale("as stored", "8-bit values were used as stored.", 8)
    top = 2 ** (stored - (dtype.kind == "i")) - 1
    return _Scale("container depth", f"No significant bits were declared, so the {stored}-bit "
                  f"range 0 to {top} was mapped to 0 to 255.", stored, 0, top)


def _scale_to_uint8(values, scale):
    """Map one channel's values to uint8 by ``scale``: linear, nearest integer, halves up."""
    if scale.rule == "as stored":
        return values
    if scale.shift:
        values = values >> scale.shift
    values = np.nan_to_num(values.astype(np.float64))
    # Multiply before dividing so exact halves stay exact (2000 * 255 / 4000 = 127.5).
    scaled = (values - scale.low) * 255.0 / (scale.high - scale.low)
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def _clipping_notes(stack, used, scale):
    """A sentence when values exceed the significant bits the file declares."""
    if scale.rule != "significant bits" or scale.shift:
        return ()
    over = sum(int(np.count_nonzero(stack.pixels[..., k] > scale.high)) for k in used)
    if not over:
        return ()
    return (f"{over} values exceed the declared {scale.bits}-bit maximum {int(scale.high)} and "
            "were shown as 255; check the file's bit depth.",)


def _is_index(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def _checked_range(pair):
    try:
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"display_range must be two numbers (lo, hi); got {pair!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"display_range needs finite lo < hi; got {low:g} to {high:g}")
    return low, high


def _checked_composition(channels):
    channels = tuple(channels)
    if (len(channels) != 3 or not all(c is None or _is_index(c) for c in channels)
            or all(c is None for c in channels)):
        raise ValueError("composition takes three channel numbers (or None) for red, green "
                         f"and blue, at least one a number; got {channels!r}")
    return tuple(None if c is None else int(c) for c in channels)
