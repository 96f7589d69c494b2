"""Signed, expiring sign-in tokens, so a reload or a direct link keeps a user signed in.

A token is ``<user id>.<expiry, unix seconds>.<HMAC-SHA256>``: it carries no name, password
or role, and the user row is read again (and a disabled account refused) whenever one is used.
The signature also covers a *stamp* of the account, its stored password hash (salted, so new on
every password change): changing or resetting a password ends every token issued before. The key is generated once into the data dir (``session.key``, readable by its owner
only); deleting it signs everybody out.

>>> key = b"k" * 32
>>> token = issue_token(key, 7, now=1000.0, ttl=60)
>>> verify_token(key, token, now=1059.0), verify_token(key, token, now=1061.0)
(7, None)
>>> verify_token(b"x" * 32, token, now=1000.0) is None
True
>>> stamped = issue_token(key, 7, stamp="hash-1", now=1000.0)
>>> verify_token(key, stamped, stamp_for=lambda uid: "hash-1", now=1000.0)
7
>>> verify_token(key, stamped, stamp_for=lambda uid: "hash-2", now=1000.0) is None
True
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

__all__ = ["KEY_FILE", "TOKEN_TTL", "session_key", "issue_token", "verify_token"]

KEY_FILE = "session.key"
TOKEN_TTL = 12 * 3600  # a working day; after that, sign in again


def session_key(data_dir: str | Path) -> bytes:
    """The data dir's signing key, created on first use (atomically: two servers agree)."""
    path = Path(data_dir) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _sign(key: bytes, body: str, stamp: str) -> str:
    stamp_digest = hashlib.sha256(stamp.encode()).hexdigest()
    return hmac.new(key, f"{body}.{stamp_digest}".encode(), hashlib.sha256).hexdigest()


def issue_token(key: bytes, user_id: int, *, stamp: str = "", ttl: float = TOKEN_TTL,
                now: float | None = None) -> str:
    """A token for ``user_id`` valid for ``ttl`` seconds, bound to the account's ``stamp``."""
    expiry = int((time.time() if now is None else now) + ttl)
    body = f"{int(user_id)}.{expiry}"
    return f"{body}.{_sign(key, body, stamp)}"


def verify_token(key: bytes, token: str | None, *, stamp_for=None,
                 now: float | None = None) -> int | None:
    """The user id of a genuine, unexpired token; None for anything else.

    ``stamp_for(user_id)`` returns the account's current stamp (None: no such account); without
    it the stamp is empty, as for tokens issued without one.
    """
    parts = (token or "").split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    stamp = "" if stamp_for is None else stamp_for(int(parts[0]))
    if stamp is None:
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(key, body, stamp), parts[2]):
        return None
    if int(parts[1]) <= (time.time() if now is None else now):
        return None
    return int(parts[0])
