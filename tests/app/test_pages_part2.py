"""AppTest for every page of the workbench's second half (adjudicate, train, predictions, dashboard,
count, export): each role, and one scripted interaction per page.

The shared database (tests/app/conftest.py) gets one more run here, ``part2-run``: scored on the
demo test images from heatmaps drawn from their ground truth plus one faint extra blob per image,
so that lowering the threshold adds exactly one FP per image. No keras is needed for it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from core.objects import count_objects, object_info
from db import adjudication
from tests.app.helpers import image_with_cells

# A heatmap of 0.7 as stored and read back: uint8 levels, round(0.7 x 255) / 255.
STORED_07 = float(np.rint(0.7 * 255) / 255)

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("admin", "expert", "operator", "viewer")
PAGES = ("pages/adjudicate.py", "pages/train.py", "pages/predictions.py", "pages/dashboard.py",
         "pages/count.py", "pages/export.py")
ALLOWED = {
    "pages/adjudicate.py": ("expert", "admin"),
    "pages/train.py": ("operator", "expert", "admin"),
    "pages/predictions.py": ROLES,
    "pages/dashboard.py": ROLES,
    "pages/count.py": ("operator", "expert", "admin"),
    "pages/export.py": ROLES,
}
FAINT = 0.35  # the extra blob's probability: counted below it, not above


def _errors(at):
    return [e.value for e in at.error]


def _empty_spot(mask, margin):
    """The first grid point (row, col) at least ``margin`` px from every cell of ``mask``."""
    from scipy import ndimage as ndi

    far = ndi.distance_transform_edt(~mask) >= margin
    for row in range(margin, mask.shape[0] - margin, 10):
        for col in range(margin, mask.shape[1] - margin, 10):
            if far[row, col]:
                return row, col
    raise AssertionError("no room for the faint blob")


@pytest.fixture(scope="session")
def part2_run(app_db, tmp_path_factory):
    """A scored run on the demo test images, built once (id of the ModelRun)."""
    from sqlalchemy import select

    from core.postprocess import PostprocessParams
    from db import masks
    from db.models import Image, ImageResult, ModelRun, ObjectOutcome

    run_dir = tmp_path_factory.mktemp("part2-run")
    params = PostprocessParams.paper(cell_diameter=20)
    (run_dir / "thresholds.json").write_text(json.dumps({"best": 0.5, "knee": 0.6,
                                                         "chosen": 0.5}))
    with app_db.session() as s:
        tests = s.scalars(select(Image).where(Image.project_id == app_db.project_id,
                                              Image.split == "test").order_by(Image.id)).all()
        assert tests, "the shared database has no test images"
        curve = {"thresholds": [0.3, 0.5, 0.7], "f1": [0.8, 0.9, 0.85],
                 "precision": [0.7, 0.9, 0.95], "recall": [0.95, 0.9, 0.78]}
        run = ModelRun(project_id=app_db.project_id, name="part2-run", run_dir=str(run_dir),
                       threshold=0.5, config={"postprocess": params.to_dict()},
                       metrics={"f1": 0.9, "precision": 0.9, "recall": 0.9, "mae": 0.5,
                                "medae": 0.5, "bias": 0.0, "mean_iou": 0.8,
                                "n_images": len(tests), "threshold_curve": curve})
        s.add(run)
        s.flush()
        for img in tests:
            truth_version = masks.ground_truth(s, img.id)
            labels = app_db.storage.read_labels(truth_version.path)
            truth = labels > 0
            heat = np.where(truth, 0.9, 0.02).astype(np.float32)
            # A faint blob away from every cell: an FP only when the threshold drops below it.
            row, col = _empty_spot(truth, 25)
            rr, cc = disk((row, col), 10, shape=truth.shape)
            heat[rr, cc] = FAINT
            n, pieces = count_objects(labels), count_objects(truth)
            res = ImageResult(run_id=run.id, image_id=img.id, version_id=truth_version.id,
                              tp=n, fp=max(0, pieces - n), fn=0, n_true=n, n_pred=pieces, iou=1.0,
                              heatmap_path=str(app_db.storage.put_heatmap(heat).path))
            s.add(res)
            s.flush()
            for info in object_info(labels)[:3]:
                s.add(ObjectOutcome(result_id=res.id, outcome="TP", centroid_row=info.centroid[0],
                                    centroid_col=info.centroid[1], bbox=list(info.bbox),
                                    area=info.area, probability=0.9))
            s.add(ObjectOutcome(result_id=res.id, outcome="FN", centroid_row=float(row),
                                centroid_col=float(col),
                                bbox=[row - 10, col - 10, row + 11, col + 11], area=300,
                                probability=FAINT))
        return run.id


# ---------------------------------------------------------------- roles

def _page_alone(app_db, role, page):
    """The page's own script, signed in as ``role``, without the router (which would not even
    list a page the role may not open): the page must refuse by itself."""
    from streamlit.testing.v1 import AppTest

    from tests.app.helpers import signed_in

    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    signed_in(at, app_db, role)
    return at.run()


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_every_page_with_every_role(app_as, app_db, part2_run, page, role):
    if role in ALLOWED[page]:
        at = app_as(role, page)
        assert not at.exception, at.exception
        assert not [e for e in _errors(at) if "this page needs the" in e]
    else:
        at = _page_alone(app_db, role, page)
        assert not at.exception, at.exception
        assert [e for e in _errors(at) if "this page needs the" in e]


def test_signed_out_is_refused_everywhere(app_as):
    from streamlit.testing.v1 import AppTest

    for page in PAGES:
        at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
        assert not at.exception
        assert any("Sign in first" in e for e in _errors(at))


# ---------------------------------------------------------------- dashboard

def test_dashboard_shows_scores_and_charts(app_as, part2_run):
    at = app_as("viewer", "pages/dashboard.py")
    assert not at.exception
    at.selectbox(key="dash_run").set_value(part2_run).run()
    assert not at.exception
    charts = at.get("plotly_chart")
    # F1 against threshold, error histogram + box, predicted vs true (+ runs over time if > 1)
    assert len(charts) >= 3
    specs = [json.loads(c.proto.spec) for c in charts]
    titles = " | ".join(str(sp.get("layout", {}).get("title", {}).get("text", "")) for sp in specs)
    assert "threshold" in titles and "Absolute count error" in titles
    assert "Predicted against true" in titles
    assert [m.value for m in at.metric][:1] == ["0.90"]
    assert any("Paper (preprint)" in c.value for c in at.caption)


# ---------------------------------------------------------------- adjudicate

def test_expert_adjudicates_an_item_and_a_new_version_appears(app_as, app_db):
    from sqlalchemy import select

    from db.models import AdjudicationDecision, Image, MaskVersion

    with app_db.session() as s:
        img, head, label = image_with_cells(s, app_db)
        item = adjudication.queue_mask_object(s, app_db.storage, img.id, head.id, label,
                                              reason="unsure", note="part2 test item")
        item.priority = 1e6  # first in the queue whatever other tests left there
        item_id, image_id, before = item.id, img.id, head.id
    at = app_as("expert", "pages/adjudicate.py")
    assert not at.exception
    assert at.image, "the crop of the item is shown"
    assert any("part2 test item" in t.value for t in at.text)
    at.text_input(key="adj_reason_text").input("faint but round").run()
    at.button(key="adj_drop").click().run()
    assert not at.exception, at.exception
    assert any("now has version" in s.value for s in at.success), (_errors(at), at.caption)
    with app_db.session() as s:
        decision = s.scalars(select(AdjudicationDecision)
                             .where(AdjudicationDecision.item_id == item_id)).one()
        version = s.get(MaskVersion, decision.version_id)
        assert decision.verdict == "drop" and "faint but round" in decision.reason
        assert version.source == "adjudicated" and version.parent_id == before
        assert s.get(Image, image_id).head_version_id == version.id
    # The history tab lists the decision with its author.
    at.selectbox(key="adj_history_pick").set_value(image_id).run()
    history = at.dataframe[-1].value
    assert "adjudicated: drop" in set(history["what"]) and "expert" in set(history["who"])


def test_operator_cannot_adjudicate(app_db):
    at = _page_alone(app_db, "operator", "pages/adjudicate.py")
    assert any("this page needs the expert or admin role" in e for e in _errors(at))
    assert not at.button


# ---------------------------------------------------------------- export

def test_viewer_exports_the_counts_of_the_test_split(app_as, app_db):
    from db.models import Image
    from sqlalchemy import func, select

    at = app_as("viewer", "pages/export.py")
    assert not at.exception
    at.selectbox(key="exp_split").set_value("test").run()
    at.button(key="exp_prepare").click().run()
    assert not at.exception and not _errors(at)
    kind, file_name, mime, data = at.session_state["exp_ready"]
    lines = data.decode().strip().splitlines()
    with app_db.session() as s:
        n_test = s.scalar(select(func.count(Image.id)).where(
            Image.project_id == app_db.project_id, Image.split == "test"))
    assert file_name == "counts.csv" and lines[0].startswith("image,")
    assert len(lines) == 1 + n_test
    at.radio(key="exp_format").set_value("COCO JSON").run()
    at.button(key="exp_prepare").click().run()
    doc = json.loads(at.session_state["exp_ready"][3])
    assert len(doc["images"]) == n_test and doc["annotations"]


# ---------------------------------------------------------------- predictions

def test_threshold_slider_changes_the_counts_and_an_fn_goes_to_the_queue(app_as, app_db,
                                                                         part2_run):
    from sqlalchemy import select

    from db.models import AdjudicationItem

    at = app_as("operator", "pages/predictions.py")
    at.selectbox(key="pred_run").set_value(part2_run).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    n_images = len(at.dataframe[0].value)
    before, fp_before = int(metrics["Predicted"]), int(metrics["FP"])
    # (a generator cell carved into two pieces is one true cell and two objects: an FP at any t)
    fp_each = at.dataframe[0].value.set_index("name")["fp"]
    at.slider(key=f"pred_threshold_{part2_run}").set_value(0.3).run()
    assert not at.exception and not _errors(at)
    metrics = {m.label: m.value for m in at.metric}
    # the faint blob (p = 0.35) of every test image now counts, and is an FP
    assert int(metrics["Predicted"]) == before + n_images
    assert int(metrics["FP"]) == fp_before + n_images
    assert (at.dataframe[0].value.set_index("name")["fp"] == fp_each + 1).all()
    assert at.image
    # back up: the counts come back; then one click sends the stored FN to the experts
    at.slider(key=f"pred_threshold_{part2_run}").set_value(0.5).run()
    assert int({m.label: m.value for m in at.metric}["Predicted"]) == before
    send = [b for b in at.button if b.key and b.key.startswith("pred_send_")]
    assert send
    send[0].click().run()
    assert not at.exception and any("experts' queue" in s.value for s in at.success)
    with app_db.session() as s:
        assert s.scalars(select(AdjudicationItem).where(AdjudicationItem.run_id == part2_run,
                                                        AdjudicationItem.kind == "run_fn")).all()


def test_viewer_sees_predictions_but_changes_nothing(app_as, part2_run):
    at = app_as("viewer", "pages/predictions.py")
    at.selectbox(key="pred_run").set_value(part2_run).run()
    at.slider(key=f"pred_threshold_{part2_run}").set_value(0.3).run()
    assert not at.exception
    assert not [b for b in at.button if b.key and (b.key == "pred_keep"
                                                    or b.key.startswith("pred_send_"))]


# ---------------------------------------------------------------- train

def test_queue_a_tiny_training_job_and_see_it_listed(app_as, app_db, monkeypatch):
    from sqlalchemy import select

    from db.models import Job
    from training import tasks

    started = []
    # No worker process in the test: the job must only be queued and listed.
    monkeypatch.setattr(tasks, "ensure_worker", lambda settings: started.append(1))
    at = app_as("operator", "pages/train.py")
    assert not at.exception
    assert [m.value for m in at.metric][1] != "0"        # approved train masks exist
    at.number_input(key="train_base_filters").set_value(2)
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_crop_size").set_value(64)
    at.number_input(key="train_steps").set_value(1)
    at.text_input(key="train_name").input("tiny")
    at.button(key="train_retrain").click()  # the form's Retrain
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any("is queued" in s.value for s in at.success)
    with app_db.session() as s:
        job = s.scalars(select(Job).where(Job.kind == "train").order_by(Job.id.desc())).first()
        assert job.status == "queued" and job.config["train"]["base_filters"] == 2
        assert job.config["name"] == "tiny" and job.config["train"]["epochs"] == 1
    assert started
    # Listed with its progress; cancel marks it.
    assert any(f"Job {job.id}" in p.proto.text for p in at.get("progress"))
    at.button(key=f"train_cancel_{job.id}").click().run()
    with app_db.session() as s:
        assert s.get(Job, job.id).cancel_requested or s.get(Job, job.id).status == "cancelled"
    # The job this session watched is announced when it ends (a queued one ends at once).
    at.run()
    assert any(f"Job {job.id} (train) was cancelled" in i.value for i in at.info)


def test_only_admins_promote(app_as, part2_run):
    at = app_as("expert", "pages/train.py")
    assert not [b for b in at.button if b.key == "train_promote"]
    at = app_as("admin", "pages/train.py")
    assert [b for b in at.button if b.key == "train_promote"]


# ---------------------------------------------------------------- count

@pytest.fixture
def promoted(app_db, part2_run):
    """part2-run promoted for one test, then the project's previous state restored."""
    from sqlalchemy import select

    from db.models import ModelRun

    with app_db.session() as s:
        before = {r.id: r.promoted for r in s.scalars(select(ModelRun).where(
            ModelRun.project_id == app_db.project_id))}
        for r in s.scalars(select(ModelRun).where(ModelRun.project_id == app_db.project_id)):
            r.promoted = r.id == part2_run
    yield part2_run
    with app_db.session() as s:
        for run_id, flag in before.items():
            s.get(ModelRun, run_id).promoted = flag


