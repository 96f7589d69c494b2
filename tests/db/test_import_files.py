"""The files labs have, through the import (SQLite and PostgreSQL): other tools' masks as label
images, multi-channel and deep microscopy files read as the project says, planes, pixel sizes.

Every mask file is written with the format's own library (tifffile, roifile, numpy, json) and
every expected cell is drawn here by hand.
"""
import io
import json

import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image as PILImage
from roifile import ROI_TYPE, ImagejRoi
from sqlalchemy import select
from sqlalchemy.orm import Session

import db.importing as I
from core import io as core_io
from core.io import ReadOptions
from db import cli, review
from db.models import Approval, Image, MaskVersion
from db.projects import create_project

SHAPE = (40, 60)
# Six touching 10 x 12 rectangles in two rows: as a 0/255 mask they would be one object.
BOXES = [(r, c) for r in (5, 15) for c in (6, 18, 30)]


def _labels():
    """uint16 labels 1..6 of the touching rectangles (rows r..r+9, columns c..c+11)."""
    lab = np.zeros(SHAPE, np.uint16)
    for k, (r, c) in enumerate(BOXES, start=1):
        lab[r:r + 10, c:c + 12] = k
    return lab


def _picture(seed):
    return np.random.default_rng(seed).integers(0, 200, SHAPE + (3,), dtype=np.uint8)


def _same_cells(found, truth):
    """The same cells: each truth label is exactly one found label, and no more labels."""
    found, truth = np.asarray(found), np.asarray(truth)
    assert len(set(np.unique(found)) - {0}) == len(set(np.unique(truth)) - {0})
    for value in set(np.unique(truth)) - {0}:
        cell = truth == value
        hit = np.bincount(found[cell].astype(np.int64)).argmax()
        assert hit != 0 and np.array_equal(found == hit, cell), value


@pytest.fixture
def saved(monkeypatch):
    """Every mask handed to save_mask_version by the import: {image id: (source, mask)}."""
    got = {}
    real = I.save_mask_version

    def spy(session, storage, image_id, mask, **kw):
        got[image_id] = (kw["source"], np.array(mask))
        return real(session, storage, image_id, mask, **kw)

    monkeypatch.setattr(I, "save_mask_version", spy)
    return got


def _project(engine, name="P", **kw):
    with Session(engine) as s, s.begin():
        return create_project(s, name, stain="yellow", **kw).id


def _images(engine):
    with Session(engine) as s:
        return {im.original_name: im for im in s.scalars(select(Image))}


# ------------------------------------------------------------------ masks from other tools

def _rect_roi(r, c, name):
    return ImagejRoi(roitype=ROI_TYPE.RECT, name=name, left=c, top=r, right=c + 12, bottom=r + 10)


def _geojson():
    features = [{"type": "Feature", "properties": {"objectType": "detection"},
                 "geometry": {"type": "Polygon", "coordinates": [[[c, r], [c + 12, r],
                                                                  [c + 12, r + 10], [c, r + 10],
                                                                  [c, r]]]}}
                for r, c in BOXES]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _seg_npy(labels):
    buffer = io.BytesIO()
    np.save(buffer, {"masks": labels, "outlines": np.zeros_like(labels), "chan_choose": [0, 0],
                     "filename": "x.png", "est_diam": np.float64(11.0)}, allow_pickle=True)
    return buffer.getvalue()


def _tiff(array, **kw):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kw)
    return buffer.getvalue()


def _mask_files(scratch):
    """One mask file of each kind for images a..e: six touching cells (c.roi: the first)."""
    scratch.mkdir(exist_ok=True)
    roifile.roiwrite(scratch / "b_RoiSet.zip",
                     [_rect_roi(r, c, f"cell{k}") for k, (r, c) in enumerate(BOXES)])
    return {"a_seg.npy": _seg_npy(_labels()),
            "b_RoiSet.zip": (scratch / "b_RoiSet.zip").read_bytes(),
            "c.roi": _rect_roi(*BOXES[0], "one").tobytes(), "d.geojson": _geojson(),
            "e_mask.tif": _tiff(_labels())}


