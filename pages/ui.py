"""The one small UI helper module: cached resources, the sign-in guard, the sidebar.

Every page imports this. It keeps what Streamlit should hold once per server process
(settings, the migrated engine, the file store, loaded models) in ``st.cache_resource``, and
nothing else is cached anywhere in the app. Keep it small and stable: other pages depend on it.

- :func:`settings`, :func:`engine`, :func:`storage`, :func:`session`: the backend handles;
- :func:`model_run`: a registered run with its network loaded once (ONNX Runtime, or keras
  imported only then) and its threshold read afresh;
- :func:`require`: the server-side role check at the top of every page;
- :func:`current_user`, :func:`sign_in`, :func:`sign_out`: server-side sessions (``db.sessions``)
  whose token the browser keeps in a cookie, never in a URL;
- :func:`project_id`, :func:`sidebar`: the chosen project and its state (``db.review``).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import streamlit as st

from core.plaintext import escape_markdown as md
from db.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("operator", "expert", "viewer", "admin")
EDITORS = ("operator", "expert", "admin")  # who may change masks and import


@dataclass(frozen=True)
class Who:
    """The signed-in user, as read from the database on this rerun."""

    id: int
    name: str
    role: str


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The installation's settings, read from the environment once."""
    return Settings.from_env()


@st.cache_resource(show_spinner="Preparing the database...")
def engine():
    """The engine, after migrating the database; in demo mode the demo project is then built
    in the background (:func:`demo_build`, shown by :func:`demo_progress`).

    Runs once per server process: ``db upgrade`` is safe on an up-to-date database. The first
    demo start draws, saves and scores about a minute of synthetic images; the sign-in page
    does not wait for them, only for the demo accounts, which are made first.
    """
    from db.engine import make_engine, upgrade

    s = settings()
    eng = make_engine(s)
    upgrade(eng)
    if s.demo:
        from training.demo_project import seed_demo

        build = demo_build()
        threading.Thread(target=_build_demo, args=(seed_demo, s, eng, build),
                         name="celltally-demo", daemon=True).start()
        _wait_for_accounts(eng, build)
    return eng


@dataclass
class DemoBuild:
    """How far the background build of the demo project has got (one per server process)."""

    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 0
    finished: bool = False
    error: str | None = None


@st.cache_resource(show_spinner=False)
def demo_build() -> DemoBuild:
    return DemoBuild()


def _build_demo(seed_demo, s: Settings, eng, build: DemoBuild) -> None:
    def progress(done: int, total: int) -> None:
        build.done, build.total = done, total

    try:
        seed_demo(s, engine=eng, progress=progress)
    except Exception as err:  # noqa: BLE001 - a failed demo must not take the server down
        log.exception("Building the demo project failed")
        build.error = f"{type(err).__name__}: {err}"
    finally:
        build.finished = True


def _wait_for_accounts(eng, build: DemoBuild) -> None:
    """Until the demo accounts exist: the sign-in page must not offer to create the first admin."""
    from db.engine import transaction
    from db.users import list_users

    while not build.finished:
        with transaction(eng) as s:
            if list_users(s):
                return
        time.sleep(0.1)


@st.fragment(run_every=2)
def demo_progress() -> None:
    """A note on every page while the demo project is built; the page reruns once it is done."""
    build = demo_build()
    if build.error:
        st.error(f"The demo project could not be built ({md(str(build.error))}); the server "
                 "log has the details. Delete data/demo/ and start again.")
    elif build.finished:
        st.rerun()  # the whole page, now with the demo project's images
    else:
        seconds = time.monotonic() - build.started
        step = ("drawing the synthetic images" if not build.total else
                f"saving image {build.done} of {build.total}" if build.done < build.total
                else "scoring the demo model on the test images")
        st.info(f"Building the demo project in the background: {step} ({seconds:.0f} s so far; "
                "about a minute in all on a quiet machine). You can sign in meanwhile; the "
                "images appear when it is done.", icon=":material/hourglass_top:")


