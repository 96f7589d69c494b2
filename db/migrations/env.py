"""Alembic environment for CellTally, configured from code (see :func:`db.engine.upgrade`).

The caller hands over an open connection in ``config.attributes["connection"]``; without one,
the URL in the ``sqlalchemy.url`` option is used. The module does nothing when imported outside
an Alembic run (pytest imports every module to collect doctests).
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from db.models import Base


def _configure_and_run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    """Run the migrations online, on the given connection or a fresh engine."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _configure_and_run(conn)
    engine.dispose()


if getattr(context, "config", None) is not None:
    run_migrations()
