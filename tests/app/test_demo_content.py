"""The demo model in the shared database: registered, promoted and scored by ``seed_demo``, so
the Predictions and Dashboard pages open on real per-image results (``make run`` does the same
with more images)."""
from __future__ import annotations

import json

import pytest

from training.demo_project import DEMO_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEMO_MODEL_DIR / "model.keras").is_file(),
                                reason="models/demo/ is not there (make demo-model builds it)")


@pytest.fixture(scope="module")
def demo_run(app_db):
    from db import runs

    with app_db.session() as s:
        run = runs.promoted_run(s, app_db.project_id)
        assert run is not None and run.name == "demo", "seed_demo promotes the demo model"
        return run.id


def test_the_demo_model_is_scored_with_objects_and_heatmaps(app_db, demo_run):
    from db import runs
    from db.models import Image

    with app_db.session() as s:
        results = runs.run_results(s, demo_run).to_dict("records")
        tests = {i.id for i in s.query(Image).filter_by(project_id=app_db.project_id,
                                                        split="test")}
        assert results and {r["image_id"] for r in results} == tests
        assert sum(len(runs.result_objects(s, r["result_id"])) for r in results) > 0
        metrics = runs.get_run(s, demo_run).metrics
    heat = app_db.storage.read_heatmap(results[0]["heatmap_path"])
    assert heat.shape == app_db.storage.read_image(results[0]["image_path"]).shape[:2]
    # The stored scores describe this project's test images, not the ones the model shipped with.
    assert metrics["n_images"] == len(tests)
    assert metrics["tp"] == sum(r["tp"] for r in results)


def test_a_second_start_adds_nothing(app_db, demo_run):
    from db import runs
    from training.demo_project import seed_demo

    with app_db.session() as s:
        before = (len(runs.list_runs(s, app_db.project_id)), len(runs.scored_image_ids(s, demo_run)))
    seed_demo(app_db.settings, engine=app_db.engine, n_images=8, shape=(600, 800))
    with app_db.session() as s:
        after = (len(runs.list_runs(s, app_db.project_id)), len(runs.scored_image_ids(s, demo_run)))
    assert after == before


def test_predictions_open_on_the_demo_run(app_as, demo_run):
    at = app_as("viewer", "pages/predictions.py")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="pred_run").value == demo_run
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["True cells"]) > 0 and int(metrics["TP"]) > 0
    assert len(at.dataframe[0].value) >= 1 and at.image


def test_dashboard_opens_on_the_demo_run_with_its_curve(app_as, demo_run):
    at = app_as("viewer", "pages/dashboard.py")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="dash_run").value == demo_run
    titles = " | ".join(str(json.loads(c.proto.spec).get("layout", {}).get("title", {})
                            .get("text", "")) for c in at.get("plotly_chart"))
    # thresholds.json's tuning curve is drawn at once, titled with the images the threshold
    # was chosen on (an older run's one curve pooled train and validation images); no "Draw
    # the curve" button is needed
    from training.demo_project import DEMO_MODEL_DIR
    from training.scoring import CURVE_LABELS

    kept = json.loads((DEMO_MODEL_DIR / "thresholds.json").read_text())
    chosen_on = CURVE_LABELS[kept.get("chosen_on", "train+validation")]
    assert f"Scores against threshold (chosen on {chosen_on})" in titles
    assert "Absolute count error" in titles and "Predicted against true" in titles
    assert not [b for b in at.button if b.key == "dash_curve"]
