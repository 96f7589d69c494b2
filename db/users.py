"""Users, passwords and roles, and the limits on password guessing.

Passwords are hashed with Argon2id (memory-hard, a random salt per hash) through
``argon2-cffi``, verified in constant time, and never stored or logged in clear. Failed sign-ins
all raise the same :class:`AuthenticationError` message, so it never reveals whether the name
exists, and take about as long whatever the reason.

Guessing is limited before any hash is checked (:func:`authenticate`):

- every check is first *reserved*, in a short transaction of its own that holds the account's
  row lock (on SQLite, the write lock), so parallel callers cannot all read "not locked", and the
  count survives a caller that rolls back;
- per account, at most :data:`MAX_FAILED` wrong passwords are checked per :data:`WINDOW`, across
  every client the account does not know; further attempts are refused without a check;
- per (account, client), the k-th wrong password in a row makes that client wait 2**k seconds
  (at most :data:`MAX_DELAY`);
- a browser whose device id once signed in to the account (:func:`remember_device`) has an
  allowance of its own, so strangers guessing cannot lock the owner out.

Admins clear both (:func:`clear_sign_in_limits`). Changing, resetting or disabling an account
ends its sessions (:mod:`db.sessions`). Functions that take a ``clock`` use it instead of the
wall clock, so tests need no sleeping.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from db import audit
from db.models import ROLES, Device, SignInAttempt, SignInThrottle, User, utcnow
from db.sessions import end_user_sessions

__all__ = ["AuthenticationError", "create_user", "authenticate", "change_password",
           "set_password", "disable_user", "enable_user", "set_role", "get_user", "list_users",
           "require_role", "remember_device", "clear_sign_in_limits", "sign_in_limits",
           "MAX_FAILED", "WINDOW", "MAX_DELAY", "MIN_PASSWORD"]

log = logging.getLogger(__name__)

MAX_FAILED = 5  # wrong passwords checked per WINDOW, per account (and per known device)
WINDOW = dt.timedelta(minutes=1)
MAX_DELAY = dt.timedelta(minutes=15)
MIN_PASSWORD = 8
ANONYMOUS = "anonymous"  # the one client of every call that names none
_ACCOUNT = "account"  # the allowance shared by every client the account does not know
_FAILED = "Sign-in failed: the name or the password is wrong, or the account is locked or disabled."
_NOT_CHANGED = ("The current password was not accepted (wrong, or too many tries: wait a minute "
                "and try again); the password was not changed.")
_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)  # seconds between tries of a transaction the database refused
_BUSY_SQLSTATES = {"55P03", "40P01", "40001"}  # lock timeout, deadlock, serialization (PostgreSQL)
# Argon2id, 64 MiB, 3 passes (RFC 9106's second recommendation). Tests swap in a cheaper hasher.
ARGON2_PARAMS = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4}
_HASHER = PasswordHasher(**ARGON2_PARAMS)
_DUMMY: dict[int, str] = {}

Clock = Callable[[], dt.datetime]
T = TypeVar("T")


class AuthenticationError(Exception):
    """Sign-in failed; the message is the same whatever the reason."""


class _Busy(Exception):
    """The database stayed too busy for a sign-in's own short transaction."""


@dataclass(frozen=True)
class _Ticket:
    """A reserved password check: which attempt row, whose hash, which client."""

    attempt_id: int
    user_id: int
    password_hash: str
    client: str
    known_device: bool


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise ValueError(f"The password is too short; use at least {MIN_PASSWORD} characters.")


def _spend_like_a_check() -> None:
    """Verify a throwaway hash, so a refusal takes as long as a wrong password."""
    key = id(_HASHER)
    if key not in _DUMMY:  # made on first use: importing this module stays fast
        _DUMMY[key] = _HASHER.hash("not a real password")
    _HASHER.verify(_DUMMY[key], "not a real password")


def _client_key(client: str | None) -> str:
    """What the tables store for a client: the SHA-256 of its id, or :data:`ANONYMOUS`.

    >>> _client_key(None), len(_client_key("device-1"))
    ('anonymous', 64)
    """
    return ANONYMOUS if not client else hashlib.sha256(client.encode()).hexdigest()


def _delay(failures: int) -> dt.timedelta:
    """How long a client waits after its ``failures``-th wrong password in a row.

    >>> [_delay(k).total_seconds() for k in (1, 2, 5, 9, 10, 60)]
    [2.0, 4.0, 32.0, 512.0, 900.0, 900.0]
    """
    return min(dt.timedelta(seconds=2 ** min(failures, 30)), MAX_DELAY)


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
    user = User(name=name, role=role, password_hash=_HASHER.hash(password), disabled=False)
    session.add(user)
    session.flush()
    audit.record(session, user_id=actor_id, action="user.create", entity="users",
                 entity_id=user.id, detail={"name": name, "role": role})
    return user


