"""Content-addressed file store under the data dir.

Images, masks and heatmaps are PNG files named by the SHA-256 of their pixels (shape and dtype
included), so the same picture is stored once however often, and from whatever file format, it
arrives. Layout below ``root``::

    images/ab/abcdef....png     RGB uint8
    masks/ab/abcdef....png      uint16 label image: 0 background, one integer per cell
                                (versions stored before labels: 0/255 grayscale)
    heatmaps/ab/abcdef....png   uint8 probabilities (p * 255, rounded)
    runs/<name>/                one directory per trained model (see core.run)

Paths handed out (``Stored.path``) are absolute. The database records files and run
directories by their :meth:`Storage.key`, the path below the data dir
(``images/ab/abcdef....png``, ``runs/<name>``), so a worker
that mounts the shared data dir somewhere else finds the same files; :meth:`Storage.resolve`
(and every ``read_*``) turns a key back into a path, and still reads the absolute paths older
rows hold.

Masks are read by :func:`core.io.read_labels`, so both kinds of mask file give their cells by
:func:`core.objects.as_labels`'s rule: a label PNG one cell per value, an older 0/255 PNG one
cell per 8-connected component. Old files are never rewritten.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import io as core_io
from core.objects import as_labels
from core.postprocess import quantise_heatmap
from db.settings import Settings

__all__ = ["Storage", "Stored", "pixel_hash", "STORE_PNG_LEVEL", "DiskError", "disk_error",
           "make_dirs", "STORE_FOLDERS", "TEMP_SUFFIX"]

log = logging.getLogger(__name__)

_RUN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: zlib level of the PNGs the store encodes: level 1 writes a noisy 1600x1200 RGB image in
#: about 0.15 s instead of about 1 s at Pillow's default, for files about 20% larger.
STORE_PNG_LEVEL = 1
_KINDS = ("images", "masks", "heatmaps")
#: The folders of the data dir the store writes (gc and backup look below these only).
STORE_FOLDERS = (*_KINDS, "runs")
#: Suffix of the store's temporary files (``.<name>.<pid>.<random>.tmp``), removed on every
#: error; one left by a killed process is an orphan for ``python -m db gc``.
TEMP_SUFFIX = ".tmp"
_CHUNK = 1 << 20


def pixel_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's pixels, shape and dtype: the name it is stored under.

    >>> a = np.zeros((2, 3), dtype=np.uint8)
    >>> pixel_hash(a) == pixel_hash(a.copy()) != pixel_hash(a.reshape(3, 2))
    True
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class DiskError(OSError, ValueError):
    """A file could not be written: one sentence naming the path and saying what to do.

    Also a ``ValueError``, so every page and command line that shows a bad input's sentence
    shows this one too; ``errno`` and ``filename`` are those of the error underneath.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "A file could not be written."


def disk_error(exc: OSError, path: str | Path) -> DiskError:
    """The :class:`DiskError` for ``exc``, raised while writing ``path``.

    >>> import errno
    >>> str(disk_error(OSError(errno.ENOSPC, "No space left on device"), "/d/x.png"))[:43]
    'Could not write /d/x.png: the disk is full.'
    """
    path = Path(path)
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = ("the disk is full. Free some space on it (`python -m db gc` lists the stored "
                "files nothing uses) and try again.")
    elif code == errno.EROFS:
        what = (f"the file system is read-only. Mount {path.parent} writable, or point "
                f"CELLTALLY_DATA_DIR at a writable folder, and try again.")
    elif code in (errno.EACCES, errno.EPERM):
        what = (f"permission denied. Give the user running CellTally write access to "
                f"{path.parent} and try again.")
    else:
        what = f"{exc.strerror or exc}. Check the disk and try again."
    err = DiskError(f"Could not write {path}: {what}")
    err.errno, err.filename = code, str(path)
    return err


