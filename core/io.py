"""Reading and writing images and masks, with checks a lab user can act on.

Every reader takes a path or the file's bytes and returns a plain NumPy array:
``read_image`` gives uint8 RGB (rows, cols, 3), ``read_mask`` gives bool (rows, cols).
Anything wrong with the input raises :class:`ImageError` with a sentence that names the
file, says what is wrong and what to do, so a page can show it with ``st.error`` and the
counting CLI can write it into its CSV. No decoder exception escapes raw.

The pixel count is checked from the file header before any pixel is decoded, so a small
file that claims to be enormous (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

logger = logging.getLogger(__name__)

MAX_PIXELS = 100_000_000

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_MAGIC = b"\xff\xd8\xff"
# Formats we recognise only to say so in the message; they are not read.
_OTHER_MAGICS = {b"GIF8": "GIF", b"BM": "BMP", b"%PDF": "PDF", b"\x00\x00\x00\x0cjP": "JPEG 2000"}
_FIX = "Export it again as PNG, TIFF or JPEG"


class ImageError(ValueError):
    """An image or mask file that cannot be used; the message names the file and the fix."""


def read_image(source, *, name=None):
    """Read a PNG, TIFF or JPEG image as 8-bit RGB.

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
        Grayscale is replicated to three channels and alpha is dropped. Input deeper than
        8 bits (16-bit, 32-bit, float) is rescaled linearly so that its maximum maps to
        255 (nearest integer, halves up; negative values become 0).

    Raises
    ------
    ImageError
        Not an image, an unsupported format, truncated, zero-sized or above
        ``MAX_PIXELS``.

    Notes
    -----
    The size is checked from the header against ``MAX_PIXELS`` before any pixel is
    decoded. Pillow's own, lower warning level (about 89 megapixels) is silenced because
    that check already guards; its hard error, far above ``MAX_PIXELS``, becomes
    ``ImageError`` like every other failure.

    Examples
    --------
    >>> import numpy as np
    >>> gray16 = np.array([[0, 500, 1000]], dtype=np.uint16)
    >>> read_image(encode_png(gray16))[0, :, 0].tolist()
    [0, 128, 255]
    """
    data, label = _load(source, name)
    raw = _decode(data, label)
    return _to_rgb8(_drop_alpha(raw, label))


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
    image with small ids keeps every object. The alpha channel is ignored. JPEG masks
    are lossy: compression noise around objects becomes foreground, so a warning is
    logged.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[0, 1], [7, 0]], dtype=np.uint16)
    >>> read_mask(encode_png(labels), shape=(2, 2)).tolist()
    [[False, True], [True, False]]
    """
    data, label = _load(source, name)
    if data.startswith(_JPEG_MAGIC):
        logger.warning("mask %s is a JPEG: compression noise will count as foreground", label)
    raw = _drop_alpha(_decode(data, label), label)
    mask = raw != 0 if raw.ndim == 2 else np.any(raw != 0, axis=-1)
    if shape is not None and mask.shape != tuple(shape[:2]):
        rows, cols = shape[:2]
        raise ImageError(
            f"Mask {label} is {mask.shape[0]} x {mask.shape[1]} px (rows x cols) but its "
            f"image is {rows} x {cols} px. A mask must match its image pixel for pixel: "
            "export the mask at the image's size."
        )
    return mask


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


def _decode(data, label):
    """Dispatch on the magic bytes and return the raw decoded array."""
    if not data:
        raise ImageError(f"{label} is empty (0 bytes): the file holds no image. {_FIX}.")
    if data.startswith(_PNG_MAGIC):
        return _decode_png(data, label)
    if data.startswith(_TIFF_MAGICS):
        return _decode_tiff(data, label)
    if data.startswith(_JPEG_MAGIC):
        return _decode_pil(data, label)
    known = next((fmt for magic, fmt in _OTHER_MAGICS.items() if data.startswith(magic)), None)
    if known is None and data[8:12] == b"WEBP":
        known = "WebP"
    what = f"a {known} file" if known else "not a PNG, TIFF or JPEG image"
    raise ImageError(f"{label} is {what}; CellTally reads PNG, TIFF and JPEG. {_FIX}.")


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