@st.cache_resource(show_spinner=False)
def storage():
    """The content-addressed file store under the data dir."""
    from db.storage import Storage

    return Storage.from_settings(settings())


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _network(path: str, stamp: float):
    """The network of a run directory, loaded once per model file (``stamp``: its mtime).

    ONNX Runtime when the run has (or can get, converted once) a model.onnx, else Keras
    (``core.predict.load_network``): the backend counting and evaluation use too.
    """
    from pathlib import Path

    from core.predict import load_network

    return load_network(path, cache_dir=Path(settings().data_dir) / "cache" / "onnx")


def model_run(run: dict):
    """A registered run loaded with its model, counting at the threshold its row keeps now.

    ``run`` is what :func:`promoted_model` returns. Only the network is cached; the run's
    threshold and post-processing are read afresh on every call, so a threshold an admin keeps
    is used at once, without a restart.
    """
    import dataclasses

    from core.run import MODEL_FILE, load_run

    path = storage().resolve(run["run_dir"])
    loaded = load_run(path, with_model=False)
    stamp = (path / MODEL_FILE).stat().st_mtime if (path / MODEL_FILE).is_file() else 0.0
    loaded = dataclasses.replace(loaded, model=_network(str(path), stamp))
    return loaded if run.get("threshold") is None else loaded.with_threshold(run["threshold"])


@st.cache_resource(show_spinner="Predicting with the promoted model...", max_entries=8)
def model_heatmap(run_dir: str, image_path: str):
    """The heatmap of a run's model on a stored image, predicted once per (run, image)."""
    from core.predict import predict_heatmap

    return predict_heatmap(model_run({"run_dir": run_dir}).model, read_image(image_path))


@st.cache_resource(show_spinner=False, max_entries=16)
def read_image(path: str):
    """Pixels of a stored image; files are named by their content, so they never go stale."""
    return storage().read_image(path)


@st.cache_resource(show_spinner=False, max_entries=32)
def read_labels(path: str):
    """The objects of a stored mask (content-addressed like images), as a label image."""
    return storage().read_labels(path)


@contextmanager
def session():
    """One transaction: commits when the block ends, rolls back if it raises."""
    from db.engine import transaction

    with transaction(engine()) as s:
        yield s


SESSION_COOKIE = "celltally_session"  # this browser's session token (db.sessions)
DEVICE_COOKIE = "celltally_device"  # a long-lived random id, set at the first sign-in (db.users)
DEVICE_DAYS = 400  # the longest a browser keeps a cookie
TOKEN_KEY = "session_token"  # session state: this tab's session token, checked on every rerun
_COOKIES = "cookie_writes"  # session state: cookie writes the browser has not confirmed yet


def current_user() -> Who | None:
    """The signed-in user, or None: the session's row is read again on every rerun.

    The token comes from this tab's session state or, for a new tab or a reload, from the
    session cookie; either way its row in ``sessions`` decides, so an ended or expired session
    or a disabled account signs nobody in, whatever session state holds (:mod:`db.sessions`).
    A ``?session=`` left in an old link is ignored and dropped.
    """
    from db.sessions import SessionLimits, session_user

    if "session" in st.query_params:
        del st.query_params["session"]
    limits = SessionLimits.from_settings(settings())
    with session() as s:
        for token in _tokens():
            user = session_user(s, token, limits=limits)
            if user is not None:
                st.session_state[TOKEN_KEY] = token
                return Who(user.id, user.name, user.role)
    st.session_state.pop(TOKEN_KEY, None)
    return None


def _tokens() -> list[str]:
    """This tab's token first, then the cookie the browser connected with (once each)."""
    held = st.session_state.get(TOKEN_KEY)
    return [t for t in dict.fromkeys((held, _cookie(SESSION_COOKIE))) if t]


