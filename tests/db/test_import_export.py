"""Import and export on SQLite and PostgreSQL: FNC v1/v2 trees, folders, uploads, VIA, COCO.

Round trips compare masks object by object: the same object count, and every object's IoU with
its counterpart >= 0.9 (polygons drop holes).
"""
import argparse
import csv
import io
import json
import zipfile

import numpy as np
import pytest
import tifffile
from skimage import draw
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import io as core_io
from db import exporting as E
from core import formats as F
from core.objects import as_labels, count_objects
from db import importing as I
from db.masks import MaskProvenance, save_mask_version
from db.projects import ImageFilter
from db.models import AdjudicationItem, Approval, Image, ImportBatch, MaskVersion, ModelRun, User
from db.projects import create_project, get_project

SHAPE = (72, 96)
FNC_NAMES = ["Mar19bS1C1R1_DMl_200x_y", "Mar20bS1C4R3_DMr_200x_y", "Mar27bS1C2R1_LHl_200x_y"]


def _picture(seed, shape=SHAPE, n=4):
    """A dim noisy RGB image with n yellow disks (one with a hole) and their bool mask."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 25, size=shape + (3,), dtype=np.uint8)
    mask = np.zeros(shape, bool)
    for k in range(n):
        r, c = 12 + 16 * k, 14 + 20 * k
        rr, cc = draw.disk((min(r, shape[0] - 10), c), rng.uniform(5, 8), shape=shape)
        mask[rr, cc] = True
    rr, cc = draw.disk((12, 14), 1.5)
    mask[rr, cc] = False
    rgb[mask] = (220, 180, 20)
    return rgb, mask


def _write_pair(images, masks, name, seed):
    rgb, mask = _picture(seed)
    images.mkdir(parents=True, exist_ok=True)
    core_io.write_image(images / f"{name}.png", rgb)
    if masks is not None:
        masks.mkdir(parents=True, exist_ok=True)
        core_io.write_mask(masks / f"{name}.png", mask)
    return rgb, mask


def _same_objects(truth, found, min_iou=0.9):
    """Same object count and every true object's best IoU >= min_iou."""
    a, b = as_labels(truth), as_labels(found)
    assert a.max() == b.max()
    for k in range(1, a.max() + 1):
        obj = a == k
        hits = b[obj]
        best = b == np.bincount(hits[hits > 0]).argmax()
        assert (obj & best).sum() / (obj | best).sum() >= min_iou


def _run(engine, fn, *args, **kwargs):
    with Session(engine) as s, s.begin():
        return fn(s, *args, **kwargs)


@pytest.fixture
def project(engine):
    with Session(engine) as s, s.begin():
        create_project(s, "P", stain="yellow")
        create_project(s, "Q", stain="yellow")
    return "P"


def _head_masks(engine, storage, project="P"):
    """{original name: head mask} of a project's images."""
    with Session(engine) as s:
        rows = s.execute(select(Image.original_name, MaskVersion.path)
                         .join(MaskVersion, MaskVersion.id == Image.head_version_id)
                         .where(Image.project_id == get_project(s, project).id)).all()
    return {name: storage.read_mask(path) for name, path in rows}


# ------------------------------------------------------------------ FNC

def _fnc_v1(root):
    truth = {}
    for k, name in enumerate(FNC_NAMES):
        truth[name + ".png"] = _write_pair(root / "all_images" / "images",
                                           root / "all_masks" / "masks", name, k)[1]
    return truth


def _fnc_v2(root):
    truth = {}
    for k, name in enumerate(FNC_NAMES[:2]):
        truth[name + ".png"] = _write_pair(root / "yellow" / "trainval" / "images",
                                           root / "yellow" / "trainval" / "ground_truths" / "masks",
                                           name, k)[1]
    truth["Mar33bS1C4R2_DMl_200x_y.png"] = _write_pair(
        root / "yellow" / "test" / "images", root / "yellow" / "test" / "ground_truths" / "masks",
        "Mar33bS1C4R2_DMl_200x_y", 5)[1]
    _write_pair(root / "yellow" / "unlabelled" / "images", None, "Mar40S1C2R2_DMl_200x_y", 6)
    _write_pair(root / "green" / "trainval" / "images", None, "MAR38S1C3R1_DML_20_g", 7)
    return truth


