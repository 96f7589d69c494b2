"""AppTest for issue 13's Train and Dashboard items: promotion asks first and shows both runs'
held-out scores; the Train page warns of hours on a CPU and offers a quick preset; the Dashboard's
curves, axes, Bland-Altman colours, few-images caution and colour-blind palette.

Two runs are added to the shared database (tests/app/conftest.py) for the promotion tests: a strong
one, promoted, and a weak one; the project's previous state is restored after each test.
"""
from __future__ import annotations

import pytest


def _runs_promoted(app_db) -> dict[int, bool]:
    from sqlalchemy import select

    from db.models import ModelRun

    with app_db.session() as s:
        return {r.id: bool(r.promoted) for r in s.scalars(select(ModelRun).where(
            ModelRun.project_id == app_db.project_id))}


@pytest.fixture
def strong_and_weak(app_db, tmp_path):
    """(strong, weak) run ids: F1 0.93 promoted, F1 0.52 not; both with bootstrap intervals in
    their metrics (as training writes them) and no per-image results."""
    from db.models import ModelRun

    before = _runs_promoted(app_db)
    ids = []
    with app_db.session() as s:
        for name, f1, mae, bias, ci in (
                ("strong-run", 0.93, 0.8, 0.1, {"f1": [0.90, 0.95], "mae": [0.5, 1.1],
                                                "bias": [-0.2, 0.4]}),
                ("weak-run", 0.52, 4.5, -3.9, {"f1": [0.41, 0.63], "mae": [3.2, 5.9],
                                               "bias": [-5.1, -2.6]})):
            (tmp_path / name).mkdir()
            run = ModelRun(project_id=app_db.project_id, name=name, run_dir=str(tmp_path / name),
                           threshold=0.5, config={}, promoted=False,
                           metrics={"f1": f1, "mae": mae, "bias": bias, "n_images": 12,
                                    "intervals": ci})
            s.add(run)
            s.flush()
            ids.append(run.id)
    with app_db.session() as s:
        from db.models import ModelRun as M
        for run_id in before:
            s.get(M, run_id).promoted = False
        s.get(M, ids[0]).promoted = True
    yield tuple(ids)
    with app_db.session() as s:
        from db.models import ModelRun as M
        for run_id in ids:
            s.get(M, run_id).promoted = False
        for run_id, flag in before.items():
            s.get(M, run_id).promoted = flag


# ---------------------------------------------------------------- promotion

def test_promotion_shows_both_runs_and_asks_before_promoting(app_as, app_db, strong_and_weak):
    strong, weak = strong_and_weak
    at = app_as("admin", "pages/train.py")
    assert not at.exception, at.exception
    at.selectbox(key="train_promote_pick").set_value(weak).run()
    at.button(key="train_promote").click().run()
    assert not at.exception, at.exception
    # One click promotes nothing: the strong run is still the project's model.
    promoted = _runs_promoted(app_db)
    assert promoted[strong] and not promoted[weak]
    table = next(d.value for d in at.dataframe if "role" in d.value.columns)
    rows = {r["run"]: r for r in table.to_dict("records")}
    assert rows["strong-run"]["role"] == "promoted now" and rows["weak-run"]["role"] == "candidate"
    assert rows["strong-run"]["F1"] == 0.93 and rows["weak-run"]["F1"] == 0.52
    assert rows["strong-run"]["F1 95% CI"] == "0.90 to 0.95"
    assert rows["weak-run"]["MAE 95% CI"] == "3.20 to 5.90"
    assert rows["weak-run"]["bias 95% CI"] == "-5.10 to -2.60"
    assert any("lower held-out F1" in w.value and "0.52" in w.value and "0.93" in w.value
               for w in at.warning), [w.value for w in at.warning]
    at.button(key="train_promote_confirm").click().run()
    assert not at.exception, at.exception
    promoted = _runs_promoted(app_db)
    assert promoted[weak] and not promoted[strong]
    assert any("weak-run is now the project's model" in m.value and "strong-run" in m.value
               for m in at.success), [m.value for m in at.success]
    assert not [b for b in at.button if b.key == "train_promote_confirm"]


