"""Two real-browser paths: sign in, draw a filled cell in the Correct editor with the mouse, save;
and queue a tiny training job from the Train page and watch its progress until it is done.

Starts ``streamlit run app.py`` on 127.0.0.1 (a free port) against the shared test database and
drives Debian's Chromium with Playwright (never a downloaded browser). Screenshots of the Review
and Correct pages are kept under ``tests/artifacts/`` (ignored by git); with
``CELLTALLY_README_SHOTS=1`` they go to ``docs/screenshots/`` instead, which the README shows.
"""
from __future__ import annotations

import math
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.app.browser import quiet


pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ("docs/screenshots" if os.environ.get("CELLTALLY_README_SHOTS") == "1"
                else "tests/artifacts")


def sign_in(page, base: str, name: str, password: str) -> None:
    page.goto(base)
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Review").wait_for(timeout=60_000)


def empty_spot(labels: np.ndarray, size: int = 60) -> tuple[int, int]:
    """Centre (row, col) of a size x size square with no object near it."""
    grown = np.pad(labels > 0, size)
    for r in range(size, labels.shape[0] - size, size // 2):
        for c in range(size, labels.shape[1] - size, size // 2):
            if not grown[r:r + 2 * size, c:c + 2 * size].any():
                return r, c
    raise AssertionError("no empty place to draw a cell")


def test_draw_a_cell_with_the_mouse_and_save(base, browser, app_db):
    from db import masks

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, base, "operator", "operator-demo")
    page.locator("[data-testid=ctReviewViewer] image").first.wait_for(timeout=60_000)
    quiet(page)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "review.png"), full_page=True)

    page.get_by_role("link", name="Correct").click()
    editor = page.locator("[data-testid=ctCorrectEditor][data-image=loaded][data-outlines]")
    editor.wait_for(timeout=60_000)
    canvas = page.locator("[data-testid=ctCorrectCanvas]")
    page.keyboard.press("f")                                  # the freehand tool

    # The image Correct opened on (the editor names it), and an empty place on it
    image_id = int(editor.get_attribute("data-image-id"))
    with app_db.session() as s:
        head = masks.head_version(s, image_id)
        n_versions, n_objects = len(masks.versions(s, image_id)), head.object_count
    labels = app_db.storage.read_labels(head.path)
    row, col = empty_spot(labels)
    # The editor's view: screen px per image px and where the image's origin is on the canvas.
    scale, tx, ty = map(float, editor.get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    cx, cy = box["x"] + tx + col * scale, box["y"] + ty + row * scale
    radius = 20 * scale
    page.mouse.move(cx + radius, cy)
    page.mouse.down()
    for k in range(1, 41):
        a = 2 * math.pi * k / 40
        page.mouse.move(cx + radius * math.cos(a), cy + radius * math.sin(a), steps=2)
    page.mouse.up()
    after = page.locator("[data-testid=stMetric]").filter(has_text="After your edits")
    after.filter(has_text=str(n_objects + 1)).wait_for(timeout=60_000)
    page.wait_for_function("() => Number(document.querySelector("  # the outlines show it
                           "'[data-testid=ctCorrectEditor]').dataset.outlines) >= 2",
                           timeout=60_000)
    quiet(page)
    page.screenshot(path=str(SHOTS / "correct.png"), full_page=True)

    page.get_by_role("button", name="Save").click()
    try:
        page.get_by_text("Saved version").wait_for(timeout=60_000)
    except Exception:
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "celltally-failed-save.png"))
        raise
    with app_db.session() as s:
        new = masks.head_version(s, image_id)
        assert len(masks.versions(s, image_id)) == n_versions + 1
    assert new.source == "manual" and new.object_count == n_objects + 1
    page.close()


#: The Train form's fields for a job that trains in seconds: base 2, one epoch of two 64 px steps.
TINY = {"Base filters": 2, "Most epochs": 1, "Crop size (multiple of 8)": 64, "Batch size": 2,
        "Steps per epoch (0 = all crops)": 2}


@pytest.fixture
def worker_stopped(app_db):
    """After the test: the detached worker the Train page started is gone, and no job of the
    test is left running (a worker ends by itself once the queue is empty; this is for failures)."""
    from training.tasks import worker_pid

    yield
    pid = worker_pid(app_db.settings)
    if pid is not None:
        _stop_worker(pid)
    # A job the killed worker held would look orphaned to the next page that checks for stale
    # jobs (which requeues it and starts a real worker): end the test's jobs here.
    from db import jobs

    with app_db.session() as s:
        for status in ("queued", "running"):
            for job in jobs.list_jobs(s, status=status):
                jobs.finish_job(s, job.id, cancelled=True)


def _stop_worker(pid: int) -> None:
    from training.tasks import _alive

    # Started with its own session (training.tasks.ensure_worker), so its group id is its pid.
    os.killpg(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def test_queue_a_tiny_training_job_and_watch_it_finish(base, browser, app_db, worker_stopped):
    from sqlalchemy import select

    from db.models import ImageResult, Job, ModelRun

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, base, "operator", "operator-demo")
    page.get_by_role("link", name="Train").click()
    page.get_by_role("button", name="Retrain").wait_for(timeout=60_000)
    # A full rerun (the sign-in's cookie writes, the page's own refresh) redraws the form and can
    # drop a value typed into it before it settles: type, wait, and check until every one holds.
    for _ in range(4):
        for label, value in TINY.items():
            quiet(page)
            page.wait_for_function(
                "n => document.querySelectorAll(`input[aria-label=\"${n}\"]`).length === 1",
                arg=label, timeout=60_000)
            box = page.get_by_label(label, exact=True)
            if box.input_value() != str(value):
                box.fill(str(value))
                box.press("Tab")
        quiet(page)
        page.wait_for_timeout(1000)
        if all(page.get_by_label(label, exact=True).input_value() == str(value)
               for label, value in TINY.items()):
            break
    else:
        raise AssertionError("the Train form kept dropping the tiny settings after 4 tries")
    page.get_by_text("Augment crops").click()  # off: the fewest seconds per step
    page.get_by_label("Run name (optional)").fill("browser-tiny")
    page.get_by_role("button", name="Retrain").click()
    # Read in one step: the note shows once, and the progress fragment's next run redraws.
    job_id = int(page.wait_for_function(
        "() => (document.body.innerText.match(/Training job (\\d+) is queued/) || [])[1]",
        timeout=60_000).json_value())

    # The live progress lists the job (queued or running), then announces it done.
    page.get_by_text(f"Job {job_id} (train, ").first.wait_for(timeout=30_000)
    try:
        # An untrained model's threshold sweep is the slow part (about a minute on a quiet CI
        # machine); a loaded one needs more.
        page.get_by_text(f"Job {job_id} (train) is done").wait_for(timeout=300_000)
    except Exception:
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "celltally-failed-train.png"),
                        full_page=True)
        with app_db.session() as s:
            job = s.get(Job, job_id)
            raise AssertionError(f"job {job_id} is {job.status}: {job.message} {job.error}")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "train.png"), full_page=True)
    with app_db.session() as s:
        assert s.get(Job, job_id).status == "done"
        run = s.scalars(select(ModelRun).where(ModelRun.job_id == job_id)).one()
        assert run.config["base_filters"] == 2 and run.config["epochs"] == 1
        assert s.scalars(select(ImageResult).where(ImageResult.run_id == run.id)).all()
    page.close()
