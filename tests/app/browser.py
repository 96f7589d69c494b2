"""What every real-browser test shares: Debian's Chromium, and ``streamlit run`` on a free port.

The fixtures built from these (``app_server``, ``chromium``) live in ``tests/app/conftest.py``.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict) -> subprocess.Popen:
    """``streamlit run app.py`` on 127.0.0.1:port; returns once it answers its health check."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
           "--server.address=127.0.0.1", f"--server.port={port}", "--server.headless=true",
           "--browser.gatherUsageStats=false", "--server.fileWatcherType=none"]
    # The log goes to a file: a pipe nobody reads would stall a long-lived server once full.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    proc.kill()
    log.seek(0)
    out = log.read().decode(errors="replace")
    raise RuntimeError(f"streamlit did not start on port {port}:\n{out[-3000:]}")


@contextmanager
def serving(env: dict, *, browser=None):
    """The app served with ``env`` for the ``with`` block: yields its base URL.

    Given a ``browser``, its front page is opened once first. Until a session has run app.py,
    Streamlit serves a page's own URL (``/correct``) from the pages/ folder without app.py's
    navigation, which a test opening that URL first would otherwise meet.
    """
    port = free_port()
    proc = start_server(port, env)
    try:
        if browser is not None:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
            page.close()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def quiet(page, *, timeout: int = 120_000) -> None:
    """Wait until no script runs, no element is left over from an earlier run (Streamlit marks
    those ``data-stale``) and the sign-in's cookie writer is gone: a page fit for a screenshot."""
    page.wait_for_function(
        "() => { const a = document.querySelector('[data-testid=stApp]');"
        " return a && a.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-stale=true]')"
        " && !document.querySelector('iframe[title*=cookie]'); }",
        timeout=timeout, polling=100)
