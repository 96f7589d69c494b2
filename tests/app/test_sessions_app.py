"""AppTest of server-side sessions: an open tab ends with its session row (sign-out, password
reset, disable), session state cannot stand in for an ended session, an old ``?session=`` link
signs nobody in, and the Admin page clears sign-in limits. (AppTest has no cookies: the cookie
half is in test_browser_sessions.py.)"""
import re
from pathlib import Path

import pytest

from pages.ui import TOKEN_KEY
from tests.app.helpers import signed_in

ROOT = Path(__file__).resolve().parents[2]


def _fields(at, label):
    return [w for w in at.text_input if w.label == label]


def _signed_in_as(at):
    """The name the sidebar shows, or None (the sign-in page, or a page saying "Sign in first")."""
    names = [m.value.split("**")[1] for m in at.sidebar.markdown if m.value.startswith("**")]
    # The name is escaped Markdown (a user's text): drop the escapes to get it as shown.
    return re.sub(r"\\(.)", r"\1", names[0]) if names else None


def _tab(app_db, name, query=None):
    """A tab of the app signed in as ``name`` (a fresh session), on the Account page."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params.update(query or {})
    token = signed_in(at, app_db, name)
    at.run()
    at.switch_page("pages/account.py").run()
    return at, token


def _user(app_db, name):
    from db import users

    with app_db.session() as s:
        return users.get_user(s, name) or users.create_user(s, name, f"{name}-password-1",
                                                              role="viewer")


def _end_reason(app_db, token):
    from db.models import UserSession
    from db.sessions import token_digest

    with app_db.session() as s:
        return s.get(UserSession, token_digest(token)).end_reason


@pytest.mark.parametrize("how", ("reset", "disable", "change"))
def test_an_open_tab_ends_with_its_session(app_db, how):
    from db import users

    name = f"tab-{how}"
    _user(app_db, name)
    at, token = _tab(app_db, name)

    assert not at.exception and _signed_in_as(at) == name
    with app_db.session() as s:
        user = users.get_user(s, name)
        if how == "reset":        # an admin, elsewhere
            users.set_password(s, user, f"{name}-password-2")
        elif how == "disable":
            users.disable_user(s, user)
        else:                     # the user, in another tab
            users.change_password(s, user, f"{name}-password-1", f"{name}-password-2")
    at.run()                      # the open tab's next rerun
    assert _signed_in_as(at) is None and TOKEN_KEY not in at.session_state
    assert _end_reason(app_db, token) == ("disabled" if how == "disable" else "password")
    # Putting the token, or the old style's user name, back into session state changes nothing.
    at.session_state[TOKEN_KEY] = token
    at.session_state["user"] = name
    at.run()
    assert _signed_in_as(at) is None
    with app_db.session() as s:
        users.enable_user(s, users.get_user(s, name))


def test_the_sign_out_button_ends_the_session_row(app_db):
    _user(app_db, "leaving")
    at, token = _tab(app_db, "leaving")
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    at.run()  # AppTest keeps the sidebar drawn before the button's st.rerun(); a run redraws it
    assert _signed_in_as(at) is None
    assert _end_reason(app_db, token) == "sign_out"
    at.session_state[TOKEN_KEY] = token
    at.run()
    assert _signed_in_as(at) is None


def test_an_old_session_link_signs_nobody_in_and_is_dropped(app_db):
    from streamlit.testing.v1 import AppTest

    from db.sessions import start_session
    from db.users import get_user

    _user(app_db, "linked")
    with app_db.session() as s:
        live = start_session(s, get_user(s, "linked"))   # even the token of a live session
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["session"] = live
    at.run()
    assert _signed_in_as(at) is None and "session" not in at.query_params
    # A signed-in tab drops the parameter too, and stays who it was.
    tab, _ = _tab(app_db, "linked", {"session": "1.99999999999.forged"})
    assert _signed_in_as(tab) == "linked" and "session" not in tab.query_params


def test_signing_in_starts_a_session_row_and_remembers_nothing_in_the_url(app_as, app_db):
    from db.sessions import live_sessions
    from db.users import get_user

    _user(app_db, "newcomer")
    with app_db.session() as s:
        before = len(live_sessions(s, get_user(s, "newcomer").id))
    at = app_as(None)
    _fields(at, "Name")[0].input("newcomer")
    _fields(at, "Password")[0].input("newcomer-password-1")
    next(b for b in at.button if b.label == "Sign in").click().run()
    at.switch_page("pages/account.py").run()  # AppTest stays on the sign-in page's address
    assert not at.exception and _signed_in_as(at) == "newcomer"
    assert not dict(at.query_params)
    with app_db.session() as s:
        rows = live_sessions(s, get_user(s, "newcomer").id)
    assert len(rows) == before + 1 and at.session_state[TOKEN_KEY] not in {r.id for r in rows}


def test_the_admin_page_clears_sign_in_limits(app_as, app_db):
    from db import users
    from db.audit import audit_log

    user = _user(app_db, "guessed")
    with app_db.session() as s:
        for k in range(users.MAX_FAILED):
            try:
                users.authenticate(s, "guessed", f"guess {k}", client=f"bot {k}")
            except users.AuthenticationError:
                pass
        assert users.sign_in_limits(s, user)[0] == users.MAX_FAILED
    at = app_as("admin", "pages/admin.py")
    row = list(at.dataframe[0].value["name"]).index("guessed")
    assert at.dataframe[0].value["wrong passwords (last minute)"][row] == users.MAX_FAILED
    at.selectbox(key="limits_user").set_value("guessed").run()
    next(b for b in at.button if b.label == "Clear sign-in limits").click().run()
    assert not at.exception
    assert any("guessed can try" in m.value for m in at.success)
    with app_db.session() as s:
        assert users.sign_in_limits(s, user) == (0, None)
        assert audit_log(s, action="user.clear_sign_in_limits")[0].entity_id == user.id
        assert users.authenticate(s, "guessed", "guessed-password-1", client="bot 99")
