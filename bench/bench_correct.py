"""The Correct editor in real Chromium on a 1200x1600 image: load, a stroke, undo, zoom and pan.

A project of two synthetic 1200x1600 images (``core.synthetic``, their automatic masks) in a
temporary data dir; ``streamlit run app.py`` on a free port; the operator's session by cookie.
Per action, ``--repeat`` times, the browser time from the action to the settled page:

- load: Account -> Correct (link click) until the editor has the image and its outlines and the
  script is over;
- image: the other image picked in the Image box, until the editor shows it (the first pick of
  each image encodes it; later ones find it encoded);
- stroke: the click that closes a polygon until the counter and the outlines show it;
- undo: Ctrl+Z until the counter and the outlines show the stroke gone;
- zoom, pan: a wheel step, a drag; the editor redraws on its own, and the bench counts the
  websocket messages they send (there should be none: no rerun).

The machine's load average and matmul speed are printed with the figures; on a shared machine
they vary from run to run.

Run: ``.venv/bin/python bench/bench_correct.py [--repeat 5]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine_line, matmul_gflops, today  # noqa: E402

SHAPE = (1200, 1600)
IDLE = "() => !document.querySelector('[data-testid=stStatusWidget]')"
STATUS = "[data-testid=ctCorrectStatus]"
EDITOR = "[data-testid=ctCorrectEditor]"


def build_db(data_dir: Path) -> str:
    """The project, and a session token of the operator."""
    os.environ.update({"CELLTALLY_DATA_DIR": str(data_dir), "CELLTALLY_DEMO": "0",
                       "CELLTALLY_DB_URL": f"sqlite:///{data_dir}/bench.db"})
    from db.engine import make_engine, transaction
    from db.sessions import start_session
    from db.settings import Settings
    from db.users import get_user
    from training.demo_project import seed_demo

    settings = Settings.from_env(base=ROOT)
    seed_demo(settings, n_images=2, shape=SHAPE, seed=0, model_dir=None)
    with transaction(make_engine(settings)) as s:
        return start_session(s, get_user(s, "operator"))


def empty_spot(image_id: int, size: int = 40) -> tuple[int, int]:
    """Top-left of a size x size square of the image's current mask with no object near."""
    import numpy as np

    from db import masks
    from db.engine import make_engine, transaction
    from db.settings import Settings
    from db.storage import Storage

    settings = Settings.from_env(base=ROOT)
    with transaction(make_engine(settings)) as s:
        path = masks.head_version(s, image_id).path
    busy = np.pad(Storage.from_settings(settings).read_labels(path) > 0, size,
                  constant_values=True)
    for r in range(size, busy.shape[0] - 4 * size, size):
        for c in range(size, busy.shape[1] - 4 * size, size):
            if not busy[r:r + 3 * size, c:c + 3 * size].any():
                return r, c
    raise RuntimeError("no room to draw a cell")


def idle(page) -> None:
    page.wait_for_timeout(100)
    page.wait_for_function(IDLE, timeout=120_000)


def status_ends(page, text: str) -> None:
    try:
        page.wait_for_function("([sel, text]) => { const s = document.querySelector(sel);"
                               " return s && s.textContent.endsWith(text); }",
                               arg=[STATUS, text], timeout=60_000)
    except Exception:
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-correct-failed.png"))
        raise RuntimeError(f"the editor says {page.locator(STATUS).text_content()!r}, "
                           f"not ...{text!r}") from None


def outlines_after(page, count: int) -> None:
    page.wait_for_function("([sel, n]) => Number(document.querySelector(sel)?.dataset.outlines)"
                           " > n", arg=[EDITOR, count], timeout=120_000)


def outline_loads(page) -> int:
    return int(page.locator(EDITOR).get_attribute("data-outlines") or 0)


def at_pixel(page, row: float, col: float) -> tuple[float, float]:
    s, tx, ty = map(float, page.locator(EDITOR).get_attribute("data-view").split(","))
    box = page.locator("[data-testid=ctCorrectCanvas]").bounding_box()
    return box["x"] + tx + col * s, box["y"] + ty + row * s


