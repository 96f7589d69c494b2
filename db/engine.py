"""Engines and migrations.

:func:`make_engine` builds an engine for any SQLAlchemy URL; SQLite connections get WAL, foreign
keys and a busy timeout through a connect event. :func:`upgrade` migrates a database to the
current schema with Alembic, configured in code (no ``alembic.ini`` needed). :func:`transaction`
frames one unit of work for callers that are not db functions (pages, the demo seeder, scripts).
There are no engine or session globals: the app caches its engine itself, tests build their own.
"""
from __future__ import annotations

import logging
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.settings import Settings

__all__ = ["make_engine", "transaction", "commit_retrying", "is_lock_error", "upgrade",
           "current_revision", "head_revision", "MIGRATIONS_DIR", "SQLITE_BUSY_TIMEOUT_MS"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# SQLSTATEs PostgreSQL gives a statement that lost a wait for a lock.
_PG_LOCK_STATES = {"55P03", "40P01", "40001"}

T = TypeVar("T")


def make_engine(url: str | Settings, *, echo: bool = False, **kwargs) -> Engine:
    """Create an engine for a URL (or for ``settings.db_url``).

    Parameters
    ----------
    url : str or Settings
        A SQLAlchemy URL such as ``sqlite:////abs/path.db`` or
        ``postgresql+psycopg://user@host/db``, or the settings holding one.
    echo : bool
        Log every SQL statement (debugging).
    **kwargs
        Passed on to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    Engine
        For SQLite, every new connection runs in WAL mode with foreign keys enforced and
        waits up to :data:`SQLITE_BUSY_TIMEOUT_MS` for a lock; the file's folder is created,
        and the file (with its ``-wal`` and ``-shm``) is readable by its owner only.

    >>> e = make_engine("sqlite://")
    >>> with e.connect() as c:
    ...     c.exec_driver_sql("PRAGMA foreign_keys").scalar()
    1
    """
    if isinstance(url, Settings):
        url = url.db_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(parsed, echo=echo, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, echo=echo, **kwargs)


def _private_sqlite_file(path: Path) -> None:
    """Make the database file readable by its owner only, before SQLite opens it.

    It holds password hashes. SQLite gives the ``-wal`` and ``-shm`` files it creates the mode
    of the database file, so creating that one 0600 covers them; the files of an older, more
    open installation are narrowed. A file system that refuses (read-only, not the owner) is
    left as it is: the database may still be readable there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError as exc:
        log.debug("Could not create %s ahead of SQLite: %s", path, exc)
        return
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if part.exists() and part.stat().st_mode & 0o077:
                part.chmod(0o600)
        except OSError as exc:
            log.debug("Could not make %s private: %s", part, exc)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Per-connection SQLite settings; WAL lets readers work while a writer writes."""
    cur = dbapi_connection.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed when the block ends, rolled back if it raises.

    The session does not expire its objects on commit, so rows read inside the block can still
    be read (not lazily loaded) after it, as a page does when it renders what it fetched.

    Parameters
    ----------
    engine : Engine

    Yields
    ------
    Session
        Inside ``session.begin()``; db functions called with it never commit themselves.

    >>> from sqlalchemy import text
    >>> e = make_engine("sqlite://")
    >>> with transaction(e) as s:
    ...     s.execute(text("SELECT 1")).scalar()
    1
    """
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def is_lock_error(exc: BaseException) -> bool:
    """Whether a database error means "locked, try again": SQLite's busy and locked, or
    PostgreSQL's lock timeout, deadlock and serialization failure.

    >>> is_lock_error(OperationalError("UPDATE", {}, Exception("database is locked")))
    True
    >>> is_lock_error(OperationalError("SELECT", {}, Exception("no such table: jobs")))
    False
    """
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_LOCK_STATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


def commit_retrying(engine: Engine, work: Callable[[Session], T], *, tries: int = 6,
                    delay_s: float = 0.05) -> T:
    """Run ``work(session)`` in its own short transaction and commit it, retrying while locked.

    The exception to "functions never commit", for writes that must survive their caller and
    must not fail on a busy database: a job's progress and heartbeat, an import's images one
    by one. Each retry starts a fresh transaction after a randomised, doubling pause.

    Parameters
    ----------
    engine : Engine
    work : callable(Session) -> T
        Must not touch files: it runs while the transaction holds its locks. Return plain
        values (ids, numbers); rows it returns are detached but keep what they loaded.
    tries : int
        Attempts in all; the last lock error is raised.
    delay_s : float
        The first pause; pause k lasts about ``delay_s * 2**k``.

    Returns
    -------
    What ``work`` returned, once committed.

    >>> e = make_engine("sqlite://")
    >>> from sqlalchemy import text
    >>> commit_retrying(e, lambda s: s.execute(text("SELECT 41 + 1")).scalar())
    42
    """
    for attempt in range(tries):
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                return work(session)
        except OperationalError as exc:
            if attempt == tries - 1 or not is_lock_error(exc):
                raise
            pause = delay_s * 2 ** attempt * (0.5 + random.random())
            log.info("Database locked (%s); trying again in %.2f s.", exc.orig, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False)
                        .replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database behind ``engine`` to ``revision`` (the newest by default).

    Safe to call on every start: an up-to-date database is left alone. Returns the revision
    the database is at afterwards.
    """
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    rev = current_revision(engine)
    log.info("Database %s is at revision %s.", engine.url.render_as_string(), rev)
    return rev


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(make_engine("sqlite://"))
    return ScriptDirectory.from_config(cfg).get_current_head()