def _two_cell_heatmap(shape):
    """A heatmap with two cells of p = 0.9 (and nothing else above 0.05)."""
    heat = np.full(shape, 0.02, np.float32)
    for centre in ((30, 30), (60, 90)):
        rr, cc = disk(centre, 10, shape=shape)
        heat[rr, cc] = 0.9
    return heat


def test_count_two_images_one_corrupt(app_as, app_db, promoted, monkeypatch):
    from core.io import encode_png
    from core.synthetic import make_image
    from db import jobs as db_jobs
    from db.models import Job
    from training import tasks

    monkeypatch.setattr(tasks, "ensure_worker", lambda settings: None)
    folder = app_db.settings.data_dir / "incoming" / "count-two"
    folder.mkdir(parents=True, exist_ok=True)
    rgb, _ = make_image(np.random.default_rng(7), shape=(96, 128))
    (folder / "good.png").write_bytes(encode_png(rgb))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")

    at = app_as("operator", "pages/count.py")
    assert not at.exception
    at.radio(key="count_source").set_value("Folder on the server").run()
    at.text_input(key="count_folder").input(str(folder)).run()
    at.button(key="count_go").click().run()
    assert not at.exception, at.exception
    problems = at.session_state["count_problems"]
    assert list(problems["file"]) == ["broken.png"] and "broken.png" in problems["problem"][0]
    job_id = at.session_state["count_job"]
    heat = _two_cell_heatmap((96, 128))
    with app_db.session() as s:
        job = s.get(Job, job_id)
        assert job.kind == "count" and [e["name"] for e in job.config["images"]] == ["good.png"]
        entry = job.config["images"][0]
        # The store holds the counted pixels, as read.
        assert np.array_equal(app_db.storage.read_image(entry["path"]), rgb)
        # What a worker would write when it is done (the worker itself is tested elsewhere).
        db_jobs.finish_job(s, job_id, result={
            "run_dir": job.config["run_dir"], "model": "part2-run", "threshold": 0.5,
            "counts": [{**entry, "count": 2, "heatmap_path": app_db.storage.key(
                app_db.storage.put_heatmap(heat).path)}]})
    at.run()
    assert not at.exception, at.exception
    counts = at.dataframe[-1].value
    assert counts["file"].tolist() == ["good.png"] and counts["count"].tolist() == [2]
    csv = at.get("download_button")
    assert csv, "a CSV download is offered"
    # The counted image is shown with the cells found on it.
    captions = [c for i in at.get("image") for c in i.captions]
    assert any("good.png" in c and "outlined" in c for c in captions), captions
    # The region tool's words say what the polygon tool does (it ignores right clicks).
    said = " ".join(c.value for c in at.caption)
    assert "click the first corner again to close" in said and "right-click" not in said


