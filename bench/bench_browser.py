"""The review loop in real Chromium: click to settled page, and what the server and the wire did.

Actions on the Review page as the operator (a demo-like project of 600x800 images, like
``make run``'s): a verdict (Keep, with the next object picked), Next/Previous image, picking an
object by clicking its marker on the image, and a page switch (Account -> Review and back); then
``make run``'s command line from a fresh data dir (no ``data/demo/``) to the sign-in page, and to
the demo project being ready.

For every action it prints the median browser time (the page's own clock, click to settled: the
script run over, the figure's images loaded), the median server time (first websocket frame sent
to the last one received: the script plus localhost transfer), the bytes received, the script
runs by kind (full page or fragment) and the figure images fetched. The machine's load average
and matmul speed are printed with the figures; on a shared machine they vary from run to run.

Run: ``.venv/bin/python bench/bench_browser.py [--repeat 7] [--skip-start]``.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "app"))

from common import machine_line, matmul_gflops, today  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TARGETS = {"verdict": 0.5, "next/previous": 0.5, "pick an object": 0.5, "page switch": 1.5,
           "make run -> sign-in": 15.0}


def build_db(data_dir: Path, n_images: int) -> int:
    os.environ.update({"CELLTALLY_DATA_DIR": str(data_dir), "CELLTALLY_DEMO": "0",
                       "CELLTALLY_DB_URL": f"sqlite:///{data_dir}/bench.db"})
    from db.settings import Settings
    from training.demo_project import seed_demo

    return seed_demo(Settings.from_env(base=ROOT), n_images=n_images, shape=(600, 800), seed=0,
                     model_dir=None)


def review_loop(browser, base: str, repeat: int) -> dict[str, list]:
    """Each Review action ``repeat`` times; returns {action: [Action, ...]}."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from test_browser_review import Wire, click_object, settle, sign_in

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    wire = Wire(page)
    sign_in(wire, base, "operator", "operator-demo")
    out: dict[str, list] = {k: [] for k in ("pick an object", "verdict", "next/previous",
                                            "page switch")}
    nxt = page.get_by_role("button", name=re.compile("^Next"))
    prev = page.get_by_role("button", name=re.compile("Previous"))
    def timed(name, action):
        try:
            out[name].append(wire.act(action, timeout_ms=60_000))
        except PlaywrightTimeout:  # counted, not fatal: a shared machine drops the odd click
            missed[name] = missed.get(name, 0) + 1
            settle(wire)

    missed: dict[str, int] = {}
    for i in range(repeat):
        timed("pick an object", lambda: click_object(page, 3 * i + 1))
        timed("verdict", lambda: page.get_by_role("button", name=re.compile("^Keep")).click())
        timed("next/previous", (nxt if i % 2 == 0 else prev).click)
    for _ in range((repeat + 1) // 2):
        timed("page switch", lambda: page.get_by_role("link", name="Account").click())
        timed("page switch", lambda: page.get_by_role("link", name="Review").click())
        settle(wire)
    page.close()
    if missed:
        print(f"actions that did not settle within 60 s (left out): {missed}")
    return out


def make_run_start(browser, timeout: float = 300.0) -> dict[str, float] | str:
    """``make run``'s server command from a fresh demo data dir: seconds to the sign-in page
    and to the demo project's model being scored."""
    from tests.app.browser import free_port

    with tempfile.TemporaryDirectory(prefix="ct-bench-start-") as tmp:
        port = free_port()
        env = dict(os.environ, CELLTALLY_DEMO="1", CELLTALLY_DATA_DIR=tmp)
        env.pop("CELLTALLY_DB_URL", None)
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address=127.0.0.1",
               f"--server.port={port}", "--server.headless=true",
               "--browser.gatherUsageStats=false"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}", timeout=5_000)
                    break
                except Exception:
                    if time.perf_counter() - t0 > timeout or proc.poll() is not None:
                        return "the server did not answer"
                    time.sleep(0.2)
            page.get_by_role("button", name="Sign in").wait_for(timeout=timeout * 1000)
            sign_in_s = time.perf_counter() - t0
            ready_s = _wait_for_demo(Path(tmp), t0, timeout)
            return {"make run -> sign-in": sign_in_s, "make run -> demo ready": ready_s}
        finally:
            page.close()
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


def _wait_for_demo(data_dir: Path, t0: float, timeout: float) -> float:
    """Seconds from ``t0`` until the demo project's promoted run has results (read-only polls)."""
    from sqlalchemy import create_engine, text

    db = data_dir / "celltally.db"
    while time.perf_counter() - t0 < timeout:
        if db.is_file():
            eng = create_engine(f"sqlite:///{db}")
            try:
                with eng.connect() as c:
                    if c.execute(text("select count(*) from image_results")).scalar():
                        return time.perf_counter() - t0
            except Exception:
                pass  # tables not there yet
            finally:
                eng.dispose()
        time.sleep(0.5)
    return float("nan")


def report(results: dict[str, list], start: dict | str | None) -> None:
    print("| action | n | browser median s | min-max s | server median s | KB received | "
          "script runs (full + fragment) | figure images fetched | inline images | target s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, acts in results.items():
        secs = [a.seconds for a in acts]
        print(f"| {name} | {len(acts)} | {statistics.median(secs):.2f} | "
              f"{min(secs):.2f}-{max(secs):.2f} | "
              f"{statistics.median(a.server for a in acts):.2f} | "
              f"{statistics.median(a.bytes for a in acts) / 1024:.0f} | "
              f"{statistics.median(a.full_runs for a in acts):g} + "
              f"{statistics.median(a.fragment_runs for a in acts):g} | "
              f"{statistics.median(a.media for a in acts):g} | "
              f"{statistics.median(a.image_data for a in acts):g} | {TARGETS[name]} |")
    if isinstance(start, dict):
        for name, secs in start.items():
            print(f"| {name} | 1 | {secs:.1f} | | | | | | | {TARGETS.get(name, '')} |")
    elif start:
        print(f"make run: {start}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--skip-start", action="store_true", help="leave out the make-run start")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"skipped: {CHROMIUM} is missing")
        return 0
    from playwright.sync_api import sync_playwright

    from tests.app.browser import ARGS, free_port, start_server

    load_before = os.getloadavg()
    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory(prefix="ct-bench-browser-") as tmp:
        t0 = time.perf_counter()
        build_db(Path(tmp), args.images)
        print(f"built the bench database ({args.images} images 600x800) in "
              f"{time.perf_counter() - t0:.1f} s")
        port = free_port()
        proc = start_server(port, dict(os.environ))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                results = review_loop(browser, f"http://127.0.0.1:{port}", args.repeat)
                proc.terminate()
                proc.wait(timeout=30)
                start = None if args.skip_start else make_run_start(browser)
                browser.close()
        finally:
            if proc.poll() is None:
                proc.kill()
    load_after = os.getloadavg()
    print(machine_line(gflops))
    print(f"{today()} {time.strftime('%H:%M UTC', time.gmtime())}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1-minute)")
    report(results, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
