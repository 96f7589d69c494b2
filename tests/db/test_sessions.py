"""Server-side sessions (db.sessions): tokens stored only as digests, the idle and absolute limits,
sign-out; and the schema the migrations build matches the models (no drift)."""
import datetime as dt
import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import sessions, users
from db.models import UserSession
from db.settings import Settings
from tests.db.world import Clock

PW = "correct horse battery"
LIMITS = sessions.SessionLimits(idle=dt.timedelta(hours=8), absolute=dt.timedelta(days=7))




def user_of(engine, token, clock):
    with Session(engine) as s, s.begin():
        user = sessions.session_user(s, token, limits=LIMITS, clock=clock)
        return None if user is None else user.name


def row_of(engine, token):
    with Session(engine) as s:
        return s.get(UserSession, sessions.token_digest(token))


def start(engine, clock, name="ann"):
    with Session(engine) as s, s.begin():
        user = users.get_user(s, name) or users.create_user(s, name, PW)
        return sessions.start_session(s, user, clock=clock)


def test_only_the_digest_of_a_token_is_stored(engine):
    clock = Clock()
    token = start(engine, clock)
    with Session(engine) as s:
        [row] = s.scalars(select(UserSession)).all()
    assert row.id == hashlib.sha256(token.encode()).hexdigest() and token not in row.id
    assert len(token) >= 40 and token != start(engine, clock)
    assert user_of(engine, token, clock) == "ann"
    for wrong in (None, "", token[:-1], row.id, 12):
        assert user_of(engine, wrong, clock) is None


def test_idle_sessions_end_and_use_keeps_them_alive(engine):
    clock = Clock()
    busy, idle = start(engine, clock), start(engine, clock)
    clock.step(hours=7, minutes=59)
    assert user_of(engine, busy, clock) == "ann"                # a run moves last_seen on
    clock.step(minutes=2)                                        # 8 h 1 min after the start
    assert user_of(engine, idle, clock) is None
    assert row_of(engine, idle).end_reason == "idle"
    assert user_of(engine, busy, clock) == "ann"
    clock.step(hours=8)
    assert user_of(engine, busy, clock) is None
    assert row_of(engine, busy).end_reason == "idle"
    clock.step(seconds=1)
    assert user_of(engine, idle, clock) is None                  # ended for good


def test_last_seen_is_written_at_most_once_a_minute(engine):
    clock = Clock()
    token = start(engine, clock)
    first = row_of(engine, token).last_seen_at
    clock.step(seconds=59)
    user_of(engine, token, clock)
    assert row_of(engine, token).last_seen_at == first
    clock.step(seconds=1)
    user_of(engine, token, clock)
    assert row_of(engine, token).last_seen_at == clock()


def test_a_busy_session_still_ends_at_the_absolute_limit(engine):
    clock = Clock()
    token = start(engine, clock)
    for _ in range(7 * 24 - 1):                                  # a run every hour for 7 days
        clock.step(hours=1)
        assert user_of(engine, token, clock) == "ann"
    clock.step(minutes=59)
    assert user_of(engine, token, clock) == "ann"
    clock.step(minutes=1)
    assert user_of(engine, token, clock) is None
    assert row_of(engine, token).end_reason == "expired"


def test_sign_out_ends_only_that_session(engine):
    clock = Clock()
    tab, other = start(engine, clock), start(engine, clock)
    with Session(engine) as s, s.begin():
        assert sessions.end_session(s, tab, clock=clock) is True
        assert sessions.end_session(s, tab, clock=clock) is False
        assert sessions.end_session(s, "no such token") is False
        with pytest.raises(ValueError, match="Unknown reason"):
            sessions.end_session(s, other, reason="bored")
    assert user_of(engine, tab, clock) is None and user_of(engine, other, clock) == "ann"
    assert row_of(engine, tab).end_reason == "sign_out" and row_of(engine, tab).ended_at == clock()
    with Session(engine) as s:
        ann = users.get_user(s, "ann")
        assert [r.id for r in sessions.live_sessions(s, ann.id)] == [sessions.token_digest(other)]


def test_a_disabled_account_has_no_session(engine):
    clock = Clock()
    token = start(engine, clock)
    with Session(engine) as s, s.begin():
        users.get_user(s, "ann").disabled = True                 # even without disable_user
    assert user_of(engine, token, clock) is None
    assert row_of(engine, token).end_reason == "disabled"


def test_limits_come_from_the_settings():
    s = Settings.from_env({"CELLTALLY_DATA_DIR": "/tmp/ct", "CELLTALLY_SESSION_IDLE_HOURS": "0.5",
                           "CELLTALLY_SESSION_MAX_DAYS": "2"})
    assert sessions.SessionLimits.from_settings(s) == sessions.SessionLimits(
        idle=dt.timedelta(minutes=30), absolute=dt.timedelta(days=2))
    assert Settings.from_env(s.as_env()) == s
    with pytest.raises(ValueError, match="CELLTALLY_SESSION_MAX_DAYS is '-1'"):
        Settings.from_env({"CELLTALLY_SESSION_MAX_DAYS": "-1"})
    with pytest.raises(ValueError, match="CELLTALLY_SESSION_IDLE_HOURS is 'soon'"):
        Settings.from_env({"CELLTALLY_SESSION_IDLE_HOURS": "soon"})