def _project_as_seen(app_db):
    """What a count must leave alone: the sidebar's state, the review queue and the export."""
    from db import exporting, review

    with app_db.session() as s:
        state = review.project_state(s, app_db.project_id)
        queue = review.review_queue(s, app_db.project_id, page_size=1000)
        return ({k: state[k] for k in ("n_images", "n_approved", "share_reviewed")},
                (queue.total, queue.counts, [r.image_id for r in queue.rows]),
                exporting.export_counts(s, app_db.project_id))


def test_counting_leaves_the_project_as_it_was(app_as, app_db, promoted, monkeypatch):
    """Counted images belong to the count: no new project image, queue entry or export line."""
    from core.io import encode_png
    from core.synthetic import make_image
    from training import tasks

    monkeypatch.setattr(tasks, "ensure_worker", lambda settings: None)
    before = _project_as_seen(app_db)
    rgb, _ = make_image(np.random.default_rng(11), shape=(96, 128))
    folder = app_db.settings.data_dir / "incoming" / "count-fresh"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fresh.png").write_bytes(encode_png(rgb))
    at = app_as("operator", "pages/count.py")
    at.radio(key="count_source").set_value("Folder on the server").run()
    at.text_input(key="count_folder").input(str(folder)).run()
    at.button(key="count_go").click().run()
    assert not at.exception, at.exception
    assert at.session_state["count_job"]
    assert _project_as_seen(app_db) == before


