"""Projects, registration and dedup, splits and their lock, batches, runs and results."""
import json

import numpy as np
import pytest
from sqlalchemy.orm import Session

from core import io as core_io
from db import adjudication, masks, projects, runs
from db.audit import audit_log
from db.models import Image
from tests.db.helpers import disks, picture, project_with_images, user


def test_create_project_validates(engine):
    with Session(engine) as s, s.begin():
        p = projects.create_project(s, "Yellow", stain="yellow", pixel_size_um=0.5)
        assert projects.get_project(s, "Yellow").id == p.id == projects.get_project(s, p.id).id
        with pytest.raises(ValueError, match="already exists"):
            projects.create_project(s, "Yellow", stain="yellow")
        with pytest.raises(ValueError, match="Unknown stain"):
            projects.create_project(s, "Blue", stain="blue")
        with pytest.raises(ValueError, match="projects: Yellow"):
            projects.get_project(s, "nope")


def test_reimporting_the_same_image_is_a_noop_that_says_so(engine, storage, tmp_path):
    rgb = picture(1)
    path = tmp_path / "Mar19bS1C4R3_DMR_200x_y.png"
    core_io.write_image(path, rgb)
    with Session(engine) as s, s.begin():
        p = projects.create_project(s, "Y", stain="yellow")
        first = projects.register_image(s, storage, p.id, path)
        again = projects.register_image(s, storage, p.id, rgb, name="copy.png")
        assert first.created and not again.created and again.image.id == first.image.id
        assert "already in the project" in again.message
        image_id = first.image.id
    stored = list((storage.root / "images").rglob("*.png"))
    assert len(stored) == 1
    with Session(engine) as s:
        image = s.get(Image, image_id)
        assert (image.animal, image.region, image.stain) == ("Mar19b", "DMR", "yellow")
        assert (image.width, image.height, image.split) == (60, 40, "unassigned")


def test_corrupt_file_raises_an_image_error(engine, storage):
    with Session(engine) as s, s.begin():
        p = projects.create_project(s, "Y", stain="yellow")
        with pytest.raises(core_io.ImageError):
            projects.register_image(s, storage, p.id, b"\x89PNG\r\n\x1a\nbroken", name="bad.png")


def test_random_splits_are_seeded_and_locks_need_a_reason(engine, storage):
    with Session(engine) as s, s.begin():
        admin, op = user(s, "root", "admin"), user(s, "ann")
        p, images = project_with_images(s, storage, 10)
        with pytest.raises(PermissionError):
            projects.assign_random_splits(s, p.id, test_share=0.3, seed=1, actor=op)
        assert projects.assign_random_splits(s, p.id, test_share=0.3, seed=1, actor=admin) == {
            "test": 3, "train": 7}
        test_ids = sorted(i.id for i in images if s.get(Image, i.id).split == "test")
        projects.lock_splits(s, test_ids[:1])
        s.expire_all()
        with pytest.raises(ValueError, match="locked"):
            projects.set_split(s, test_ids, "train", actor=admin)
        assert projects.set_split(s, test_ids, "train", actor=admin, reason="mislabelled stain") == 3
        moves = audit_log(s, action="split.move")
        assert len(moves) == 3 and any(m.detail["locked"] for m in moves)


def test_archiving_a_batch_hides_its_images(engine, storage):
    with Session(engine) as s, s.begin():
        p = projects.create_project(s, "Y", stain="yellow")
        batch = projects.create_batch(s, p.id, user_id=None, source="upload")
        image = projects.register_image(s, storage, p.id, picture(3), batch_id=batch.id).image
        assert projects.archive_batch(s, batch.id) == 1
        assert s.get(Image, image.id).archived
        assert projects.restore_batch(s, batch.id) == 1
        assert not s.get(Image, image.id).archived


