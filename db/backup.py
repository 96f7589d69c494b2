"""Back up a whole installation into one archive, and restore it into an empty one.

``python -m db backup PATH`` writes one tar file (mode 0600: it holds password hashes)::

    dump/<table>.jsonl.gz   every row of every table, one JSON object per line, by column name
    files/<key>             every file a row or a job's JSON names below the data dir: images,
                            masks, heatmaps and whole run directories (``db.gc.file_references``)
    manifest.json           format, Alembic revision, engine, row counts, the sha256 of every
                            other member, and the run directories outside the data dir (not
                            copied: they belong to someone else, such as the demo model)

The dump names no engine's types (timestamps are ISO 8601 in UTC, bytes base64), so an archive
of a SQLite installation restores into PostgreSQL: that is how a lab moves. The database is read
in one snapshot (SQLite's online backup API; PostgreSQL's repeatable read); stored files never
change once written, so copying them afterwards is consistent. Only files the database names
are copied, so an old ``session.key`` (or anything else in the data dir) is never included.

``python -m db restore PATH`` checks every checksum and that the target (``CELLTALLY_DB_URL``,
``CELLTALLY_DATA_DIR``) is empty before it writes anything; then it creates the schema at the
archive's revision, loads the rows, copies the files and upgrades to the newest revision.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from sqlalchemy import (DateTime, Engine, LargeBinary, MetaData, bindparam, inspect, select, text,
                        update)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import sort_tables_and_constraints

from db.engine import current_revision, make_engine, upgrade
from db.gc import file_references
from db.settings import Settings
from db.storage import STORE_FOLDERS, TEMP_SUFFIX, DiskError, Storage, disk_error, make_dirs

__all__ = ["backup", "restore", "open_database", "BackupSummary", "RestoreSummary", "FORMAT",
           "FORMAT_VERSION", "NOT_BACKED_UP"]

log = logging.getLogger(__name__)

FORMAT = "celltally-backup"
FORMAT_VERSION = 1
#: Tables whose rows stay out of an archive: Alembic's own (the manifest carries the revision).
NOT_BACKED_UP = ("alembic_version",)
_BATCH = 2000
_CHUNK = 1 << 20
_UTC = dt.timezone.utc


@dataclass(frozen=True)
class BackupSummary:
    """What a backup holds: where, at which revision, from which engine, how many rows and files."""

    path: Path
    revision: str
    engine: str
    rows: dict[str, int]
    files: int
    size: int
    outside_runs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreSummary:
    """What a restore did: the archive's revision, the one now, rows, files, runs still missing."""

    revision: str
    upgraded_to: str | None
    rows: dict[str, int]
    files: int
    missing_runs: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- the source


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def open_database(url: str) -> tuple[Engine, str]:
    """An engine on an existing CellTally database and its revision; never creates one.

    Raises
    ------
    ValueError
        A sentence when the SQLite file is missing, the server cannot be reached, or the
        database holds no CellTally schema (a mistyped URL says so instead of an empty backup).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or not Path(
                parsed.database).is_file():
            raise ValueError(f"There is no database at {_shown(url)}. Check CELLTALLY_DB_URL "
                             f"(or CELLTALLY_DATA_DIR); nothing was written.")
        engine = make_engine(url)
    else:
        engine = make_engine(url, connect_args={"connect_timeout": 15})
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ValueError(f"Cannot reach the database at {_shown(url)} ({reason}). Check "
                         f"CELLTALLY_DB_URL and that the server runs; nothing was written."
                         ) from exc
    if revision is None:
        engine.dispose()
        raise ValueError(f"{_shown(url)} holds no CellTally database (no schema). Check "
                         f"CELLTALLY_DB_URL; nothing was written.")
    return engine, revision


@contextmanager
def _snapshot(engine: Engine, workdir: Path) -> Iterator[Connection]:
    """A connection that sees one consistent state of the database while live writers go on."""
    if engine.dialect.name == "sqlite":
        copy = workdir / "snapshot.db"
        src, out = sqlite3.connect(engine.url.database, timeout=30), sqlite3.connect(copy)
        try:
            src.backup(out)
        finally:
            out.close()
            src.close()
        snap = make_engine(f"sqlite:///{copy}")
        try:
            with snap.connect() as conn:
                yield conn
        finally:
            snap.dispose()
        return
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        with conn.begin():
            yield conn


def _plain(value: Any) -> Any:
    """A column value as JSON: timestamps ISO in UTC, bytes base64, decimals as floats."""
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _dump_table(conn: Connection, table, out: Path) -> int:
    """Every row of ``table`` into a gzipped JSON-lines file, by primary key; how many."""
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(
        select(table).order_by(*order))
    n = 0
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=6) as fh:
        for row in result.mappings():
            fh.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
            n += 1
    return n


class _Hashing(io.RawIOBase):
    """Reads through a file while hashing what was read (tar members are hashed in one pass)."""

    def __init__(self, fh):
        super().__init__()
        self.fh, self.sha = fh, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, path: Path, sums: dict[str, str]) -> int:
    """Add one file as ``name`` (owner-only mode, no owner names); its size."""
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    with open(path, "rb") as fh:
        hashing = _Hashing(fh)
        tar.addfile(info, hashing)
    sums[name] = hashing.sha.hexdigest()
    return info.size


def _store_files(refs, storage: Storage) -> Iterator[tuple[str, Path]]:
    """(key, path) of every referenced file below the data dir, run directories walked."""
    def where(key: str) -> Path:
        here = storage.root / key
        return here if here.exists() or key not in refs.elsewhere else Path(refs.elsewhere[key])

    for key in sorted(refs.files):
        path = where(key)
        if path.is_file():
            yield key, path
        else:
            log.warning("%s is named by the database but missing; it is not in the backup.", key)
    for key in sorted(refs.runs):
        base = where(key)
        if not base.is_dir():
            log.warning("Run directory %s is named by the database but missing.", key)
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(TEMP_SUFFIX):
                yield f"{key}/{path.relative_to(base).as_posix()}", path


def backup(settings: Settings, dest: str | Path) -> BackupSummary:
    """Write the whole installation (database and named files) into the archive ``dest``.

    Nothing is created unless the whole archive was written: it is assembled under a
    temporary name in the same folder (mode 0600) and renamed at the end.

    Raises
    ------
    ValueError
        No database, an unreachable one, or a disk error (a :class:`db.storage.DiskError`).
    """
    dest = Path(dest).resolve()
    engine, revision = open_database(settings.db_url)
    if engine.dialect.name == "sqlite" and dest == Path(engine.url.database).resolve():
        engine.dispose()
        raise ValueError("The backup path is the database itself; pick another file.")
    storage = Storage(settings.data_dir)
    try:
        make_dirs(dest.parent)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".celltally-backup-") as work:
            partial = Path(work) / "archive.tar"
            summary = _write_archive(engine, revision, storage, Path(work), partial)
            os.replace(partial, dest)
    except DiskError:
        raise
    except OSError as exc:
        raise disk_error(exc, dest) from exc
    finally:
        engine.dispose()
    log.info("Backed up %s rows and %d files to %s.", sum(summary["rows"].values()),
             summary["files"], dest)
    return BackupSummary(dest, revision, engine.dialect.name, summary["rows"], summary["files"],
                         dest.stat().st_size, tuple(summary["outside_runs"]))


def _write_archive(engine: Engine, revision: str, storage: Storage, work: Path,
                   partial: Path) -> dict:
    """Snapshot, dump, copy the files; returns the manifest written last."""
    sums: dict[str, str] = {}
    rows: dict[str, int] = {}
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w",
                                                  format=tarfile.PAX_FORMAT) as tar:
        with _snapshot(engine, work) as conn:
            meta = MetaData()
            meta.reflect(bind=conn)
            for table in sorted(meta.tables.values(), key=lambda t: t.name):
                if table.name in NOT_BACKED_UP:
                    continue
                out = work / f"{table.name}.jsonl.gz"
                rows[table.name] = _dump_table(conn, table, out)
                _add(tar, f"dump/{table.name}.jsonl.gz", out, sums)
                out.unlink()
            refs = file_references(conn, storage)
        n_files = 0
        for key, path in _store_files(refs, storage):
            try:
                _add(tar, f"files/{key}", path, sums)
                n_files += 1
            except FileNotFoundError:  # a running job's checkpoint rotated meanwhile
                log.warning("%s went away while it was backed up; left out.", key)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "revision": revision,
                    "engine": engine.dialect.name,
                    "created_at": dt.datetime.now(_UTC).isoformat(timespec="seconds"),
                    "rows": rows, "files": n_files, "outside_runs": sorted(refs.outside_runs),
                    "sha256": sums}
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mode, info.mtime = len(data), 0o600, int(dt.datetime.now().timestamp())
        tar.addfile(info, io.BytesIO(data))
    os.chmod(partial, 0o600)
    return manifest


# ---------------------------------------------------------------- the target


def _member_ok(name: str) -> bool:
    """Whether a member name is one a backup writes (no escape from the data dir)."""
    parts = PurePosixPath(name).parts
    if not parts or ".." in parts or PurePosixPath(name).is_absolute():
        return False
    if name == "manifest.json":
        return True
    if parts[0] == "dump":
        return len(parts) == 2 and name.endswith(".jsonl.gz")
    return parts[0] == "files" and len(parts) >= 3 and parts[1] in STORE_FOLDERS


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    try:
        manifest = json.load(tar.extractfile("manifest.json"))
    except (KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"{archive} is not a CellTally backup (no readable manifest.json); "
                         f"make one with `python -m db backup`.") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{archive} is a backup of format {manifest.get('format')!r} version "
                         f"{manifest.get('format_version')!r}; this CellTally reads {FORMAT} "
                         f"version {FORMAT_VERSION}.")
    return manifest


def _verify(tar: tarfile.TarFile, manifest: dict, archive: Path) -> None:
    """Every member is expected and whole: its sha256 is the manifest's; none is missing."""
    expected = dict(manifest.get("sha256", {}))
    for member in tar:
        if member.name == "manifest.json":
            continue
        if not (member.isfile() and _member_ok(member.name)) or member.name not in expected:
            raise ValueError(f"{archive} holds {member.name!r}, which its manifest does not "
                             f"list; it was changed after it was written. Nothing was restored.")
        sha = hashlib.sha256()
        fh = tar.extractfile(member)
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
        if sha.hexdigest() != expected.pop(member.name):
            raise ValueError(f"{member.name} in {archive} does not match its checksum: the "
                             f"archive is damaged. Nothing was restored; use another copy.")
    if expected:
        raise ValueError(f"{archive} lacks {len(expected)} file(s) its manifest lists, e.g. "
                         f"{sorted(expected)[0]}: it is incomplete. Nothing was restored.")


