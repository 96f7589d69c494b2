"""db.insights against a small hand-built project (rows written directly, counts known by hand)."""
import datetime as dt
import math

import numpy as np
import pytest
from skimage.draw import disk
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import insights
from db.engine import make_engine
from db.models import (AdjudicationDecision, AdjudicationItem, Approval, Base, Image,
                       ImageResult, MaskVersion, ModelRun, ObjectDecision, ObjectOutcome, Project,
                       ReviewAssignment, User)
from db.storage import Storage

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _at(minutes):
    return T0 + dt.timedelta(minutes=minutes)


def _mask(shape, centres, radius=5):
    m = np.zeros(shape, bool)
    for c in centres:
        m[disk(c, radius, shape=shape)] = True
    return m


@pytest.fixture
def world(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    storage = Storage(tmp_path / "data")
    with Session(engine) as s, s.begin():
        users = {n: User(name=n, role=r, password_hash="x") for n, r in
                 [("ann", "operator"), ("bob", "operator"), ("eve", "expert")]}
        s.add_all(users.values())
        p = Project(name="p", stain="yellow", pixel_size_um=1.0)
        s.add(p)
        s.flush()
        imgs = []
        for i, (split, animal) in enumerate([("train", "m1"), ("train", "m1"), ("test", "m2"),
                                             ("test", "m2"), ("unassigned", None)]):
            img = Image(project_id=p.id, sha256=f"{i:064d}", path=f"/nowhere/{i}.png",
                        original_name=f"img{i}.png", width=1000, height=1000, split=split,
                        animal=animal, region="CA1" if i % 2 else "DG")
            s.add(img)
            imgs.append(img)
        s.flush()
        # Every image gets a head version; images 0 and 2 are approved (ground truth).
        versions = []
        for i, img in enumerate(imgs):
            stored = storage.put_mask(_mask((40, 40), [(10, 10 + 8 * k) for k in range(i + 1)],
                                            radius=3))
            v = MaskVersion(image_id=img.id, source="auto", path=str(stored.path),
                            sha256=stored.sha256, object_count=i + 1, created_at=_at(i))
            s.add(v)
            s.flush()
            img.head_version_id = v.id
            versions.append(v)
        s.add_all([Approval(image_id=imgs[0].id, version_id=versions[0].id, created_at=_at(5)),
                   Approval(image_id=imgs[2].id, version_id=versions[2].id, created_at=_at(5))])
        # Two runs; the second is promoted and scored image 2 and 3.
        r1 = ModelRun(project_id=p.id, name="first", run_dir="/r1", threshold=0.5,
                      metrics={"f1": 0.7, "MAE": 2.0}, created_at=_at(10))
        r2 = ModelRun(project_id=p.id, name="second", run_dir="/r2", threshold=0.5,
                      metrics={"f1": 0.8, "precision": 0.9, "recall": 0.72, "mae": 1.5,
                               "median_ae": 1.0, "bias": -0.5, "iou": 0.6, "n_images": 2},
                      promoted=True, created_at=_at(20))
        s.add_all([r1, r2])
        s.flush()
        res2 = ImageResult(run_id=r2.id, image_id=imgs[2].id, tp=3, fp=1, fn=0, n_true=3,
                           n_pred=4, iou=0.7)
        res3 = ImageResult(run_id=r2.id, image_id=imgs[3].id, tp=2, fp=0, fn=2, n_true=4,
                           n_pred=2, iou=0.5)
        s.add_all([res2, res3])
        s.flush()
        # Outcomes: one sure TP, one borderline TP, one giant FP.
        s.add_all([
            ObjectOutcome(result_id=res2.id, outcome="TP", centroid_row=10, centroid_col=10,
                          bbox=[7, 7, 14, 14], area=100, probability=0.97),
            ObjectOutcome(result_id=res2.id, outcome="TP", centroid_row=10, centroid_col=26,
                          bbox=[7, 23, 14, 30], area=100, probability=0.52),
            ObjectOutcome(result_id=res2.id, outcome="FP", centroid_row=30, centroid_col=30,
                          bbox=[20, 20, 40, 40], area=900, probability=0.95),
            ObjectOutcome(result_id=res3.id, outcome="TP", centroid_row=5, centroid_col=5,
                          bbox=[2, 2, 9, 9], area=110, probability=0.9),
            ObjectOutcome(result_id=res3.id, outcome="FN", centroid_row=20, centroid_col=5,
                          bbox=[17, 2, 24, 9], area=100, probability=0.3),
        ])
        s.flush()
        ids = {"project": p.id, "images": [i.id for i in imgs], "versions": [v.id for v in versions],
               "users": {n: u.id for n, u in users.items()}, "runs": [r1.id, r2.id]}
    return engine, storage, ids


def test_runs_overview_reads_every_spelling_of_a_score(world):
    engine, _, ids = world
    with Session(engine) as s:
        t = insights.runs_overview(s, ids["project"])
    assert list(t["name"]) == ["first", "second"]
    first, second = t.iloc[0], t.iloc[1]
    assert first["f1"] == 0.7 and first["mae"] == 2.0 and math.isnan(first["recall"])
    assert (second["medae"], second["mean_iou"], second["bias"]) == (1.0, 0.6, -0.5)
    assert bool(second["promoted"]) and not bool(first["promoted"])


def test_run_results_one_row_per_test_image(world):
    engine, _, ids = world
    with Session(engine) as s:
        t = insights.run_results(s, ids["runs"][1])
    assert list(t["name"]) == ["img2.png", "img3.png"]
    assert list(t["error"]) == [1, -2] and list(t["abs_error"]) == [1, 2]
    assert list(t["fp"]) == [1, 0]
    with Session(engine) as s:
        assert insights.run_results(s, ids["runs"][0]).empty


def test_training_data_counts_images_and_approved_masks(world):
    engine, _, ids = world
    with Session(engine) as s:
        got = insights.training_data(s, ids["project"])
    assert got == {"train_images": 2, "test_images": 2, "unassigned_images": 1,
                   "train_approved": 1, "test_approved": 1}


def test_image_counts_prefer_ground_truth_and_group_with_density(world):
    engine, _, ids = world
    with Session(engine) as s:
        t = insights.image_counts(s, ids["project"], run_id=ids["runs"][1])
        g = insights.group_summary(s, ids["project"], "animal")
        gp = insights.group_summary(s, ids["project"], "animal", run_id=ids["runs"][1])
    assert list(t["count"]) == [1, 2, 3, 4, 5]
    assert list(t["approved"]) == [True, False, True, False, False]
    assert t["n_pred"].tolist()[2:4] == [4, 2]
    g = g.set_index("animal")
    assert g.loc["m1", "total"] == 3 and g.loc["m2", "total"] == 7 and g.loc["(none)", "total"] == 5
    # 1000 x 1000 px at 1 um = 1 mm² per image
    assert g.loc["m2", "density_per_mm2"] == pytest.approx(3.5)
    assert gp.set_index("animal").loc["m2", "total"] == 6 and len(gp) == 1
    with Session(engine) as s, pytest.raises(ValueError, match="Group by"):
        insights.group_summary(s, ids["project"], "colour")


def test_image_counts_show_split_locks(world):
    from db.projects import lock_splits

    engine, _, ids = world
    with Session(engine) as s, s.begin():
        assert not insights.image_counts(s, ids["project"])["split_locked"].any()
        third = int(insights.image_counts(s, ids["project"])["image_id"][2])
        lock_splits(s, [third])
    with Session(engine) as s:
        t = insights.image_counts(s, ids["project"])
    assert t["split_locked"].dtype == bool
    assert t.loc[t["split_locked"], "image_id"].tolist() == [third]


def test_queue_orders_unsure_then_disagreement_then_sent(world):
    engine, _, ids = world
    img = ids["images"][1]
    with Session(engine) as s, s.begin():
        def item(reason, kind="mask_object", priority=0.0, minute=0, row=10.0):
            it = AdjudicationItem(project_id=ids["project"], image_id=img, kind=kind,
                                  reason=reason, version_id=ids["versions"][1], label=1,
                                  centroid_row=row, centroid_col=10.0, bbox=[7, 7, 14, 14],
                                  priority=priority, created_at=_at(minute))
            s.add(it)
            return it
        item("sent", kind="run_fp", minute=1, row=30)
        item("disagreement", minute=2, row=20)
        item("unsure", minute=3)
        item("unsure", priority=5.0, minute=4, row=35)
        closed = item("unsure", minute=0, row=38)
        closed.status = "decided"
        s.add(ObjectDecision(image_id=img, version_id=ids["versions"][1], label=1, cell_key=7,
                             centroid_row=10, centroid_col=10, bbox=[7, 7, 14, 14],
                             user_id=ids["users"]["ann"], verdict="unsure", reason="dim"))
    with Session(engine) as s:
        q = insights.adjudication_queue(s, ids["project"])
    assert list(q["reason"]) == ["unsure", "unsure", "disagreement", "sent"]
    assert list(q["priority"])[:2] == [5.0, 0.0]
    votes = q.iloc[1]["votes"]
    assert [(v["user"], v["verdict"], v["reason"]) for v in votes] == [("ann", "unsure", "dim")]
    with Session(engine) as s:
        assert len(insights.adjudication_queue(s, ids["project"], limit=2)) == 2


def test_model_doubt_candidates_borderline_and_odd_sized_first(world):
    engine, _, ids = world
    with Session(engine) as s:
        c = insights.model_doubt_candidates(s, ids["project"])
    # p = 0.52 at threshold 0.5, and an FP nine times the usual area; the sure ones stay out.
    assert len(c) == 2
    assert set(c["probability"]) == {0.52, 0.95}
    assert (c["doubt"] >= insights.MIN_DOUBT).all()
    with Session(engine) as s, s.begin():
        s.add(AdjudicationItem(project_id=ids["project"], image_id=ids["images"][2],
                               kind="run_fp", reason="sent", centroid_row=31, centroid_col=29,
                               bbox=[20, 20, 40, 40]))
    with Session(engine) as s:
        assert list(insights.model_doubt_candidates(s, ids["project"])["probability"]) == [0.52]


def test_operator_agreement_before_and_after_adjudication(world):
    engine, storage, ids = world
    u = ids["users"]
    with Session(engine) as s, s.begin():
        rows = []
        # Image 0: ann sees 3 cells, bob 2 (bob missed the one at (30, 30)).
        # Image 1: ann 2, bob 2, the same cells.
        for img_i, (a_cells, b_cells) in enumerate([
                ([(10, 10), (10, 25), (30, 30)], [(10, 10), (10, 25)]),
                ([(10, 10), (25, 25)], [(10, 10), (25, 25)])]):
            img = ids["images"][img_i]
            for user, cells in (("ann", a_cells), ("bob", b_cells)):
                stored = storage.put_mask(_mask((40, 40), cells))
                v = MaskVersion(image_id=img, source="manual", path=str(stored.path),
                                sha256=stored.sha256, object_count=len(cells),
                                author_id=u[user])
                s.add(v)
                s.flush()
                rows.append(ReviewAssignment(image_id=img, user_id=u[user], blind=True,
                                             done=True, version_id=v.id))
        s.add_all(rows)
        # The expert keeps the disputed cell: bob's count rises to 3.
        it = AdjudicationItem(project_id=ids["project"], image_id=ids["images"][0],
                              kind="mask_object", reason="disagreement", centroid_row=30,
                              centroid_col=30, bbox=[25, 25, 35, 35], status="decided")
        s.add(it)
        s.flush()
        s.add(AdjudicationDecision(item_id=it.id, expert_id=u["eve"], verdict="keep",
                                   reason="clear soma"))
    with Session(engine) as s:
        ag = insights.operator_agreement(s, storage, ids["project"])
    assert list(ag.table["count_a"]) == [3, 2] and list(ag.table["count_b"]) == [2, 2]
    assert list(ag.table["count_b_after"]) == [3, 2]
    assert ag.before.bias == pytest.approx(0.5) and ag.before.n == 2
    assert ag.after.bias == 0.0 and ag.after.sd == 0.0
    assert list(ag.table["operator_a"]) == ["ann", "ann"]


def test_operator_agreement_without_double_reviews_is_empty(world):
    engine, storage, ids = world
    with Session(engine) as s:
        ag = insights.operator_agreement(s, storage, ids["project"])
    assert ag.table.empty and ag.before is None and ag.after is None


def test_image_history_lists_versions_approvals_votes_and_decisions(world):
    engine, _, ids = world
    img = ids["images"][0]
    with Session(engine) as s, s.begin():
        s.add(ObjectDecision(image_id=img, version_id=ids["versions"][0], label=1, cell_key=1,
                             centroid_row=10, centroid_col=10, bbox=[7, 7, 14, 14],
                             user_id=ids["users"]["ann"], verdict="unsure", reason="faint",
                             created_at=_at(30)))
        it = AdjudicationItem(project_id=ids["project"], image_id=img, kind="mask_object",
                              reason="unsure", centroid_row=10, centroid_col=10,
                              bbox=[7, 7, 14, 14], status="decided")
        s.add(it)
        s.flush()
        s.add(AdjudicationDecision(item_id=it.id, expert_id=ids["users"]["eve"], verdict="drop",
                                   reason="debris", created_at=_at(40)))
    with Session(engine) as s:
        h = insights.image_history(s, img)
    assert list(h["what"])[-2:] == ["vote: unsure", "adjudicated: drop"]
    assert h.iloc[-1]["who"] == "eve" and "debris" in h.iloc[-1]["detail"]
    assert "version (auto)" in set(h["what"]) and "approved" in set(h["what"])


@pytest.fixture
def scored(world, tmp_path):
    """A run scored on one 80x80 image: three clear cells and one faint blob (p = 0.4)."""
    from core.postprocess import PostprocessParams

    engine, storage, ids = world
    truth = _mask((80, 80), [(15, 15), (15, 60), (60, 15)], radius=6)
    heat = np.where(truth, 0.8, 0.05).astype(np.float32)
    heat[disk((60, 60), 6)] = 0.4
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Session(engine) as s, s.begin():
        img = Image(project_id=ids["project"], sha256="f" * 64, path="/x.png", original_name="s.png",
                    width=80, height=80, split="test")
        s.add(img)
        s.flush()
        stored = storage.put_mask(truth)
        v = MaskVersion(image_id=img.id, source="manual", path=str(stored.path),
                        sha256=stored.sha256, object_count=3)
        s.add(v)
        s.flush()
        run = ModelRun(project_id=ids["project"], name="scored", run_dir=str(run_dir),
                       threshold=0.5, config={"postprocess":
                                              PostprocessParams.paper(cell_diameter=10).to_dict()})
        s.add(run)
        s.flush()
        s.add(ImageResult(run_id=run.id, image_id=img.id, version_id=v.id, tp=3, fp=0, fn=0,
                          n_true=3, n_pred=3, iou=1.0,
                          heatmap_path=str(storage.put_heatmap(heat).path)))
        ids = {**ids, "scored_run": run.id, "scored_image": img.id}
    return engine, storage, ids


def test_recount_moves_with_the_threshold(scored):
    engine, storage, ids = scored
    run, img = ids["scored_run"], ids["scored_image"]
    with Session(engine) as s:
        high = insights.recount(s, storage, run, 0.5)
        low = insights.recount(s, storage, run, 0.3)
        o = insights.image_outcome(s, storage, run, img, 0.3)
    assert high.iloc[0][["n_true", "n_pred", "tp", "fp", "fn"]].tolist() == [3, 3, 3, 0, 0]
    assert low.iloc[0][["n_pred", "tp", "fp"]].tolist() == [4, 3, 1]
    assert o.match.unmatched_pred and o.pred_labels.max() == 4 and o.true_labels.max() == 3
    assert insights.recount_scores(low)["precision"] == pytest.approx(0.75)


def test_recount_names_an_unreadable_heatmap(scored):
    engine, storage, ids = scored
    with Session(engine) as s, s.begin():
        res = s.scalars(select(ImageResult)
                        .where(ImageResult.run_id == ids["scored_run"])).one()
        res.heatmap_path = "/gone/heat.png"
    with Session(engine) as s:
        t = insights.recount(s, storage, ids["scored_run"], 0.5)
        assert "cannot be read" in t.iloc[0]["problem"] and np.isnan(t.iloc[0]["n_pred"])
        with pytest.raises(ValueError, match="not scored"):
            insights.image_outcome(s, storage, ids["scored_run"], ids["images"][0])


def test_threshold_curve_computed_once_then_read_back(scored):
    engine, storage, ids = scored
    run = ids["scored_run"]
    with Session(engine) as s:
        assert insights.threshold_curve_for_run(s, storage, run) is None
        c = insights.threshold_curve_for_run(s, storage, run, compute=True)
        again = insights.threshold_curve_for_run(s, storage, run)
    assert c["source"] == "test images" and c["chosen"] == 0.5
    assert len(c["thresholds"]) == 37 and max(c["f1"]) == 1.0
    assert again["f1"] == c["f1"]


def test_queue_model_doubts_puts_them_in_the_experts_queue(world):
    engine, storage, ids = world
    with Session(engine) as s:
        c = insights.model_doubt_candidates(s, ids["project"])
    assert dict(zip(c["probability"], c["why"])) == {0.52: "uncertain", 0.95: "size"}
    with Session(engine) as s, s.begin():
        n = insights.queue_model_doubts(s, storage, ids["project"], user_id=ids["users"]["eve"])
    with Session(engine) as s:
        q = insights.adjudication_queue(s, ids["project"])
        assert insights.model_doubt_candidates(s, ids["project"]).empty
    # The borderline TP lies on the ground truth (image 2 has cells at (10, 10+8k)); the FP is
    # queued as the run's FP.
    assert n == 2 and sorted(q["reason"]) == ["prediction_fp", "uncertain"]
    assert list(q["rank"]) == [2, 3]


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
        whole = insights.count_results(s, storage, job_id)
        part = insights.count_results(s, storage, job_id, rois={ids["scored_image"]: left})
    assert whole.iloc[0][["count", "region"]].tolist() == [3, "whole image"]
    # 80 x 80 px at 1 um: 0.0064 mm²
    assert whole.iloc[0]["density_per_mm2"] == pytest.approx(3 / 0.0064)
    assert part.iloc[0][["count", "region"]].tolist() == [2, "region"]
    assert part.iloc[0]["area_mm2"] == pytest.approx(0.0032)


def test_canvas_region_maps_a_drawn_rectangle_to_full_resolution():
    from core.strokes import TOOL_COLORS

    rect = {"type": "rect", "left": 10, "top": 5, "width": 20, "height": 10,
            "stroke": TOOL_COLORS["add"], "strokeWidth": 0, "fill": "rgba(0,0,0,0.2)",
            "scaleX": 1, "scaleY": 1, "angle": 0, "originX": "left", "originY": "top"}
    region = insights.canvas_region([rect], (100, 200), 0.5)   # canvas at half size
    rows, cols = np.nonzero(region)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 29, 20, 59)
    with pytest.raises(ValueError, match="Draw a polygon"):
        insights.canvas_region([], (100, 200), 0.5)