def test_fnc_v1_import_is_approved_unassigned_and_exports_as_a_masks_zip(engine, settings,
                                                                           storage, project):
    truth = _fnc_v1(settings.data_dir / "fnc1")
    report = _run(engine, I.import_path, settings, settings.data_dir / "fnc1", project="P")
    assert len(report.imported) == 3 and not report.skipped
    with Session(engine) as s:
        images = s.scalars(select(Image).order_by(Image.id)).all()
        assert {im.split for im in images} == {"unassigned"}
        assert {im.review_status for im in images} == {"approved"}
        assert images[0].animal == "Mar19b" and images[0].stain == "yellow"
        assert s.scalar(select(func.count(Approval.id))) == 3
        assert {v.source for v in s.scalars(select(MaskVersion))} == {"import"}
    for name, mask in _head_masks(engine, storage).items():
        assert np.array_equal(mask, truth[name])
    with Session(engine) as s:
        data = E.export_masks_zip(s, storage, "P")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted(["counts.csv"] + [f"masks/{n}" for n in truth])
        for name, mask in truth.items():
            png = zf.read(f"masks/{name}")
            assert set(np.unique(core_io.read_image(png))) <= {0, 255}
            assert np.array_equal(core_io.read_mask(png), mask)
    # and back: the zip's masks beside the images import into another project unchanged
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(settings.data_dir / "zipped")
    report = _run(engine, I.import_path, settings, settings.data_dir / "fnc1/all_images/images",
                  project="Q", masks=settings.data_dir / "zipped" / "masks")
    assert [o.mask for o in report.imported] == ["import"] * 3
    for name, mask in _head_masks(engine, storage, "Q").items():
        assert np.array_equal(mask, truth[name])


def test_fnc_v2_splits_stain_and_unlabelled(engine, settings, storage, project):
    root = settings.data_dir / "fnc2"
    truth = _fnc_v2(root)
    report = _run(engine, I.import_path, settings, root, project="P",
                  options=I.ImportOptions(prelabel=False))
    assert len(report.imported) == 4 and not report.skipped
    assert any("green/" in note for note in report.notes)
    with Session(engine) as s:
        got = {im.original_name: im for im in s.scalars(select(Image))}
        assert got["Mar19bS1C1R1_DMl_200x_y.png"].split == "train"
        assert got["Mar33bS1C4R2_DMl_200x_y.png"].split == "test"
        unl = got["Mar40S1C2R2_DMl_200x_y.png"]
        assert unl.unlabelled and unl.head_version_id is None and unl.split == "unassigned"
        assert {im.stain for im in got.values()} == {"yellow"}
        assert s.scalar(select(func.count(Approval.id))) == 3
    for name, mask in _head_masks(engine, storage).items():
        assert np.array_equal(mask, truth[name])


def test_fnc_v2_non_standard_coco_is_read(engine, settings, storage, project):
    split = settings.data_dir / "fnc2coco" / "yellow" / "test"
    rgb, mask = _write_pair(split / "images", None, FNC_NAMES[0], 3)
    outlines = F.object_outlines(as_labels(mask), snap=True)
    doc = {"images": [{"id": FNC_NAMES[0], "file_name": FNC_NAMES[0] + ".png", "split": "test",
                       "path": f"yellow/test/images/{FNC_NAMES[0]}.png",
                       "height": SHAPE[0], "width": SHAPE[1]}],
           "annotations": [{"image_id": FNC_NAMES[0], "category_id": 2, "iscrowd": 0,
                            "segmentation": [[[int(c), int(r)] for r, c in o[0]] for _, o in outlines],
                            "count": len(outlines)}]}
    coco = split / "ground_truths" / "COCO" / "annotations_yellow_test.json"
    coco.parent.mkdir(parents=True)
    coco.write_text(json.dumps(doc))
    report = _run(engine, I.import_path, settings, coco, project="P", fmt="coco")
    assert [o.mask for o in report.imported] == ["import"]
    with Session(engine) as s:
        assert s.scalar(select(Image.split)) == "test"
    _same_objects(mask, _head_masks(engine, storage)[FNC_NAMES[0] + ".png"])