def test_add_to_project_imports_the_counted_images_as_a_batch(app_as, app_db, promoted,
                                                              monkeypatch):
    from core.io import encode_png
    from core.synthetic import make_image
    from db import jobs as db_jobs
    from db import projects
    from db.models import Image, Job
    from training import tasks

    monkeypatch.setattr(tasks, "ensure_worker", lambda settings: None)
    folder = app_db.settings.data_dir / "incoming" / "count-add"
    folder.mkdir(parents=True, exist_ok=True)
    rgb, _ = make_image(np.random.default_rng(13), shape=(96, 128))
    (folder / "keep-me.png").write_bytes(encode_png(rgb))
    before = _project_as_seen(app_db)
    at = app_as("operator", "pages/count.py")
    at.radio(key="count_source").set_value("Folder on the server").run()
    at.text_input(key="count_folder").input(str(folder)).run()
    at.button(key="count_go").click().run()
    job_id = at.session_state["count_job"]
    with app_db.session() as s:
        job = s.get(Job, job_id)
        entry = job.config["images"][0]
        db_jobs.finish_job(s, job_id, result={
            "run_dir": job.config["run_dir"], "model": "part2-run", "threshold": 0.5,
            "counts": [{**entry, "count": 2, "heatmap_path": app_db.storage.key(
                app_db.storage.put_heatmap(_two_cell_heatmap((96, 128))).path)}]})
    at.run()
    assert at.selectbox(key="count_job_pick").value == job_id   # the new count, not an older one
    assert _project_as_seen(app_db) == before
    at.button(key="count_add").click().run()
    assert not at.exception and not _errors(at), (at.exception, _errors(at))
    assert any("Imported 1 image" in m.value for m in at.success)
    with app_db.session() as s:
        added = s.query(Image).filter(Image.project_id == app_db.project_id,
                                      Image.original_name == "keep-me.png").one()
        image_id, batch_id, status, path = added.id, added.batch_id, added.review_status, added.path
    try:
        assert status == "to_review"
        assert np.array_equal(app_db.storage.read_image(path), rgb)
        state, queue, export = _project_as_seen(app_db)
        assert state["n_images"] == before[0]["n_images"] + 1
        assert image_id in queue[2] and "keep-me.png" in export
    finally:
        with app_db.session() as s:  # the shared project as it was, for the tests after this
            projects.archive_batch(s, batch_id)