def _cookie(name: str) -> str | None:
    """A cookie the browser connected with (text only: AppTest's stand-in client has none)."""
    value = st.context.cookies.get(name)
    return value if isinstance(value, str) and value else None


def device_id() -> str | None:
    """This browser's device id (its cookie), or None."""
    return _cookie(DEVICE_COOKIE)


def client_id() -> str | None:
    """Who asks, for the guessing limits of a password check: the device id, else the address
    (behind a proxy, or on localhost, no address: then the one anonymous client)."""
    address = st.context.ip_address
    return device_id() or (f"address {address}" if isinstance(address, str) and address else None)


def open_page(title: str, *roles: str) -> tuple[Who, int]:
    """The start of every project page: refuse other roles, draw the title, and stop with a
    pointer to the Admin page while there is no project yet. Returns (user, project id)."""
    who = require(*roles)
    pid = project_id()
    st.title(title)
    if pid is None:
        st.info("There is no project yet. An admin creates one on the Admin page.")
        st.stop()
    return who, pid


def require(*roles: str) -> Who:
    """Stop the page unless a signed-in user has one of ``roles`` (any role when none given).

    The refusal happens here, on the server, for every rerun: hiding a page in the
    navigation is only a convenience. The sidebar is drawn here too, by the page itself
    (elements the router draws before ``nav.run()`` vanish from ``AppTest`` after a page switch).
    """
    who = current_user()
    write_cookies()
    if who is None:
        st.error("Sign in first: this page needs an account.")
        st.stop()
    allowed = roles or ROLES
    if who.role not in allowed:
        st.error(f"{md(who.name)} is signed in as {who.role}; this page needs the "
                 f"{' or '.join(allowed)} role. Ask an admin if you need access.")
        st.stop()
    sidebar(who)
    return who


def sign_in(s, user) -> None:
    """Start a session for ``user`` (a users row in the open transaction ``s``) in this tab; the
    browser keeps its token, and a device id, in cookies (:func:`write_cookies`)."""
    from db.models import utcnow
    from db.sessions import SessionLimits, start_session
    from db.users import remember_device

    token = start_session(s, user)
    device = remember_device(s, user, device_id())
    st.session_state[TOKEN_KEY] = token
    now = utcnow()
    _queue_cookie(SESSION_COOKIE, token, now + SessionLimits.from_settings(settings()).absolute)
    if device != device_id():
        _queue_cookie(DEVICE_COOKIE, device, now + dt.timedelta(days=DEVICE_DAYS))


def sign_out() -> None:
    """End this browser's session (its row, so every copy of the token is dead) and drop it."""
    from db.sessions import end_session

    with session() as s:
        for token in _tokens():
            end_session(s, token)
    for key in (TOKEN_KEY, "project_id"):
        st.session_state.pop(key, None)
    _queue_cookie(SESSION_COOKIE, "", dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc))


def _queue_cookie(name: str, value: str, expires: dt.datetime) -> None:
    writes = st.session_state.setdefault(_COOKIES, {})
    serial = st.session_state.get("cookie_serial", 0) + 1
    st.session_state["cookie_serial"] = serial
    writes[name] = (value, expires.replace(microsecond=0), f"ui_cookie_{serial}")


def write_cookies() -> None:
    """Have the browser make the cookie writes that :func:`sign_in` and :func:`sign_out` queued.

    Called once per run (by :func:`require` and the sign-in page). A write is drawn (a hidden
    ``extra-streamlit-components`` cookie component) on every run until the browser confirms it,
    so a rerun in between loses none. An expiry in the past deletes the cookie.
    """
    writes = st.session_state.get(_COOKIES)
    if not writes:
        return
    import extra_streamlit_components as stx

    for name, (_, _, key) in list(writes.items()):
        if st.session_state.get(key) is True:
            del writes[name]
    if not writes:
        return
    secure = (getattr(st.context, "url", None) or "").startswith("https:")
    manager = stx.CookieManager(key="ui_cookies")
    for name, (value, expires, key) in writes.items():
        manager.set(name, value, key=key, path="/", expires_at=expires, secure=secure or None,
                    same_site="strict")


