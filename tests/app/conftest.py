"""One demo-like database for every app test (both halves of the workbench), built once per session.

It holds the demo accounts (one per role, named after the role: ``admin``, ``expert``,
``operator``, ``viewer``; password ``<role>-demo``), the demo project with 8 synthetic 600x800
images, their automatic masks, a seeded split with approved ground truth for the test images and
half the train images, and, when ``models/demo/`` and the training code are there, the demo model
registered and scored (``training.demo_project``).

Streamlit caches the settings and the engine for the whole process (``pages.ui``), so the
environment points at this database before the first ``AppTest`` runs and stays so.

Helpers:

- ``app_db``: ``AppDB(settings, engine, storage, project_id, session)`` where ``session()`` is a
  transaction context manager;
- ``app_as(role, page=None)``: an ``AppTest`` of ``app.py`` signed in as ``role`` (or signed out
  with ``None``), switched to ``page`` (e.g. ``"pages/review.py"``) and run once;
- ``page_as(role, page)``: the page script run on its own, past the navigation, as ``role``:
  what a role gets when it forces its way to a page it was not offered (the server refuses);
- ``signed_in(at, app_db, name)`` (from ``tests.app.helpers``): a fresh session of user ``name``
  in an ``AppTest``'s session state, as a sign-in leaves it (``AppTest`` has no cookies).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.app.helpers import signed_in

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("admin", "expert", "operator", "viewer")
PASSWORDS = {role: f"{role}-demo" for role in ROLES}
N_IMAGES, SHAPE = 8, (600, 800)


@dataclass(frozen=True)
class AppDB:
    settings: object
    engine: object
    storage: object
    project_id: int
    session: Callable


@pytest.fixture(scope="session")
def app_db(tmp_path_factory):
    from db.engine import make_engine, transaction
    from db.settings import Settings
    from db.storage import Storage
    from training.demo_project import seed_demo

    data_dir = tmp_path_factory.mktemp("app-db")
    env = {"CELLTALLY_DATA_DIR": str(data_dir), "CELLTALLY_DB_URL": f"sqlite:///{data_dir}/app.db",
           "CELLTALLY_DEMO": "0", "CELLTALLY_IMPORT_ROOTS": str(data_dir / "incoming"),
           "CELLTALLY_UPLOAD_LIMIT_MB": "20"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    (data_dir / "incoming").mkdir()
    settings = Settings.from_env(base=ROOT)
    engine = make_engine(settings)
    pid = seed_demo(settings, n_images=N_IMAGES, shape=SHAPE, seed=0)
    yield AppDB(settings, engine, Storage.from_settings(settings), pid,
                lambda: transaction(engine))
    engine.dispose()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def app_as(app_db):
    from streamlit.testing.v1 import AppTest

    def make(role: str | None, page: str | None = None, *, timeout: float = 60):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
        if role is not None:
            signed_in(at, app_db, role)
        at.run()
        if page is not None:
            at.switch_page(page)
            at.run()
        return at

    return make


@pytest.fixture(scope="session")
def page_as(app_db):
    from streamlit.testing.v1 import AppTest

    def make(role: str | None, page: str, *, timeout: float = 60):
        at = AppTest.from_file(str(ROOT / page), default_timeout=timeout)
        if role is not None:
            signed_in(at, app_db, role)
        return at.run()

    return make


# ---------------------------------------------------------------- real browser (Chromium)

@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright, one for the whole run (never a downloaded one)."""
    from tests.app.browser import ARGS, CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing; `make test` installs Debian's chromium.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def base(app_db, browser):
    """``streamlit run app.py`` on the shared test database; its base URL."""
    from tests.app.browser import serving

    with serving(dict(os.environ), browser=browser) as url:
        yield url