def test_item_crop_outlines_the_object_magnified(world):
    from core.io import encode_png

    engine, storage, ids = world
    rgb = np.zeros((40, 40, 3), np.uint8)
    stored = storage.put_image(rgb)
    with Session(engine) as s, s.begin():
        img = s.get(Image, ids["images"][1])
        img.path, img.width, img.height = str(stored.path), 40, 40
        it = AdjudicationItem(project_id=ids["project"], image_id=img.id, kind="mask_object",
                              reason="unsure", version_id=ids["versions"][1], label=1,
                              centroid_row=10, centroid_col=10, bbox=[7, 7, 14, 14])
        s.add(it)
        s.flush()
        item_id = it.id
    with Session(engine) as s:
        crop = insights.item_crop(s, storage, item_id, margin=5, zoom=3)
    assert crop.shape == (3 * 17, 3 * 17, 3)       # rows 2..19, cut at the box + margin
    yellow = np.all(crop == insights.ITEM_COLOUR, axis=-1)
    cyan = np.all(crop == insights.CONTEXT_COLOUR, axis=-1)
    assert yellow.any() and cyan.any()             # the object, and its neighbour at col 18
    assert encode_png(crop)


def test_jobs_table_durations(world):
    from db.models import Job

    engine, _, ids = world
    with Session(engine) as s, s.begin():
        s.add_all([Job(project_id=ids["project"], kind="train", status="done",
                       started_at=_at(0), finished_at=_at(90)),
                   Job(project_id=ids["project"], kind="train", status="running",
                       started_at=_at(100)),
                   Job(project_id=ids["project"], kind="count", status="queued")])
    with Session(engine) as s:
        t = insights.jobs_table(s, ids["project"], kinds=("train",), now=_at(130))
    assert list(t["status"]) == ["running", "done"]
    assert list(t["duration_s"]) == [1800.0, 5400.0]
