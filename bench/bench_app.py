"""App benchmarks: a Review-page rerun on a 1600x1200 image (AppTest), and the first paint in a
real browser (Debian's Chromium through Playwright) from navigation start to the image visible.

Budgets: rerun <= 300 ms, first paint <= 3 s. Builds a throwaway demo-like database with four
full-size synthetic images under a temporary data dir. Run: ``.venv/bin/python bench/bench_app.py``.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine_line, today  # noqa: E402

RERUN_BUDGET_S, PAINT_BUDGET_S = 0.300, 3.0


def build_db(data_dir: Path):
    os.environ.update({"CELLTALLY_DATA_DIR": str(data_dir), "CELLTALLY_DEMO": "0",
                       "CELLTALLY_DB_URL": f"sqlite:///{data_dir}/bench.db"})
    from db.settings import Settings
    from training.demo_project import seed_demo

    return seed_demo(Settings.from_env(base=ROOT), n_images=4, shape=(1200, 1600), seed=1)


def bench_rerun(pid: int, repeat: int = 7) -> list[float]:
    from streamlit.testing.v1 import AppTest

    from db.engine import make_engine, transaction
    from db.sessions import start_session
    from db.settings import Settings
    from db.users import get_user
    from pages.ui import TOKEN_KEY

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    engine = make_engine(Settings.from_env(base=ROOT))
    with transaction(engine) as s:  # signed in as a sign-in leaves a tab: a session's token
        at.session_state[TOKEN_KEY] = start_session(s, get_user(s, "operator"))
    engine.dispose()
    at.session_state["project_id"] = pid
    at.run()
    at.switch_page("pages/review.py").run()
    assert not at.exception, at.exception
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    assert not at.exception and at.metric, "the Review page did not render"
    return times


def bench_first_paint(repeat: int = 3) -> list[float] | str:
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        return f"skipped: {chromium} is missing"
    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from playwright.sync_api import sync_playwright

    from tests.app.browser import ARGS, free_port, start_server

    port = free_port()
    proc = start_server(port, dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
            for _ in range(repeat):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(base)
                page.get_by_role("textbox", name="Name").fill("operator")
                page.get_by_role("textbox", name="Password").fill("operator-demo")
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("heading", name="Review").wait_for(timeout=60_000)
                page.locator("[data-testid=ctReviewViewer] image").first.wait_for(timeout=60_000)
                # Now a fresh navigation: the Account page, then Review from the menu.
                page.get_by_role("link", name="Account").click()
                page.get_by_role("heading", name="Account").wait_for(timeout=60_000)
                t0 = page.evaluate("performance.now()")
                page.get_by_role("link", name="Review").click()
                page.locator("[data-testid=ctReviewViewer] image").first.wait_for(
                    state="visible", timeout=60_000)
                times.append((page.evaluate("performance.now()") - t0) / 1000)
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return times


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ct-bench-app-") as tmp:
        t0 = time.perf_counter()
        pid = build_db(Path(tmp))
        print(f"built the bench database (4 images 1600x1200) in {time.perf_counter() - t0:.1f} s")
        reruns = bench_rerun(pid)
        paint = bench_first_paint()
    med = statistics.median(reruns)
    print(machine_line())
    print(f"{today()}  Review rerun, 1600x1200, AppTest: median {med * 1000:.0f} ms "
          f"(min {min(reruns) * 1000:.0f}, max {max(reruns) * 1000:.0f}; budget "
          f"{RERUN_BUDGET_S * 1000:.0f} ms) -> {'OK' if med <= RERUN_BUDGET_S else 'OVER'}")
    ok = med <= RERUN_BUDGET_S
    if isinstance(paint, str):
        print(f"first paint: {paint}")
    else:
        pm = statistics.median(paint)
        ok &= pm <= PAINT_BUDGET_S
        print(f"{today()}  Review first paint (menu click -> image visible), Chromium: median "
              f"{pm:.2f} s over {len(paint)} (budget {PAINT_BUDGET_S:.0f} s) -> "
              f"{'OK' if pm <= PAINT_BUDGET_S else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