# ---------------------------------------------------------------- adjudicate: model probability

def _unsure_item_on(app_db, image_id, version_id, label, user, times=2):
    """``user`` flags one object unsure ``times`` times; the item it queued, first in the queue.

    ``label`` None: the version's lowest label (labels keep their values through edits, so
    label 1 may be gone).
    """
    from sqlalchemy import select

    from db import users
    from db.models import AdjudicationItem, MaskVersion

    with app_db.session() as s:
        if label is None:
            found = app_db.storage.read_labels(s.get(MaskVersion, version_id).path)
            label = int(found[found > 0].min())
        uid = users.get_user(s, user).id
        for _ in range(times):
            adjudication.record_decision(s, app_db.storage, image_id, version_id, label,
                                         user_id=uid, verdict="unsure", reason="dim")
        item = s.scalars(select(AdjudicationItem).where(
            AdjudicationItem.image_id == image_id, AdjudicationItem.version_id == version_id,
            AdjudicationItem.label == label, AdjudicationItem.status == "open")).one()
        assert item.probability is None
        item.priority = 1e7
        return item.id


def _close(app_db, item_id):
    from db.models import AdjudicationItem

    with app_db.session() as s:
        s.get(AdjudicationItem, item_id).status = "dismissed"


def test_unsure_item_shows_the_promoted_runs_probability_and_each_vote_once(app_as, app_db,
                                                                           promoted):
    from sqlalchemy import select

    from db.models import AdjudicationItem, ImageResult

    with app_db.session() as s:
        result = s.scalars(select(ImageResult).where(ImageResult.run_id == promoted)).first()
        image_id, version_id = result.image_id, result.version_id
    item_id = _unsure_item_on(app_db, image_id, version_id, None, "operator")
    try:
        at = app_as("expert", "pages/adjudicate.py")
        assert not at.exception, at.exception
        assert at.metric[0].label == "Model probability"
        assert at.metric[0].value == "0.90"     # part2-run's stored heatmap is 0.9 on every cell
        votes = at.dataframe[0].value
        assert list(votes["user"]) == ["operator"] and list(votes["verdict"]) == ["unsure"]
        with app_db.session() as s:
            assert s.get(AdjudicationItem, item_id).probability == pytest.approx(0.9, abs=0.01)
    finally:
        _close(app_db, item_id)