# ------------------------------------------------------------------ COCO and VIA round trips

def _import_folder_with_masks(engine, settings, n=3):
    truth = {}
    for k in range(n):
        truth[f"img{k}.png"] = _write_pair(settings.data_dir / "in" / "images",
                                           settings.data_dir / "in" / "masks", f"img{k}", 10 + k)[1]
    report = _run(engine, I.import_path, settings, settings.data_dir / "in" / "images",
                  project="P", masks=settings.data_dir / "in" / "masks")
    assert len(report.imported) == n
    return truth


@pytest.mark.parametrize("kind", ["coco-polygon", "coco-rle", "via"])
def test_export_then_import_round_trip(engine, settings, storage, project, kind):
    truth = _import_folder_with_masks(engine, settings)
    with Session(engine) as s:
        if kind == "via":
            doc = E.export_via(s, storage, "P")
        else:
            doc = E.export_coco(s, storage, "P", rle=kind == "coco-rle")
    if kind != "via":
        assert doc["categories"] == [{"id": 1, "name": "yellow cell", "supercategory": "yellow cell"}]
        ann = doc["annotations"][0]
        assert ann["area"] > 0 and len(ann["bbox"]) == 4
        # polygons where exact; the cell with a hole (the first) is RLE either way
        assert isinstance(ann["segmentation"], dict)
        kinds = {type(a["segmentation"]) for a in doc["annotations"]}
        assert kinds == ({dict} if kind == "coco-rle" else {dict, list})
        assert len(doc["annotations"]) == sum(count_objects(m) for m in truth.values())
    (settings.data_dir / "in" / "images" / "export.json").write_text(json.dumps(doc))
    report = _run(engine, I.import_path, settings, settings.data_dir / "in" / "images" / "export.json",
                  project="Q")
    assert [o.mask for o in report.imported] == ["import"] * 3
    found = _head_masks(engine, storage, "Q")
    for name, mask in truth.items():
        _same_objects(mask, found[name])


def test_hand_written_via_and_coco_files(engine, settings, storage, project):
    folder = settings.data_dir / "hand"
    (folder / "images").mkdir(parents=True)
    core_io.write_image(folder / "images" / "a.png", np.zeros((40, 50, 3), np.uint8))
    core_io.write_image(folder / "b.png", np.full((40, 50, 3), 9, np.uint8))
    via = {"_via_img_metadata": {"a.png-1": {"filename": "a.png", "size": -1, "regions": [
        {"shape_attributes": {"name": "polygon", "all_points_x": [5, 14, 14, 5],
                              "all_points_y": [5, 5, 12, 12]}},
        {"shape_attributes": {"name": "circle", "cx": 30, "cy": 25, "r": 6}},
        {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}], "file_attributes": {}}}}
    coco = {"images": [{"id": 3, "file_name": "b.png", "height": 40, "width": 50}],
            "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]],
                             "area": 100, "bbox": [10, 10, 10, 10]}],
            "categories": [{"id": 1, "name": "cell"}]}
    (folder / "via.json").write_text(json.dumps(via))
    (folder / "coco.json").write_text(json.dumps(coco))
    report = _run(engine, I.import_path, settings, folder, project="P")
    assert sorted(o.name for o in report.imported) == ["a.png", "b.png"]
    assert any("point" in note for note in report.notes)
    masks = _head_masks(engine, storage)
    assert count_objects(masks["a.png"]) == 2 and masks["a.png"][5:13, 5:15].all()
    assert masks["b.png"].sum() == 100 and masks["b.png"][10:20, 10:20].all()


# ------------------------------------------------------------------ reports and rules

