"""A threshold an admin keeps is used at once: model pre-labelling on the Import page follows
it without a server restart (the page once cached a run, threshold and all, by directory)."""
import shutil

from db import masks, review, runs, users

ROOT_DEMO = "models/demo"


def _prelabel(app_as, image_id):
    at = app_as("admin", "pages/import_images.py")
    at.multiselect(key="prelabel_images").set_value([image_id]).run()
    next(b for b in at.button if b.label.startswith("Pre-label selected")).click().run()
    assert not at.exception, at.exception
    return at


def test_a_kept_threshold_reaches_model_prelabelling_without_a_restart(app_as, app_db, tmp_path):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / ROOT_DEMO
    copy = tmp_path / "live-threshold"
    shutil.copytree(demo, copy, ignore=shutil.ignore_patterns("checkpoint"))
    with app_db.session() as s:
        admin = users.get_user(s, "admin")
        before = runs.promoted_run(s, app_db.project_id)
        run = runs.register_run(s, app_db.project_id, copy, name="live-threshold")
        runs.promote_run(s, run.id, actor=admin)
        runs.set_threshold(s, run.id, 0.9, actor=admin)
        run_id = run.id
        image_id = int(review.image_counts(s, app_db.project_id)["image_id"].iloc[0])
    try:
        _prelabel(app_as, image_id)
        with app_db.session() as s:
            first = masks.versions(s, image_id)[-1]
            runs.set_threshold(s, run_id, 0.2, actor=users.get_user(s, "admin"))
        _prelabel(app_as, image_id)  # the same server process: the model stays cached
        with app_db.session() as s:
            second = masks.versions(s, image_id)[-1]
    finally:
        with app_db.session() as s:
            runs.promote_run(s, before.id, actor=users.get_user(s, "admin"))
    assert (first.source, first.run_id, first.threshold) == ("model", run_id, 0.9)
    assert (second.source, second.run_id, second.threshold) == ("model", run_id, 0.2)
    assert second.id != first.id and second.model_sha256 == first.model_sha256
