"""Migrations: one head, no drift from the models, and an upgrade that keeps a filled database.

Every issue that changes the schema adds a revision; the one before the head is the schema a
lab's database is at when the new code arrives. The test fills such a database with a row in
every table (reflected, so it needs no change when a revision lands) and upgrades it to the
head, on SQLite and on PostgreSQL.
"""
import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (JSON, Boolean, DateTime, Float, Integer, MetaData, String, Text, func,
                        inspect, select, text)

from db.engine import _alembic_config, current_revision, head_revision, make_engine, upgrade
from db.models import Base


def _script():
    return ScriptDirectory.from_config(_alembic_config(make_engine("sqlite://")))


def test_one_head():
    assert len(_script().get_heads()) == 1


def test_the_models_and_the_migrations_agree(engine):
    """What ``alembic check`` does: the migrated schema holds exactly what the models declare."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    assert diff == []


def _value(column, parent_ids):
    """A value for one column of a filler row: the parent's id for a foreign key, else a value
    of the column's type."""
    if column.foreign_keys:
        return parent_ids.get(next(iter(column.foreign_keys)).column.table.name)
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 1
    if isinstance(kind, Float):
        return 0.5
    if isinstance(kind, DateTime):
        return dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, (String, Text)):
        return f"x-{column.name}"[: getattr(kind, "length", None) or 40]
    return None


def _parents_first(tables):
    """Tables ordered so every NOT NULL foreign key's table comes first (nullable keys, such as
    the images <-> mask_versions cycle, are filled in afterwards)."""
    order, placed = [], set()
    pending = [t for t in tables if t.name != "alembic_version"]
    while pending:
        ready = [t for t in pending if all(fk.column.table.name in placed | {t.name}
                                           for c in t.columns if not c.nullable
                                           for fk in c.foreign_keys)]
        assert ready, f"NOT NULL foreign keys form a cycle among {[t.name for t in pending]}"
        for t in ready:
            order.append(t)
            placed.add(t.name)
            pending.remove(t)
    return order


def _fill_every_table(engine) -> dict[str, int]:
    """One row in every table, every column set; returns table -> row count."""
    meta = MetaData()
    meta.reflect(engine)
    tables = _parents_first(meta.tables.values())
    ids = {t.name: 1 for t in tables}
    with engine.begin() as conn:
        for table in tables:
            row = {c.name: None if c.nullable and c.foreign_keys else _value(c, ids)
                   for c in table.columns}
            conn.execute(table.insert().values(row))
        for table in tables:  # now that every parent row exists, the nullable keys too
            late = {c.name: _value(c, ids) for c in table.columns if c.nullable and c.foreign_keys}
            if late:
                conn.execute(table.update().values(late))
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in tables}


def test_a_database_filled_at_the_previous_head_upgrades(engine):
    script = _script()
    head = script.get_revision(head_revision())
    previous = head.down_revision
    assert previous is not None, "the head revision has no parent to upgrade from"
    with engine.begin() as conn:  # the engine fixture is at head: start again from nothing
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'
                              if engine.dialect.name == "postgresql"
                              else f'DROP TABLE IF EXISTS "{table.name}"'))
        conn.execute(text('DROP TABLE IF EXISTS alembic_version'))
    assert upgrade(engine, previous) == previous
    before = _fill_every_table(engine)
    assert set(before.values()) == {1}
    assert upgrade(engine) == head.revision == current_revision(engine)
    names = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        for name, n in before.items():
            if name in names:  # a revision may drop a table; none does today
                assert conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar() == n