def test_bad_files_are_named_and_the_rest_is_imported(engine, settings, storage, project):
    images, masks = settings.data_dir / "bad" / "images", settings.data_dir / "bad" / "masks"
    _write_pair(images, masks, "good1", 1)
    _write_pair(images, None, "good2", 2)
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    buf = io.BytesIO()
    tifffile.imwrite(buf, _picture(3)[0])
    (images / "truncated.tif").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _write_pair(images, None, "mismatch", 4)
    core_io.write_mask(masks / "mismatch.png", np.ones((30, 40), bool))
    (images / "notes.txt").write_text("hello")
    seen = []
    report = _run(engine, I.import_path, settings, images, project="P", masks=masks,
                  options=I.ImportOptions(prelabel=False),
                  progress=lambda done, total, name: seen.append((done, total, name)))
    assert sorted(o.name for o in report.imported) == ["good1.png", "good2.png"]
    reasons = {o.name: o.reason for o in report.skipped}
    assert reasons == {"corrupt.png": "corrupt", "truncated.tif": "corrupt",
                       "mismatch.png": "mask size mismatch", "notes.txt": "unknown format"}
    messages = {o.name: o.message for o in report.skipped}
    assert "corrupt.png" in messages["corrupt.png"] and "truncated.tif" in messages["truncated.tif"]
    assert messages["mismatch.png"].startswith(
        "Mask masks/mismatch.png is 40 x 30 px but image images/mismatch.png is 96 x 72 px")
    assert "save it at the image's size" in messages["mismatch.png"]
    assert seen[-1][:2] == (5, 5) and len(seen) == 5
    assert "Imported 2 images; skipped 4 files" in report.summary()
    with Session(engine) as s:
        batch = s.get(ImportBatch, report.batch_id)
        assert {d["name"] for d in batch.report["skipped"]} == set(reasons)
        assert s.scalar(select(func.count(Image.id))) == 2


def test_import_stores_images_through_the_store_keeping_png_files(engine, settings, storage,
                                                                   project, monkeypatch):
    from db.storage import Storage

    calls = []
    real = Storage.put_image
    monkeypatch.setattr(Storage, "put_image",
                        lambda self, rgb, **kw: calls.append(kw) or real(self, rgb, **kw))
    _import_folder_with_masks(engine, settings, n=2)
    folder = settings.data_dir / "in" / "images"
    assert len(calls) == 2 and all(kw.get("encoded") for kw in calls)
    with Session(engine) as s:
        stored = {im.original_name: storage.resolve(im.path) for im in s.scalars(select(Image))}
    for name, path in stored.items():
        assert path.read_bytes() == (folder / name).read_bytes()


def test_reimport_is_a_no_op_that_says_so(engine, settings, storage, project):
    _import_folder_with_masks(engine, settings)
    with Session(engine) as s:
        before = (s.scalar(select(func.count(Image.id))), s.scalar(select(func.count(MaskVersion.id))))
    report = _run(engine, I.import_path, settings, settings.data_dir / "in" / "images",
                  project="P", masks=settings.data_dir / "in" / "masks")
    assert not report.imported and {o.reason for o in report.skipped} == {"duplicate"}
    assert "already in the project" in report.skipped[0].message
    with Session(engine) as s:
        after = (s.scalar(select(func.count(Image.id))), s.scalar(select(func.count(MaskVersion.id))))
        by_name = {im.original_name: im.id for im in s.scalars(select(Image))}
    assert before == after
    # The outcome names the image that already holds the pixels; nobody parses the message.
    assert {o.name: o.image_id for o in report.skipped} == by_name


def test_count_reading_keeps_project_duplicates_out_of_the_project(engine, settings, storage,
                                                                    project):
    _import_folder_with_masks(engine, settings, n=2)
    uploads = [(p.name, p.read_bytes()) for p in sorted((settings.data_dir / "in" / "images").iterdir())]
    uploads.append(("junk.png", b"not an image"))
    with Session(engine) as s, s.begin():
        images, problems = I.store_for_count(s, settings, "P", uploads=uploads)
        held = {im.original_name: im.path for im in s.scalars(select(Image))}
        n_images = s.scalar(select(func.count(Image.id)))
    # Pixels the project already holds are counted as files of the count, from the same
    # stored file (one file per content); no image row is added or named.
    assert [(e["name"], e["path"]) for e in images] == [(n, held[n]) for n in ("img0.png",
                                                                               "img1.png")]
    assert n_images == 2 and all("image_id" not in e for e in images)
    assert [p["file"] for p in problems] == ["junk.png"]