def test_item_probability_predicts_once_without_a_stored_heatmap(app_db, promoted):
    from sqlalchemy import select

    from db import masks
    from db.models import AdjudicationItem, Image, ImageResult

    with app_db.session() as s:
        scored = set(s.scalars(select(ImageResult.image_id).where(ImageResult.run_id == promoted)))
        # The last such image: the other adjudication tests take the first one with cells.
        img = next(i for i in s.scalars(select(Image).where(
            Image.project_id == app_db.project_id, Image.head_version_id.is_not(None))
            .order_by(Image.id.desc()))
            if i.id not in scored and masks.head_version(s, i.id).object_count)
        image_id, version_id, shape = img.id, img.head_version_id, (img.height, img.width)
    item_id = _unsure_item_on(app_db, image_id, version_id, None, "expert", times=1)
    calls = []

    def predict(run_dir, image_path):
        calls.append(run_dir)
        return np.full(shape, 0.7, np.float32)

    try:
        with app_db.session() as s:
            assert adjudication.item_probability(s, app_db.storage, item_id) is None  # no way to get it
            assert adjudication.item_probability(s, app_db.storage, item_id,
                                          predict=predict) == pytest.approx(STORED_07)
            assert adjudication.item_probability(s, app_db.storage, item_id,
                                          predict=predict) == pytest.approx(STORED_07)
            item = s.get(AdjudicationItem, item_id)
            assert len(calls) == 1 and item.geometry["probability_run"] == promoted
            assert app_db.storage.read_heatmap(item.geometry["heatmap"]).shape == shape
    finally:
        _close(app_db, item_id)


# ---------------------------------------------------------------- a run that over-counts

