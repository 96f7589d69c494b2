"""Fixtures for the db suite: every test that takes ``engine`` runs on SQLite and on PostgreSQL.

PostgreSQL needs ``CELLTALLY_TEST_PG_URL`` (``scripts/test.sh`` starts a throwaway server and
sets it); without it the PostgreSQL half is skipped with a reason. Each test session gets its
own PostgreSQL schema (dropped at the end), so concurrent runs against one server don't collide;
tables are emptied after each test. SQLite tests each get a copy of a migrated template file.
"""
from __future__ import annotations

import os
import shutil
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import text

from db.engine import make_engine, upgrade
from db.models import Base
from db.settings import Settings
from db.storage import Storage

PG_ENV = "CELLTALLY_TEST_PG_URL"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file migrated once; tests copy it instead of migrating again."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_url():
    """URL of a fresh, migrated schema on the test PostgreSQL server (dropped afterwards)."""
    base = os.environ.get(PG_ENV)
    if not base:
        print(f"\nPostgreSQL tests skipped: {PG_ENV} is not set (scripts/test.sh sets it).")
        pytest.skip(f"{PG_ENV} is not set; run `bash scripts/test.sh tests/db` for PostgreSQL.")
    schema = f"ct_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _empty_pg(engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def engine(request, tmp_path, sqlite_template):
    """A migrated, empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "celltally.db"
        shutil.copyfile(sqlite_template, path)
        eng = make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
        return
    eng = make_engine(request.getfixturevalue("pg_url"))
    yield eng
    _empty_pg(eng)
    eng.dispose()


@pytest.fixture
def settings(tmp_path, engine):
    """Settings pointing at the test database and a scratch data dir."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return Settings(data_dir=data, db_url=engine.url.render_as_string(hide_password=False),
                    import_roots=(data, tmp_path))


@pytest.fixture
def storage(settings):
    """The file store under the scratch data dir."""
    return Storage.from_settings(settings)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch):
    """Argon2 at its real cost takes ~0.5 s a hash here; the tests use a small memory cost."""
    from argon2 import PasswordHasher

    import db.users

    monkeypatch.setattr(db.users, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024,
                                                            parallelism=1))