def run(base: str, token: str, repeat: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from tests.app.browser import ARGS, CHROMIUM

    out: dict[str, list[float]] = {k: [] for k in ("load", "image", "stroke", "undo", "zoom",
                                                    "pan")}
    sent = {"frames": 0}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_cookies([{"name": "celltally_session", "value": token, "url": base}])
        page = context.new_page()
        page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.update(
            frames=sent["frames"] + 1)))
        page.goto(f"{base}/account")
        page.get_by_role("heading", name="Account").wait_for(timeout=120_000)
        idle(page)
        for i in range(repeat):
            t = time.perf_counter()
            page.get_by_role("link", name="Correct").click()
            page.locator(f"{EDITOR}[data-image=loaded][data-outlines]").wait_for(timeout=120_000)
            idle(page)
            out["load"].append(time.perf_counter() - t)
            shown = page.locator(EDITOR).get_attribute("data-image-id")
            t = time.perf_counter()
            page.locator("[data-testid=stSelectbox]").filter(has_text="Image").click()
            page.get_by_role("option").filter(has_text=f"demo_0{2 - i % 2}.png").click()
            page.wait_for_function("([sel, old]) => { const e = document.querySelector(sel);"
                                   " return e && e.dataset.imageId !== old"
                                   " && e.dataset.image === 'loaded'; }",
                                   arg=[EDITOR, shown], timeout=120_000)
            idle(page)
            out["image"].append(time.perf_counter() - t)
            before = page.locator(STATUS).text_content().split(" objects")[0].split("→ ")[1]
            n = int(before)
            r, c = empty_spot(int(page.locator(EDITOR).get_attribute("data-image-id")))
            for dr, dc in ((0, 0), (0, 40), (40, 40), (40, 0)):
                page.mouse.click(*at_pixel(page, r + dr, c + dc))
            loads = outline_loads(page)
            t = time.perf_counter()
            page.mouse.click(*at_pixel(page, r, c))
            status_ends(page, f"→ {n + 1} objects · 1 edit")
            outlines_after(page, loads)
            out["stroke"].append(time.perf_counter() - t)
            idle(page)
            loads = outline_loads(page)
            t = time.perf_counter()
            page.keyboard.press("Control+z")
            status_ends(page, f"→ {n} objects · 0 edits")
            outlines_after(page, loads)
            out["undo"].append(time.perf_counter() - t)
            idle(page)
            frames = sent["frames"]
            view = page.locator(EDITOR).get_attribute("data-view")
            page.mouse.move(*at_pixel(page, 600, 800))
            t = time.perf_counter()
            page.mouse.wheel(0, -300)
            page.wait_for_function("([sel, v]) => document.querySelector(sel).dataset.view !== v",
                                   arg=[EDITOR, view])
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
            out["zoom"].append(time.perf_counter() - t)
            x, y = at_pixel(page, 600, 800)
            t = time.perf_counter()
            page.mouse.move(x, y)
            page.mouse.down(button="right")
            page.mouse.move(x + 60, y + 40, steps=6)
            page.mouse.up(button="right")
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
            out["pan"].append(time.perf_counter() - t)
            if sent["frames"] != frames:
                print(f"warning: zoom and pan sent {sent['frames'] - frames} websocket frames")
            page.keyboard.press("0")
            page.get_by_role("link", name="Account").click()
            page.get_by_role("heading", name="Account").wait_for(timeout=120_000)
            idle(page)
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from tests.app.browser import serving

    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory(prefix="ct-bench-correct-") as tmp:
        token = build_db(Path(tmp))
        with serving(dict(os.environ)) as base:
            figures = run(base, token, args.repeat)
    print(f"bench_correct {today()}: {SHAPE[0]}x{SHAPE[1]} image, Chromium 1600x1000")
    print(machine_line(gflops))
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, values in figures.items():
        print(f"{name:>7}: median {statistics.median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


if __name__ == "__main__":
    main()
