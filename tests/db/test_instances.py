"""Cells as labels from import to export, on SQLite and PostgreSQL (issue 11 item 1).

A label TIFF goes in through ``python -m db import ... --masks``; COCO, VIA, label TIFFs, ImageJ
ROI sets and QuPath GeoJSON come out through ``python -m db export`` and are read back by each
format's own library: pycocotools, tifffile, roifile, shapely (and plain json).
"""
import io
import json
import zipfile
from functools import reduce

import numpy as np
import pytest
import roifile
import shapely
import tifffile
from pycocotools.coco import COCO
from skimage import draw
from skimage.measure import label as sk_label
from sqlalchemy.orm import Session

from core.io import write_image
from db import adjudication, cli, masks
from db.models import Image, User
from tests.db.helpers import project_with_images, user

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHAPE = (64, 80)


def _scene():
    """Touching cells (1, 2), a ring (3) with a cell (4) in its hole, a cell in two pieces (5)."""
    lab = np.zeros(SHAPE, np.uint16)
    lab[draw.disk((12, 12), 7)] = 1
    lab[draw.disk((12, 24), 7)] = 2
    lab[draw.disk((42, 24), 15)] = 3
    lab[draw.disk((42, 24), 9)] = 0
    lab[draw.disk((42, 24), 5)] = 4
    lab[3:9, 50:60] = lab[20:28, 52:66] = 5
    return lab


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _centres_in(geometry):
    """Pixels whose centre lies inside a shapely geometry (x = column, y = row, corners)."""
    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return shapely.contains_xy(geometry, cols + 0.5, rows + 0.5)


def _import_and_export(settings, tmp_path, capsys):
    """The scene imported through the command line as approved ground truth, then a later head
    without cell 2, then every export written through the command line.

    Returns the imported version's (object count, labels) and the export folder.
    """
    from db.engine import make_engine
    from db.storage import Storage

    images, label_dir = tmp_path / "in" / "images", tmp_path / "in" / "masks"
    images.mkdir(parents=True), label_dir.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 40, SHAPE + (3,), dtype=np.uint8)
    write_image(images / "slice.png", rgb)
    tifffile.imwrite(label_dir / "slice.tif", _scene())
    assert cli.main(["project", "create", "P", "--stain", "yellow"], settings) == 0
    assert cli.main(["import", str(images), "--project", "P", "--format", "folder",
                     "--masks", str(label_dir), "--approved"], settings) == 0
    assert "Imported 1 image" in capsys.readouterr().out
    engine, storage = make_engine(settings), Storage.from_settings(settings)
    with Session(engine) as s, s.begin():
        image = s.query(Image).one()
        head = masks.head_version(s, image.id)
        imported = (head.object_count, storage.read_labels(head.path))
        masks.save_mask_version(s, storage, image.id, np.where(imported[1] == 2, 0, imported[1]),
                                based_on=head.id, source="manual", author_id=None)
    engine.dispose()
    out = tmp_path / "out"
    for kind, extra in (("coco", []), ("coco", ["--ground-truth"]), ("coco", ["--rle"]),
                        ("via", []), ("labels", []), ("imagej", []), ("geojson", []),
                        ("masks", [])):
        name = f"{kind}{''.join(extra)}"
        path = out / (f"{name}.json" if kind in ("coco", "via") else f"{name}.zip")
        assert cli.main(["export", kind, "--project", "P", "--out", str(path), *extra],
                        settings) == 0
    capsys.readouterr()
    return imported, out


def test_label_round_trip_keeps_every_cell_in_every_format(settings, tmp_path, capsys):
    (count, labels), out = _import_and_export(settings, tmp_path, capsys)
    assert count == 5 and np.array_equal(labels, _scene())   # cell 5 in two pieces: one cell
    head = np.where(_scene() == 2, 0, _scene())               # what the head holds now
    for flag in ("", "--ground-truth", "--rle"):
        _check_coco(out / f"coco{flag}.json", _scene() if flag == "--ground-truth" else head,
                    polygons=flag != "--rle")
    _check_via(out / "via.json", head)
    _check_label_files(out, head)
    _check_imagej(out / "imagej.zip", head, tmp_path)
    _check_geojson(out / "geojson.zip", head)


