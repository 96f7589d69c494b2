"""Scores from the stored heatmaps through a run's scoring rule: recounts, curves, counts."""
import math

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (Image, ImageResult,
                       ModelRun)
from tests.db.world import at, mask, scored, world  # noqa: F401 (fixtures)
from training import scoring


def test_recount_moves_with_the_threshold(scored):
    engine, storage, ids = scored
    run, img = ids["scored_run"], ids["scored_image"]
    with Session(engine) as s:
        high = scoring.recount(s, storage, run, 0.5)
        low = scoring.recount(s, storage, run, 0.3)
        o = scoring.image_outcome(s, storage, run, img, 0.3)
    assert high.iloc[0][["n_true", "n_pred", "tp", "fp", "fn"]].tolist() == [3, 3, 3, 0, 0]
    assert low.iloc[0][["n_pred", "tp", "fp"]].tolist() == [4, 3, 1]
    assert o.match.unmatched_pred and o.pred_labels.max() == 4 and o.true_labels.max() == 3
    assert scoring.recount_scores(low)["precision"] == pytest.approx(0.75)


def test_recount_names_an_unreadable_heatmap(scored):
    engine, storage, ids = scored
    with Session(engine) as s, s.begin():
        res = s.scalars(select(ImageResult)
                        .where(ImageResult.run_id == ids["scored_run"])).one()
        res.heatmap_path = "/gone/heat.png"
    with Session(engine) as s:
        t = scoring.recount(s, storage, ids["scored_run"], 0.5)
        assert "cannot be read" in t.iloc[0]["problem"] and np.isnan(t.iloc[0]["n_pred"])
        with pytest.raises(ValueError, match="not scored"):
            scoring.image_outcome(s, storage, ids["scored_run"], ids["images"][0])


def test_threshold_curve_computed_once_then_read_back(scored):
    engine, storage, ids = scored
    run = ids["scored_run"]
    with Session(engine) as s:
        assert scoring.threshold_curve_for_run(s, storage, run) is None
        c = scoring.threshold_curve_for_run(s, storage, run, compute=True)
        again = scoring.threshold_curve_for_run(s, storage, run)
    assert c["source"] == "test images" and c["chosen"] == 0.5
    assert len(c["thresholds"]) == 44 and max(c["f1"]) == 1.0
    assert list(c["curves"]) == ["test images"] and c["chosen_on"] == "test"
    assert again["f1"] == c["f1"]


def test_count_results_with_a_region_and_density(scored):
    from db.models import Job

    engine, storage, ids = scored
    with Session(engine) as s, s.begin():
        run = s.get(ModelRun, ids["scored_run"])
        res = s.scalars(select(ImageResult).where(ImageResult.run_id == run.id)).one()
        job = Job(project_id=ids["project"], kind="count", status="done",
                  result={"run_dir": run.run_dir, "model": "scored", "threshold": 0.5,
                          "counts": [{"image_id": ids["scored_image"], "name": "s.png",
                                      "count": 3, "heatmap_path": res.heatmap_path}]})
        s.add(job)
        s.flush()
        job_id = job.id
    left = np.zeros((80, 80), bool)
    left[:, :40] = True
    with Session(engine) as s:
        whole = scoring.count_results(s, storage, job_id)
        part = scoring.count_results(s, storage, job_id, rois={ids["scored_image"]: left})
    assert whole.iloc[0][["count", "region"]].tolist() == [3, "whole image"]
    # 80 x 80 px at 1 um: 0.0064 mm²
    assert whole.iloc[0]["density_per_mm2"] == pytest.approx(3 / 0.0064)
    assert part.iloc[0][["count", "region"]].tolist() == [2, "region"]
    assert part.iloc[0]["area_mm2"] == pytest.approx(0.0032)


def test_a_counted_image_shows_the_cells_its_count_found(scored):
    """A count of a stored file (no project image): its pixels and the cells of its heatmap at
    the job's threshold, where the three p = 0.8 disks are and the p = 0.4 blob is not."""
    from core.objects import count_objects
    from core.render import draw_outlines
    from db.models import Job

    engine, storage, ids = scored
    rgb = np.random.default_rng(5).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    cells = [(15, 15), (15, 60), (60, 15)]
    with Session(engine) as s, s.begin():
        run = s.get(ModelRun, ids["scored_run"])
        heat_path = s.scalars(select(ImageResult.heatmap_path)
                              .where(ImageResult.run_id == run.id)).one()
        entry = {"item": 0, "name": "new.png", "path": storage.key(storage.put_image(rgb).path),
                 "height": 80, "width": 80, "pixel_size_um": 2.0}
        job = Job(project_id=ids["project"], kind="count", status="done",
                  config={"images": [entry], "batch": None},
                  result={"run_dir": run.run_dir, "model": "scored", "threshold": 0.5,
                          "counts": [{**entry, "count": 3, "heatmap_path": heat_path}]})
        s.add(job)
        s.flush()
        job.config = {**job.config, "batch": job.id}
        job_id = job.id
    with Session(engine) as s:
        table = scoring.count_results(s, storage, job_id)
        shown = scoring.counted_image(s, storage, job_id, 0)
        with pytest.raises(ValueError, match="no counted image 7"):
            scoring.counted_image(s, storage, job_id, 7)
    # 80 x 80 px of 2 um: 0.0256 mm² from the entry itself, not from any project image.
    assert table.iloc[0][["file", "item", "count"]].tolist() == ["new.png", 0, 3]
    assert table.iloc[0]["area_mm2"] == pytest.approx(0.0256)
    assert np.array_equal(shown.rgb, rgb) and shown.name == "new.png"
    assert count_objects(shown.labels) == 3
    assert all(shown.labels[c] > 0 for c in cells) and shown.labels[60, 60] == 0
    outlined = draw_outlines(shown.rgb, shown.labels, color=(0, 255, 255))
    changed = np.any(outlined != rgb, axis=-1)
    assert changed.any() and not changed[shown.labels == 0].any()