@pytest.fixture
def overcounting(app_db, part2_run, tmp_path):
    """A promoted run that counted 3 cells too many on every test image, with both tuning
    curves in its thresholds.json (chosen on train + validation); the previous state after."""
    from sqlalchemy import select

    from core.postprocess import PostprocessParams
    from db.models import Image, ImageResult, ModelRun

    grid = [0.3, 0.5, 0.7]
    curves = {"validation": {"thresholds": grid, "f1": [0.7, 0.8, 0.75], "precision":
                             [0.6, 0.8, 0.9], "recall": [0.9, 0.8, 0.6], "cells": 30},
              "train": {"thresholds": grid, "f1": [0.8, 0.95, 0.9], "precision": [0.7, 0.95, 1.0],
                        "recall": [0.95, 0.95, 0.8], "cells": 90}}
    (tmp_path / "thresholds.json").write_text(json.dumps(
        {"best": 0.5, "knee": 0.7, "chosen": 0.5, "chosen_on": "train+validation",
         "min_cells": 50, "curves": curves}))
    with app_db.session() as s:
        before = {r.id: r.promoted for r in s.scalars(select(ModelRun).where(
            ModelRun.project_id == app_db.project_id))}
        run = ModelRun(project_id=app_db.project_id, name="overcounting-run",
                       run_dir=str(tmp_path), threshold=0.5, promoted=False,
                       config={"postprocess": PostprocessParams.paper().to_dict()},
                       metrics={"f1": 0.8, "mae": 3.0, "bias": 3.0, "n_images": 2})
        s.add(run)
        s.flush()
        tests = s.scalars(select(Image).where(Image.project_id == app_db.project_id,
                                              Image.split == "test")).all()
        for img in tests:
            s.add(ImageResult(run_id=run.id, image_id=img.id, tp=5, fp=3, fn=0, n_true=5,
                              n_pred=8, iou=0.7))
        for r in s.scalars(select(ModelRun).where(ModelRun.project_id == app_db.project_id)):
            r.promoted = r.id == run.id
        run_id = run.id
    yield run_id
    with app_db.session() as s:
        for other, flag in before.items():
            s.get(ModelRun, other).promoted = flag
        s.get(ModelRun, run_id).promoted = False


def test_count_page_warns_before_counting_with_a_model_that_over_counts(app_as, overcounting):
    at = app_as("operator", "pages/count.py")
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any("This model over-counts" in w and "3.0 cells per image more" in w
               and "mean true count 5.0" in w for w in warnings), warnings
    assert at.button(key="count_go")  # a warning, not a refusal


def test_count_page_is_quiet_for_a_run_without_bias(app_as, promoted):
    at = app_as("operator", "pages/count.py")
    assert not at.exception
    assert not [w.value for w in at.warning if "over-counts" in w.value
                or "under-counts" in w.value]


def test_dashboard_shows_both_curves_intervals_and_the_bias(app_as, overcounting):
    at = app_as("viewer", "pages/dashboard.py")
    at.selectbox(key="dash_run").set_value(overcounting).run()
    assert not at.exception, at.exception
    curve = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if "against threshold" in str(json.loads(c.proto.spec)["layout"]["title"]))
    names = [t["name"] for t in curve["data"]]
    for score in ("f1", "precision", "recall"):
        assert f"{score}, validation images (held out)" in names
        assert f"{score}, train images (fitted)" in names
    assert curve["layout"]["showlegend"] is True
    assert "chosen on train + validation images" in curve["layout"]["title"]["text"]
    captions = " ".join(c.value for c in at.caption)
    assert "95% bootstrap intervals" in captions and "bias 3.00 to 3.00" in captions
    assert "fewer than 50 cells" in captions
    assert any("over-counts" in w.value for w in at.warning)


def test_train_page_shows_bias_intervals_and_where_the_threshold_was_chosen(app_as,
                                                                           overcounting):
    at = app_as("operator", "pages/train.py")
    assert not at.exception, at.exception
    runs = next(d.value for d in at.dataframe if "threshold chosen on" in d.value.columns)
    row = runs[runs["run_id"] == overcounting].iloc[0]
    assert row["threshold chosen on"] == "train+validation" and row["bias"] == 3.0
    assert row["bias 95% CI"] == "3.00 to 3.00" and list(runs.columns).index("bias") == \
        list(runs.columns).index("MAE 95% CI") + 1
    assert any("overcounting-run chose its threshold on train and validation images" in w.value
               and "(they held 30)" in w.value for w in at.warning)