def _check_coco(path, truth, *, polygons):
    """pycocotools' annToMask gives every cell back (IoU >= 0.99); polygons only where exact."""
    coco = COCO(str(path))
    [image] = coco.loadImgs(coco.getImgIds())
    assert (image["height"], image["width"]) == SHAPE
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(np.unique(truth)) - 1 and {a["iscrowd"] for a in anns} == {0}
    for ann in anns:
        cell = coco.annToMask(ann).astype(bool)
        k = int(np.bincount(truth[cell]).argmax())
        assert _iou(cell, truth == k) >= 0.99, (path.name, k)
        simple = k in (1, 2, 4)                  # the ring (3) has a hole, cell 5 two pieces
        assert isinstance(ann["segmentation"], list) == (simple and polygons)
        if isinstance(ann["segmentation"], dict):
            assert ann["segmentation"]["size"] == list(SHAPE)


def _check_via(path, truth):
    """One polygon region per cell; painted in file order, the simple cells come back."""
    doc = json.loads(path.read_text())
    (entry,) = doc["_via_img_metadata"].values()
    painted = np.zeros(SHAPE, np.int32)
    for i, region in enumerate(entry["regions"], start=1):   # file order: later wins
        shape = region["shape_attributes"]
        assert shape["name"] == "polygon"
        painted[_centres_in(shapely.Polygon(zip(shape["all_points_x"], shape["all_points_y"])))] = i
    found = {int(np.bincount(truth[painted == i]).argmax()): painted == i
             for i in range(1, len(entry["regions"]) + 1)}
    assert sorted(found) == [1, 3, 4, 5]
    for k in (1, 4):                              # the cell in the ring's hole included
        assert _iou(found[k], truth == k) >= 0.99
    # what VIA cannot hold: the ring is filled, the two-piece cell keeps its larger piece
    assert found[3].sum() > (truth == 3).sum() and (found[3] >= (truth == 3)).all()
    pieces = sk_label(truth == 5, connectivity=2)
    assert _iou(found[5], pieces == np.bincount(pieces.ravel())[1:].argmax() + 1) >= 0.99


def _zip_files(path, folder):
    with zipfile.ZipFile(path) as zf:
        assert "counts.csv" in zf.namelist()
        return {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist() if n.startswith(folder)}


def _check_label_files(out, truth):
    """The label TIFF (read by tifffile) and the 16-bit label PNG hold exactly the cells."""
    from core.io import read_labels

    [(name, data)] = _zip_files(out / "labels.zip", "labels/").items()
    assert name == "slice.tif" and np.array_equal(tifffile.imread(io.BytesIO(data)), truth)
    [(name, data)] = _zip_files(out / "masks.zip", "masks/").items()
    assert name == "slice.png" and data[24] == 16 and np.array_equal(read_labels(data), truth)


def _check_imagej(path, truth, tmp_path):
    """roifile reads one ROI per cell; its rings, filled even-odd, give the cell back."""
    [(name, data)] = _zip_files(path, "imagej/").items()
    assert name == "slice_RoiSet.zip"
    (tmp_path / name).write_bytes(data)
    rois = roifile.roiread(tmp_path / name)
    assert sorted(r.name for r in rois) == [f"cell-0000{k}" for k in (1, 3, 4, 5)]
    for roi in rois:
        rings = roi.coordinates(multi=True) if roi.composite else [roi.coordinates()]
        region = reduce(shapely.symmetric_difference, [shapely.Polygon(r) for r in rings])
        k = int(roi.name.split("-")[1])
        assert _iou(_centres_in(region), truth == k) >= 0.99


def _check_geojson(path, truth):
    """shapely reads one feature per cell, holes and pieces included."""
    [(name, data)] = _zip_files(path, "geojson/").items()
    features = json.loads(data)["features"]
    assert name == "slice.geojson" and len(features) == 4
    for feature in features:
        k = feature["properties"]["label"]
        cell = _centres_in(shapely.geometry.shape(feature["geometry"]))
        assert _iou(cell, truth == k) >= 0.99