def test_images_without_masks_get_auto_masks_and_imported_ones_never(engine, settings, storage,
                                                                     project):
    images, masks = settings.data_dir / "auto" / "images", settings.data_dir / "auto" / "masks"
    _write_pair(images, masks, "with", 1)
    _write_pair(images, None, "without", 2)
    report = _run(engine, I.import_path, settings, images, project="P", masks=masks,
                  options=I.ImportOptions(approved=True))
    assert {o.name: o.mask for o in report.imported} == {"with.png": "import", "without.png": "auto"}
    with Session(engine) as s:
        got = {im.original_name: im for im in s.scalars(select(Image))}
        sources = {name: [v.source for v in s.scalars(select(MaskVersion)
                                                      .where(MaskVersion.image_id == im.id))]
                   for name, im in got.items()}
        assert sources == {"with.png": ["import"], "without.png": ["auto"]}
        assert got["with.png"].review_status == "approved"
        assert got["without.png"].review_status == "to_review"


def test_folders_outside_the_import_roots_are_refused(engine, settings, project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    _write_pair(outside, None, "x", 1)
    with pytest.raises(I.ImportRefused, match="outside the folders CellTally may import from"):
        _run(engine, I.import_path, settings, outside, project="P")
    link = settings.data_dir / "link"
    link.mkdir()
    (link / "x.png").symlink_to(outside / "x.png")
    report = _run(engine, I.import_path, settings, link, project="P")
    assert [o.reason for o in report.skipped] == ["outside import roots"]
    with pytest.raises(I.ImportRefused, match="Unknown import format 'tiff'"):
        _run(engine, I.import_path, settings, link, project="P", fmt="tiff")
    with pytest.raises(I.ImportRefused, match="is not a Fluorescent Neuronal Cells folder"):
        _run(engine, I.import_path, settings, link, project="P", fmt="fnc")
    with pytest.raises(ValueError, match="There is no project 'Z'"):
        _run(engine, I.import_path, settings, link, project="Z")


def test_uploads_pair_masks_and_json(engine, settings, storage, project):
    rgb1, mask1 = _picture(1)
    rgb2, mask2 = _picture(2)
    via = F.via_document([F.ExportImage("two.png", as_labels(mask2))])
    files = [("one.png", core_io.write_image(None, rgb1)),
             ("one_mask.png", core_io.write_mask(None, mask1)),
             ("two.png", core_io.write_image(None, rgb2)),
             ("two.json", json.dumps(via).encode()),
             ("lonely_mask.png", core_io.write_mask(None, mask1)),
             ("readme.md", b"# hi")]
    report = _run(engine, I.import_uploads, settings, "P", files,
                  options=I.ImportOptions(prelabel=False))
    assert {o.name: o.mask for o in report.imported} == {"one.png": "import", "two.png": "import"}
    assert {o.name: o.reason for o in report.skipped} == {"lonely_mask.png": "no image",
                                                          "readme.md": "unknown format"}
    found = _head_masks(engine, storage)
    assert np.array_equal(found["one.png"], mask1)
    _same_objects(mask2, found["two.png"])


def test_uploads_above_the_limit_are_refused_by_name(engine, settings, storage, project):
    rgb, _ = _picture(3)
    big = np.random.default_rng(0).integers(0, 255, 1_200_000, dtype=np.uint8).tobytes()
    files = [("fine.png", core_io.write_image(None, rgb)), ("huge.png", big),
             ("broken.png", b"\x89PNG\r\n\x1a\nthen nothing")]
    report = _run(engine, I.import_uploads, settings.with_(upload_limit_mb=1), "P", files)
    assert [o.name for o in report.imported] == ["fine.png"]
    reasons = {o.name: o.reason for o in report.skipped}
    assert reasons == {"huge.png": "too large", "broken.png": "corrupt"}
    assert "1 MB upload limit" in next(o.message for o in report.skipped if o.name == "huge.png")


# ------------------------------------------------------------------ counts and the CLI

def test_counts_csv_and_filters(engine, settings, storage, project):
    _fnc_v2(settings.data_dir / "fnc2")
    _run(engine, I.import_path, settings, settings.data_dir / "fnc2", project="P",
         options=I.ImportOptions(prelabel=False))
    with Session(engine) as s, s.begin():
        test_image = s.scalar(select(Image).where(Image.split == "test"))
        s.add(User(name="ana", role="operator", password_hash="x"))
        s.add(ModelRun(project_id=test_image.project_id, name="demo-run", run_dir="/r",
                       threshold=0.55, promoted=True))
        s.add(AdjudicationItem(project_id=test_image.project_id, image_id=test_image.id,
                               kind="mask_object", reason="unsure", centroid_row=1.0,
                               centroid_col=1.0, bbox=[0, 0, 2, 2]))
    with Session(engine) as s, s.begin():
        # A newer model mask on another image records the run, threshold and model file.
        other = s.scalar(select(Image).where(Image.split != "test", Image.head_version_id.is_not(None))
                         .order_by(Image.id))
        run = s.scalar(select(ModelRun))
        run.threshold = 0.7  # moved after the mask was made: the mask keeps its own threshold
        save_mask_version(s, storage, other.id, np.zeros((other.height, other.width), bool),
                          based_on=other.head_version_id, source="model", author_id=None,
                          provenance=MaskProvenance(run.id, 0.55, "ab" * 32))
    with Session(engine) as s:
        text = E.export_counts(s, "P")
        test_only = E.export_counts(s, "P", filters=ImageFilter(split="test"))
        by_animal = E.export_counts(s, "P", filters=ImageFilter(animal="Mar19b"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(E.COUNT_COLUMNS)
    assert len(rows) == 4
    by_name = {r["image"]: r for r in rows}
    t = by_name["Mar33bS1C4R2_DMl_200x_y.png"]
    # An imported mask was made by no model: the promoted run is not stamped on it.
    assert (t["split"], t["count"], t["source"], t["model_run"], t["threshold"],
            t["model_sha256"], t["review_status"], t["pending_adjudications"]) == (
        "test", "4", "import", "", "", "", "approved", "1")
    assert by_name["Mar40S1C2R2_DMl_200x_y.png"]["count"] == ""
    made = next(r for r in rows if r["source"] == "model")
    assert (made["model_run"], made["threshold"], made["model_sha256"]) == ("demo-run", "0.55",
                                                                           "ab" * 32)
    assert [r["image"] for r in csv.DictReader(io.StringIO(test_only))] == [t["image"]]
    assert [r["animal"] for r in csv.DictReader(io.StringIO(by_animal))] == ["Mar19b"]
    with Session(engine) as s, pytest.raises(ValueError, match="Unknown split 'val'"):
        E.export_counts(s, "P", filters=ImageFilter(split="val"))


def test_command_line_import_and_exports(engine, settings, storage, project, capsys):
    _fnc_v1(settings.data_dir / "fnc1")
    args = argparse.Namespace(path=str(settings.data_dir / "fnc1"), project="P", masks=None,
                              format="fnc", approved=False)
    assert I.run_import_cli(args, settings) == 0
    assert "Imported 3 images." in capsys.readouterr().out
    for kind in E.EXPORT_KINDS:
        out = settings.data_dir / "out" / f"export.{kind}"
        args = argparse.Namespace(kind=kind, project="P", out=str(out), split="unassigned",
                                  status=None)
        assert E.run_export_cli(args, settings) == 0
        assert "for 3 images" in capsys.readouterr().out
        assert out.stat().st_size > 0
    doc = json.loads((settings.data_dir / "out" / "export.coco").read_text())
    assert len(doc["images"]) == 3
    bad = argparse.Namespace(path="/nowhere/at/all", project="P", masks=None, format=None,
                             approved=False)
    assert I.run_import_cli(bad, settings) == 2
    assert "/nowhere/at/all does not exist" in capsys.readouterr().err
