"""The Review loop in a real browser: what each click costs on the wire, and what only a browser
shows.

Streamlit's ``AppTest`` reruns the whole script on every interaction, so what a fragment saves can
only be seen on the wire: :class:`Wire` listens to the page's websocket (the ``ForwardMsg``
protobufs the server sends) and to its HTTP requests, and times each action in the page itself.
``bench/bench_browser.py`` uses the same helpers for its figures.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

#: Records, in the page, the script-run state of the app (the attribute Streamlit's own end-to-end
#: tests wait on) and the time and size of every websocket frame, so an action is timed from the
#: click to a settled page by the browser's clock.
INIT_JS = r"""
(() => {
  const ct = window.__ct = {states: [], sent: [], recv: [], mark: {s: 0, sent: 0, recv: 0}};
  const size = d => d.byteLength ?? d.size ?? d.length ?? 0;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', e => ct.recv.push([performance.now(), size(e.data)]));
    }
    send(data) { ct.sent.push([performance.now(), size(data)]); return super.send(data); }
  };
  const watch = () => {
    const app = document.querySelector('[data-testid=stApp]');
    if (!app) { setTimeout(watch, 10); return; }
    ct.states.push([performance.now(), app.getAttribute('data-test-script-state')]);
    new MutationObserver(() => ct.states.push(
        [performance.now(), app.getAttribute('data-test-script-state')]))
      .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  };
  watch();
})();
"""

#: Settled: a script run started after the mark and ended, nothing changed for ``quiet`` ms, and
#: every image the figure points to by URL has arrived.
SETTLED_JS = r"""
(quiet) => {
  const ct = window.__ct, now = performance.now();
  const states = ct.states.slice(ct.mark.s);
  const app = document.querySelector('[data-testid=stApp]');
  // A run began after the click, or one was under way at the click (the click's rerun then
  // joins it) and the server has answered since.
  const began = states.some(s => s[1] === 'running')
    || (ct.mark.state !== 'notRunning' && ct.recv.length > ct.mark.recv);
  if (!app || !began) return false;
  if (app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (states.length && now - states[states.length - 1][0] < quiet) return false;
  for (const im of document.querySelectorAll('[data-testid=stMain] svg image')) {
    const href = im.getAttribute('href') || im.getAttribute('xlink:href') || '';
    if (href && !href.startsWith('data:')
        && !performance.getEntriesByName(new URL(href, location.href).href).length) return false;
  }
  return true;
}
"""

#: The end of the action: the last state change, or the last figure image's arrival if later;
#: and the server's share: first frame sent to last frame received.
END_JS = r"""
() => {
  const ct = window.__ct;
  const states = ct.states.slice(ct.mark.s);
  let end = states.length ? states[states.length - 1][0] : performance.now();
  for (const im of document.querySelectorAll('[data-testid=stMain] svg image')) {
    const href = im.getAttribute('href') || im.getAttribute('xlink:href') || '';
    if (!href || href.startsWith('data:')) continue;
    for (const e of performance.getEntriesByName(new URL(href, location.href).href))
      if (e.startTime >= ct.mark.t) end = Math.max(end, e.responseEnd);
  }
  const sent = ct.sent.slice(ct.mark.sent), recv = ct.recv.slice(ct.mark.recv);
  const first = sent.length ? sent[0][0] : ct.mark.t;
  const last = recv.filter(r => r[0] <= end + 1).reduce((a, r) => Math.max(a, r[0]), first);
  return {seconds: (end - ct.mark.t) / 1000, server: (last - first) / 1000,
          bytes: recv.reduce((a, r) => a + r[1], 0),
          runs: states.filter(s => s[1] === 'running').length};
}
"""

MARK_JS = r"""
() => { const ct = window.__ct; const t = performance.now();
        const app = document.querySelector('[data-testid=stApp]');
        ct.mark = {s: ct.states.length, sent: ct.sent.length, recv: ct.recv.length, t,
                   state: app ? app.getAttribute('data-test-script-state') : null};
        return t; }
"""


@dataclass
class Action:
    """One action, click to settled page.

    seconds: by the browser's clock; server: first frame sent to last frame received (the
    script's time plus localhost transfer); bytes: received on the websocket; runs: script runs
    the page saw start; full_runs: page runs begun (``new_session`` messages, one per run, an
    interrupted one included); fragment_runs: fragment runs finished; media: figure images
    fetched over HTTP; image_data: frames holding an inline image.
    """

    seconds: float
    server: float
    bytes: int
    runs: int
    full_runs: int
    fragment_runs: int
    media: int
    image_data: int


@dataclass
class Wire:
    """Listens to one Playwright page: websocket frames, media requests, timed actions."""

    page: object
    frames: list = field(default_factory=list)
    media: list = field(default_factory=list)

    def __post_init__(self):
        self.page.add_init_script(INIT_JS)
        self.page.on("websocket", self._socket)
        self.page.on("request", lambda r: "/media/" in r.url and self.media.append(r.url))

    def _socket(self, ws):
        if "_stcore/stream" in ws.url:
            ws.on("framereceived", lambda payload: self.frames.append(payload))

    def act(self, action, *, quiet_ms: int = 800, timeout_ms: int = 120_000) -> Action:
        """Run ``action()`` (a click) and wait for the page to settle; what it cost."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        start_frames, start_media = len(self.frames), len(self.media)
        self.page.evaluate(MARK_JS)
        action()
        self.page.wait_for_function(SETTLED_JS, arg=quiet_ms, timeout=timeout_ms, polling=25)
        out = self.page.evaluate(END_JS)
        full = fragment = inline = 0
        for payload in self.frames[start_frames:]:
            if isinstance(payload, str):
                continue
            if b"data:image" in payload:
                inline += 1
            msg = ForwardMsg()
            msg.ParseFromString(payload)
            kind = msg.WhichOneof("type")
            # Every run starts with a new_session message; a fragment run's names its fragment.
            full += kind == "new_session" and not msg.metadata.run.fragment_ids
            fragment += kind == "script_finished" and (
                ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                == "FINISHED_FRAGMENT_RUN_SUCCESSFULLY")
        return Action(out["seconds"], out["server"], int(out["bytes"]), int(out["runs"]), full,
                      fragment, len(self.media) - start_media, inline)


def settle(wire: Wire, *, quiet_ms: int = 300) -> None:
    """Wait until no script runs, nothing changed for ``quiet_ms`` and no element is left over
    from an earlier run (Streamlit marks those ``data-stale``), e.g. after a page load."""
    wire.page.wait_for_function(
        "(q) => { const a = document.querySelector('[data-testid=stApp]');"
        " const s = window.__ct.states;"
        " return a && a.getAttribute('data-test-script-state') === 'notRunning'"
        " && s.length && performance.now() - s[s.length - 1][0] > q"
        " && !document.querySelector('[data-stale=true]'); }",
        arg=quiet_ms, timeout=120_000, polling=50)


def sign_in(wire: Wire, base: str, name: str, password: str) -> None:
    page = wire.page
    page.goto(base)
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Review").wait_for(timeout=120_000)
    page.locator("[data-testid=stPlotlyChart], [data-testid=ctReviewViewer]").first.wait_for(
        timeout=120_000)
    # The sign-in writes its cookies through a hidden component (an iframe) drawn until the
    # browser confirms them, rerunning the page; only once it is gone is the page quiet.
    page.locator("iframe").first.wait_for(state="detached", timeout=120_000)
    settle(wire, quiet_ms=1000)


def click_object(page, index: int) -> None:
    """Click the ``index``-th object's number on the Review image (modulo their count): the
    viewer's number, or on a page without the viewer a marker of the old plotly figure (forced:
    plotly's markers lie under its drag layer)."""
    numbers = page.locator("[data-testid=ctReviewViewer] .ct-numbers text")
    if numbers.count():
        numbers.nth(index % numbers.count()).click()
        return
    markers = page.locator("[data-testid=stPlotlyChart] .scatterlayer .trace path.point")
    markers.nth(index % markers.count()).click(force=True)


# ---------------------------------------------------------------- the tests
from tests.app.browser import free_port, serving  # noqa: E402

SHAPE = (300, 400)  # the review server's images: small, so the database is made in seconds
QUIET = 400  # ms without a state change that count as settled
WHOLE = f"0 0 {SHAPE[1]} {SHAPE[0]}"
VIEW_BOX = ("() => document.querySelector('[data-testid=ctReviewViewer] svg')"
            ".getAttribute('viewBox')")




@pytest.fixture(scope="module")
def review_server(tmp_path_factory, browser):
    """A server on a small database of its own, so the verdicts here meet no other test's."""
    from db.settings import Settings
    from training.demo_project import seed_demo

    data = tmp_path_factory.mktemp("review-loop")
    env = {**os.environ, "CELLTALLY_DATA_DIR": str(data), "CELLTALLY_DEMO": "0",
           "CELLTALLY_DB_URL": f"sqlite:///{data}/review.db", "CELLTALLY_IMPORT_ROOTS": str(data)}
    # Five small images: two of them wait for review (seed 0), enough for Next.
    seed_demo(Settings.from_env(env, base=ROOT), n_images=5, shape=SHAPE, seed=0, model_dir=None)
    with serving(env) as base:
        yield base




def test_a_pick_and_a_verdict_rerun_the_panel_only_keep_the_zoom_and_send_no_image(
        review_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    wire = Wire(page)
    sign_in(wire, review_server, "operator", "operator-demo")
    # The app's own pages are listed (config.toml hides only Streamlit's folder listing).
    page.get_by_role("link", name="Account").wait_for(timeout=10_000)
    number = page.locator("[data-testid=ctReviewViewer] .ct-numbers text").nth(1)
    label = number.get_attribute("data-label")
    pick = wire.act(number.click, quiet_ms=QUIET)
    assert (pick.full_runs, pick.fragment_runs, pick.media, pick.image_data) == (0, 1, 0, 0)
    assert page.locator(".ct-picked path").get_attribute("data-label") == label

    frame = page.locator("[data-testid=ctReviewViewer]").bounding_box()
    page.mouse.move(frame["x"] + frame["width"] / 3, frame["y"] + frame["height"] / 3)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"() => ({VIEW_BOX})() !== '{WHOLE}'")
    zoomed = page.evaluate(VIEW_BOX)

    verdict = wire.act(lambda: page.keyboard.press("k"), quiet_ms=QUIET)  # Keep, by its key
    assert (verdict.full_runs, verdict.fragment_runs, verdict.media, verdict.image_data) == (
        0, 1, 0, 0)
    assert page.locator(f".ct-shapes path[data-label='{label}']").get_attribute(
        "data-state") == "keep"
    assert page.evaluate(VIEW_BOX) == zoomed                     # the view survived the rerun

    following = wire.act(lambda: page.keyboard.press("n"), quiet_ms=QUIET)  # Next, by its key
    assert following.full_runs >= 1 and following.media == 1 and following.image_data == 0
    assert page.evaluate(VIEW_BOX) == WHOLE                      # a new image starts whole
    page.close()


def test_on_a_phone_review_does_not_scroll_sideways_and_the_verdicts_are_in_view(
        review_server, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    wire = Wire(page)
    sign_in(wire, review_server, "operator", "operator-demo")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == 390
    for name in ("Keep", "Drop", "Unsure"):
        box = page.get_by_role("button", name=re.compile(f"^{name}")).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844, (name, box)
    viewer = page.locator("[data-testid=ctReviewViewer]").bounding_box()
    assert viewer["x"] >= 0 and viewer["x"] + viewer["width"] <= 390
    page.close()


#: Records every page name the sidebar's navigation lists while the app loads.
NAV_JS = r"""
(() => {
  const seen = window.__nav = new Set();
  const look = () => document.querySelectorAll('[data-testid=stSidebarNav] a, '
      + '[data-testid=stSidebarNavLink]').forEach(a => seen.add(a.textContent.trim()));
  new MutationObserver(look).observe(document, {subtree: true, childList: true});
})();
"""


def _inotify_inodes(pid: int) -> set[int]:
    """Inodes of everything the process watches with inotify (from /proc/PID/fdinfo)."""
    found = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        found |= {int(m, 16) for m in re.findall(r"inotify wd:\S+ ino:([0-9a-f]+)", text)}
    return found


def test_the_first_demo_start_shows_sign_in_at_once_and_no_streamlit_chrome(browser):
    """``make run``'s command with no demo data yet: the sign-in page comes while the demo is
    still being built (a note says so), helper modules never show as pages, there is no
    Deploy button, and nothing under the data dir is watched."""
    import shutil
    import uuid

    data = ROOT / "data" / "test" / f"first-start-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLTALLY_")}
    env.update(CELLTALLY_DEMO="1", CELLTALLY_DATA_DIR=str(data))
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address=127.0.0.1",
           f"--server.port={port}", "--server.headless=true", "--browser.gatherUsageStats=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.add_init_script(NAV_JS)
        for _ in range(300):
            try:
                page.goto(f"http://127.0.0.1:{port}", timeout=5_000)
                break
            except Exception:
                assert proc.poll() is None, "the server stopped"
                time.sleep(0.2)
        page.get_by_role("button", name="Sign in").wait_for(timeout=240_000)
        problems = []
        note = page.get_by_text("Building the demo project in the background")
        if not note.count():            # the demo is still being built, and the page says so
            problems.append("the sign-in page waited for the demo project, with no note")
        pages = {p.stem for p in (ROOT / "pages").glob("*.py")}
        listed = {t.lower().replace(" ", "_") for t in page.evaluate("[...window.__nav]")}
        if listed & pages:
            problems.append(f"the sidebar listed files of pages/: {sorted(listed & pages)}")
        if (page.locator("[data-testid=stAppDeployButton]").count()
                or page.get_by_role("button", name="Deploy").count()):
            problems.append("Streamlit's Deploy button shows")
        watched = _inotify_inodes(proc.pid)
        if {data.stat().st_ino, (ROOT / "data").stat().st_ino} & watched:
            problems.append("the server watches the data dir")
        assert not problems, problems
    finally:
        page.close()
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