def db_user(s, who: Who):
    """The signed-in user's database row, for backend functions that check the actor's role."""
    from db.users import get_user

    return get_user(s, who.name)


def projects() -> list[tuple[int, str]]:
    """(id, name) of every project."""
    from db.projects import list_projects

    with session() as s:
        return [(p.id, p.name) for p in list_projects(s)]


def promoted_model(s, pid: int) -> dict | None:
    """The project's promoted run as a dict (id, name, run_dir, threshold, metrics), or None."""
    from db.runs import promoted_run

    run = promoted_run(s, pid)
    if run is None:
        return None
    return {"id": run.id, "name": run.name, "run_dir": run.run_dir, "threshold": run.threshold,
            "metrics": dict(run.metrics or {})}


def project_id() -> int | None:
    """The project chosen in the sidebar (the first one until something else is chosen)."""
    pid = st.session_state.get("project_id")
    if pid is None:
        first = projects()
        pid = first[0][0] if first else None
        st.session_state["project_id"] = pid
    return pid


def sidebar(who: Who) -> None:
    """The signed-in user, the project picker and the project's state."""
    with st.sidebar:
        if settings().demo:
            st.caption("Demo mode: a separate demo database under data/demo/.")
        st.markdown(f"**{md(who.name)}** · {who.role}")
        if st.button("Sign out", key="ui_sign_out"):
            sign_out()
            st.rerun()
        options = projects()
        if not options:
            st.info("No project yet." + (" Create one on the Admin page." if who.role == "admin"
                                          else " Ask an admin to create one."))
            return
        ids = [p for p, _ in options]
        names = dict(options)
        current = project_id()
        # ``project_id`` is the one choice: the box shows it (a project just created, say),
        # and picking another in the box changes it.
        st.session_state["project_id"] = st.session_state["ui_project"] = (
            current if current in ids else ids[0])
        pid = st.selectbox("Project", ids, format_func=names.get, key="ui_project",
                           on_change=_pick_project)
        from db.review import project_state

        with session() as s:
            state = project_state(s, pid)
        a, b = st.columns(2)
        a.metric("Images", state["n_images"])
        b.metric("Reviewed", f"{state['share_reviewed']:.0%}")
        st.metric("Cells pending adjudication", state["pending_adjudications"])
        if state["model_run_id"] is None:
            st.caption("No promoted model yet.")
        else:
            st.caption(f"Model **{md(state['model_name'])}**: F1 {_fmt(state['f1'])}, "
                       f"MAE {_fmt(state['mae'])}")


def _pick_project() -> None:
    st.session_state["project_id"] = st.session_state["ui_project"]


def _fmt(value) -> str:
    try:
        return "n/a" if value != value else f"{float(value):.2f}"  # NaN check without numpy
    except (TypeError, ValueError):
        return "n/a"


#: Session-state key of the TP/FP/FN palette choice, shared by every page that draws outcomes.
COLORBLIND_KEY = "outcome_colorblind"


def outcome_palette(where, key: str) -> tuple[dict, str]:
    """A "colour-blind-safe TP/FP/FN" toggle in ``where`` (a column or ``st``), remembered
    across pages; returns ``core.render``'s colours for the choice and the palette in words."""
    from core import render  # scipy and numpy: only the pages that draw outcomes pay for them

    on = where.toggle("Colour-blind-safe TP/FP/FN colours",
                      value=bool(st.session_state.get(COLORBLIND_KEY, False)), key=key,
                      help="Okabe & Ito's palette: bluish green, vermillion and sky blue stay "
                           "apart for red-green colour-blind eyes.")
    st.session_state[COLORBLIND_KEY] = bool(on)
    return render.outcome_colors(colorblind=on), render.describe_outcome_colors(colorblind=on)