def _write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a reader never sees half of it (rename is atomic).

    The temporary file is removed whatever goes wrong, so a full disk is not kept full by
    half a PNG; a disk error becomes a :class:`DiskError`. Files get the umask's mode, so
    workers sharing the data dir can read what the app stored.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:_CHUNK]):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, DiskError):
            raise disk_error(exc, path) from exc
        raise


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` whose failure is a :class:`DiskError` naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, path) from exc
    return path


def _png(array: np.ndarray) -> bytes:
    """A PNG at the store's fast compression level."""
    return core_io.encode_png(array, compress_level=STORE_PNG_LEVEL)


def _is_rgb8_png(data: bytes) -> bool:
    """Whether ``data`` starts like a plain 8-bit RGB PNG (no palette, alpha or 16 bits)."""
    return (len(data) > 26 and data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR"
            and data[24] == 8 and data[25] == 2)


def _keep_or_encode(encoded: bytes | None):
    """An encoder that returns ``encoded`` as it is when it decodes to the pixels, else a PNG.

    Keeping the file costs one decode (~50 ms for 1600x1200) instead of an encode; checking
    the decoded pixels, not trusting the caller, is what keeps "named by pixel hash" true.
    """
    def encode(rgb: np.ndarray) -> bytes:
        if encoded is not None and _is_rgb8_png(encoded):
            try:
                same = np.array_equal(core_io.read_image(encoded), rgb)
            except core_io.ImageError:
                same = False
            if same:
                return encoded
            log.debug("The PNG handed to put_image differs from its pixels; encoding those.")
        return _png(rgb)

    return encode


@dataclass(frozen=True)
class Stored:
    """Where a stored file lives.

    Attributes
    ----------
    sha256 : str
        The pixel hash (:func:`pixel_hash`).
    path : Path
        Absolute path of the PNG.
    existed : bool
        True when the same pixels were already stored and nothing was written.
    """

    sha256: str
    path: Path
    existed: bool


class Storage:
    """The file store of one installation, rooted at ``settings.data_dir``.

    Parameters
    ----------
    root : str or Path
        The data dir; created when missing.

    Examples
    --------
    >>> import tempfile
    >>> st = Storage(tempfile.mkdtemp())
    >>> rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    >>> first, again = st.put_image(rgb), st.put_image(rgb)
    >>> (first.existed, again.existed, first.path == again.path)
    (False, True, True)
    """

    def __init__(self, root: str | Path):
        self.root = make_dirs(Path(root).resolve())

    @classmethod
    def from_settings(cls, settings: Settings) -> "Storage":
        """The store under ``settings.data_dir``."""
        return cls(settings.data_dir)

    def path_for(self, kind: str, sha256: str) -> Path:
        """Where a file of ``kind`` (images, masks or heatmaps) with this hash is kept."""
        if kind not in _KINDS:
            raise ValueError(f"Unknown storage kind {kind!r}; use images, masks or heatmaps.")
        return self.root / kind / sha256[:2] / f"{sha256}.png"

    def key(self, path: str | Path) -> str:
        """How the database records a stored file: its path below the root, with ``/``.

        A path outside the store (a run directory elsewhere, say) is kept absolute.

        >>> import tempfile
        >>> st = Storage(tempfile.mkdtemp())
        >>> st.key(st.path_for("masks", "ab12"))
        'masks/ab/ab12.png'
        >>> st.key("/elsewhere/x.png")
        '/elsewhere/x.png'
        """
        path = Path(path)
        if path.is_absolute() and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return str(path)

    def resolve(self, path: str | Path) -> Path:
        """The file a recorded path names: a key below the root, or an absolute path.

        An absolute path written by an installation that mounted the data dir elsewhere is
        found by its last three parts (``images/ab/<hash>.png``): files are named by content,
        so the same name below this root is the same file. A run directory is found the same
        way, by its last two (``runs/<name>``): run names are unique below a root.

        >>> import tempfile
        >>> st = Storage(tempfile.mkdtemp())
        >>> st.resolve("images/ab/ab12.png") == st.root / "images" / "ab" / "ab12.png"
        True
        """
        path = Path(path)
        if not path.is_absolute():
            return self.root / path
        if path.exists():
            return path
        if len(path.parts) > 3 and path.parts[-3] in _KINDS:
            moved = self.root.joinpath(*path.parts[-3:])
        elif len(path.parts) > 2 and path.parts[-2] == "runs":
            moved = self.root.joinpath(*path.parts[-2:])
        else:
            return path
        return moved if moved.exists() else path

    def put_image(self, rgb: np.ndarray, *, encoded: bytes | None = None) -> Stored:
        """Store an RGB uint8 image once; see :class:`Stored`.

        Parameters
        ----------
        rgb : ndarray of uint8, shape (rows, cols, 3)
        encoded : bytes, optional
            The file ``rgb`` was read from. A plain 8-bit RGB PNG that decodes to exactly
            ``rgb`` is stored byte for byte (no re-encoding); anything else is ignored and
            the pixels are encoded at :data:`STORE_PNG_LEVEL`.

        Examples
        --------
        >>> import tempfile
        >>> st, rgb = Storage(tempfile.mkdtemp()), np.zeros((4, 5, 3), np.uint8)
        >>> png = core_io.write_image(None, rgb)
        >>> st.put_image(rgb, encoded=png).path.read_bytes() == png
        True
        """
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"Images are stored as uint8 (rows, cols, 3); got {rgb.dtype} "
                             f"{rgb.shape}. Read the file with core.io.read_image first.")
        return self._put("images", rgb, _keep_or_encode(encoded))

    def put_mask(self, mask: np.ndarray, *, name: str = "The mask") -> Stored:
        """Store a mask's cells once, as a uint16 label PNG (0 background, one value per cell).

        Parameters
        ----------
        mask : ndarray (rows, cols)
            A bool mask or a label image; its cells are :func:`core.objects.as_labels`'s (a
            bool mask's 8-connected components, a label image's values).
        name : str
            What to call the mask in an error (e.g. "The mask of image a.png").

        Raises
        ------
        ValueError
            Not 2-D, not integers or bools, or more than 65535 cells.

        Examples
        --------
        >>> import tempfile
        >>> st = Storage(tempfile.mkdtemp())
        >>> touching = np.array([[1, 1, 2, 2]], np.int32)
        >>> st.read_labels(st.put_mask(touching).path).tolist()
        [[1, 1, 2, 2]]
        """
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"A mask is (rows, cols); got shape {mask.shape}.")
        # as_labels renumbers values above 65535 and refuses more cells than a uint16 holds.
        labels = as_labels(mask, name=name)
        return self._put("masks", labels.astype(np.uint16),
                         lambda m: core_io.write_labels(None, m))

    def put_heatmap(self, heatmap: np.ndarray) -> Stored:
        """Store a probability map: floats in [0, 1] become uint8 (p * 255, rounded)."""
        heatmap = np.asarray(heatmap)
        if heatmap.ndim != 2:
            raise ValueError(f"A heatmap is (rows, cols); got shape {heatmap.shape}.")
        return self._put("heatmaps", quantise_heatmap(heatmap), _png)

    def _put(self, kind: str, array: np.ndarray, encode) -> Stored:
        sha = pixel_hash(array)
        path = self.path_for(kind, sha)
        if path.exists():
            log.debug("%s %s already stored.", kind, sha[:12])
            return Stored(sha, path, True)
        make_dirs(path.parent)
        _write_bytes(path, encode(array))
        return Stored(sha, path, False)

    def read_image(self, path: str | Path) -> np.ndarray:
        """Read a stored image (key or absolute path) back as uint8 (rows, cols, 3)."""
        return core_io.read_image(self.resolve(path))

    def read_mask(self, path: str | Path) -> np.ndarray:
        """Read a stored mask (key or absolute path) back as bool (rows, cols): any cell."""
        return self.read_labels(path) > 0

    def read_labels(self, path: str | Path) -> np.ndarray:
        """A stored mask's cells as an int32 label image (:func:`core.io.read_labels`)."""
        return core_io.read_labels(self.resolve(path), name=str(path))

    def read_heatmap(self, path: str | Path) -> np.ndarray:
        """Read a stored heatmap (key or absolute path) back as float32 probabilities in [0, 1]."""
        return core_io.read_image(self.resolve(path))[..., 0].astype(np.float32) / 255.0

    def run_dir(self, name: str) -> Path:
        """A new, empty directory for a run, ``runs/<name>`` (suffixed when taken)."""
        safe = _RUN_NAME.sub("-", name).strip("-.") or "run"
        base = make_dirs(self.root / "runs")
        for n in range(10_000):
            path = base / (safe if n == 0 else f"{safe}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
            except OSError as exc:
                raise disk_error(exc, path) from exc
        raise RuntimeError(f"No free run directory name under {base} for {name!r}.")
