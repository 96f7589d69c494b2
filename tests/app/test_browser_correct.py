"""The Correct editor in a real browser (issue 13): draw, zoom with the wheel and the buttons,
pan by dragging, undo and redo with the keys, leave the page and come back, save with Ctrl+S;
and the page on a 390 px phone screen.

Starts ``streamlit run app.py`` against the shared test database and drives Debian's Chromium,
as test_browser.py does. The editor paints on one ``<canvas>``; it reports its view (screen px
per image px, and where the image's origin is on the canvas) in ``data-view``, so the test
knows where an image pixel is on the screen at any zoom.
"""
from __future__ import annotations


import numpy as np
import pytest

from tests.app.test_browser_sessions import session_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STATUS = "[data-testid=ctCorrectStatus]"




def open_correct(browser, base, app_db, viewport):
    """The Correct page of the operator, once the editor shows the image and its outlines."""
    context = browser.new_context(viewport=viewport)
    context.add_cookies([session_for(app_db, base, "operator")])
    page = context.new_page()
    page.goto(f"{base}/correct")
    editor = page.locator("[data-testid=ctCorrectEditor][data-image=loaded][data-outlines]")
    editor.wait_for(timeout=90_000)
    return context, page


def settled(page, edits: int, objects: int) -> None:
    """Wait until the editor's status says ``edits`` edits and ``objects`` objects after them,
    with every stroke in the outlines (no "updating")."""
    page.wait_for_function(
        "([sel, text]) => { const s = document.querySelector(sel);"
        " return s && s.textContent.endsWith(text); }",
        arg=[STATUS, f"→ {objects} objects · {edits} edit{'' if edits == 1 else 's'}"],
        timeout=60_000)


def view(page) -> tuple[float, float, float, dict]:
    """(screen px per image px, image origin x, y on the canvas, the canvas's box)."""
    s, tx, ty = map(float, page.locator("[data-testid=ctCorrectEditor]")
                    .get_attribute("data-view").split(","))
    return s, tx, ty, page.locator("[data-testid=ctCorrectCanvas]").bounding_box()


def on_screen(page, row: float, col: float) -> tuple[float, float]:
    s, tx, ty, box = view(page)
    return box["x"] + tx + col * s, box["y"] + ty + row * s


def empty_spots(labels: np.ndarray, n: int, size: int = 24) -> list[tuple[int, int]]:
    """Top-left corners of ``n`` size x size squares with no object within ``size`` px."""
    free = ~np.pad(labels > 0, size, constant_values=True)
    spots = []
    for r in range(size, labels.shape[0] - 2 * size, size):
        for c in range(size, labels.shape[1] - 2 * size, size):
            if free[r:r + 3 * size, c:c + 3 * size].all() and all(
                    abs(r - a) > 3 * size or abs(c - b) > 3 * size for a, b in spots):
                spots.append((r, c))
                if len(spots) == n:
                    return spots
    raise AssertionError("no room to draw cells")


def polygon(page, r: int, c: int, size: int = 24) -> None:
    """Click a square's corners, then its first corner again (which closes it)."""
    for dr, dc in ((0, 0), (0, size), (size, size), (size, 0), (0, 0)):
        page.mouse.click(*on_screen(page, r + dr, c + dc))


def shown_image(page) -> int:
    return int(page.locator("[data-testid=ctCorrectEditor]").get_attribute("data-image-id"))


def test_draw_zoom_pan_undo_leave_and_save_with_keys(base, browser, app_db):
    from db import masks

    context, page = open_correct(browser, base, app_db, {"width": 1400, "height": 1000})
    image_id = shown_image(page)
    with app_db.session() as s:
        head = masks.head_version(s, image_id)
        n_versions, n = len(masks.versions(s, image_id)), head.object_count
    labels = app_db.storage.read_labels(head.path)
    spots = empty_spots(labels, 4)
    for k, (r, c) in enumerate(spots[:3], start=1):
        polygon(page, r, c)
        settled(page, k, n + k)
    assert int(page.locator("[data-testid=ctCorrectEditor]").get_attribute("data-outlines")) >= 4

    # Zoom with the wheel about a point, then with the + button; pan with the Pan tool and
    # with the right button. The strokes stay; no rerun is needed for any of it.
    s0 = view(page)[0]
    page.mouse.move(*on_screen(page, *spots[3]))
    page.mouse.wheel(0, -400)
    page.get_by_role("button", name="Zoom in (key +)").click()
    assert view(page)[0] > 2 * s0
    # Bring the fourth spot to the middle of the canvas: half the way with the Pan tool (key
    # H), the rest with the right button.
    box = view(page)[3]
    mid = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    x, y = on_screen(page, *spots[3])
    half = (mid[0] + (mid[0] - x) / 2, mid[1] + (mid[1] - y) / 2)
    page.keyboard.press("h")
    page.mouse.move(*mid)
    page.mouse.down()
    page.mouse.move(*half, steps=4)
    page.mouse.up()
    page.keyboard.press("p")
    page.mouse.move(*mid)
    page.mouse.down(button="right")
    page.mouse.move(*half, steps=4)
    page.mouse.up(button="right")
    assert np.allclose(on_screen(page, *spots[3]), mid, atol=1.5)
    settled(page, 3, n + 3)

    # A fourth cell drawn while zoomed lands on the same image pixels as at any zoom.
    polygon(page, *spots[3])
    settled(page, 4, n + 4)
    page.keyboard.press("Control+z")
    settled(page, 3, n + 3)
    page.keyboard.press("Control+Shift+z")
    settled(page, 4, n + 4)

    # Leave the page and come back: the strokes are still there, and the page says so.
    page.get_by_role("link", name="Account").click()
    page.get_by_role("heading", name="Account").wait_for(timeout=60_000)
    page.get_by_role("link", name="Correct").click()
    settled(page, 4, n + 4)
    page.get_by_text("4 unsaved edit(s)").wait_for(timeout=60_000)

    page.locator("[data-testid=ctCorrectCanvas]").focus()
    page.keyboard.press("Control+s")
    page.get_by_text(f"with {n + 4} objects.").wait_for(timeout=60_000)
    with app_db.session() as s:
        new = masks.head_version(s, image_id)
        assert len(masks.versions(s, image_id)) == n_versions + 1
    saved = app_db.storage.read_labels(new.path)
    assert new.object_count == n + 4 and new.parent_id == head.id
    for r, c in spots:  # each square holds one new cell, filling its inside
        inside = saved[r + 2:r + 22, c + 2:c + 22]
        assert inside.min() > 0 and len(np.unique(inside)) == 1
    settled(page, 0, n + 4)  # the saved version is the new start, with no strokes left
    context.close()


def test_phone_screen_has_no_sideways_scroll_and_save_in_view(base, browser, app_db):
    width, height = 390, 844
    context, page = open_correct(browser, base, app_db, {"width": width, "height": height})
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    canvas = page.locator("[data-testid=ctCorrectCanvas]").bounding_box()
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= width
    save = page.get_by_role("button", name="Save").bounding_box()
    assert save["x"] >= 0 and save["x"] + save["width"] <= width
    assert save["y"] >= 0 and save["y"] + save["height"] <= height
    context.close()