def _known_revision(revision: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from db.engine import _alembic_config

    try:
        found = ScriptDirectory.from_config(_alembic_config(make_engine("sqlite://"))
                                            ).get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise ValueError(f"The backup is at database revision {revision}, which this CellTally "
                         f"does not know; restore it with the version that wrote it (or newer).")


def _target_problems(settings: Settings) -> list[str]:
    """Why the target is not empty (rows in its tables, files in its store); [] when empty."""
    problems = []
    parsed = make_url(settings.db_url)
    sqlite_missing = parsed.get_backend_name() == "sqlite" and not (
        parsed.database and Path(parsed.database).is_file())
    if not sqlite_missing:
        engine = make_engine(settings.db_url)
        try:
            with engine.connect() as conn:
                for name in inspect(conn).get_table_names():
                    if name == "alembic_version":
                        continue
                    if conn.execute(text(f'SELECT 1 FROM "{name}" LIMIT 1')).first():
                        problems.append(f"its database already has rows (table {name})")
                        break
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise ValueError(f"Cannot reach the database at {_shown(settings.db_url)} "
                             f"({reason}); nothing was restored.") from exc
        finally:
            engine.dispose()
    for folder in STORE_FOLDERS:
        base = Path(settings.data_dir) / folder
        if base.is_dir() and any(p.is_file() for p in base.rglob("*")):
            problems.append(f"{base} holds files")
    return problems


def restore(settings: Settings, archive: str | Path) -> RestoreSummary:
    """Restore a backup into the empty installation ``settings`` names.

    Raises
    ------
    ValueError
        A sentence, before anything is written, when the archive is not a backup, is damaged
        or incomplete, is at an unknown revision, or the target is not empty.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ValueError(f"There is no backup at {archive}.")
    try:
        tar = tarfile.open(archive, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{archive} is not a CellTally backup ({exc}).") from exc
    with tar:
        manifest = _read_manifest(tar, archive)
        _known_revision(manifest["revision"])
        _verify(tar, manifest, archive)
        problems = _target_problems(settings)
        if problems:
            raise ValueError(f"Restore needs an empty installation, but {'; '.join(problems)}. "
                             f"Point CELLTALLY_DB_URL and CELLTALLY_DATA_DIR at a new database "
                             f"and folder; nothing was restored.")
        return _load(settings, tar, manifest)


def _load(settings: Settings, tar: tarfile.TarFile, manifest: dict) -> RestoreSummary:
    """Write the files, then the rows in one transaction; undo the files if the rows fail."""
    storage = Storage(settings.data_dir)
    written: list[Path] = []
    engine = make_engine(settings.db_url)
    try:
        _schema_at(engine, manifest["revision"])
        for member in tar:
            if member.name.startswith("files/"):
                target = storage.root / PurePosixPath(member.name).relative_to("files")
                _extract(tar.extractfile(member), target)
                written.append(target)
        with engine.begin() as conn:
            rows = _load_rows(conn, tar)
            if conn.dialect.name == "postgresql":
                _reset_sequences(conn)
        now = upgrade(engine)
        with engine.connect() as conn:
            outside = file_references(conn, storage).outside_runs
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        engine.dispose()
    missing = tuple(sorted(p for p in outside if not Path(p).is_dir()))
    return RestoreSummary(manifest["revision"], now, rows, len(written), missing)


def _schema_at(engine: Engine, revision: str) -> None:
    """Empty tables at ``revision``: made there, or (empty ones at another revision) remade."""
    current = current_revision(engine)
    if current == revision:
        return
    if current is not None:  # empty (checked): dropping loses nothing
        meta = MetaData()
        meta.reflect(bind=engine)
        meta.drop_all(bind=engine)
    upgrade(engine, revision)


def _extract(fh, target: Path) -> None:
    """Copy one member to ``target`` through a temporary file; a disk error is a sentence."""
    make_dirs(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(fh, out, _CHUNK)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise disk_error(exc, target) from exc


def _decoder(column, dialect: str):
    """How a dumped JSON value becomes a value for ``column`` of the target."""
    kind = column.type
    if isinstance(kind, DateTime):
        aware = dialect != "sqlite" and bool(getattr(kind, "timezone", False))

        def when(value):
            if value is None:
                return None
            parsed = dt.datetime.fromisoformat(value)
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=_UTC)
            parsed = parsed.astimezone(_UTC)
            return parsed if aware else parsed.replace(tzinfo=None)
        return when
    if isinstance(kind, LargeBinary):
        return lambda value: None if value is None else base64.b64decode(value)
    return None


def _load_rows(conn: Connection, tar: tarfile.TarFile) -> dict[str, int]:
    """Insert every dumped table, parents first; foreign keys in a cycle are set afterwards."""
    meta = MetaData()
    meta.reflect(bind=conn)
    dumped = {PurePosixPath(m.name).name[: -len(".jsonl.gz")]: m for m in tar.getmembers()
              if m.name.startswith("dump/")}
    unknown = sorted(set(dumped) - set(meta.tables))
    if unknown:
        raise ValueError(f"The backup has table {unknown[0]}, which the schema at its revision "
                         f"lacks; the archive does not match its revision.")
    tables = [meta.tables[n] for n in sorted(dumped)]
    cycle = _cycle_breakers(tables)
    order = sort_tables_and_constraints(tables, filter_fn=lambda fkc: True if fkc in cycle
                                        else None)
    deferred: dict[str, set[str]] = {}
    for fkc in cycle:
        deferred.setdefault(fkc.table.name, set()).update(c.name for c in fkc.columns)
    counts, later = {}, []
    for table, _fkcs in order:
        if table is None:
            continue
        counts[table.name], pending = _insert_table(conn, table, tar.extractfile(
            dumped[table.name]), deferred.get(table.name, set()))
        later.append((table, pending))
    for table, pending in later:
        _set_deferred(conn, table, pending)
    return counts


def _cycle_breakers(tables) -> set:
    """The nullable foreign keys between tables that depend on each other (an image's head
    version and the version's image): rows go in without them, and they are set afterwards."""
    unsorted = {fkc for table, fkcs in sort_tables_and_constraints(tables) if table is None
                for fkc in fkcs}
    in_cycle = {fkc.table for fkc in unsorted} | {fkc.referred_table for fkc in unsorted}
    return {fkc for fkc in unsorted if fkc.referred_table in in_cycle
            and all(c.nullable for c in fkc.columns)}


def _insert_table(conn: Connection, table, fh, deferred: set[str]):
    """Insert a table's dumped rows in batches; the deferred columns' values are returned."""
    decoders = {c.name: d for c in table.columns if (d := _decoder(c, conn.dialect.name))}
    pk = [c.name for c in table.primary_key.columns]
    batch, pending, n = [], [], 0
    with gzip.open(fh, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            for name, decode in decoders.items():
                if name in row:
                    row[name] = decode(row[name])
            held = {c: row[c] for c in deferred if row.get(c) is not None}
            if held:
                pending.append(({f"_pk_{k}": row[k] for k in pk}, held))
                row.update({c: None for c in held})
            batch.append(row)
            if len(batch) >= _BATCH:
                conn.execute(table.insert(), batch)
                n, batch = n + len(batch), []
    if batch:
        conn.execute(table.insert(), batch)
        n += len(batch)
    return n, pending


def _set_deferred(conn: Connection, table, pending) -> None:
    """Fill in the foreign keys held back because of a cycle (an image's head version)."""
    if not pending:
        return
    pk = list(table.primary_key.columns)
    for columns in {frozenset(held) for _key, held in pending}:
        stmt = update(table).where(*(c == bindparam(f"_pk_{c.name}") for c in pk)).values(
            {c: bindparam(f"_v_{c}") for c in columns})
        params = [{**key, **{f"_v_{c}": v for c, v in held.items()}}
                  for key, held in pending if frozenset(held) == columns]
        conn.execute(stmt, params)


def _reset_sequences(conn: Connection) -> None:
    """Move each serial id's sequence past the restored rows, so new rows get new ids."""
    meta = MetaData()
    meta.reflect(bind=conn)
    for name in sorted(t.name for t in meta.tables.values() if "id" in t.c):
        seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": name}).scalar()
        if seq is None:
            continue
        top = conn.execute(text(f'SELECT max(id) FROM "{name}"')).scalar()
        conn.execute(text("SELECT setval(:s, :v, :called)"),
                     {"s": seq, "v": top or 1, "called": top is not None})
