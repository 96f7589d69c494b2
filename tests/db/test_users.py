"""Passwords, roles, and what a password change, reset or disable does to sessions.

The guessing limits are in test_sign_in_limits.py, sessions in test_sessions.py."""

import pytest
from sqlalchemy.orm import Session

from db import users
from db.audit import audit_log
from db.models import User

PW = "correct horse battery"




def test_password_is_hashed_with_argon2_and_a_salt(engine):
    with Session(engine) as s, s.begin():
        a = users.create_user(s, "ann", PW)
        b = users.create_user(s, "bob", PW, role="expert")
        assert a.password_hash.startswith("$argon2id$") and PW not in a.password_hash
        assert a.password_hash != b.password_hash  # per-user salt
        assert "m=" in a.password_hash  # memory-hard parameters are in the hash
    with Session(engine) as s, s.begin():
        assert users.authenticate(s, "ann", PW).id == users.get_user(s, "ann").id
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
    with Session(engine) as s, s.begin():
        with pytest.raises(users.AuthenticationError) as wrong_pw:
            users.authenticate(s, "ann", "nope nope nope")
        with pytest.raises(users.AuthenticationError) as wrong_name:
            users.authenticate(s, "nobody", PW)
    assert str(wrong_pw.value) == str(wrong_name.value)


def test_disable_change_password_and_reset(engine):
    with Session(engine) as s, s.begin():
        ann = users.create_user(s, "ann", PW)
    with Session(engine) as s, s.begin():
        ann = users.get_user(s, "ann")
        with pytest.raises(ValueError, match="too short"):  # refused before the old one is checked
            users.change_password(s, ann, PW, "short")
        with pytest.raises(users.AuthenticationError, match="current password"):
            users.change_password(s, ann, "not it at all", "new password 1", client="tab")
        users.change_password(s, ann, PW, "new password 1", client="other tab")
    with Session(engine) as s, s.begin():
        assert users.authenticate(s, "ann", "new password 1", client="a third tab")
        ann = users.get_user(s, "ann")
        users.disable_user(s, ann)
    with Session(engine) as s, s.begin():
        with pytest.raises(users.AuthenticationError):
            users.authenticate(s, "ann", "new password 1", client="a fourth tab")
        ann = users.get_user(s, "ann")
        with pytest.raises(PermissionError, match="disabled"):
            users.require_role(ann, "operator")
        users.enable_user(s, ann)
        users.set_password(s, ann, "reset by admin")
    with Session(engine) as s, s.begin():
        assert users.authenticate(s, "ann", "reset by admin", client="a fifth tab")
        assert [r.action for r in audit_log(s, entity="users")][:4] == [
            "user.password", "user.enable", "user.disable", "user.password"]


def test_password_change_reset_and_disable_end_that_accounts_sessions(engine):
    from db.models import UserSession
    from db.sessions import session_user, start_session, token_digest

    with Session(engine) as s, s.begin():
        ann, bob = users.create_user(s, "ann", PW), users.create_user(s, "bob", PW)
        tokens = [start_session(s, ann), start_session(s, ann)]
        bobs = start_session(s, bob)
    steps = [("password", lambda s, ann: users.change_password(s, ann, PW, "new password 1")),
             ("password", lambda s, ann: users.set_password(s, ann, "reset by admin")),
             ("disabled", lambda s, ann: users.disable_user(s, ann))]
    for reason, step in steps:
        with Session(engine) as s, s.begin():
            step(s, users.get_user(s, "ann"))
        with Session(engine) as s, s.begin():
            assert [session_user(s, t) for t in tokens] == [None, None]
            assert {s.get(UserSession, token_digest(t)).end_reason for t in tokens} == {reason}
            assert session_user(s, bobs).name == "bob"  # another account's session lives on
            ann = users.get_user(s, "ann")
            users.enable_user(s, ann)
            tokens = [start_session(s, ann), start_session(s, ann)]


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