def _run_dir(tmp_path, manifest):
    d = tmp_path / "run1"
    d.mkdir()
    (d / "thresholds.json").write_text(json.dumps({"best": 0.6, "knee": 0.5, "chosen": 0.6}))
    (d / "metrics.json").write_text(json.dumps({"f1": 0.8, "mae": 1.5}))
    (d / "config.json").write_text(json.dumps({"base_filters": 2}))
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_training_items_results_promotion(engine, storage, tmp_path):
    with Session(engine) as s, s.begin():
        admin = user(s, "root", "admin")
        p, images = project_with_images(s, storage, 3)
        for image, split in zip(images, ["train", "train", "test"]):
            image.split = split
        versions = [masks.save_mask_version(s, storage, im.id, disks((10, 10)), based_on=None,
                                            source="import", author_id=None) for im in images]
        masks.approve(s, images[0].id, user_id=admin.id)
        masks.approve(s, images[2].id, user_id=admin.id)
        items = runs.training_items(s, p.id, "train")
        assert [(i.image_id, i.mask_version_id) for i in items] == [(images[0].id, versions[0].id)]
        assert items[0].mask_path == versions[0].path and not items[0].hard
        run = runs.register_run(s, p.id, _run_dir(tmp_path, {
            "train": [[images[0].id, versions[0].id]],
            "test": [{"image_id": images[2].id, "mask_version_id": versions[2].id}]}))
        assert (run.threshold, run.metrics["f1"]) == (0.6, 0.8)
        heat = storage.put_heatmap(np.full((40, 60), 0.7, dtype=np.float32))
        result = runs.save_image_result(
            s, run.id, images[2].id, {"tp": 1, "fp": 2, "fn": 0, "n_true": 1, "n_pred": 3, "iou": 0.8},
            heatmap_path=heat.path,
            objects=[{"outcome": "TP", "centroid": (10, 10), "bbox": (5, 5, 16, 16), "iou": 0.8},
                     {"outcome": "FP", "centroid": (30, 40), "bbox": (25, 35, 35, 45)},
                     {"outcome": "FP", "centroid": (30, 10), "bbox": (25, 5, 35, 15)}])
        assert result.version_id == versions[2].id
        assert s.get(Image, images[2].id).split_locked
        [row] = runs.run_results(s, run.id, only_errors=True).to_dict("records")
        assert (row["fp"], row["error"], row["name"]) == (2, 2, "img2.png")
        fps = runs.result_objects(s, result.id, outcome="FP")
        item = adjudication.queue_run_object(s, fps[0].id, user_id=admin.id)
        assert item.kind == "run_fp" and item.reason == "prediction_fp"
        with pytest.raises(PermissionError):
            runs.promote_run(s, run.id, actor=user(s, "ann"))
        runs.promote_run(s, run.id, actor=admin)
        assert runs.promoted_run(s, p.id).id == run.id
        runs.set_threshold(s, run.id, 0.45, actor=admin)
        saved = json.loads((tmp_path / "run1" / "thresholds.json").read_text())
        assert saved["chosen"] == 0.45 and saved["best"] == 0.6


def test_replace_image_results_swaps_results_and_objects_at_once(engine, storage, tmp_path):
    with Session(engine) as s, s.begin():
        p, images = project_with_images(s, storage, 3)
        for image in images:
            image.split = "test"
        run = runs.register_run(s, p.id, _run_dir(tmp_path, {}))
        tp = {"outcome": "TP", "centroid": (10, 10), "bbox": (5, 5, 16, 16), "iou": 0.9}
        fp = {"outcome": "FP", "centroid": (30, 40), "bbox": (25, 35, 35, 45)}
        for image in images[:2]:
            runs.save_image_result(s, run.id, image.id, {"tp": 1, "fp": 1, "fn": 0, "n_true": 1,
                                                         "n_pred": 2, "iou": 0.5},
                                   objects=[tp, fp])
        new = runs.replace_image_results(s, run.id, [
            runs.ScoredImage(images[1].id, {"tp": 1, "fp": 0, "fn": 0, "n_true": 1, "n_pred": 1,
                                            "iou": 0.9}, [tp], heatmap_path="heatmaps/ab/x.png"),
            {"image_id": images[2].id, "scores": {"tp": 0, "fp": 0, "fn": 2, "n_true": 2,
                                                  "n_pred": 0, "iou": 0.0}}],
            metrics={"f1": 0.4, "n_images": 2})
        rows = {r["image_id"]: r for r in runs.run_results(s, run.id).to_dict("records")}
        assert set(rows) == {images[1].id, images[2].id}
        assert (rows[images[1].id]["fp"], rows[images[1].id]["heatmap_path"]) == (0, "heatmaps/ab/x.png")
        assert [o.outcome for o in runs.result_objects(s, new[0].id)] == ["TP"]
        assert s.get(Image, images[2].id).split_locked
        assert runs.get_run(s, run.id).metrics == {"f1": 0.4, "mae": 1.5, "n_images": 2}
        with pytest.raises(ValueError, match="one result per image"):
            runs.replace_image_results(s, run.id, [(images[0].id, {}), (images[0].id, {})])
    with Session(engine) as s:  # committed: no objects of the replaced results are left
        from db.models import ObjectOutcome
        assert len(s.query(ObjectOutcome).all()) == 1