# ---- intervals and the bias warning ------------------------------------------------------------

def _counted_run(engine, project_id, counts, tmp_path, *, thresholds=None, metrics=None):
    """A run with one result per (n_true, n_pred) on fresh test images; its id."""
    import json

    run_dir = tmp_path / f"run{len(counts)}-{counts[0]}"
    run_dir.mkdir()
    if thresholds is not None:
        (run_dir / "thresholds.json").write_text(json.dumps(thresholds))
    with Session(engine) as s, s.begin():
        run = ModelRun(project_id=project_id, name=run_dir.name, run_dir=str(run_dir),
                       threshold=0.5, metrics=metrics or {})
        s.add(run)
        s.flush()
        for i, (n_true, n_pred) in enumerate(counts):
            img = Image(project_id=project_id, sha256=f"{run.id:032d}{i:032d}", path="/x.png",
                        original_name=f"c{i}.png", width=10, height=10, split="test")
            s.add(img)
            s.flush()
            tp = min(n_true, n_pred)
            s.add(ImageResult(run_id=run.id, image_id=img.id, tp=tp, fp=n_pred - tp,
                              fn=n_true - tp, n_true=n_true, n_pred=n_pred, iou=0.5))
        return run.id


def test_bias_limit_is_one_cell_or_five_percent():
    assert scoring.bias_limit(0) == 1.0 and scoring.bias_limit(20) == 1.0
    assert scoring.bias_limit(40) == 2.0 and scoring.bias_limit(100) == 5.0


def test_a_run_that_over_counts_says_so_and_one_within_the_limit_does_not(world, tmp_path):
    engine, _, ids = world
    over = _counted_run(engine, ids["project"], [(10, 12)] * 4, tmp_path)
    crowded = _counted_run(engine, ids["project"], [(60, 62)] * 4, tmp_path)  # 2 <= 5% of 60
    under = _counted_run(engine, ids["project"], [(10, 8), (10, 7), (12, 10)], tmp_path)
    with Session(engine) as s:
        got = scoring.run_reliability(s, over)
        assert (got.n_images, got.n_cells, got.mean_true_count, got.bias) == (4, 40, 10.0, 2.0)
        # Four identical images: every bootstrap draw is the same, so the interval is a point.
        assert got.intervals["bias"] == (2.0, 2.0) and got.intervals["mae"] == (2.0, 2.0)
        assert got.intervals["f1"] == pytest.approx((2 * 10 / 22, 2 * 10 / 22))
        assert "over-counts" in got.warning and "2.0 cells per image more" in got.warning
        assert "mean true count 10.0" in got.warning and "+2.0 to +2.0" in got.warning
        assert scoring.run_reliability(s, crowded).warning is None
        low = scoring.run_reliability(s, under)
        assert low.bias == pytest.approx(-7 / 3) and "under-counts" in low.warning
        assert "fewer than the ground truth" in low.warning


def test_a_run_without_results_falls_back_to_its_metrics(world, tmp_path):
    engine, _, ids = world
    with Session(engine) as s, s.begin():
        run = ModelRun(project_id=ids["project"], name="bare", run_dir=str(tmp_path),
                       threshold=0.5, metrics={"bias": -3.0, "mean_true_count": 20.0,
                                               "n_images": 5,
                                               "intervals": {"bias": [-4.0, -2.0]}})
        s.add(run)
        s.flush()
        run_id = run.id
    with Session(engine) as s:
        got = scoring.run_reliability(s, run_id)
    assert got.intervals == {"bias": (-4.0, -2.0)} and got.n_images == 5
    assert "under-counts" in got.warning and "-4.0 to -2.0" in got.warning


def test_runs_table_says_where_each_threshold_was_chosen(world, tmp_path):
    engine, storage, ids = world
    new = _counted_run(engine, ids["project"], [(10, 10)], tmp_path, thresholds={
        "best": 0.5, "knee": 0.6, "chosen": 0.5, "chosen_on": "validation",
        "curves": {"validation": {"thresholds": [0.5], "f1": [1.0], "cells": 73}}})
    old = _counted_run(engine, ids["project"], [(10, 11)], tmp_path, thresholds={
        "best": 0.5, "knee": 0.6, "chosen": 0.5, "curve": {"thresholds": [0.5], "f1": [1.0]}})
    bare = _counted_run(engine, ids["project"], [(10, 9)], tmp_path)
    with Session(engine) as s:
        table = scoring.runs_table(s, storage, ids["project"]).set_index("run_id")
    assert table.loc[new, "chosen_on"] == "validation"
    assert table.loc[new, "validation_cells"] == 73
    assert table.loc[old, "chosen_on"] == "train+validation"
    assert table.loc[bare, "chosen_on"] == "" and math.isnan(table.loc[bare, "validation_cells"])
    assert table.loc[old, "bias_ci"] == "1.00 to 1.00" and table.loc[new, "f1_ci"] == "1.00 to 1.00"
