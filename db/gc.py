"""Which stored files the database still names, and the ones nothing names (``python -m db gc``).

:func:`file_references` is the one answer to "which files belong to this installation": the
paths in image, mask-version, result and run rows, and any store path a JSON column names (a
job's config and result, a count chunk's images and heatmaps). Backups copy exactly these
(``db.backup``); :func:`find_orphans` lists what else lies in the store's folders (a killed
import's images, a lost attempt's run directory, a temporary file), and :func:`delete_orphans`
removes those older than a day, so nothing that a running import or job is about to record is
touched. The schema is read by reflection, so any revision's database is understood.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import JSON, MetaData, Text, cast, or_, select
from sqlalchemy.engine import Connection

from db.storage import STORE_FOLDERS, Storage, disk_error

__all__ = ["References", "Orphan", "file_references", "find_orphans", "delete_orphans",
           "MIN_AGE_S", "format_size"]

log = logging.getLogger(__name__)

#: Files younger than this are never deleted: an import or a job may be about to record them.
MIN_AGE_S = 24 * 3600
#: Columns holding one stored path each (a key, or an absolute path of an older row).
PATH_COLUMNS = {"images": ("path",), "mask_versions": ("path",),
                "image_results": ("heatmap_path",), "model_runs": ("run_dir",)}
#: Tables whose JSON holds geometry or history, never a store path (the big ones).
_NO_PATHS_IN_JSON = {"object_decisions", "object_outcomes", "audit_log", "alembic_version"}
_STORE_TEXT = re.compile("|".join(f"{k}/" for k in STORE_FOLDERS))


@dataclass(frozen=True)
class References:
    """What the database names.

    Attributes
    ----------
    files : frozenset of str
        Keys of stored files (``images/ab/<hash>.png``...). A row holding an absolute path
        names the file by its last three parts, as :meth:`Storage.resolve` finds it.
    runs : frozenset of str
        Keys of run directories (``runs/<name>``), absolute ones by their last two parts.
    outside_runs : frozenset of str
        Run directories outside the data dir (absolute), such as the demo model.
    elsewhere : dict of str to str
        For a key whose file is not below this data dir, where an absolute row finds it (the
        old data dir of a moved installation): a backup copies it from there.
    """

    files: frozenset
    runs: frozenset
    outside_runs: frozenset
    elsewhere: dict = field(default_factory=dict)


def _store_key(parts: tuple[str, ...], *, tail: bool) -> str | None:
    """The key a path's parts name: ``runs/<name>``, or ``<kind>/ab/<file>``; else None."""
    if tail and len(parts) > 3 and parts[-3] in STORE_FOLDERS[:3]:
        return "/".join(parts[-3:])
    if tail and len(parts) > 2 and parts[-2] == "runs":
        return f"runs/{parts[-1]}"
    if not tail and len(parts) >= 2 and parts[0] == "runs":
        return f"runs/{parts[1]}"
    if not tail and len(parts) == 3 and parts[0] in STORE_FOLDERS[:3]:
        return "/".join(parts)
    return None


def _classify(value: str, storage: Storage, found: dict, *, run_dir: bool) -> None:
    """Sort one recorded path into ``found``'s files, runs, outside runs and elsewhere."""
    path = Path(value)
    if not path.is_absolute():
        key = _store_key(path.parts, tail=False)
    elif path.is_relative_to(storage.root):
        key = _store_key(path.relative_to(storage.root).parts, tail=False)
    else:
        key = _store_key(path.parts, tail=True)
        if key is None:
            if run_dir:
                found["outside"].add(str(path))
            return
        if not (storage.root / key).exists() and path.exists():
            found["elsewhere"][key] = str(path)
    if key is not None:
        found["runs" if key.startswith("runs/") else "files"].add(key)