@pytest.mark.parametrize("where", ["beside the images", "masks folder", "uploads"])
def test_mask_files_of_each_kind_import_as_labels(engine, settings, project_ids, saved, where):
    masks = _mask_files(settings.data_dir.parent / "scratch")
    # f has two candidates, g a damaged one, h none: each is said, none silently auto-masked
    masks.update({"f_seg.npy": _seg_npy(_labels()), "f.geojson": _geojson(),
                  "g_seg.npy": b"\x93NUMPY damaged", "notes.txt": b"hello"})
    images = {f"{n}.png": core_io.write_image(None, _picture(k)) for k, n in enumerate("abcdefgh")}
    folder = settings.data_dir / "in"
    mask_dir = folder if where == "beside the images" else settings.data_dir / "masks"
    for files, target in ((images, folder), (masks, mask_dir)):
        target.mkdir(exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
    options = I.ImportOptions(prelabel=True)
    if where == "uploads":
        report = I.import_uploads(engine, settings, "P", list(images.items()) + list(masks.items()),
                                  options=options)
    else:
        report = I.import_path(engine, settings, folder, project="P", options=options,
                               masks=None if where == "beside the images" else mask_dir)
    got = {o.name: o for o in report.outcomes}
    assert {n: got[n].mask for n in ("a.png", "b.png", "c.png", "d.png", "e.png", "h.png")} == {
        "a.png": "import", "b.png": "import", "c.png": "import", "d.png": "import",
        "e.png": "import", "h.png": "auto"}
    assert got["f.png"].reason == "two masks" and "f.geojson and f_seg.npy" in got["f.png"].message
    assert got["g.png"].reason == "unusable mask" and "g_seg.npy" in got["g.png"].message
    reasons = {o.name: o.reason for o in report.skipped}
    assert reasons["notes.txt"] in ("unusable mask", "unknown format")
    ids = {name: o.image_id for name, o in got.items() if o.status == "imported"}
    assert set(ids) == {"a.png", "b.png", "c.png", "d.png", "e.png", "h.png"}
    for name in "abde":
        source, mask = saved[ids[f"{name}.png"]]
        assert source == "import"
        _same_cells(mask, _labels())
    first = (_labels() == 1).astype(np.uint16)
    _same_cells(saved[ids["c.png"]][1], first)
    with Session(engine) as s:
        counts = {im.original_name: s.get(MaskVersion, im.head_version_id).object_count
                  for im in s.scalars(select(Image))}
    assert {n: counts[n] for n in ("a.png", "b.png", "d.png", "e.png", "c.png")} == {
        "a.png": 6, "b.png": 6, "d.png": 6, "e.png": 6, "c.png": 1}


@pytest.fixture
def project_ids(engine):
    return {"P": _project(engine)}


def test_the_command_line_keeps_every_label_of_a_label_tiff_a_cell(engine, settings, saved,
                                                                  tmp_path_factory, capsys):
    """``python -m db import DIR --project P --format folder --masks MASKDIR --approved``,
    from folders outside CELLTALLY_IMPORT_ROOTS (the command line reads any folder)."""
    _project(engine)
    outside = tmp_path_factory.mktemp("lab-share")
    (outside / "images").mkdir()
    (outside / "masks").mkdir()
    for k in range(2):
        core_io.write_image(outside / "images" / f"slice{k}.png", _picture(k))
        tifffile.imwrite(outside / "masks" / f"slice{k}.tif", _labels())
    code = cli.main(["import", str(outside / "images"), "--project", "P", "--format", "folder",
                     "--masks", str(outside / "masks"), "--approved"], settings)
    assert code == 0
    assert "Imported 2 images." in capsys.readouterr().out
    with Session(engine) as s:
        images = list(s.scalars(select(Image)))
        assert len(images) == 2 and {im.review_status for im in images} == {"approved"}
        for im in images:
            head = s.get(MaskVersion, im.head_version_id)
            assert (head.source, head.object_count) == ("import", 6)
            approved = select(Approval.version_id).where(Approval.image_id == im.id)
            assert s.scalar(approved) == head.id
            _same_cells(saved[im.id][1], _labels())
    with pytest.raises(I.ImportRefused, match="outside the folders CellTally may import from"):
        I.import_path(engine, settings, outside / "images", project="P")


# ------------------------------------------------------------------ channels, depth, planes

def _shapes():
    """Three different shapes, one per channel."""
    out = np.zeros((3,) + SHAPE, np.uint16)
    out[0, 5:15, 5:20] = 65535
    out[1, 20:35, 30:50] = 65535
    out[2, 25:38, 2:12] = 65535
    return out


@pytest.mark.parametrize("channels", [2, 3])
def test_ome_tiffs_import_with_the_projects_channel(engine, settings, channels):
    _project(engine, "one", read=ReadOptions(channel=1))
    _project(engine, "unset")
    folder = settings.data_dir / "ome"
    folder.mkdir()
    names = ["DAPI", "GFP", "Cy5"][:channels]
    tifffile.imwrite(folder / "cells.ome.tif", _shapes()[:channels], ome=True,
                     photometric="minisblack", metadata={"axes": "CYX", "Channel": {"Name": names}})
    report = I.import_path(engine, settings, folder, project="one",
                           options=I.ImportOptions(prelabel=False))
    [outcome] = report.imported
    assert "channel 1 (GFP) in yellow" in outcome.read["channels"]
    assert any("channel 1 (GFP) in yellow" in line for line in report.lines())
    with Session(engine) as s:
        image = s.get(Image, outcome.image_id)
        rgb = I.Storage.from_settings(settings).read_image(image.path)
        assert image.read_info["format"] == "OME-TIFF"
        assert image.read_info["scaling"] == "container depth"
    cell = _shapes()[1] > 0
    assert np.array_equal(rgb[..., 0], cell * 255) and np.array_equal(rgb[..., 1], cell * 255)
    assert not rgb[..., 2].any()
    refused = I.import_path(engine, settings, folder, project="unset")
    [skipped] = refused.skipped
    assert skipped.reason == "several channels"
    assert f"{channels} channels (0: DAPI, 1: GFP" in skipped.message
    assert "--channel K" in skipped.message


def test_a_12_bit_noise_field_reads_dim_through_the_import(engine, settings):
    _project(engine)
    noise = np.random.default_rng(3).integers(0, 165, SHAPE).astype(np.uint16)
    noise[0, 0] = 164  # the field's maximum: 164 of 4095, camera noise and no cell
    folder = settings.data_dir / "dim"
    folder.mkdir()
    tifffile.imwrite(folder / "field.ome.tif", noise, ome=True, photometric="minisblack",
                     metadata={"axes": "YX", "SignificantBits": 12})
    report = I.import_path(engine, settings, folder, project="P",
                           options=I.ImportOptions(prelabel=False))
    [outcome] = report.imported
    assert outcome.read["scaling"] == "significant bits"
    assert "12 significant bits (OME SignificantBits)" in outcome.read["scaling_note"]
    with Session(engine) as s:
        image = s.get(Image, outcome.image_id)
        assert image.read_info["bits"] == 12
        rgb = I.Storage.from_settings(settings).read_image(image.path)
    # 164 * 255 / 4095 = 10.2: dim, as it was taken; never stretched by its own maximum.
    assert rgb.max() == 10 and rgb.mean() < 6
    assert np.array_equal(rgb[..., 0], np.floor(noise * 255.0 / 4095 + 0.5))


def test_multi_page_tiffs_need_a_plane(engine, settings, capsys):
    _project(engine)
    planes = np.zeros((3,) + SHAPE, np.uint8)
    planes[0, 2:8, 2:8] = 90
    planes[1, 10:20, 10:30] = 200
    planes[2, 2:8, 2:8] = 120
    folder = settings.data_dir / "stack"
    folder.mkdir()
    pages = [PILImage.fromarray(plane) for plane in planes]  # pages without axes, as Pillow writes
    pages[0].save(folder / "stack.tif", format="TIFF", save_all=True, append_images=pages[1:])
    refused = I.import_path(engine, settings, folder, project="P")
    [skipped] = refused.skipped
    assert skipped.reason == "several planes" and "--z K" in skipped.message
    assert cli.main(["import", str(folder), "--project", "P", "--z", "max",
                     "--no-prelabel"], settings) == 0
    assert "maximum projection over 3 planes" in capsys.readouterr().out
    [image] = _images(engine).values()
    rgb = I.Storage.from_settings(settings).read_image(image.path)
    assert np.array_equal(rgb[..., 1], planes.max(axis=0))
    assert image.read_info["z"] == "maximum projection over 3 planes"


def test_pixel_size_per_image_feeds_density(engine, settings):
    _project(engine, pixel_size_um=0.5)
    folder, masks = settings.data_dir / "px", settings.data_dir / "px_masks"
    folder.mkdir()
    masks.mkdir()
    plane = (_picture(1)[..., 0]).astype(np.uint8)
    tifffile.imwrite(folder / "fine.ome.tif", plane, ome=True, photometric="minisblack",
                     metadata={"axes": "YX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0,
                               "PhysicalSizeXUnit": "\u00b5m", "PhysicalSizeYUnit": "\u00b5m"})
    core_io.write_image(folder / "plain.png", _picture(2))
    for name in ("fine", "plain"):
        tifffile.imwrite(masks / f"{name}.tif", _labels())
    report = I.import_path(engine, settings, folder, project="P", masks=masks,
                           options=I.ImportOptions(approved=True))
    assert len(report.imported) == 2
    assert any("fine.ome.tif records 2 µm per pixel but the project says 0.5" in n
               for n in report.all_notes())
    images = _images(engine)
    assert images["fine.ome.tif"].pixel_size_um == pytest.approx(2.0)
    assert images["plain.png"].pixel_size_um is None
    with Session(engine) as s:
        pid = images["plain.png"].project_id
        table = review.image_counts(s, pid).set_index("name")
        groups = review.group_summary(s, pid, "split").set_index("split")
    area = SHAPE[0] * SHAPE[1]
    assert table.loc["fine.ome.tif", "area_mm2"] == pytest.approx(area * 0.002 ** 2)
    assert table.loc["plain.png", "area_mm2"] == pytest.approx(area * 0.0005 ** 2)
    # 12 cells over both images' areas, each at its own scale
    expected = 12 / (area * 0.002 ** 2 + area * 0.0005 ** 2)
    assert groups.loc["unassigned", "density_per_mm2"] == pytest.approx(expected)


# ------------------------------------------------------------------ FNC v2

def test_fnc_v2_reports_only_what_matters(engine, settings, capsys):
    _project(engine)
    root = settings.data_dir / "fnc2" / "yellow"
    (root / "unlabelled" / "images").mkdir(parents=True)
    (root / "unlabelled" / "metadata").mkdir()
    for k in range(3):
        core_io.write_image(root / "unlabelled" / "images" / f"u{k}.png", _picture(10 + k))
        (root / "unlabelled" / "metadata" / f"u{k}.txt").write_text("magnification 20x")
    test = root / "test"
    (test / "images").mkdir(parents=True)
    (test / "ground_truths" / "masks").mkdir(parents=True)
    (test / "ground_truths" / "COCO").mkdir()
    core_io.write_image(test / "images" / "empty.png", _picture(20))
    core_io.write_mask(test / "ground_truths" / "masks" / "empty.png", np.zeros(SHAPE, bool))
    # FNC v2's COCO file: one annotation entry per image; an image without cells has empty lists
    coco = {"images": [{"id": "empty", "file_name": "empty.png", "height": SHAPE[0],
                        "width": SHAPE[1]}],
            "annotations": [{"image_id": "empty", "segmentation": [], "bbox": [], "area": [],
                             "iscrowd": 0}]}
    (test / "ground_truths" / "COCO" / "annotations.json").write_text(json.dumps(coco))
    report = I.import_path(engine, settings, settings.data_dir / "fnc2", project="P",
                           options=I.ImportOptions(prelabel=False))
    assert len(report.imported) == 4 and not report.skipped
    assert not any("txt" in line or "unknown format" in line for line in report.lines())
    _project(engine, "Q")
    from_coco = I.import_path(engine, settings, test / "ground_truths" / "COCO", project="Q",
                              fmt="coco", options=I.ImportOptions(prelabel=False))
    assert [o.name for o in from_coco.imported] == ["empty.png"] and not from_coco.notes
    assert not any("neither" in line for line in from_coco.lines())
    with Session(engine) as s:
        image = s.get(Image, from_coco.imported[0].image_id)
        assert s.get(MaskVersion, image.head_version_id).object_count == 0


def test_each_refusal_of_a_microscopy_file_has_its_own_reason(engine, settings):
    _project(engine)
    two = _tiff(_shapes()[:2], ome=True, photometric="minisblack", metadata={"axes": "CYX"})
    files = [("slide.czi", b"ZISRAWFILE" + bytes(64)),
             ("scan.nd2", b"\xda\xce\xbe\x0a" + bytes(64)),
             ("two.ome.tif", two), ("notes.png", b"plain text, not an image")]
    report = I.import_uploads(engine, settings, "P", files)
    reasons = {o.name: o.reason for o in report.skipped}
    assert reasons == {"slide.czi": "microscope format", "scan.nd2": "microscope format",
                       "two.ome.tif": "several channels", "notes.png": "unknown format"}
    messages = {o.name: o.message for o in report.skipped}
    assert "Zeiss CZI" in messages["slide.czi"] and "OME-TIFF" in messages["scan.nd2"]
