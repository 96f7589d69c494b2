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


# ---------------------------------------------------------------- dashboard

def _figure(at, title_part: str) -> dict:
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    found = [sp for sp in specs if title_part in str(sp["layout"].get("title", {}).get("text"))]
    assert found, [sp["layout"].get("title") for sp in specs]
    return found[0]


@pytest.fixture
def scored_run(app_db, tmp_path):
    """A run scored on the demo test images (too few to trust: the shared project has fewer
    than 10), with validation and train tuning curves holding F1, precision and recall; its
    heatmaps are the ground truth at p = 0.9. (run id, test images, true cells)."""
    import json

    import numpy as np
    from sqlalchemy import select

    from core.objects import count_objects
    from core.postprocess import PostprocessParams
    from db import masks
    from db.models import Image, ImageResult, ModelRun

    grid = [0.3, 0.5, 0.7]
    curves = {"validation": {"thresholds": grid, "f1": [0.7, 0.8, 0.75], "precision":
                             [0.6, 0.8, 0.9], "recall": [0.9, 0.8, 0.6], "cells": 130}}
    (tmp_path / "thresholds.json").write_text(json.dumps(
        {"best": 0.5, "knee": 0.7, "chosen": 0.5, "chosen_on": "validation", "curves": curves}))
    with app_db.session() as s:
        run = ModelRun(project_id=app_db.project_id, name="scored-run", run_dir=str(tmp_path),
                       threshold=0.5, promoted=False,
                       config={"postprocess": PostprocessParams.paper(cell_diameter=20).to_dict()},
                       metrics={"f1": 0.8, "mae": 1.0, "bias": 0.0})
        s.add(run)
        s.flush()
        tests = s.scalars(select(Image).where(Image.project_id == app_db.project_id,
                                              Image.split == "test").order_by(Image.id)).all()
        n_cells = 0
        for k, img in enumerate(tests):
            truth_version = masks.ground_truth(s, img.id)
            truth = app_db.storage.read_mask(truth_version.path)
            n = count_objects(truth)
            n_cells += n
            heat = np.where(truth, 0.9, 0.02).astype(np.float32)
            s.add(ImageResult(run_id=run.id, image_id=img.id, version_id=truth_version.id,
                              tp=n - k, fp=k, fn=k, n_true=n, n_pred=n, iou=0.8,
                              heatmap_path=str(app_db.storage.put_heatmap(heat).path)))
        run_id, n_images = run.id, len(tests)
    return run_id, n_images, n_cells


def test_dashboard_curves_axes_and_the_few_images_caution(app_as, scored_run):
    run_id, n_images, n_cells = scored_run
    assert n_images < 10, "the shared project was meant to have fewer than 10 test images"
    at = app_as("viewer", "pages/dashboard.py")
    at.selectbox(key="dash_run").set_value(run_id).run()
    assert not at.exception, at.exception
    curve = _figure(at, "against threshold")
    names = [t["name"] for t in curve["data"]]
    assert {"f1, validation images (held out)", "precision, validation images (held out)",
            "recall, validation images (held out)"} <= set(names)
    assert curve["layout"]["showlegend"] is True
    assert curve["layout"]["yaxis"]["range"][0] == 0 and curve["layout"]["yaxis"]["range"][1] >= 1
    errors = _figure(at, "Absolute count error")
    assert errors["layout"]["xaxis"]["range"][0] == 0
    assert all(t["xbins"]["start"] == 0 for t in errors["data"] if t["type"] == "histogram")
    counts = _figure(at, "Predicted against true")
    assert counts["layout"]["xaxis"]["range"][0] == 0 == counts["layout"]["yaxis"]["range"][0]
    caution = [w.value for w in at.warning if "Few test data" in w.value]
    assert len(caution) == 1 and f"{n_images} test images (fewer than 10)" in caution[0]
    assert ("true cells" in caution[0]) == (n_cells < 100)


def test_no_caution_for_a_run_scored_on_enough_images(app_as, strong_and_weak):
    strong, _ = strong_and_weak  # 12 test images in its metrics
    at = app_as("viewer", "pages/dashboard.py")
    at.selectbox(key="dash_run").set_value(strong).run()
    assert not at.exception, at.exception
    assert not [w for w in at.warning if "Few test data" in w.value]


