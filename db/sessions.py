"""Server-side sign-in sessions: a row per sign-in, checked on every page run.

A browser holds a random token (in a cookie, never in a URL); the ``sessions`` row is keyed by
the token's SHA-256, so the table alone signs nobody in. A session ends, for good, on sign-out,
on a password change or reset, when the account is disabled, after :attr:`SessionLimits.idle`
without a page run, and :attr:`SessionLimits.absolute` after it began. An ended row stays, with
its reason, as a record.

Functions that take a ``clock`` use it instead of the wall clock, so tests need no sleeping.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import SESSION_END_REASONS, User, UserSession, utcnow
from db.settings import Settings

__all__ = ["SessionLimits", "start_session", "session_user", "end_session", "end_user_sessions",
           "live_sessions", "token_digest", "TOUCH_EVERY"]

log = logging.getLogger(__name__)

#: ``last_seen_at`` is written at most this often, so a busy page does not write on every run.
TOUCH_EVERY = dt.timedelta(minutes=1)

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class SessionLimits:
    """How long a session lives: ``idle`` without a page run, ``absolute`` in all.

    >>> SessionLimits.from_settings(Settings(data_dir=".", db_url="sqlite://")).idle
    datetime.timedelta(seconds=28800)
    """

    idle: dt.timedelta = dt.timedelta(hours=8)
    absolute: dt.timedelta = dt.timedelta(days=7)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionLimits":
        """The limits an installation's settings ask for."""
        return cls(idle=dt.timedelta(hours=settings.session_idle_hours),
                   absolute=dt.timedelta(days=settings.session_max_days))


def token_digest(token: str) -> str:
    """The row id of a token: its SHA-256, hex.

    >>> token_digest("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: User, *, clock: Clock = utcnow) -> str:
    """Start a session for ``user``; return its token (shown once: only its digest is stored)."""
    token = secrets.token_urlsafe(32)
    now = clock()
    session.add(UserSession(id=token_digest(token), user_id=user.id, created_at=now,
                            last_seen_at=now))
    session.flush()
    return token


def session_user(session: Session, token: str | None, *, limits: SessionLimits = SessionLimits(),
                 clock: Clock = utcnow) -> User | None:
    """The user of a live session, or None; a session found past a limit is ended here.

    Also None for an unknown or ended token and for a disabled account (whose sessions end).
    ``last_seen_at`` moves on at most every :data:`TOUCH_EVERY`.
    """
    if not token or not isinstance(token, str):
        return None
    row = session.get(UserSession, token_digest(token))
    if row is None or row.ended_at is not None:
        return None
    now = clock()
    user = session.get(User, row.user_id)
    reason = ("disabled" if user is None or user.disabled
              else "expired" if now - row.created_at >= limits.absolute
              else "idle" if now - row.last_seen_at >= limits.idle else None)
    if reason is not None:
        _end(row, reason, now)
        session.flush()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.flush()
    return user


def end_session(session: Session, token: str | None, *, reason: str = "sign_out",
                clock: Clock = utcnow) -> bool:
    """End the session of ``token``; False when there was no live one."""
    _check_reason(reason)
    row = session.get(UserSession, token_digest(token)) if token else None
    if row is None or row.ended_at is not None:
        return False
    _end(row, reason, clock())
    session.flush()
    return True


def end_user_sessions(session: Session, user_id: int, *, reason: str,
                      clock: Clock = utcnow) -> int:
    """End every live session of a user (password change or reset, disable); how many ended."""
    _check_reason(reason)
    result = session.execute(update(UserSession)
                             .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
                             .values(ended_at=clock(), end_reason=reason)
                             .execution_options(synchronize_session="fetch"))
    if result.rowcount:
        log.info("Ended %d session(s) of user %d: %s.", result.rowcount, user_id, reason)
    return result.rowcount


def live_sessions(session: Session, user_id: int) -> list[UserSession]:
    """The sessions of a user not ended yet (some may be past a limit, ended on their next use)."""
    return list(session.scalars(select(UserSession).where(UserSession.user_id == user_id,
                                                          UserSession.ended_at.is_(None))
                                .order_by(UserSession.created_at)))


def _end(row: UserSession, reason: str, now: dt.datetime) -> None:
    row.ended_at, row.end_reason = now, reason


def _check_reason(reason: str) -> None:
    if reason not in SESSION_END_REASONS:
        raise ValueError(f"Unknown reason {reason!r} to end a session; use one of "
                         f"{', '.join(SESSION_END_REASONS)}.")
