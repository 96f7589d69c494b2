"""Passwords, lockout, roles."""
import datetime as dt

import pytest
from sqlalchemy.orm import Session

from db import users
from db.audit import audit_log
from db.models import User, utcnow

PW = "correct horse battery"


class Clock:
    """A clock the test moves by hand (no sleeping)."""

    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now


def test_password_is_hashed_with_argon2_and_a_salt(engine):
    with Session(engine) as s, s.begin():
        a = users.create_user(s, "ann", PW)
        b = users.create_user(s, "bob", PW, role="expert")
        assert a.password_hash.startswith("$argon2id$") and PW not in a.password_hash
        assert a.password_hash != b.password_hash  # per-user salt
        assert "m=" in a.password_hash  # memory-hard parameters are in the hash
        assert users.authenticate(s, "ann", PW).id == a.id
        with pytest.raises(ValueError, match="already exists"):
            users.create_user(s, "ann", PW)
        with pytest.raises(ValueError, match="too short"):
            users.create_user(s, "cat", "short")
        with pytest.raises(ValueError, match="Unknown role"):
            users.create_user(s, "dan", PW, role="boss")
        assert all(PW not in str(r.detail) for r in audit_log(s))


def test_failure_message_does_not_tell_name_from_password(engine):
    with Session(engine) as s, s.begin():
        users.create_user(s, "ann", PW)
        with pytest.raises(users.AuthenticationError) as wrong_pw:
            users.authenticate(s, "ann", "nope nope nope")
        with pytest.raises(users.AuthenticationError) as wrong_name:
            users.authenticate(s, "nobody", PW)
    assert str(wrong_pw.value) == str(wrong_name.value)


def test_five_wrong_passwords_lock_for_a_minute(engine):
    clock = Clock()
    with Session(engine) as s, s.begin():
        users.create_user(s, "ann", PW)
    for _ in range(users.MAX_FAILED):
        with Session(engine) as s, s.begin():
            with pytest.raises(users.AuthenticationError):
                users.authenticate(s, "ann", "wrong password", clock=clock)
    with Session(engine) as s, s.begin():
        with pytest.raises(users.AuthenticationError):  # right password, but locked
            users.authenticate(s, "ann", PW, clock=clock)
    clock.now += dt.timedelta(seconds=users.LOCK_SECONDS - 1)
    with Session(engine) as s, s.begin():
        with pytest.raises(users.AuthenticationError):
            users.authenticate(s, "ann", PW, clock=clock)
    clock.now += dt.timedelta(seconds=2)
    with Session(engine) as s, s.begin():
        assert users.authenticate(s, "ann", PW, clock=clock).failed_logins == 0
        assert audit_log(s, action="user.lock")


def test_disable_change_password_and_reset(engine):
    with Session(engine) as s, s.begin():
        ann = users.create_user(s, "ann", PW)
        with pytest.raises(users.AuthenticationError, match="current password"):
            users.change_password(s, ann, "not it at all", "new password 1")
        users.change_password(s, ann, PW, "new password 1")
        assert users.authenticate(s, "ann", "new password 1")
        users.disable_user(s, ann)
        with pytest.raises(users.AuthenticationError):
            users.authenticate(s, "ann", "new password 1")
        with pytest.raises(PermissionError, match="disabled"):
            users.require_role(ann, "operator")
        users.enable_user(s, ann)
        users.set_password(s, ann, "reset by admin")
        assert users.authenticate(s, "ann", "reset by admin")


def test_require_role():
    admin, viewer = User(name="root", role="admin"), User(name="val", role="viewer")
    assert users.require_role(admin, "admin") is admin
    assert users.require_role(viewer, "viewer", "operator") is viewer
    with pytest.raises(PermissionError, match="val is a viewer; this needs the operator or expert role"):
        users.require_role(viewer, "operator", "expert")
    with pytest.raises(PermissionError, match="Sign in"):
        users.require_role(None, "viewer")
    with pytest.raises(ValueError, match="Unknown role"):
        users.require_role(admin, "root")


def test_production_hasher_is_memory_hard():
    assert users.ARGON2_PARAMS["memory_cost"] >= 65536  # KiB: 64 MiB per hash
    assert users.ARGON2_PARAMS["time_cost"] >= 2