def test_colour_blind_palette_comes_from_the_one_table_and_follows_to_predictions(
        app_as, scored_run):
    from core.render import COLORBLIND_OUTCOME_COLORS, OUTCOME_COLORS

    def hexes(table):
        return ["#{:02x}{:02x}{:02x}".format(*table[k]) for k in ("TP", "FP", "FN")]

    run_id, _, _ = scored_run
    at = app_as("viewer", "pages/dashboard.py")
    at.selectbox(key="dash_run").set_value(run_id).run()
    bars = _figure(at, "Objects per test image")
    assert [t["name"] for t in bars["data"]] == ["TP", "FP", "FN"]
    assert [t["marker"]["color"] for t in bars["data"]] == hexes(OUTCOME_COLORS)
    at.toggle(key="dash_colorblind").set_value(True).run()
    assert not at.exception, at.exception
    bars = _figure(at, "Objects per test image")
    assert [t["marker"]["color"] for t in bars["data"]] == hexes(COLORBLIND_OUTCOME_COLORS)
    assert "FP vermillion" in bars["layout"]["title"]["text"]
    at.switch_page("pages/predictions.py")
    at.run()
    at.selectbox(key="pred_run").set_value(run_id).run()
    assert not at.exception, at.exception
    assert at.toggle(key="pred_colorblind").value is True
    assert "TP bluish green, FP vermillion, FN sky blue" in at.checkbox(key="pred_boxes").label


@pytest.fixture
def double_reviews(app_db):
    """Three images reviewed blind by two operators (A counts 5, 7, 9; B 4, 7, 11), as new
    mask versions; removed after."""
    from sqlalchemy import select

    from db import masks
    from db.models import Image, MaskVersion, ReviewAssignment, User

    made = []
    with app_db.session() as s:
        users = [s.scalar(select(User.id).where(User.name == n)) for n in ("operator", "expert")]
        taken = set(s.scalars(select(ReviewAssignment.image_id).where(
            ReviewAssignment.user_id.in_(users))))
        images = [i for i in s.scalars(select(Image.id).where(
            Image.project_id == app_db.project_id).order_by(Image.id)) if i not in taken][:3]
        assert len(images) == 3
        for image_id, counts in zip(images, ((5, 4), (7, 7), (9, 11))):
            path = masks.ground_truth(s, image_id) or s.scalars(select(MaskVersion).where(
                MaskVersion.image_id == image_id)).first()
            for user_id, count in zip(users, counts):
                v = MaskVersion(image_id=image_id, source="manual", path=path.path,
                                sha256=path.sha256, object_count=count, author_id=user_id)
                s.add(v)
                s.flush()
                a = ReviewAssignment(image_id=image_id, user_id=user_id, blind=True, done=True,
                                     version_id=v.id)
                s.add(a)
                s.flush()
                made.append((a.id, v.id))
    yield
    with app_db.session() as s:
        for a, v in made:
            s.delete(s.get(ReviewAssignment, a))
            s.flush()
            s.delete(s.get(MaskVersion, v))


def _luminance(hex_colour: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_bland_altman_sets_have_distinct_colours_and_visible_limits(app_as, double_reviews):
    at = app_as("viewer", "pages/dashboard.py")
    assert not at.exception, at.exception
    ba = _figure(at, "Bland-Altman")
    points = {t["name"]: t for t in ba["data"]}
    before, after = (points[f"{k} adjudication"]["marker"]["color"] for k in ("before", "after"))
    rgb = [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in (before, after)]
    assert sum((x - y) ** 2 for x, y in zip(*rgb)) ** 0.5 > 150  # far apart, not two blues
    assert sorted(points["before adjudication"]["y"]) == [-2, 0, 1]
    # Streamlit's dark background is #0e1117 (luminance ~0.006): 3:1 contrast needs > 0.03.
    lines = [sh for sh in ba["layout"]["shapes"] if sh["type"] == "line"]
    assert len(lines) == 6 and {sh["line"]["color"] for sh in lines} == {before, after}
    assert all((_luminance(sh["line"]["color"]) + 0.05) / (0.006 + 0.05) > 3 for sh in lines)
    assert ba["layout"]["showlegend"] is True
    assert any("Few images" in w.value and "3 double-reviewed images" in w.value
               for w in at.warning)
