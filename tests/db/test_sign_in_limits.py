"""The limits on password guessing (db.users.authenticate): reserved checks, the per-account cap,
per-client delays, the known-device allowance, the admin's clear, and parallel guessers."""
import datetime as dt
import threading
import time

import pytest
from argon2 import PasswordHasher
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from db import users
from db.audit import audit_log
from db.engine import make_engine
from db.models import SignInAttempt, utcnow
from tests.db.sign_in_race import CHEAP, race
from tests.db.world import Clock

PW = "correct horse battery"




@pytest.fixture
def checks(monkeypatch):
    """Every verification against a real (non-dummy) hash, as (hash, password) pairs."""
    seen = []

    class Counting(PasswordHasher):
        def verify(self, hash, password):  # noqa: A002 (argon2's own parameter name)
            if password != "not a real password":
                seen.append(password)
            return super().verify(hash, password)

    monkeypatch.setattr(users, "_HASHER", Counting(**CHEAP))
    return seen


def make_ann(engine):
    with Session(engine) as s, s.begin():
        users.create_user(s, "ann", PW)


def sign_in(engine, password, clock, client=None):
    """One sign-in in its own transaction: the user's name, or None when it failed."""
    with Session(engine) as s, s.begin():
        try:
            return users.authenticate(s, "ann", password, clock=clock, client=client).name
        except users.AuthenticationError:
            return None


def failed_checks(engine):
    with Session(engine) as s:
        return len(audit_log(s, action="user.sign_in_failed"))


def test_a_reserved_check_counts_even_when_the_caller_rolls_back(engine, checks):
    make_ann(engine)
    clock = Clock()
    for k in range(users.MAX_FAILED):
        with Session(engine) as s:
            s.begin()
            with pytest.raises(users.AuthenticationError):
                users.authenticate(s, "ann", f"guess {k}", clock=clock, client=f"stranger {k}")
            s.rollback()
    assert failed_checks(engine) == users.MAX_FAILED == len(checks)
    # The cap is reached: the right password, from yet another client, is refused unchecked.
    assert sign_in(engine, PW, clock, client="stranger 99") is None
    assert len(checks) == users.MAX_FAILED and failed_checks(engine) == users.MAX_FAILED
    clock.step(59)
    assert sign_in(engine, PW, clock, client="stranger 99") is None
    clock.step(1.001)  # a minute after the first guess, the window is free again
    assert sign_in(engine, PW, clock, client="stranger 99") == "ann"


def test_the_delay_doubles_with_each_wrong_password_of_a_client(engine, checks):
    make_ann(engine)
    clock = Clock()
    assert sign_in(engine, "guess", clock, client="tab") is None          # 1st: wait 2 s
    clock.step(1.9)
    assert sign_in(engine, PW, clock, client="tab") is None               # too early: unchecked
    assert sign_in(engine, PW, clock, client="other tab") == "ann"       # another client is not
    clock.step(0.1)
    assert sign_in(engine, "guess", clock, client="tab") is None          # 2nd: wait 4 s
    clock.step(3.9)
    assert sign_in(engine, "guess", clock, client="tab") is None
    clock.step(0.1)
    assert sign_in(engine, "guess", clock, client="tab") is None          # 3rd: wait 8 s
    clock.step(7.9)
    assert sign_in(engine, PW, clock, client="tab") is None
    assert checks == ["guess", PW, "guess", "guess"]
    clock.step(0.1)
    assert sign_in(engine, PW, clock, client="tab") == "ann"             # the right one resets
    assert sign_in(engine, "guess", clock, client="tab") is None
    clock.step(2)
    assert sign_in(engine, PW, clock, client="tab") == "ann"
    with Session(engine) as s:
        waits = [r.detail["wait_s"] for r in reversed(audit_log(s, action="user.sign_in_failed"))]
    assert waits == [2, 4, 8, 2]


def test_the_delay_stops_growing_at_fifteen_minutes(engine, checks):
    make_ann(engine)
    clock = Clock()
    for k in range(1, 11):
        assert sign_in(engine, "guess", clock) is None                    # the anonymous client
        wait = min(2 ** k, 900)
        clock.step(max(wait, 61) if k < 10 else wait - 1)
    assert len(checks) == 10
    assert sign_in(engine, PW, clock) is None                             # 899 s after the 10th
    clock.step(1)
    assert sign_in(engine, PW, clock) == "ann"


def test_at_most_five_wrong_passwords_a_minute_across_clients(engine, checks):
    make_ann(engine)
    clock = Clock()
    for k in range(8):
        assert sign_in(engine, f"guess {k}", clock, client=f"bot {k}") is None
        clock.step(1)
    assert checks == [f"guess {k}" for k in range(5)]                     # 3 refused unchecked
    with Session(engine) as s:
        assert users.sign_in_limits(s, users.get_user(s, "ann"), clock=clock)[0] == 5
    assert sign_in(engine, PW, clock, client="owner on a new browser") is None
    clock.step(60 - 8 + 0.001)                                           # the 1st guess is 60 s old
    assert sign_in(engine, "guess 9", clock, client="bot 9") is None
    assert sign_in(engine, PW, clock, client="bot 10") is None           # the 5 slots are full
    clock.step(1)
    assert sign_in(engine, PW, clock, client="bot 10") == "ann"
    assert failed_checks(engine) == len(checks) - 1 == 6


