"""core.maskfiles: other tools' mask files in and out, each read back by its own library."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import roifile
import shapely
import tifffile
from PIL import Image
from roifile import ROI_TYPE, ImagejRoi
from shapely.geometry import shape as shapely_shape
from skimage import draw

from core.maskfiles import (
    MAX_CELLS,
    MaskFile,
    match_mask_files,
    read_cellpose,
    read_geojson,
    read_imagej_rois,
    read_label_image,
    read_mask_file,
    write_geojson,
    write_imagej_rois,
    write_label_tiff,
)

SHAPE = (60, 80)


def _scene():
    """Touching cells, a corner-only touch, a ring holding a cell, a cell in two pieces, disks."""
    lab = np.zeros(SHAPE, np.uint16)
    lab[3:12, 3:10] = 1
    lab[3:12, 10:16] = 2                     # shares an edge with 1
    lab[14:18, 3:7] = 3
    lab[18:22, 7:11] = 4                     # meets 3 only at a corner
    lab[25, 3] = lab[26, 4] = 5              # two pixels touching at a corner: one cell
    lab[5:35, 30:60] = 6                     # a ring...
    lab[10:30, 35:55] = 0
    lab[15:25, 40:50] = 7                    # ...with a cell in its hole
    lab[40:46, 3:9] = 8                      # one cell in two pieces
    lab[40:46, 14:20] = 8
    for k, (r, c) in enumerate([(48, 40), (50, 52), (45, 66)], start=9):
        rr, cc = draw.disk((r, c), 5.5, shape=SHAPE)
        lab[rr, cc] = k                      # disks 9 and 10 overlap: 10 wins, they touch
    return lab


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _assert_same_cells(found, truth):
    """Every cell of truth is one cell of found with IoU >= 0.99 (here: exactly equal)."""
    values = sorted(set(np.unique(truth)) - {0})
    assert len(set(np.unique(found)) - {0}) == len(values)
    for value in values:
        cell = truth == value
        hit = np.bincount(found[cell]).argmax()
        assert hit != 0 and _iou(found == hit, cell) >= 0.99, value
        assert np.array_equal(found == hit, cell), value


def _skimage_fill(rings_xy, shape):
    """Even-odd fill of (x, y) corner-coordinate rings with skimage (pixel centres at ints)."""
    out = np.zeros(shape, bool)
    for ring in rings_xy:
        ring = np.asarray(ring, float)
        rr, cc = draw.polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape=shape)
        flip = np.zeros(shape, bool)
        flip[rr, cc] = True
        out ^= flip
    return out


# ---------------------------------------------------------------------------------------------
# Round trip: label TIFF in; label TIFF, ROI zip and GeoJSON out, read back independently


@pytest.fixture(scope="module")
def scene_in():
    truth = _scene()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, truth)
    read = read_label_image(buffer.getvalue(), SHAPE, name="scene.tif")
    return truth, read


def test_label_tiff_in_keeps_every_label(scene_in):
    truth, read = scene_in
    assert read.kind == "image" and read.notes == ()
    assert read.labels.dtype == np.int32 and np.array_equal(read.labels, truth)


def test_label_tiff_out_read_by_tifffile(scene_in, tmp_path):
    truth, read = scene_in
    write_label_tiff(tmp_path / "out.tif", read.labels)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.uint16 and np.array_equal(back, truth)


def test_roi_zip_out_read_by_roifile(scene_in, tmp_path):
    truth, read = scene_in
    write_imagej_rois(tmp_path / "scene_RoiSet.zip", read.labels)
    rois = roifile.roiread(tmp_path / "scene_RoiSet.zip")
    assert len(rois) == 11
    for roi in rois:
        value = int(roi.name.split("-")[1])
        cell = truth == value
        filled = _skimage_fill(roi.coordinates(multi=True), SHAPE)
        assert _iou(filled, cell) >= 0.99 and np.array_equal(filled, cell), value
        # ImageJ's own reading of the kinds: simple cells traced, the rest composite
        assert roi.composite == (value in (5, 6, 8)), value
        if not roi.composite:
            assert roi.roitype == ROI_TYPE.TRACED


def test_geojson_out_read_by_shapely(scene_in, tmp_path):
    truth, read = scene_in
    write_geojson(tmp_path / "scene.geojson", read.labels)
    doc = json.loads((tmp_path / "scene.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 11
    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    for feature in doc["features"]:
        assert feature["properties"]["objectType"] == "detection"
        value = feature["properties"]["label"]
        geometry = shapely_shape(feature["geometry"])
        assert geometry.is_valid, shapely.is_valid_reason(geometry)
        assert feature["geometry"]["type"] == ("MultiPolygon" if value in (5, 8) else "Polygon")
        filled = shapely.contains_xy(geometry, cols + 0.5, rows + 0.5)
        assert np.array_equal(filled, truth == value), value
        # RFC 7946 right-hand rule: exteriors counter-clockwise, holes clockwise
        for polygon in getattr(geometry, "geoms", [geometry]):
            assert polygon.exterior.is_ccw and not any(h.is_ccw for h in polygon.interiors)


def test_our_readers_take_our_files_back(scene_in):
    truth, read = scene_in
    _assert_same_cells(read_imagej_rois(write_imagej_rois(None, read.labels), SHAPE,
                                        name="a.zip").labels, truth)
    _assert_same_cells(read_geojson(write_geojson(None, read.labels), SHAPE,
                                    name="a.geojson").labels, truth)


# ---------------------------------------------------------------------------------------------
# ImageJ ROIs written by roifile


def _composite(rings_xy, name):
    path = []
    for ring in rings_xy:
        path += [0, *ring[0]] + [v for point in ring[1:] for v in (1, *point)] + [4]
    corners = np.concatenate(rings_xy)
    roi = ImagejRoi(roitype=ROI_TYPE.RECT, name=name, left=int(corners[:, 0].min()),
                    top=int(corners[:, 1].min()), right=int(corners[:, 0].max()),
                    bottom=int(corners[:, 1].max()))
    roi.multi_coordinates = np.asarray(path, np.float32)
    roi.shape_roi_size = len(path)
    return roi


def _roi_set(tmp_path):
    """Area ROIs of each kind, a line and a point, as roifile writes them."""
    polygon = ImagejRoi.frompoints(np.array([[2, 2], [10, 2], [10, 6], [2, 6]]), name="poly")
    polygon.roitype = ROI_TYPE.POLYGON
    freehand = ImagejRoi.frompoints(np.array([[20.2, 1.7], [27.9, 4.1], [22.4, 9.3]]), name="free")
    rect = ImagejRoi(roitype=ROI_TYPE.RECT, name="rect", left=30, top=2, right=35, bottom=5)
    oval = ImagejRoi(roitype=ROI_TYPE.OVAL, name="oval", left=40, top=10, right=44, bottom=14)
    donut = _composite([np.array([[2, 20], [12, 20], [12, 30], [2, 30]]),
                        np.array([[5, 23], [9, 23], [9, 27], [5, 27]])], "donut")
    line = ImagejRoi(roitype=ROI_TYPE.LINE, name="line", x1=0, y1=0, x2=5, y2=5)
    point = ImagejRoi.frompoints(np.array([[50, 50]]), name="point")
    point.roitype = ROI_TYPE.POINT
    rois = [polygon, freehand, rect, oval, donut, line, point]
    roifile.roiwrite(tmp_path / "img_RoiSet.zip", rois)
    return tmp_path / "img_RoiSet.zip"


def test_imagej_roi_kinds_read_as_cells(tmp_path):
    read = read_imagej_rois(_roi_set(tmp_path), SHAPE)
    lab = read.labels
    assert read.n_cells == 5
    assert np.array_equal(lab == 1, _skimage_fill([[[2, 2], [10, 2], [10, 6], [2, 6]]], SHAPE))
    assert np.array_equal(lab == 2, _skimage_fill([[[20.2, 1.7], [27.9, 4.1], [22.4, 9.3]]], SHAPE))
    assert (lab == 3).sum() == 15 and (lab[2:5, 30:35] == 3).all()
    # ImageJ's oval: pixel centres inside the inscribed circle; a 4 x 4 box loses its corners
    expected = np.zeros(SHAPE, bool)
    expected[10:14, 40:44] = True
    expected[[10, 10, 13, 13], [40, 43, 40, 43]] = False
    assert np.array_equal(lab == 4, expected)
    donut = np.zeros(SHAPE, bool)
    donut[20:30, 2:12] = True
    donut[23:27, 5:9] = False
    assert np.array_equal(lab == 5, donut)
    assert read.notes == ("img_RoiSet.zip: ROIs without an area were skipped (line: 1, point: 1).",)


def test_a_single_roi_file(tmp_path):
    roi = ImagejRoi.frompoints(np.array([[1, 1], [4, 1], [4, 3], [1, 3]]), name="one")
    roi.tofile(tmp_path / "img.roi")
    lab = read_mask_file(tmp_path / "img.roi", SHAPE).labels
    assert lab.sum() == 6 and lab[1:3, 1:4].all()


def test_rois_far_outside_the_image_are_refused_before_drawing(tmp_path):
    roi = ImagejRoi.frompoints(np.array([[1.0, 1.0], [9e8, 1.0], [9e8, 9e8]]), name="huge")
    message = r"huge.roi: .* far outside the image \(80 px wide, 60 px high\)"
    with pytest.raises(ValueError, match=message):
        read_imagej_rois(roi.tobytes(), SHAPE, name="huge.roi")


def test_rois_reaching_past_the_edge_are_cut_with_a_note():
    roi = ImagejRoi(roitype=ROI_TYPE.RECT, name="edge", left=70, top=50, right=90, bottom=70)
    read = read_imagej_rois(roi.tobytes(), SHAPE, name="edge.roi")
    assert (read.labels == 1).sum() == 10 * 10
    assert "cut" in read.notes[-1]


def test_damaged_roi_files_are_refused_with_the_file_named():
    with pytest.raises(ValueError, match="bad.zip"):
        read_imagej_rois(b"PK\x03\x04 not really", SHAPE, name="bad.zip")
    with pytest.raises(ValueError, match="bad.roi.*neither"):
        read_imagej_rois(b"hello", SHAPE, name="bad.roi")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "no rois")
    with pytest.raises(ValueError, match="holds no .roi files"):
        read_imagej_rois(buffer.getvalue(), SHAPE, name="empty.zip")


# ---------------------------------------------------------------------------------------------
# QuPath GeoJSON written with json


def _feature(geometry, object_type="detection", name=None):
    props = {"objectType": object_type}
    if name:
        props["name"] = name
    return {"type": "Feature", "id": "0c1d", "geometry": geometry, "properties": props}


def test_geojson_polygons_multipolygons_and_holes():
    square_with_hole = {"type": "Polygon", "coordinates": [
        [[2, 2], [12, 2], [12, 12], [2, 12], [2, 2]], [[5, 5], [9, 5], [9, 9], [5, 9], [5, 5]]]}
    two_pieces = {"type": "MultiPolygon", "coordinates": [
        [[[20, 2], [24, 2], [24, 4], [20, 4], [20, 2]]], [[[30, 2], [34, 2], [34, 5], [30, 2]]]]}
    doc = {"type": "FeatureCollection", "features": [
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [80, 0], [80, 60], [0, 60], [0, 0]]]},
                 "annotation", "tissue"),
        _feature(square_with_hole), _feature(two_pieces),
        _feature({"type": "Point", "coordinates": [5, 5]})]}
    read = read_geojson(json.dumps(doc).encode(), SHAPE, name="img.geojson")
    assert read.n_cells == 2
    expected = np.zeros(SHAPE, bool)
    expected[2:12, 2:12] = True
    expected[5:9, 5:9] = False
    assert np.array_equal(read.labels == 1, expected)
    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    pieces = shapely.contains_xy(shapely_shape(two_pieces), cols + 0.5, rows + 0.5)
    assert np.array_equal(read.labels == 2, pieces)
    assert any("1 annotations were left out" in n for n in read.notes)
    assert read.notes[-1] == "img.geojson: features without an area were skipped (Point: 1)."


def test_geojson_list_of_annotations_as_qupath_writes_without_collection():
    doc = [_feature({"type": "Polygon", "coordinates": [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]},
                    "annotation"),
           {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
               [[5, 5], [6, 5], [6, 6], [5, 6], [5, 5]]]},
            "properties": {"object_type": "annotation"}}]
    read = read_geojson(json.dumps(doc).encode(), SHAPE, name="img.geojson")
    assert read.n_cells == 2 and read.notes == ()
    assert (read.labels == 1).sum() == 4 and read.labels[5, 5] == 2


@pytest.mark.parametrize("coordinates, message", [
    ([[[1, 1], [3, 1], [3, float("nan")], [1, 1]]], "not finite"),
    ([[[1, 1], [3e12, 1], [3, 3], [1, 1]]], "far outside"),
    ([[[1, 1], [3, 1]], "x"], "lists of"),
])
def test_bad_geojson_coordinates_are_refused(coordinates, message):
    doc = _feature({"type": "Polygon", "coordinates": coordinates})
    with pytest.raises(ValueError, match=f"cells.geojson.*{message}"):
        read_geojson(json.dumps(doc).encode(), SHAPE, name="cells.geojson")


def test_files_without_cells_say_so_and_files_without_areas_are_refused():
    empty = read_geojson(b'{"type": "FeatureCollection", "features": []}', SHAPE, name="e.geojson")
    assert empty.n_cells == 0 and empty.labels.shape == SHAPE
    assert empty.notes == ("e.geojson holds no cells.",)
    assert read_imagej_rois(write_imagej_rois(None, np.zeros(SHAPE, int)), SHAPE,
                            name="e.zip").notes == ("e.zip holds no cells.",)
    points = json.dumps([_feature({"type": "Point", "coordinates": [5, 5]})]).encode()
    with pytest.raises(ValueError, match="p.geojson holds no Polygon or MultiPolygon"):
        read_geojson(points, SHAPE, name="p.geojson")


def test_json_that_is_not_geojson_is_refused():
    with pytest.raises(ValueError, match="not GeoJSON"):
        read_geojson(b'{"images": []}', SHAPE, name="coco.geojson")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_geojson(b"{", SHAPE, name="x.geojson")


# ---------------------------------------------------------------------------------------------
# Cellpose _seg.npy written with numpy


def _seg_npy(masks, **extra):
    buffer = io.BytesIO()
    np.save(buffer, {"masks": masks, "outlines": np.zeros_like(masks), "chan_choose": [0, 0],
                     "flows": [np.zeros(masks.shape + (3,), np.uint8)],
                     "ismanual": np.zeros(2, bool),
                     "filename": "img.tif", "est_diam": np.float64(30.0), **extra},
            allow_pickle=True)
    return buffer.getvalue()


def test_cellpose_masks_are_read():
    masks = _scene().astype(np.uint16)
    read = read_cellpose(_seg_npy(masks), SHAPE, name="img_seg.npy")
    assert read.kind == "cellpose" and np.array_equal(read.labels, masks)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_cellpose_file_with_other_objects_is_refused_unopened(tmp_path):
    target = str(tmp_path / "made-by-unpickling")
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "|O", "fortran_order": False,
                                                  "shape": ()})
    stream.write(pickle.dumps({"masks": np.zeros(SHAPE, np.uint16), "x": _Payload(target)}))
    with pytest.raises(ValueError, match=r"evil_seg.npy holds Python objects of type .*mkdir"):
        read_cellpose(stream.getvalue(), SHAPE, name="evil_seg.npy")
    assert not os.path.exists(target)


@pytest.mark.parametrize("data, message", [
    (_seg_npy(np.zeros((10, 10), np.uint16)), "10 x 10 px.*60 x 80 px"),
    (_seg_npy(np.zeros((3,) + SHAPE, np.uint16)), "stack"),
    (b"not numpy", "not a readable Cellpose"),
])
def test_bad_cellpose_files_are_refused(data, message):
    with pytest.raises(ValueError, match=f"img_seg.npy.*{message}"):
        read_cellpose(data, SHAPE, name="img_seg.npy")


def test_a_dict_without_masks_is_not_cellpose():
    buffer = io.BytesIO()
    np.save(buffer, {"flows": [1, 2]}, allow_pickle=True)
    with pytest.raises(ValueError, match="without an integer 'masks'"):
        read_cellpose(buffer.getvalue(), SHAPE, name="img_seg.npy")


# ---------------------------------------------------------------------------------------------
# Label and binary images: the binary-or-labels rule


def _tiff(array):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack")
    return buffer.getvalue()


def test_one_value_is_binary_and_split_into_8_connected_cells():
    mask = np.zeros(SHAPE, np.uint8)
    mask[1, 1] = mask[2, 2] = 255        # diagonal: one cell
    mask[10:12, 10:12] = 255
    read = read_label_image(_tiff(mask), SHAPE, name="m.tif")
    assert read.n_cells == 2 and read.labels[1, 1] == read.labels[2, 2]


def test_values_above_65535_are_renumbered_in_order():
    lab = np.zeros(SHAPE, np.uint32)
    lab[0, 0], lab[1, 1], lab[5, 5] = 70000, 3, 100000
    read = read_label_image(_tiff(lab), SHAPE, name="big.tif")
    assert (read.labels[0, 0], read.labels[1, 1], read.labels[5, 5]) == (2, 1, 3)
    assert "renumbered" in read.notes[0]


def test_more_than_65535_cells_is_refused_naming_the_file():
    lab = np.arange(1, 256 * 257 + 1, dtype=np.uint32).reshape(256, 257)
    with pytest.raises(ValueError, match=f"many.tif holds 65792 cells; at most {MAX_CELLS}"):
        read_label_image(_tiff(lab), (256, 257), name="many.tif")


def test_png_labels_and_colour_masks():
    lab = _scene()
    buffer = io.BytesIO()
    Image.fromarray(lab).save(buffer, format="PNG")
    assert np.array_equal(read_label_image(buffer.getvalue(), SHAPE, name="l.png").labels, lab)
    colour = np.zeros(SHAPE + (3,), np.uint8)
    colour[1:3, 1:3] = (255, 0, 0)
    colour[1:3, 3:5] = (0, 255, 0)      # touching the red one: two cells by colour
    buffer = io.BytesIO()
    Image.fromarray(colour).save(buffer, format="PNG")
    read = read_label_image(buffer.getvalue(), SHAPE, name="c.png")
    assert read.n_cells == 2 and read.labels[1, 1] != read.labels[1, 3]


def test_float_labels_with_whole_values_are_read_and_fractions_refused():
    lab = np.zeros(SHAPE, np.float32)
    lab[2:4, 2:4], lab[8, 8] = 2.0, 5.0
    assert read_label_image(_tiff(lab), SHAPE, name="f.tif").labels[2, 2] == 2
    lab[0, 0] = 0.5
    with pytest.raises(ValueError, match="f.tif holds fractional"):
        read_label_image(_tiff(lab), SHAPE, name="f.tif")


@pytest.mark.parametrize("array, message", [
    (np.zeros((30, 80), np.uint16), "30 x 80 px.*60 x 80 px"),
    (np.zeros((3,) + SHAPE, np.uint16), "more than one plane"),
])
def test_label_images_of_the_wrong_shape_are_refused(array, message):
    with pytest.raises(ValueError, match=f"m.tif.*{message}"):
        read_label_image(_tiff(array), SHAPE, name="m.tif")


# ---------------------------------------------------------------------------------------------
# Discovery


def test_two_candidates_are_refused_naming_both():
    files = ["img01_seg.npy", "img01_RoiSet.zip", "img02.geojson"]
    match = match_mask_files(["img01", "img02"], files)
    assert "img01" not in match.found
    assert match.refused["img01"] == ("img01 has 2 mask files, img01_RoiSet.zip and "
                                      "img01_seg.npy; keep one of them in the masks folder.")
    assert match.found == {"img02": MaskFile("img02.geojson", "geojson")}


def test_every_unusable_file_is_named_with_its_reason():
    names = ["a.jpg", "notes.txt", "RoiSet.zip", "zz_seg.npy", "a.json", "b.npy", "a_cp_masks.png"]
    match = match_mask_files(["a"], names)
    assert match.found == {"a": MaskFile("a_cp_masks.png", "image")}
    assert sorted(match.unusable) == sorted(set(names) - {"a_cp_masks.png"})
    assert "lossy" in match.unusable["a.jpg"]
    assert "no image of this import is named 'zz'" in match.unusable["zz_seg.npy"]
    assert "COCO or VIA" in match.unusable["a.json"]
    assert all(reason.startswith(name) for name, reason in match.unusable.items())


def test_names_qupath_and_imagej_give_exports_are_understood():
    match = match_mask_files(["a", "b", "c", "c_mask"],
                             ["a.tif.geojson", "b.roi", "c_mask.png", "c.tiff"])
    assert {stem: f.name for stem, f in match.found.items()} == {
        "a": "a.tif.geojson", "b": "b.roi", "c": "c.tiff", "c_mask": "c_mask.png"}
    assert not match.unusable and not match.refused


def test_files_in_a_roi_zip_that_are_not_rois_are_noted():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cell.roi", ImagejRoi(roitype=ROI_TYPE.RECT, left=1, top=1, right=3,
                                               bottom=2).tobytes())
        archive.writestr("log.txt", "made by a macro")
    read = read_imagej_rois(buffer.getvalue(), SHAPE, name="a.zip")
    assert read.labels.sum() == 2
    assert read.notes == ("a.zip: 1 files in the zip that are not ROIs were ignored (log.txt).",)
