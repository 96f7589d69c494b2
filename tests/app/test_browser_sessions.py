"""Sessions in a real browser: the sign-in lives in a cookie, never in a URL, and sign-out, a
password reset (by an admin, in a second browser context) and disabling the account each end an
open tab, a reload, every copy of the cookie and every copied link.

Starts ``streamlit run app.py`` against the shared test database and drives Debian's Chromium,
as test_browser.py does.
"""
from __future__ import annotations


import pytest


pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-password-1"
COOKIE = "celltally_session"




@pytest.fixture(scope="module")
def admin(base, browser, app_db):
    """The admin on the Admin page, in a browser context of their own."""
    context, page = opened_with(browser, f"{base}/admin", [session_for(app_db, base, "admin")])
    page.get_by_role("heading", name="Admin").wait_for(timeout=60_000)
    yield page
    context.close()


def make_user(app_db, name):
    """An operator ``name`` with :data:`PASSWORD` (made once per test database)."""
    from db import users

    with app_db.session() as s:
        if users.get_user(s, name) is None:
            users.create_user(s, name, PASSWORD, role="operator")


def session_for(app_db, base, name):
    """A session cookie of a new session of ``name``, as a sign-in in some browser leaves it."""
    from db.sessions import start_session
    from db.users import get_user

    with app_db.session() as s:
        token = start_session(s, get_user(s, name))
    return {"name": COOKIE, "value": token, "url": base}


def sign_in(page, base, name, password):
    page.goto(base)
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Review").wait_for(timeout=60_000)


def session_cookie(context, timeout_s=30):
    """The session cookie, once the cookie component has written it."""
    for _ in range(int(timeout_s * 4)):
        found = [c for c in context.cookies() if c["name"] == COOKIE and c["value"]]
        if found:
            return found[0]
        context.pages[0].wait_for_timeout(250)
    raise AssertionError(f"no {COOKIE} cookie after {timeout_s} s")


def signed_out(page, timeout=60_000):
    """Wait until the page shows the sign-in form or the refusal to a signed-out visitor."""
    page.get_by_role("button", name="Sign in").or_(
        page.get_by_text("Sign in first")).first.wait_for(timeout=timeout)
    return page.get_by_text("Signed in as").count() == 0


def on_account(page):
    """Wait for the Account page; True when it says who is signed in."""
    page.get_by_role("heading", name="Account").wait_for(timeout=60_000)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:  # the heading and the line below it arrive in separate deltas
        page.get_by_text("Signed in as").wait_for(timeout=15_000)
    except PlaywrightTimeout:
        return False
    return page.get_by_text("Signed in as").count() == 1


def opened_with(browser, url, cookies=()):
    """A fresh browser context (another person, or another window with a copied cookie)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    if cookies:
        context.add_cookies(list(cookies))
    page = context.new_page()
    page.goto(url)
    return context, page


def end_reason(app_db, token):
    from db.models import UserSession
    from db.sessions import token_digest

    with app_db.session() as s:
        return s.get(UserSession, token_digest(token)).end_reason


def test_sign_in_lives_in_a_cookie_and_sign_out_ends_every_copy(base, browser, app_db):
    make_user(app_db, "bt-out")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    sign_in(tab, base, "bt-out", PASSWORD)
    cookie = session_cookie(context)
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    writers = tab.locator("iframe[title*=cookie]")
    for _ in range(120):                                  # confirmed writes are no longer drawn
        if writers.count() == 0:
            break
        tab.wait_for_timeout(250)
    assert writers.count() == 0
    assert "session" not in tab.url and cookie["value"] not in tab.url
    # The copied link, and an old-style link carrying the live token, sign nobody in.
    for url in (tab.url, f"{base}/?session={cookie['value']}"):
        other, stranger = opened_with(browser, url)
        assert signed_out(stranger) and "session=" not in stranger.url
        other.close()
    second = context.new_page()                           # a second tab, and a copied cookie
    second.goto(f"{base}/account")
    assert on_account(second)
    copy, copied = opened_with(browser, f"{base}/account", [cookie])
    assert on_account(copied)
    tab.get_by_role("button", name="Sign out").click()
    assert signed_out(tab)
    second.get_by_role("link", name="Review").click()     # the open tab's next rerun
    assert signed_out(second)
    copied.reload()                                       # the copy still holds the cookie
    assert signed_out(copied)
    assert end_reason(app_db, cookie["value"]) == "sign_out"
    copy.close()
    context.close()


@pytest.mark.parametrize("how", ("reset", "disable"))
def test_a_reset_or_disable_by_an_admin_ends_the_tab_and_every_copy(base, browser, app_db, admin,
                                                                    how):
    name = f"bt-{how}"
    make_user(app_db, name)
    cookie = session_for(app_db, base, name)
    context, tab = opened_with(browser, f"{base}/account", [cookie])
    assert on_account(tab)
    url = tab.url
    admin.goto(f"{base}/admin")                            # a fresh run lists the new user
    admin.get_by_role("heading", name="Admin").wait_for(timeout=60_000)
    admin.get_by_role("tab", name="Reset a password" if how == "reset" else "Disable or enable"
                      ).click()
    picker = admin.get_by_role("combobox", name="User").locator("visible=true").first
    picker.click()
    picker.fill(name)
    picker.press("Enter")
    if how == "reset":
        admin.get_by_role("textbox", name="New password").fill("browser-password-2")
        admin.get_by_role("button", name="Reset password").click()
        admin.get_by_text(f"The password of {name} was reset").wait_for(timeout=60_000)
    else:
        admin.get_by_role("button", name="Disable account").click()
        admin.get_by_text(f"{name} can no longer sign in").wait_for(timeout=60_000)
    tab.get_by_role("link", name="Review").click()        # the open tab's next rerun
    assert signed_out(tab)
    tab.reload()                                          # its cookie is still there
    assert signed_out(tab)
    for cookies in ([cookie], []):                        # a copied cookie, a copied link
        other, page = opened_with(browser, url, cookies)
        assert signed_out(page)
        other.close()
    assert end_reason(app_db, cookie["value"]) == ("password" if how == "reset" else "disabled")
    context.close()
