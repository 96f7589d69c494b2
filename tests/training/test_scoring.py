"""Scores from the stored heatmaps through a run's scoring rule: recounts, curves, counts."""
import datetime as dt
import math

import numpy as np
import pytest
from skimage.draw import disk
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import adjudication, jobs, review, runs
from db.models import (AdjudicationDecision, AdjudicationItem, Approval, Image, ImageResult,
                       MaskVersion, ModelRun, ObjectDecision, ObjectOutcome, ReviewAssignment)
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