def authenticate(session: Session, name: str, password: str, *, clock: Clock = utcnow,
                 client: str | None = None) -> User:
    """Check a name and password within the guessing limits; return the user.

    Parameters
    ----------
    session : Session
        The caller's transaction, which gets the user row. The attempt is reserved and its
        outcome recorded in short transactions of their own on the same engine
        (``session.get_bind()``), committed whatever the caller does: call this before writing
        anything in ``session``.
    name, password : str
    clock : callable, optional
        Returns the current aware UTC time.
    client : str, optional
        Who is asking: the browser's device id when it has one (:func:`remember_device`).
        Calls without one share one anonymous client.

    Returns
    -------
    User

    Raises
    ------
    AuthenticationError
        The same message for a wrong name or password, a disabled account, an attempt refused
        by the limits, and a database too busy to reserve the attempt. Every wrong password that
        was checked leaves a ``user.sign_in_failed`` audit record.
    """
    user = _verified(session, name, password, clock=clock, client=client)
    if user is None:
        raise AuthenticationError(_FAILED)
    return user


def _verified(session: Session, name: str, password: str, *, clock: Clock,
              client: str | None) -> User | None:
    """The user if the password is right and the limits allowed the check; None otherwise."""
    engine = session.get_bind().engine
    _refuse_a_writing_caller(session)
    try:
        ticket = _in_own_transaction(engine, lambda s: _reserve(s, name, _client_key(client),
                                                                clock()))
    except _Busy:
        log.warning("Sign-in of %r refused: the database stayed busy.", name)
        ticket = None
    if ticket is None:
        _spend_like_a_check()
        return None
    try:
        _HASHER.verify(ticket.password_hash, password)
        right = True
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        right = False
    try:
        _in_own_transaction(engine, lambda s: _settle(s, ticket, right, clock()))
    except _Busy:  # the reservation still counts against the allowance until the window passes
        log.warning("The outcome of a sign-in of %r was not recorded: the database stayed busy.",
                    name)
    if not right:
        return None
    user = session.get(User, ticket.user_id)
    if user is not None and _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
        session.flush()
    return user


def _refuse_a_writing_caller(session: Session) -> None:
    """On SQLite a caller that has written holds the write lock the reservation needs: say so at
    once instead of waiting it out (on PostgreSQL such a wait ends at the lock timeout)."""
    if session.get_bind().dialect.name != "sqlite" or not session.in_transaction():
        return
    if session.connection().connection.dbapi_connection.in_transaction:
        raise RuntimeError("Check passwords before writing in the session: the sign-in attempt is "
                           "recorded in a transaction of its own, which waits for this one.")