def test_coco_with_two_categories_needs_a_choice(settings, tmp_path, capsys):
    folder = tmp_path / "coco"
    folder.mkdir()
    write_image(folder / "a.png", np.zeros((20, 20, 3), np.uint8))
    square = lambda x, y: [[x, y, x + 6, y, x + 6, y + 6, x, y + 6]]   # noqa: E731
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}],
           "annotations": [{"id": i, "image_id": 1, "category_id": c, "segmentation": square(x, 2)}
                           for i, (c, x) in enumerate(((1, 1), (1, 7), (2, 13)), start=1)],
           "categories": [{"id": 1, "name": "neuron"}, {"id": 2, "name": "glia"}]}
    (folder / "cells.json").write_text(json.dumps(doc))
    assert cli.main(["project", "create", "P", "--stain", "yellow"], settings) == 0
    args = ["import", str(folder / "cells.json"), "--project", "P", "--format", "coco"]
    assert cli.main(args, settings) == 2
    assert "2 categories: glia, neuron" in capsys.readouterr().err
    assert cli.main([*args, "--categories", "neuron"], settings) == 0
    from db.engine import make_engine

    engine = make_engine(settings)
    with Session(engine) as s:
        head = masks.head_version(s, s.query(Image).one().id)
        assert head.object_count == 2               # two touching squares: two cells
    engine.dispose()


# ------------------------------------------------------------------ writers keep the labels

def _three_cells():
    """Cells 1 and 2 touch; cell 3 stands apart."""
    lab = np.zeros((40, 60), np.int32)
    lab[5:20, 5:20], lab[5:20, 20:35], lab[25:35, 40:55] = 1, 2, 3
    return lab


def test_dropping_in_review_keeps_the_other_labels(engine, storage):
    with Session(engine) as s, s.begin():
        _, [image] = project_with_images(s, storage)
        ann = user(s, "ann")
        v1 = masks.save_mask_version(s, storage, image.id, _three_cells(), based_on=None,
                                     source="import", author_id=None)
        assert v1.object_count == 3
        masks.finish_review(s, storage, image.id, ann, version_id=v1.id, dropped=[3])
        head = masks.head_version(s, image.id)
        # cells 1 and 2 touch: as a 0/255 mask they would have merged into one
        assert head.object_count == 2
        assert np.array_equal(storage.read_labels(head.path), np.where(_three_cells() == 3, 0,
                                                                        _three_cells()))


def test_expert_keep_adds_a_label_and_drop_removes_pixels(engine, storage):
    lab = _three_cells()
    with Session(engine) as s, s.begin():
        _, [image] = project_with_images(s, storage)
        expert = user(s, "eve", "expert")
        v1 = masks.save_mask_version(s, storage, image.id, lab, based_on=None, source="import",
                                     author_id=None)
        masks.save_mask_version(s, storage, image.id, np.where(lab == 3, 0, lab),
                                based_on=v1.id, source="manual", author_id=None)
        back = adjudication.queue_mask_object(s, storage, image.id, v1.id, 3, reason="unsure")
        adjudication.decide_adjudication(s, storage, back.id, expert=expert, verdict="keep",
                                         reason="a faint neuron")
        head = masks.head_version(s, image.id)
        assert head.object_count == 3 and np.array_equal(storage.read_labels(head.path), lab)
        out = adjudication.queue_mask_object(s, storage, image.id, head.id, 2, reason="unsure")
        adjudication.decide_adjudication(s, storage, out.id, expert=s.get(User, expert.id),
                                         verdict="drop", reason="debris")
        head = masks.head_version(s, image.id)
        assert head.object_count == 2
        assert np.array_equal(storage.read_labels(head.path), np.where(lab == 2, 0, lab))


def test_more_cells_than_a_label_png_holds_are_refused_naming_the_image(engine, storage):
    with Session(engine) as s, s.begin():
        _, [image] = project_with_images(s, storage)
        image.width, image.height = 512, 512
        dots = np.zeros((512, 512), bool)
        dots[::2, ::2] = True                        # 65,536 single-pixel cells
        with pytest.raises(ValueError, match="img0.png holds 65536 cells; at most 65535"):
            masks.save_mask_version(s, storage, image.id, dots, based_on=None, source="auto",
                                    author_id=None)