def _png_chunks(data, label):
    """Walk the PNG chunks; return (IHDR fields, IDAT bytes), refusing truncated files."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _truncated(label, "the PNG header is incomplete")
    cols, rows, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    _check_size(label, rows, cols)
    pos, idat = 8, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            break
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        if kind == b"IEND":
            return (rows, cols, depth, colour, interlace), b"".join(idat)
        pos += 12 + length
    raise _truncated(label, "the PNG ends before its IEND chunk")


def _decode_png(data, label):
    (rows, cols, depth, colour, interlace), idat = _png_chunks(data, label)
    # Pillow keeps only the high byte of 16-bit colour PNGs; decode those ourselves.
    if depth == 16 and colour in (2, 4, 6) and not interlace:
        channels = {2: 3, 4: 2, 6: 4}[colour]
        try:
            filtered = zlib.decompress(idat)
        except zlib.error as exc:
            raise _truncated(label, f"compressed data: {exc}") from None
        if len(filtered) != rows * (1 + cols * channels * 2):
            raise _truncated(label, "the pixel data is shorter than the header claims")
        raw = _unfilter_png(filtered, rows, cols * channels * 2, channels * 2)
        return raw.view(">u2").reshape(rows, cols, channels).astype(np.uint16)
    return _decode_pil(data, label)


def _unfilter_png(filtered, rows, row_bytes, bpp):
    """Undo PNG scanline filters (RFC 2083, section 6) for byte stride ``bpp``.

    Each pixel depends only on its left, upper and upper-left neighbours, so pixels on
    one anti-diagonal are independent: sweeping the diagonals vectorises the work
    (rows + cols NumPy steps instead of rows * cols Python steps).
    """
    lines = np.frombuffer(filtered, np.uint8).reshape(rows, row_bytes + 1)
    kinds, coded = lines[:, 0], lines[:, 1:].reshape(rows, -1, bpp).astype(np.int16)
    width = coded.shape[1]
    out = np.zeros((rows + 1, width + 1, bpp), np.int16)  # zero row/col = PNG's "outside"
    for step in range(rows + width - 1):
        r = np.arange(max(0, step - width + 1), min(rows, step + 1))
        c = step - r
        a, b, ul = out[r + 1, c], out[r, c + 1], out[r, c]
        p = a + b - ul
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, ul))
        kind = kinds[r][:, None]
        pred = np.select([kind == 1, kind == 2, kind == 3, kind == 4],
                         [a, b, (a + b) // 2, paeth], 0)
        out[r + 1, c + 1] = (coded[r, c] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8).reshape(rows, row_bytes)


def _decode_tiff(data, label):
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            _check_size(label, page.imagelength, page.imagewidth)
            if max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0) > len(data):
                raise _truncated(label, "the pixel data runs past the end of the file")
            if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
                return _decode_pil(data, label)  # palette, YCbCr, CMYK...: let Pillow convert
            try:
                raw = page.asarray()
            except (ValueError, KeyError) as exc:
                if "imagecodecs" not in str(exc):
                    raise
                return _decode_pil(data, label)  # LZW and friends: Pillow has them built in
            axes = page.axes
    except ImageError:
        raise
    except Exception as exc:  # tifffile raises many types on damaged input
        raise _truncated(label, f"TIFF: {exc}") from None
    if "S" in axes and raw.ndim == 3:
        raw = np.moveaxis(raw, axes.index("S"), -1)
    return raw


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


def _to_rgb8(raw):
    """Scale deeper-than-8-bit data so its maximum is 255, then make three channels."""
    if raw.dtype != np.uint8:
        values = np.clip(np.nan_to_num(raw.astype(np.float64)), 0, None)
        top = values.max()
        # Multiply before dividing so exact halves stay exact (200 * 255 / 400 = 127.5).
        scaled = values * 255.0 / top if top > 0 else values
        raw = np.floor(scaled + 0.5).astype(np.uint8)
    if raw.ndim == 2:
        raw = np.repeat(raw[..., None], 3, axis=-1)
    return np.ascontiguousarray(raw)

