"""db.formats: VIA, COCO (standard and FNC v2) and RLE <-> label images, without a database."""
import json

import numpy as np
import pytest
from skimage import draw, measure

from core import formats as F


def _cells(shape=(120, 160), seed=0):
    """A label image of 8 disks of radius 6-12 (none touching), one at the border, one with a hole
    (object 6: its hole is 6% of it, so a filled polygon still has IoU >= 0.9)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    centres = [(10, 10), (30, 60), (60, 30), (90, 120), (100, 40), (55, 100), (0, 150), (25, 130)]
    for k, (r, c) in enumerate(centres, start=1):
        radius = 12 if k == 6 else rng.uniform(6, 12)
        rr, cc = draw.disk((r, c), radius, shape=shape)
        labels[rr, cc] = k
    rr, cc = draw.disk((55, 100), 3)
    labels[rr, cc] = 0  # a hole: polygons cannot keep it
    return labels


def _ious(truth, found):
    """Per true object: IoU with the found object overlapping it most (0 when none)."""
    out = []
    for k in np.unique(truth[truth > 0]):
        obj = truth == k
        hits = found[obj]
        hits = hits[hits > 0]
        if hits.size == 0:
            out.append(0.0)
            continue
        best = found == np.bincount(hits).argmax()
        out.append((obj & best).sum() / (obj | best).sum())
    return np.array(out)


def _same_objects(truth, found, min_iou=0.9):
    n_true = len(np.unique(truth[truth > 0]))
    n_found = measure.label(found > 0, connectivity=2).max()
    assert n_found == n_true
    assert _ious(truth, found).min() >= min_iou


# ------------------------------------------------------------------ RLE

def test_rle_round_trip_random_masks(rng):
    for shape in [(1, 1), (3, 7), (40, 31)]:
        mask = rng.random(shape) > 0.5
        rle = F.encode_rle(mask)
        assert sum(rle["counts"]) == mask.size
        assert np.array_equal(F.decode_rle(rle), mask)


def test_rle_is_column_major_and_starts_with_background():
    mask = np.array([[1, 1, 0], [0, 1, 0]], bool)
    # columns: (1, 0), (1, 1), (0, 0) -> 0 zeros, 1 one, 1 zero, 2 ones, 2 zeros
    assert F.encode_rle(mask)["counts"] == [0, 1, 1, 2, 2]
    assert F.encode_rle(np.zeros((2, 2), bool))["counts"] == [4]


def test_compressed_rle_strings_decode_by_hand():
    # '1','2','3' are 1, 2, 3; the 4th count is stored as its difference to the 2nd (4 - 2 = 2).
    assert F.decode_rle_string("1232") == [1, 2, 3, 4]
    # 'M' is 77 - 48 = 29 = 0b11101: sign bit set, so 29 - 32 = -3; 5 + (-3) = 2.
    assert F.decode_rle_string("151M") == [1, 5, 1, 2]
    # a continued group: 'Q' = 33 = more + 1, then '1' = 1 -> 1 + (1 << 5) = 33.
    assert F.decode_rle_string("Q1") == [33]
    mask = F.decode_rle({"size": [3, 3], "counts": "1231"})  # [1, 2, 3, 2 + 1]
    assert mask.sum() == 2 + 3 and mask[1, 0] and not mask[0, 0]


def test_rle_with_wrong_total_is_refused():
    with pytest.raises(F.FormatError, match="add up to 5 pixels but its size is 2x2"):
        F.decode_rle({"size": [2, 2], "counts": [2, 3]}, name="x.json")
    with pytest.raises(F.FormatError, match="needs 'size'"):
        F.decode_rle({"counts": [4]})


# ------------------------------------------------------------------ outlines

def test_outlines_are_half_a_pixel_outside_and_drop_holes():
    labels = np.zeros((9, 9), int)
    labels[2:7, 2:7] = 3
    labels[4, 4] = 0
    ((k, (outline,)),) = F.object_outlines(labels)
    assert k == 3
    assert outline[:, 0].min() == 1.5 and outline[:, 0].max() == 6.5
    assert outline[:, 1].min() == 1.5 and outline[:, 1].max() == 6.5


def test_snapped_outlines_lie_on_boundary_pixels():
    labels = np.zeros((9, 9), int)
    labels[2:7, 3:5] = 1
    ((_, (outline,)),) = F.object_outlines(labels, snap=True)
    assert outline.dtype.kind == "i"
    assert all(labels[r, c] == 1 for r, c in outline)
    assert {tuple(p) for p in outline} == {(r, c) for r in range(2, 7) for c in (3, 4)}


def test_object_in_two_pieces_gives_two_outlines_largest_first():
    labels = np.zeros((10, 10), int)
    labels[1:3, 1:3] = 1
    labels[5:9, 5:9] = 1
    labels[0, 8] = 2  # a second label makes it a label image: label 1 is one cell in two pieces
    (_, pieces), _ = F.object_outlines(labels)
    assert len(pieces) == 2
    assert pieces[0][:, 0].min() == 4.5


# ------------------------------------------------------------------ COCO

def test_coco_polygon_round_trip_is_exact_without_holes():
    labels = _cells()
    labels[labels == 6] = 0  # the object with the hole
    doc = json.loads(json.dumps(F.coco_document([F.ExportImage("a.png", labels)])))
    (img,) = F.read_coco(doc)
    assert img.shape == labels.shape
    found = F.regions_to_labels(img.regions, img.shape)
    assert np.array_equal(found > 0, labels > 0)
    _same_objects(labels, found, min_iou=1.0)


def test_coco_round_trip_with_a_hole_meets_the_iou_bar():
    labels = _cells()
    for rle in (False, True):
        doc = F.coco_document([F.ExportImage("a.png", labels)], rle=rle)
        (img,) = F.read_coco(json.dumps(doc))
        found = F.regions_to_labels(img.regions, img.shape)
        _same_objects(labels, found)
        if rle:
            assert np.array_equal(found, labels)


def test_coco_document_fields():
    labels = np.zeros((20, 30), int)
    labels[2:5, 3:9] = 1  # 3 rows x 6 cols
    labels[10, 20] = 2
    doc = F.coco_document([F.ExportImage("x/a.png", labels, attributes={"split": "test"})],
                          category="neuron")
    assert doc["categories"] == [{"id": 1, "name": "neuron", "supercategory": "neuron"}]
    assert doc["images"] == [{"id": 1, "file_name": "x/a.png", "height": 20, "width": 30,
                              "split": "test"}]
    a, b = doc["annotations"]
    assert (a["id"], a["image_id"], a["category_id"], a["iscrowd"]) == (1, 1, 1, 0)
    assert a["bbox"] == [3, 2, 6, 3] and a["area"] == 18
    assert b["bbox"] == [20, 10, 1, 1] and b["area"] == 1
    xs, ys = a["segmentation"][0][0::2], a["segmentation"][0][1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (3.0, 9.0, 2.0, 5.0)  # pixel corners


def test_third_party_coco_box_polygon_covers_its_pixels():
    doc = {"images": [{"id": 7, "file_name": "b.png", "height": 6, "width": 8}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 1,
                            "segmentation": [[2, 1, 5, 1, 5, 4, 2, 4]]}],
           "categories": [{"id": 1, "name": "cell"}]}
    (img,) = F.read_coco(doc)
    found = F.regions_to_labels(img.regions, img.shape)
    expect = np.zeros((6, 8), bool)
    expect[1:4, 2:5] = True
    assert np.array_equal(found > 0, expect)


def test_coco_multi_part_object_stays_one_object():
    labels = np.zeros((12, 12), int)
    labels[1:4, 1:4] = 1
    labels[7:10, 7:10] = 1
    labels[1:3, 9:11] = 2  # a second label makes it a label image: label 1 is one cell
    doc = F.coco_document([F.ExportImage("a.png", labels)])
    assert len(doc["annotations"]) == 2 and len(doc["annotations"][0]["segmentation"]) == 2
    (img,) = F.read_coco(doc)
    assert len(img.regions) == 2
    assert np.array_equal(F.regions_to_labels(img.regions, img.shape), labels)


def test_fnc_v2_coco_is_read_one_object_per_outline():
    labels = _cells()
    outlines = F.object_outlines(labels, snap=True)
    # FNC v2 keeps at most 50 OpenCV outline points per cell
    outlines = [(k, [o[0][np.linspace(0, len(o[0]) - 1, min(50, len(o[0]))).astype(int)]])
                for k, o in outlines]
    fnc = {  # as FNC v2 writes it: one entry per image with lists, string ids, no categories
        "info": {"description": "Fluorescent Neuronal Cells"},
        "images": [{"id": "Mar19bS1C1R1_DMl_200x_y", "width": 160, "height": 120,
                    "file_name": "Mar19bS1C1R1_DMl_200x_y.png", "split": "trainval",
                    "path": "yellow/trainval/images/Mar19bS1C1R1_DMl_200x_y.png", "license": 1}],
        "annotations": [{"image_id": "Mar19bS1C1R1_DMl_200x_y", "category_id": 2,
                         "segmentation": [[[int(c), int(r)] for r, c in o[0]] for _, o in outlines],
                         "bbox": [[0, 0, 1, 1]] * len(outlines), "area": [1.0] * len(outlines),
                         "dots": [[0, 0]] * len(outlines), "count": len(outlines), "iscrowd": 0}]}
    (img,) = F.read_coco(json.dumps(fnc).encode())
    assert img.attributes["split"] == "trainval"
    assert len(img.regions) == 8
    _same_objects(labels, F.regions_to_labels(img.regions, img.shape))


def test_coco_tolerates_strays_and_box_only_annotations():
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
           "annotations": [{"image_id": 99, "segmentation": [[0, 0, 1, 0, 1, 1]]},
                           {"image_id": 1, "bbox": [2, 3, 4, 2]},
                           {"image_id": 1, "segmentation": "junk"},
                           {"image_id": 1, "segmentation": [], "bbox": []}]}
    (img,) = F.read_coco(doc)
    assert len(img.regions) == 1
    assert (F.regions_to_labels(img.regions, img.shape) > 0).sum() == 8
    # The empty entry is how FNC v2 lists an image without cells: nothing to note.
    assert len(img.notes) == 2
    assert "only a box" in img.notes[0] and "neither" in img.notes[1]


def test_coco_rle_of_the_wrong_size_names_the_problem():
    rle = F.encode_rle(np.ones((3, 3), bool))
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
           "annotations": [{"image_id": 1, "segmentation": rle}]}
    (img,) = F.read_coco(doc, name="c.json")
    with pytest.raises(F.FormatError, match="c.json: annotation 1: an RLE mask is 3x3 but the image is 4x4"):
        F.regions_to_labels(img.regions, img.shape)


def test_coco_without_images_is_refused():
    with pytest.raises(F.FormatError, match="no 'images' list"):
        F.read_coco({"annotations": []}, name="c.json")
    with pytest.raises(F.FormatError, match="image entry 1 has no 'file_name'"):
        F.read_coco({"images": [{"id": 1}]}, name="c.json")


# ------------------------------------------------------------------ VIA

def test_via_round_trip_is_exact_without_holes():
    labels = _cells()
    labels[labels == 6] = 0
    doc = json.loads(json.dumps(F.via_document([F.ExportImage("a.png", labels, size=123)])))
    assert list(doc["_via_img_metadata"]) == ["a.png123"]
    (img,) = F.read_via(doc)
    assert img.file_name == "a.png" and img.shape is None
    found = F.regions_to_labels(img.regions, labels.shape)
    assert np.array_equal(found > 0, labels > 0)
    _same_objects(labels, found, min_iou=1.0)


def test_via_round_trip_with_a_hole_meets_the_iou_bar():
    labels = _cells(seed=3)
    (img,) = F.read_via(F.via_document([F.ExportImage("a.png", labels)]))
    _same_objects(labels, F.regions_to_labels(img.regions, labels.shape))


def test_via_bare_export_and_via1_region_dicts_are_read():
    region = {"shape_attributes": {"name": "polygon", "all_points_x": [1, 4, 4, 1],
                                   "all_points_y": [1, 1, 3, 3]}, "region_attributes": {}}
    bare = {"a.png-1": {"filename": "a.png", "size": -1, "regions": {"0": region},
                        "file_attributes": {"stain": "yellow"}}}
    assert F.detect_format(bare) == "via"
    (img,) = F.read_via(bare)
    assert img.attributes == {"stain": "yellow"}
    assert (F.regions_to_labels(img.regions, (6, 6)) > 0).sum() == 12  # inclusive: 3 x 4


def test_via_circle_ellipse_rect_and_skipped_shapes():
    shapes = [{"name": "circle", "cx": 10, "cy": 10, "r": 2},
              {"name": "ellipse", "cx": 30, "cy": 30, "rx": 10, "ry": 3, "theta": np.pi / 4},
              {"name": "rect", "x": 2, "y": 30, "width": 5, "height": 4},
              {"name": "point", "cx": 3, "cy": 3},
              {"name": "polygon", "all_points_x": [1, 2], "all_points_y": [1]}]
    doc = {"_via_img_metadata": {"a": {"filename": "a.png", "size": -1, "regions": [
        {"shape_attributes": s, "region_attributes": {}} for s in shapes]}}}
    (img,) = F.read_via(doc)
    assert len(img.regions) == 3 and len(img.notes) == 2
    assert "point" in img.notes[0] and "1 y points" in img.notes[1]
    labels = F.regions_to_labels(img.regions, (50, 50))
    assert (labels == 1).sum() == 13  # centres within distance 2 of (10, 10)
    # VIA's theta turns x towards y (clockwise on screen): the long axis runs down-right.
    assert labels[35, 35] == 2 and labels[25, 35] == 0
    assert (labels == 3).sum() == 20 and labels[30:34, 2:7].min() == 3


def test_unknown_and_broken_files_get_sentences():
    with pytest.raises(F.FormatError, match="neither a VIA-2 file .* nor a COCO file"):
        F.read_annotations({"foo": 1}, name="x.json")
    with pytest.raises(F.FormatError, match="x.json is not valid JSON"):
        F.read_annotations(b"{", name="x.json")
    with pytest.raises(F.FormatError, match="not a VIA-2 file"):
        F.read_via({"images": []})
    kind, images = F.read_annotations(F.coco_document([F.ExportImage("a.png", _cells())]))
    assert kind == "coco" and len(images) == 1


def test_regions_outside_the_image_are_clipped():
    region = F.PolygonRegion((-5.0, -5.0, 3.0, 3.0), (-5.0, 3.0, 3.0, -5.0))
    labels = F.regions_to_labels([region], (10, 10))
    assert (labels > 0).sum() == 16


# ------------------------------------------------------------------ bounds and hostile files

@pytest.mark.parametrize("region, message", [
    (F.PolygonRegion((1.0, 1.0, 5000.0), (1.0, 9.0, 5.0), where="v.json: a.png: region 1"),
     "v.json: a.png: region 1 reaches .* far outside its image"),
    (F.PolygonRegion((1.0, float("nan"), 3.0), (1.0, 2.0, 3.0), where="v.json: region 2"),
     "v.json: region 2 has coordinates that are not finite"),
    (F.EllipseRegion(5.0, 5.0, 1e12, 3.0, where="c.json: annotation 3"),
     "c.json: annotation 3 reaches"),
    (F.EllipseRegion(5.0, 5.0, 2.0, 2.0, float("inf"), where="e"),
     "e has coordinates that are not finite"),
    (F.RectRegion(0.0, 0.0, 10.0, 1e15, where="r"), "r reaches"),
])
def test_annotations_beyond_their_image_are_refused_with_a_sentence(region, message):
    with pytest.raises(F.FormatError, match=message):
        F.regions_to_labels([region], (40, 60))


def test_annotations_reaching_a_little_past_the_edge_are_cut():
    labels = F.regions_to_labels([F.RectRegion(-20.0, 50.0, 30.0, 40.0)], (40, 60))
    assert (labels > 0).sum() == 10 * 10


def test_an_rle_size_is_checked_before_anything_is_decoded():
    import tracemalloc

    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
           "annotations": [{"image_id": 1, "segmentation": {"size": [20_000, 20_000],
                                                            "counts": [400_000_000]}}]}
    (img,) = F.read_coco(doc, name="c.json")
    tracemalloc.start()
    with pytest.raises(F.FormatError, match="an RLE mask is 20000x20000 but the image is 40x60"):
        F.regions_to_labels(img.regions, (40, 60))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2**20  # decoding first took 400 MB
    with pytest.raises(F.FormatError, match="states a size of 200000x200000"):
        F.decode_rle({"size": [200_000, 200_000], "counts": [1]}, name="c.json")
    with pytest.raises(F.FormatError, match="characters other than"):
        F.decode_rle({"size": [2, 2], "counts": "1\u00e42"}, name="c.json")


@pytest.mark.parametrize("text, message", [
    ('{"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": Infinity}]}',
     "x.json: image 'a.png' has height 4 and width inf"),
    ("[" * 100_000 + "]" * 100_000, "x.json nests its brackets deeper"),
    ('{"images": [], "annotations": 5}', "x.json: 'annotations' is not a list"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, '
     '"segmentation": [[1, 2, 3, 4, 5, 6]], "bbox": 3}], "x": 1}', None),
    ('{"_via_img_metadata": {"a": {"filename": "a.png", "regions": 5}}}',
     "x.json does not have the structure of a VIA or COCO file .TypeError"),
    ('{"_via_img_metadata": {"a": {"filename": "a.png", "regions": [{"shape_attributes": '
     '{"name": "circle", "cx": 1, "cy": 1, "r": 1e400}}]}}}', None),
])
def test_malformed_files_are_refused_by_name(text, message):
    if message is None:  # readable: the odd part is skipped or refused when drawn
        F.read_annotations(text.encode(), name="x.json")
        return
    with pytest.raises(F.FormatError, match=message):
        F.read_annotations(text.encode(), name="x.json")
