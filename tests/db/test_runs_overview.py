"""Runs as the Dashboard and Train page list them: scores, per-image results, training data."""
import math

from sqlalchemy.orm import Session

from db import runs
from tests.db.world import at, mask, scored, world  # noqa: F401 (fixtures)


def test_runs_overview_reads_every_spelling_of_a_score(world):
    engine, _, ids = world
    with Session(engine) as s:
        t = runs.runs_overview(s, ids["project"])
    assert list(t["name"]) == ["first", "second"]
    first, second = t.iloc[0], t.iloc[1]
    assert first["f1"] == 0.7 and first["mae"] == 2.0 and math.isnan(first["recall"])
    assert (second["medae"], second["mean_iou"], second["bias"]) == (1.0, 0.6, -0.5)
    assert bool(second["promoted"]) and not bool(first["promoted"])


def test_run_results_one_row_per_test_image(world):
    engine, _, ids = world
    with Session(engine) as s:
        t = runs.run_results(s, ids["runs"][1])
    assert list(t["name"]) == ["img2.png", "img3.png"]
    assert list(t["error"]) == [1, -2] and list(t["abs_error"]) == [1, 2]
    assert list(t["fp"]) == [1, 0]
    with Session(engine) as s:
        assert runs.run_results(s, ids["runs"][0]).empty


def test_training_data_counts_images_and_approved_masks(world):
    engine, _, ids = world
    with Session(engine) as s:
        got = runs.training_data(s, ids["project"])
    assert got == {"train_images": 2, "test_images": 2, "unassigned_images": 1,
                   "train_approved": 1, "test_approved": 1}
