"""The demo project: users of every role, synthetic images, masks, ground truth, the demo model.

``seed_demo(settings)`` is idempotent: it builds what is missing and leaves the rest alone, so
the app calls it on every start in demo mode (``make run``) and a second start costs a query.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@contextmanager
def transaction(engine):
    """A session in one transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as s, s.begin():
        yield s


def seed_demo(settings, *, engine=None) -> None:
    """Build the demo project (see module docstring)."""
