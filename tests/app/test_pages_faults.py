"""Pages under faults and hostile text: notes shown as typed, unexpected errors as a sentence."""
from __future__ import annotations

import logging
import socket
import subprocess


from tests.app.helpers import image_with_cells

NOTE = "**urgent** [see here](http://evil.example/login) :red[now] $x$"


def _all_markdown(at):
    """Every Markdown body the page rendered (captions, markdown, boxes)."""
    kinds = ("caption", "markdown", "success", "info", "warning", "error")
    return [e.value for kind in kinds for e in getattr(at, kind)]


def test_an_operators_note_reaches_the_expert_as_text(app_as, app_db):
    from db import adjudication
    from db.models import AdjudicationItem

    with app_db.session() as s:
        img, head, label = image_with_cells(s, app_db)
        item = adjudication.queue_mask_object(s, app_db.storage, img.id, head.id, label,
                                              reason="unsure", note=NOTE)
        item.priority = 1e9
        item_id = item.id
    try:
        at = app_as("expert", "pages/adjudicate.py")
        assert not at.exception, at.exception
        assert f"Note: {NOTE}" in [t.value for t in at.text]
        rendered = _all_markdown(at)
        assert not any("**urgent**" in m or "](http" in m or ":red[" in m for m in rendered)
    finally:
        with app_db.session() as s:
            s.get(AdjudicationItem, item_id).status = "dismissed"


def test_an_unexpected_import_error_is_a_sentence_and_the_traceback_is_logged(
        app_as, app_db, monkeypatch, caplog):
    from db import importing

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail at /srv/secret/importing.py line 9")

    monkeypatch.setattr(importing, "import_path", broken)
    folder = app_db.settings.data_dir / "incoming"
    at = app_as("operator", "pages/import_images.py")
    at.text_input(key="import_folder").input(str(folder)).run()
    with caplog.at_level(logging.ERROR):
        next(b for b in at.button if b.label == "Import folder").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("unexpected error" in e and "server log" in e for e in errors), errors
    assert not any("/srv/secret" in m for m in _all_markdown(at))
    assert any("/srv/secret" in (r.exc_text or "") or r.exc_info for r in caplog.records
               if r.levelno >= logging.ERROR)


def test_the_train_page_brings_back_a_job_whose_worker_was_killed(app_as, app_db, monkeypatch):
    from db import jobs as db_jobs
    from db.models import Job, utcnow
    from training import tasks

    started = []
    # No real worker process in the page test (tests/training starts real ones).
    monkeypatch.setattr(tasks, "ensure_worker", lambda settings: started.append(settings))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no process has any more
    with app_db.session() as s:
        job = db_jobs.queue_job(s, "train", project_id=app_db.project_id)
        job.status, job.attempts, job.worker_host, job.worker_pid = (
            "running", 1, socket.gethostname(), gone.pid)
        job.heartbeat_at = utcnow()  # a fresh heartbeat: only the dead process tells
        job_id = job.id
    at = app_as("operator", "pages/train.py")
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any(f"Job {job_id}'s worker stopped" in w and "queued again" in w for w in warnings)
    assert started, "a local worker is started for it"
    with app_db.session() as s:
        row = s.get(Job, job_id)
        assert row.status == "queued" and "process has ended" in row.error
        db_jobs.request_cancel(s, job_id)