def test_a_known_device_keeps_its_own_allowance(engine, checks):
    make_ann(engine)
    clock = Clock()
    with Session(engine) as s, s.begin():
        device = users.remember_device(s, users.get_user(s, "ann"), clock=clock)
    assert len(device) >= 40                                              # random, unguessable
    for k in range(users.MAX_FAILED):                                     # strangers fill the cap
        assert sign_in(engine, f"guess {k}", clock, client=f"bot {k}") is None
    assert sign_in(engine, PW, clock, client="bot 99") is None
    assert sign_in(engine, PW, clock, client=device) == "ann"             # the owner gets in
    assert sign_in(engine, PW, clock) is None                             # the anonymous one not
    # The device waits after its own wrong passwords like any client.
    assert sign_in(engine, "typo", clock, client=device) is None
    assert sign_in(engine, PW, clock, client=device) is None
    clock.step(2)
    assert sign_in(engine, PW, clock, client=device) == "ann"
    with Session(engine) as s:
        details = [r.detail["known_device"] for r in audit_log(s, action="user.sign_in_failed")]
    assert sorted(details) == [False] * 5 + [True]
    # A device id of another account, or one never stored, is just another stranger.
    with Session(engine) as s, s.begin():
        bob = users.create_user(s, "bob", PW)
        bobs_device = users.remember_device(s, bob, clock=clock)
    assert sign_in(engine, PW, clock, client=bobs_device) is None


def test_checks_in_flight_count_against_the_allowance(engine):
    """Reservations not settled yet (checks running in parallel) fill the allowance too: five per
    account for strangers, five more per known device."""
    make_ann(engine)
    now = utcnow()
    with Session(engine) as s, s.begin():
        device = users.remember_device(s, users.get_user(s, "ann"))

    def reserve(client):
        key = users._client_key(client)
        return users._in_own_transaction(engine, lambda s: users._reserve(s, "ann", key, now))

    assert [reserve(f"bot {k}") is not None for k in range(6)] == [True] * 5 + [False]
    assert [reserve(device) is not None for k in range(6)] == [True] * 5 + [False]
    assert reserve(None) is None


def test_an_admin_clears_the_cap_and_the_delays(engine, checks):
    make_ann(engine)
    clock = Clock()
    for k in range(6):
        sign_in(engine, f"guess {k}", clock, client=f"bot {k}")
    sign_in(engine, PW, clock)
    with Session(engine) as s, s.begin():
        ann = users.get_user(s, "ann")
        wrong, until = users.sign_in_limits(s, ann, clock=clock)
        assert wrong == 5 and until == clock() + dt.timedelta(seconds=2)
        users.clear_sign_in_limits(s, ann, actor_id=None)
        assert users.sign_in_limits(s, ann, clock=clock) == (0, None)
        assert audit_log(s, action="user.clear_sign_in_limits")[0].entity_id == ann.id
    assert sign_in(engine, PW, clock) == "ann"


def test_attempt_rows_older_than_the_window_are_dropped(engine, checks):
    make_ann(engine)
    clock = Clock()
    for k in range(3):
        sign_in(engine, f"guess {k}", clock, client=f"bot {k}")
    clock.step(61)
    sign_in(engine, PW, clock, client="owner")
    with Session(engine) as s:
        assert [a.outcome for a in s.scalars(select(SignInAttempt))] == ["right"]


def test_disabled_and_unknown_accounts_are_refused_unchecked(engine, checks):
    make_ann(engine)
    with Session(engine) as s, s.begin():
        users.disable_user(s, users.get_user(s, "ann"))
    with Session(engine) as s, s.begin():
        for name in ("ann", "nobody"):
            with pytest.raises(users.AuthenticationError):
                users.authenticate(s, name, PW)
    assert checks == [] and failed_checks(engine) == 0


def test_a_caller_that_already_wrote_is_told_at_once_on_sqlite(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: its single write lock is what the caller would hold")
    make_ann(engine)
    start = time.monotonic()
    with Session(engine) as s, s.begin():
        users.create_user(s, "bob", PW)
        with pytest.raises(RuntimeError, match="before writing"):
            users.authenticate(s, "ann", PW)
    assert time.monotonic() - start < 5


def test_a_busy_database_gives_a_retry_or_an_authentication_error(engine, tmp_path):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: 'database is locked' is its error")
    make_ann(engine)
    impatient = make_engine(engine.url)

    @event.listens_for(impatient, "connect")
    def _no_waiting(dbapi_connection, _record):  # runs after make_engine's own 30 s setting
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    def hold_the_write_lock(seconds, started):
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            started.set()
            time.sleep(seconds)
            conn.exec_driver_sql("COMMIT")

    for seconds, expected in ((0.3, "ann"), (4.0, None)):  # the retries wait 1.5-3 s in all
        started = threading.Event()
        holder = threading.Thread(target=hold_the_write_lock, args=(seconds, started))
        holder.start()
        started.wait()
        assert sign_in(impatient, PW, utcnow) == expected
        holder.join()
    impatient.dispose()


@pytest.mark.slow
def test_twenty_parallel_guessers_get_five_checks_and_no_way_in(engine):
    """20 processes x (4 wrong + the right one), all at once: at most 5 wrong passwords are
    checked in all (audit records, and each process's own count of checks), and nobody gets in."""
    make_ann(engine)
    reports = race(engine.url.render_as_string(hide_password=False), "ann", PW,
                   processes=20, n_wrong=4)
    assert [r.errors for r in reports] == [()] * 20
    verified = sum(r.verified_wrong for r in reports)
    assert verified == failed_checks(engine)
    assert 1 <= verified <= users.MAX_FAILED
    assert sum(r.got_in for r in reports) == 0
    with Session(engine) as s:
        assert s.scalar(select(SignInAttempt.id).where(SignInAttempt.outcome == "right")) is None