def _in_own_transaction(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run ``work`` in a short transaction of its own, again after a pause while the database
    reports a lock it could not wait out; :class:`_Busy` when it never could."""
    for pause in (*_PAUSES, None):
        try:
            with Session(engine, expire_on_commit=False) as s, s.begin():
                return work(s)
        except OperationalError as err:
            if not _is_busy(err):
                raise
            if pause is None:
                raise _Busy() from err
            time.sleep(pause * (1 + random.random()))
    raise AssertionError("unreachable")


def _is_busy(err: OperationalError) -> bool:
    orig = err.orig
    if getattr(orig, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database is busy" in message


def _lock_account(s: Session, where) -> User | None:
    """The account row, locked for this transaction (on SQLite: the database's write lock).

    Taking the lock first, before anything is read, is what makes check-then-reserve atomic.
    """
    query = select(User).where(where)
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        s.execute(text("BEGIN IMMEDIATE"))
    else:
        if dialect == "postgresql":  # a stuck holder must not stall sign-ins forever
            s.execute(text("SET LOCAL lock_timeout = '3s'"))
        query = query.with_for_update()
    return s.scalar(query)


def _reserve(s: Session, name: str, client: str, now: dt.datetime) -> _Ticket | None:
    """Reserve one password check for ``client`` on account ``name``; None if refused."""
    user = _lock_account(s, User.name == name)
    if user is None or user.disabled:
        return None
    s.execute(delete(SignInAttempt).where(SignInAttempt.user_id == user.id,
                                          SignInAttempt.reserved_at <= now - WINDOW))
    throttle = s.get(SignInThrottle, (user.id, client))
    if throttle is not None and throttle.not_before is not None and now < throttle.not_before:
        return None
    known = client != ANONYMOUS and s.scalar(select(Device.id).where(
        Device.user_id == user.id, Device.device_hash == client)) is not None
    bucket = client if known else _ACCOUNT
    used = s.scalar(select(func.count()).select_from(SignInAttempt).where(
        SignInAttempt.user_id == user.id, SignInAttempt.bucket == bucket,
        SignInAttempt.outcome != "right", SignInAttempt.reserved_at > now - WINDOW))
    if used >= MAX_FAILED:
        log.info("Sign-in of %r refused unchecked: %d wrong passwords within %s.", name, used,
                 WINDOW)
        return None
    attempt = SignInAttempt(user_id=user.id, client=client, bucket=bucket, outcome="pending",
                            reserved_at=now)
    s.add(attempt)
    s.flush()
    return _Ticket(attempt.id, user.id, user.password_hash, client, known)


def _settle(s: Session, ticket: _Ticket, right: bool, now: dt.datetime) -> None:
    """Record a checked password: a wrong one makes its client wait longer and is audited."""
    _lock_account(s, User.id == ticket.user_id)
    attempt = s.get(SignInAttempt, ticket.attempt_id)
    if attempt is not None:  # None: an admin cleared the limits meanwhile
        attempt.outcome = "right" if right else "wrong"
    throttle = s.get(SignInThrottle, (ticket.user_id, ticket.client))
    if right:
        if throttle is not None:
            s.delete(throttle)
        return
    if throttle is None:
        throttle = SignInThrottle(user_id=ticket.user_id, client=ticket.client, failures=0)
        s.add(throttle)
    throttle.failures += 1
    wait = _delay(throttle.failures)
    throttle.not_before = now + wait
    audit.record(s, user_id=None, action="user.sign_in_failed", entity="users",
                 entity_id=ticket.user_id,
                 detail={"failures_in_a_row": throttle.failures, "wait_s": wait.total_seconds(),
                         "known_device": ticket.known_device})


def _forget_limits(session: Session, user_id: int) -> None:
    session.execute(delete(SignInAttempt).where(SignInAttempt.user_id == user_id))
    session.execute(delete(SignInThrottle).where(SignInThrottle.user_id == user_id))


def remember_device(session: Session, user: User, device: str | None = None, *,
                    clock: Clock = utcnow) -> str:
    """Note that the browser with id ``device`` signed in to ``user``; return the id.

    Call it after a successful sign-in. Without ``device`` a new random id is made (the browser
    keeps it in a long-lived cookie); only its SHA-256 is stored. From then on that browser has
    its own allowance of wrong passwords on this account (:func:`authenticate`).
    """
    device = device or secrets.token_urlsafe(32)
    digest, now = _client_key(device), clock()
    row = session.scalar(select(Device).where(Device.user_id == user.id,
                                              Device.device_hash == digest))
    if row is not None:
        row.last_used_at = now
        session.flush()
        return device
    try:
        with session.begin_nested():  # the same browser, signing in twice at once
            session.add(Device(user_id=user.id, device_hash=digest, created_at=now,
                               last_used_at=now))
    except IntegrityError:
        pass
    return device


def sign_in_limits(session: Session, user: User, *, clock: Clock = utcnow
                   ) -> tuple[int, dt.datetime | None]:
    """(wrong passwords checked within the last :data:`WINDOW`, the latest time some client
    of the account must wait until, or None): what an admin sees before clearing them."""
    now = clock()
    wrong = session.scalar(select(func.count()).select_from(SignInAttempt).where(
        SignInAttempt.user_id == user.id, SignInAttempt.outcome == "wrong",
        SignInAttempt.reserved_at > now - WINDOW))
    until = session.scalar(select(func.max(SignInThrottle.not_before)).where(
        SignInThrottle.user_id == user.id))
    return int(wrong or 0), (until if until is not None and until > now else None)


def clear_sign_in_limits(session: Session, user: User, *, actor_id: int | None = None) -> None:
    """Forget the account's recent wrong passwords and every client's delay (an admin's act)."""
    _forget_limits(session, user.id)
    audit.record(session, user_id=actor_id, action="user.clear_sign_in_limits", entity="users",
                 entity_id=user.id)


def change_password(session: Session, user: User, old: str, new: str, *,
                    clock: Clock = utcnow, client: str | None = None) -> None:
    """Let a user change their own password, after checking the old one within the guessing
    limits of :func:`authenticate`. Every session of the account ends, this one too."""
    _check_password(new)
    if _verified(session, user.name, old, clock=clock, client=client) is None:
        raise AuthenticationError(_NOT_CHANGED)
    set_password(session, user, new, actor_id=user.id, clock=clock)


def set_password(session: Session, user: User, new: str, *, actor_id: int | None = None,
                 clock: Clock = utcnow) -> None:
    """Set a password (an admin reset, or the second half of :func:`change_password`).

    Every session of the account ends, and its guessing limits are cleared.
    """
    _check_password(new)
    user.password_hash = _HASHER.hash(new)
    session.flush()
    _forget_limits(session, user.id)
    end_user_sessions(session, user.id, reason="password", clock=clock)
    audit.record(session, user_id=actor_id, action="user.password", entity="users",
                 entity_id=user.id)


def disable_user(session: Session, user: User, *, actor_id: int | None = None,
                 clock: Clock = utcnow) -> None:
    """Disable an account: it can no longer sign in, its sessions end; its work stays
    attributed to it."""
    user.disabled = True
    session.flush()
    end_user_sessions(session, user.id, reason="disabled", clock=clock)
    audit.record(session, user_id=actor_id, action="user.disable", entity="users",
                 entity_id=user.id)


def enable_user(session: Session, user: User, *, actor_id: int | None = None) -> None:
    """Enable a disabled account again and clear its guessing limits."""
    user.disabled = False
    session.flush()
    _forget_limits(session, user.id)
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
