"""The one small UI helper module: cached resources, the sign-in guard, the sidebar.

Every page imports this. It keeps what Streamlit should hold once per server process
(settings, the migrated engine, the file store, loaded models) in ``st.cache_resource``, and
nothing else is cached anywhere in the app. Keep it small and stable: other pages depend on it.

- :func:`settings`, :func:`engine`, :func:`storage`, :func:`session`: the backend handles;
- :func:`model_run`: a registered run with its network loaded once (keras is imported only
  then) and its threshold read afresh;
- :func:`require`: the server-side role check at the top of every page;
- :func:`project_id`, :func:`sidebar`: the chosen project and its state (``db.review``).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import streamlit as st

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
        st.error(f"The demo project could not be built ({build.error}); the server log has "
                 "the details. Delete data/demo/ and start again.")
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
def _keras_model(path: str, stamp: float):
    """The network of a run directory, loaded once per model file (``stamp``: its mtime)."""
    from core.run import load_run

    return load_run(path).model


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
    loaded = dataclasses.replace(loaded, model=_keras_model(str(path), stamp))
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


@st.cache_resource(show_spinner=False)
def _token_key() -> bytes:
    from db.sessions import session_key

    return session_key(settings().data_dir)


def current_user() -> Who | None:
    """The signed-in user (re-read from the database), or None.

    The sign-in also lives in the URL as a signed, expiring token (``?session=``, see
    :mod:`db.sessions`), so a reload or a copied link signs the same user in again; a disabled
    account is refused either way.
    """
    from db.models import User
    from db.sessions import issue_token, verify_token
    from db.users import get_user

    name = st.session_state.get("user")
    token = st.query_params.get("session")
    with session() as s:
        # The token is bound to the password hash: a changed password ends older sessions.
        token_user = verify_token(_token_key(), token, stamp_for=lambda uid: _stamp(s, uid))
        if name is not None:
            user = get_user(s, name)
        else:
            user = None if token_user is None else s.get(User, token_user)
        if user is None or user.disabled:
            st.session_state.pop("user", None)
            if token is not None:
                del st.query_params["session"]
            return None
        st.session_state["user"] = user.name
        if token_user != user.id:
            st.query_params["session"] = issue_token(_token_key(), user.id,
                                                     stamp=user.password_hash)
        return Who(user.id, user.name, user.role)


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


def _stamp(s, user_id: int) -> str | None:
    """The account's token stamp: its stored password hash (None when there is no such user)."""
    from db.models import User

    user = s.get(User, user_id)
    return None if user is None else user.password_hash


def require(*roles: str) -> Who:
    """Stop the page unless a signed-in user has one of ``roles`` (any role when none given).

    The refusal happens here, on the server, for every rerun: hiding a page in the
    navigation is only a convenience. The sidebar is drawn here too, by the page itself
    (elements the router draws before ``nav.run()`` vanish from ``AppTest`` after a page switch).
    """
    who = current_user()
    if who is None:
        st.error("Sign in first: this page needs an account.")
        st.stop()
    allowed = roles or ROLES
    if who.role not in allowed:
        st.error(f"{who.name} is signed in as {who.role}; this page needs the "
                 f"{' or '.join(allowed)} role. Ask an admin if you need access.")
        st.stop()
    sidebar(who)
    return who


def sign_in(user) -> None:
    """Sign ``user`` (a users row) in for this tab, and put the token in the URL at once, so the
    rerun that follows (and any reload) already carries it."""
    from db.sessions import issue_token

    st.session_state["user"] = user.name
    st.query_params["session"] = issue_token(_token_key(), user.id, stamp=user.password_hash)


def sign_out() -> None:
    for key in ("user", "project_id"):
        st.session_state.pop(key, None)
    if "session" in st.query_params:
        del st.query_params["session"]


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
        st.markdown(f"**{who.name}** · {who.role}")
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
        pid = st.selectbox("Project", ids, index=ids.index(current) if current in ids else 0,
                           format_func=names.get, key="ui_project")
        st.session_state["project_id"] = pid
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
            st.caption(f"Model **{state['model_name']}**: F1 {_fmt(state['f1'])}, "
                       f"MAE {_fmt(state['mae'])}")


def _fmt(value) -> str:
    try:
        return "n/a" if value != value else f"{float(value):.2f}"  # NaN check without numpy
    except (TypeError, ValueError):
        return "n/a"