def test_promotion_can_be_called_off(app_as, app_db, strong_and_weak):
    strong, weak = strong_and_weak
    at = app_as("admin", "pages/train.py")
    at.selectbox(key="train_promote_pick").set_value(weak).run()
    at.button(key="train_promote").click().run()
    at.button(key="train_promote_keep").click().run()
    assert not at.exception, at.exception
    promoted = _runs_promoted(app_db)
    assert promoted[strong] and not promoted[weak]
    assert not [b for b in at.button if b.key == "train_promote_confirm"]


# ---------------------------------------------------------------- train page

def _page_order(at) -> list[str]:
    """The keys and kinds of the page's main elements, top to bottom."""
    return [getattr(e, "key", None) or type(e).__name__ for e in at.main]


def test_long_settings_warn_of_hours_and_the_quick_preset_fills_the_form(app_as, app_db):
    from dataclasses import replace

    from db.runs import training_shapes
    from training.config import TrainConfig
    from training.estimate import estimate_training

    with app_db.session() as s:
        shapes = training_shapes(s, app_db.project_id)
    assert shapes, "the shared database has no approved train images"
    at = app_as("operator", "pages/train.py")
    assert not at.exception, at.exception
    at.number_input(key="train_epochs").set_value(1000)
    at.button(key="train_estimate").click().run()
    assert not at.exception, at.exception
    # 1000 epochs at the paper's 2.54 s a step, over this project's train crops.
    expected = estimate_training(replace(TrainConfig(), epochs=1000), shapes)
    assert expected.seconds > 3600
    hours = [w.value for w in at.warning if "of training on a CPU" in w.value]
    assert len(hours) == 1 and "an estimate" in hours[0] and "quick preset" in hours[0]
    assert f"about {int(expected.seconds) // 3600}h" in hours[0]
    assert f"1000 epochs x {expected.steps_per_epoch} steps x 2.54 s" in hours[0]
    at.button(key="train_quick").click().run()
    assert not at.exception, at.exception
    assert at.number_input(key="train_base_filters").value == 8
    assert at.number_input(key="train_crop_size").value == 256
    assert at.number_input(key="train_epochs").value == 20
    assert at.number_input(key="train_steps").value == 40
    assert not [w for w in at.warning if "of training on a CPU" in w.value]
    quick = estimate_training(replace(TrainConfig(), base_filters=8, crop_size=256, epochs=20,
                                      steps_per_epoch=40), shapes)
    assert any(f"20 epochs x {quick.steps_per_epoch} steps x 0.16 s" in c.value
               for c in at.caption), [c.value for c in at.caption]


def test_progress_and_cancel_sit_above_the_form_and_the_log_shows_the_newest_job(
        app_as, app_db, monkeypatch):
    from db import jobs as db_jobs
    from training import tasks

    monkeypatch.setattr(tasks, "ensure_worker", lambda settings: None)
    with app_db.session() as s:
        older = db_jobs.queue_job(s, "train", project_id=app_db.project_id).id
        newer = db_jobs.queue_job(s, "train", project_id=app_db.project_id).id
        active = db_jobs.queue_job(s, "train", project_id=app_db.project_id).id
        for job_id in (older, newer):
            db_jobs.request_cancel(s, job_id)
    try:
        at = app_as("operator", "pages/train.py")
        assert not at.exception, at.exception
        keys = [b.key for b in at.button]
        assert keys.index(f"train_cancel_{active}") < keys.index("train_retrain")
        headers = [h.value for h in at.subheader]
        assert headers.index("Running and queued") < headers.index("Past jobs")
        assert at.selectbox(key="train_log_pick").value == newer
        # A job that ends while the page is open becomes the one shown.
        at.selectbox(key="train_log_pick").set_value(older).run()
        with app_db.session() as s:
            db_jobs.request_cancel(s, active)
        at.run()
        assert at.selectbox(key="train_log_pick").value == active
    finally:
        with app_db.session() as s:
            for job_id in (older, newer, active):
                db_jobs.request_cancel(s, job_id)
