"""The installation's secrets, kept in the database instead of files in the data dir.

The key that signs sign-ins used to be ``<data dir>/session.key``, written on first use; on a
read-only data dir (a shared, mounted store) it could not be written, so nobody could sign in.
:func:`installation_secret` keeps such a key in the table ``app_secrets``: every app server and
worker sharing the database shares it, nothing is written to the data dir, and an existing
``session.key`` is adopted on first use, so the tokens it signed stay valid. Like
``session.key``, the table is left out of backups (``db.backup.NOT_BACKED_UP``): a restored
installation makes a new key and signs everybody out.

It runs its own short transactions on the engine (like claiming a job): the key must exist
for everyone at once, whatever the caller's transaction does.
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import AppSecret

__all__ = ["installation_secret", "SESSION_SECRET"]

log = logging.getLogger(__name__)

#: The name of the key that signs sign-ins.
SESSION_SECRET = "session"


def _adopted(path: Path | None) -> str | None:
    """The hex key in an older installation's key file, if there is a readable, valid one."""
    if path is None:
        return None
    try:
        value = Path(path).read_text().strip()
        bytes.fromhex(value)
    except (OSError, ValueError):
        return None
    return value or None


def installation_secret(engine: Engine, name: str = SESSION_SECRET, *,
                        adopt: str | Path | None = None, nbytes: int = 32) -> bytes:
    """The installation's secret called ``name``: random bytes made once, kept in the database.

    Parameters
    ----------
    engine : Engine
        The installation's database (migrated); two processes asking at once get the same key.
    name : str
        Which secret (:data:`SESSION_SECRET` signs sign-ins).
    adopt : path, optional
        A key file of an older installation (``<data dir>/session.key``): when the database has
        no such secret yet and the file holds one, that value is kept, so nobody is signed out.
        The file is only read.
    nbytes : int
        Length of a new secret.

    Returns
    -------
    bytes

    Examples
    --------
    >>> from db.engine import make_engine, upgrade
    >>> e = make_engine("sqlite://")
    >>> _ = upgrade(e)
    >>> key = installation_secret(e)
    >>> len(key), installation_secret(e) == key
    (32, True)
    """
    with Session(engine) as session:
        found = session.get(AppSecret, name)
        if found is not None:
            return bytes.fromhex(found.value)
    value = _adopted(adopt) or secrets.token_hex(nbytes)
    try:
        with Session(engine) as session, session.begin():
            session.add(AppSecret(name=name, value=value))
        log.info("Made the installation's %s secret%s.", name, " from " + str(adopt)
                 if value == _adopted(adopt) else "")
    except IntegrityError:  # another process made it meanwhile: everybody uses theirs
        pass
    with Session(engine) as session:
        return bytes.fromhex(session.get(AppSecret, name).value)
