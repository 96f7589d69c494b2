"""AppTest for every page of the workbench's first half: each allowed role, each refused one,
and one scripted interaction per page."""
import numpy as np
import pytest

EDITORS = ("operator", "expert", "admin")
REFUSED_EDIT = ("viewer",)


def _texts(at, kind="error"):
    return [e.value for e in getattr(at, kind)]


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _fields(at, label):
    return [w for w in at.text_input if w.label == label]


# ---------------------------------------------------------------- sign-in, routing

def test_signed_out_sees_only_sign_in(app_as):
    at = app_as(None)
    assert not at.exception
    assert at.title[0].value == "CellTally"
    assert _fields(at, "Name") and _fields(at, "Password")


def test_sign_in_wrong_password_says_nothing_specific_then_right_one(app_as):
    at = app_as(None)
    _fields(at, "Name")[0].input("operator")
    _fields(at, "Password")[0].input("wrong-password")
    _button(at, "Sign in").click().run()
    [msg] = _texts(at)
    assert "name or the password" in msg
    _fields(at, "Name")[0].input("nobody")
    _fields(at, "Password")[0].input("whatever-password")
    _button(at, "Sign in").click().run()
    assert _texts(at) == [msg]            # same words whether the name exists or not
    _fields(at, "Name")[0].input("operator")
    _fields(at, "Password")[0].input("operator-demo")
    _button(at, "Sign in").click().run()
    assert not at.exception
    assert at.session_state["user"] == "operator"


def test_five_wrong_passwords_lock_the_account(app_as, app_db):
    from db import users

    with app_db.session() as s:
        if users.get_user(s, "locky") is None:
            users.create_user(s, "locky", "locky-password", role="viewer")
    at = app_as(None)
    for _ in range(5):
        _fields(at, "Name")[0].input("locky")
        _fields(at, "Password")[0].input("not-the-password")
        _button(at, "Sign in").click().run()
    _fields(at, "Name")[0].input("locky")
    _fields(at, "Password")[0].input("locky-password")
    _button(at, "Sign in").click().run()
    assert "user" not in at.session_state
    assert "name or the password" in _texts(at)[0]


@pytest.mark.parametrize("role", ("admin", "expert", "operator", "viewer"))
def test_sidebar_shows_user_project_and_state(app_as, role):
    at = app_as(role, "pages/account.py")
    assert not at.exception
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert role in side
    labels = [m.label for m in at.sidebar.metric]
    assert {"Images", "Reviewed", "Cells pending adjudication"} <= set(labels)


# ---------------------------------------------------------------- account, admin

@pytest.mark.parametrize("role", ("admin", "expert", "operator", "viewer"))
def test_account_page_changes_own_password(app_as, app_db, role):
    from db import users

    name = f"acct-{role}"
    with app_db.session() as s:
        if users.get_user(s, name) is None:
            users.create_user(s, name, "first-password", role=role)
    at = app_as(name, "pages/account.py")
    assert not at.exception and not _texts(at)
    _fields(at, "Current password")[0].input("first-password")
    _fields(at, "New password")[0].input("second-password")
    _fields(at, "Repeat the new password")[0].input("second-password")
    _button(at, "Change password").click().run()
    assert _texts(at, "success")
    with app_db.session() as s:
        assert users.authenticate(s, name, "second-password").name == name


@pytest.mark.parametrize("role", ("expert", "operator", "viewer"))
def test_admin_page_refused_for_others(app_as, page_as, role):
    at = app_as(role, None)
    with pytest.raises(ValueError):   # not even registered in their navigation
        at.switch_page("pages/admin.py").run()
    # Forcing the page script anyway is refused on the server side.
    direct = page_as(role, "pages/admin.py")
    assert any("needs the admin role" in m for m in _texts(direct))
    assert not direct.text_input


def test_pages_refuse_signed_out_users(page_as):
    for page in ("pages/account.py", "pages/admin.py"):
        at = page_as(None, page)
        assert any("Sign in first" in m for m in _texts(at))


def test_admin_creates_user_and_disables_account(app_as, app_db):
    from db import users

    at = app_as("admin", "pages/admin.py")
    assert not at.exception
    _fields(at, "Name")[0].input("newbie")
    _fields(at, "Initial password")[0].input("newbie-password")
    at.selectbox[[s.label for s in at.selectbox].index("Role")].set_value("viewer")
    _button(at, "Create user").click().run()
    assert any("Created newbie" in m for m in _texts(at, "success")), _texts(at)
    at.selectbox[[s.key for s in at.selectbox].index("able_user")].set_value("newbie").run()
    _button(at, "Disable account").click().run()
    with app_db.session() as s:
        assert users.get_user(s, "newbie").disabled