def _walk_json(value: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    """Every (key, string) in a JSON value that could be a store path."""
    if isinstance(value, str):
        if key == "run_dir" or _STORE_TEXT.search(value):
            yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_json(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_json(v, key)


def _json_values(conn: Connection, column) -> Iterator[Any]:
    """The JSON values of one column whose text mentions a store folder or a run dir."""
    text = cast(column, Text)
    wanted = [text.like(f"%{k}/%") for k in STORE_FOLDERS] + [text.like("%run_dir%")]
    for (raw,) in conn.execute(select(text).where(column.is_not(None), or_(*wanted))):
        try:
            yield json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            continue


def file_references(conn: Connection, storage: Storage) -> References:
    """Every stored file and run directory the database behind ``conn`` names.

    Parameters
    ----------
    conn : Connection
        Read inside the caller's transaction (a backup reads the snapshot it dumps).
    storage : Storage
        Resolves absolute paths of older rows, also after the data dir moved.

    Returns
    -------
    References
    """
    meta = MetaData()
    meta.reflect(bind=conn)
    found: dict[str, Any] = {"files": set(), "runs": set(), "outside": set(), "elsewhere": {}}
    for name, columns in PATH_COLUMNS.items():
        table = meta.tables.get(name)
        for column in columns if table is not None else ():
            if column not in table.c:
                continue
            for (value,) in conn.execute(select(table.c[column]).where(
                    table.c[column].is_not(None)).distinct()):
                _classify(str(value), storage, found, run_dir=column == "run_dir")
    for table in sorted(meta.tables.values(), key=lambda t: t.name):
        if table.name in _NO_PATHS_IN_JSON:
            continue
        for column in table.c:
            if isinstance(column.type, JSON):
                for doc in _json_values(conn, column):
                    for key, value in _walk_json(doc):
                        _classify(value, storage, found, run_dir=key == "run_dir")
    return References(frozenset(found["files"]), frozenset(found["runs"]),
                      frozenset(found["outside"]), found["elsewhere"])


@dataclass(frozen=True)
class Orphan:
    """A file or run directory in the store that no row names.

    Attributes
    ----------
    key : str
        Its path below the data dir.
    size : int
        Bytes (a directory: all its files).
    modified : float
        Newest modification time (Unix seconds) of the file or of any file in the directory.
    """

    key: str
    size: int
    modified: float


def _tree_stats(path: Path) -> tuple[int, float]:
    """Total size and newest mtime of a file or of every file below a directory."""
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        return st.st_size, st.st_mtime
    size, newest = 0, st.st_mtime
    for root, _dirs, files in os.walk(path):
        for f in files:
            fst = os.lstat(os.path.join(root, f))
            size, newest = size + fst.st_size, max(newest, fst.st_mtime)
    return size, newest


def find_orphans(references: References, storage: Storage) -> list[Orphan]:
    """Files below images/, masks/, heatmaps/ and run directories below runs/ no row names.

    Temporary files a killed process left are orphans too. Nothing is changed.

    >>> import tempfile
    >>> import numpy as np
    >>> st = Storage(tempfile.mkdtemp())
    >>> kept = st.key(st.put_image(np.zeros((2, 2, 3), np.uint8)).path)
    >>> lost = st.put_image(np.ones((2, 2, 3), np.uint8)).path
    >>> refs = References(frozenset([kept]), frozenset(), frozenset())
    >>> [o.key == st.key(lost) for o in find_orphans(refs, st)]
    [True]
    """
    out = []
    for folder in STORE_FOLDERS:
        base = storage.root / folder
        if not base.is_dir():
            continue
        if folder == "runs":
            entries = [(p, f"runs/{p.name}", references.runs) for p in sorted(base.iterdir())]
        else:
            entries = [(p, p.relative_to(storage.root).as_posix(), references.files)
                       for p in sorted(base.rglob("*")) if p.is_file() or p.is_symlink()]
        for path, key, named in entries:
            if key not in named:
                size, modified = _tree_stats(path)
                out.append(Orphan(key, size, modified))
    return out


def delete_orphans(orphans: Iterable[Orphan], storage: Storage, *, min_age_s: float = MIN_AGE_S,
                   now: float | None = None) -> list[Orphan]:
    """Remove the orphans not modified for ``min_age_s`` seconds; returns those removed.

    The age is read again from the disk just before each removal (a file touched since it was
    listed is kept), and folders left empty are removed with it.
    """
    now = time.time() if now is None else now
    removed = []
    for orphan in orphans:
        path = storage.root / orphan.key
        try:
            _size, modified = _tree_stats(path)
        except FileNotFoundError:
            continue
        if now - modified < min_age_s:
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            raise disk_error(exc, path) from exc
        removed.append(orphan)
        _prune_empty(path.parent, storage)
    return removed


def _prune_empty(folder: Path, storage: Storage) -> None:
    """Remove empty hash-prefix folders up to (not including) the store's top folders."""
    tops = {storage.root / k for k in STORE_FOLDERS}
    while folder not in tops and folder.is_relative_to(storage.root) and folder != storage.root:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def format_size(n: float) -> str:
    """Bytes for people: ``'2.4 MB'``.

    >>> format_size(999), format_size(2_400_000), format_size(3 * 1024 ** 3)
    ('999 B', '2.4 MB', '3.2 GB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
