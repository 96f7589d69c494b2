"""Users, passwords and roles.

Passwords are hashed with Argon2id (memory-hard, a random salt per hash) through
``argon2-cffi``, verified in constant time, and never stored or logged in clear. Five wrong
passwords in a row lock an account for a minute. Failed sign-ins all raise the same
:class:`AuthenticationError` message, so it never reveals whether the name exists.

Functions that take a ``clock`` use it instead of the wall clock, so tests need no sleeping.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import audit
from db.models import ROLES, User, utcnow

__all__ = ["AuthenticationError", "create_user", "authenticate", "change_password",
           "set_password", "disable_user", "enable_user", "set_role", "get_user", "list_users",
           "require_role", "MAX_FAILED", "LOCK_SECONDS", "MIN_PASSWORD"]

log = logging.getLogger(__name__)

MAX_FAILED = 5
LOCK_SECONDS = 60
MIN_PASSWORD = 8
_FAILED = "Sign-in failed: the name or the password is wrong, or the account is locked or disabled."
# Argon2id, 64 MiB, 3 passes (RFC 9106's second recommendation). Tests swap in a cheaper hasher.
ARGON2_PARAMS = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4}
_HASHER = PasswordHasher(**ARGON2_PARAMS)
_DUMMY: dict[int, str] = {}

Clock = Callable[[], dt.datetime]


class AuthenticationError(Exception):
    """Sign-in failed; the message is the same whatever the reason."""


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise ValueError(f"The password is too short; use at least {MIN_PASSWORD} characters.")


def _spend_like_a_check() -> None:
    """Verify a throwaway hash, so an unknown name takes as long as a wrong password."""
    key = id(_HASHER)
    if key not in _DUMMY:  # made on first use: importing this module stays fast
        _DUMMY[key] = _HASHER.hash("not a real password")
    _HASHER.verify(_DUMMY[key], "not a real password")


def get_user(session: Session, name: str) -> User | None:
    """The user called ``name``, or None."""
    return session.scalar(select(User).where(User.name == name))


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def create_user(session: Session, name: str, password: str, *, role: str = "operator",
                actor_id: int | None = None) -> User:
    """Create a user with a hashed password.

    Raises
    ------
    ValueError
        The name is empty or taken, the role unknown or the password shorter than
        :data:`MIN_PASSWORD`.
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("A user needs a name.")
    _check_role(role)
    _check_password(password)
    if get_user(session, name) is not None:
        raise ValueError(f"A user called {name!r} already exists; pick another name.")
    user = User(name=name, role=role, password_hash=_HASHER.hash(password), disabled=False,
                failed_logins=0)
    session.add(user)
    session.flush()
    audit.record(session, user_id=actor_id, action="user.create", entity="users",
                 entity_id=user.id, detail={"name": name, "role": role})
    return user


def authenticate(session: Session, name: str, password: str, *, clock: Clock = utcnow) -> User:
    """Check a name and password; return the user or raise :class:`AuthenticationError`.

    A wrong password counts against the account; the fifth in a row locks it for
    :data:`LOCK_SECONDS`. The caller must commit even when this raises, or the count is lost.
    """
    now = clock()
    user = get_user(session, name)
    if user is None:
        _spend_like_a_check()
        raise AuthenticationError(_FAILED)
    if user.disabled or (user.locked_until is not None and user.locked_until > now):
        raise AuthenticationError(_FAILED)
    try:
        _HASHER.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        _count_failure(session, user, now)
        raise AuthenticationError(_FAILED) from None
    user.failed_logins = 0
    user.locked_until = None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    session.flush()
    return user


def _count_failure(session: Session, user: User, now: dt.datetime) -> None:
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= MAX_FAILED:
        user.locked_until = now + dt.timedelta(seconds=LOCK_SECONDS)
        user.failed_logins = 0
        log.warning("Account %r locked for %d s after %d failed sign-ins.", user.name,
                    LOCK_SECONDS, MAX_FAILED)
        audit.record(session, user_id=None, action="user.lock", entity="users",
                     entity_id=user.id, detail={"until": user.locked_until.isoformat()})
    session.flush()


def change_password(session: Session, user: User, old: str, new: str) -> None:
    """Let a user change their own password, after checking the old one."""
    try:
        _HASHER.verify(user.password_hash, old)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise AuthenticationError("The current password is wrong; the password was not changed.") from None
    set_password(session, user, new, actor_id=user.id)


def set_password(session: Session, user: User, new: str, *, actor_id: int | None = None) -> None:
    """Set a password (an admin reset, or the second half of :func:`change_password`)."""
    _check_password(new)
    user.password_hash = _HASHER.hash(new)
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    audit.record(session, user_id=actor_id, action="user.password", entity="users", entity_id=user.id)


def disable_user(session: Session, user: User, *, actor_id: int | None = None) -> None:
    """Disable an account: it can no longer sign in; its work stays attributed to it."""
    user.disabled = True
    session.flush()
    audit.record(session, user_id=actor_id, action="user.disable", entity="users", entity_id=user.id)


def enable_user(session: Session, user: User, *, actor_id: int | None = None) -> None:
    """Enable a disabled account again and clear any lock."""
    user.disabled = False
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    audit.record(session, user_id=actor_id, action="user.enable", entity="users", entity_id=user.id)


def set_role(session: Session, user: User, role: str, *, actor_id: int | None = None) -> None:
    """Change a user's role."""
    _check_role(role)
    old, user.role = user.role, role
    session.flush()
    audit.record(session, user_id=actor_id, action="user.role", entity="users", entity_id=user.id,
                 detail={"from": old, "to": role})


def require_role(user: User | None, *roles: str) -> User:
    """Return ``user`` if their role is one of ``roles``; raise PermissionError otherwise.

    >>> require_role(User(name="ann", role="viewer"), "admin")
    Traceback (most recent call last):
    ...
    PermissionError: ann is a viewer; this needs the admin role.
    """
    for role in roles:
        _check_role(role)
    if user is None:
        raise PermissionError("Sign in first; this needs the " + " or ".join(roles) + " role.")
    if user.disabled:
        raise PermissionError(f"The account {user.name} is disabled; ask an admin to enable it.")
    if user.role not in roles:
        raise PermissionError(f"{user.name} is a{'n' if user.role[0] in 'aeiou' else ''} "
                              f"{user.role}; this needs the {' or '.join(roles)} role.")
    return user
