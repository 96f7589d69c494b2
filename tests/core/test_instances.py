"""Cells as labels without a database: label PNGs, the edit rule, per-annotation imports.

The edit rule (core.objects.edited_labels) is what the Correct page previews and saves; the
expected label images below are worked out by hand from the drawings.
"""
import json
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from skimage import draw
from skimage.measure import label as sk_label

from core import formats as F
from core import io as core_io
from core.objects import MIN_PIECE_AREA, count_objects, edited_labels
from core.strokes import Edit

# pycocotools 2.0.11 passes copy=False to np.array on NumPy 2: harmless, and not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _edit(kind, mask):
    rows, cols = np.nonzero(mask)
    return Edit(kind, rows, cols)


def _dumbbell(shape=(30, 50)):
    """Two 10x10 squares joined by a 2-pixel-high neck: one cell, as a label image."""
    lab = np.zeros(shape, np.int32)
    lab[10:20, 5:15] = lab[10:20, 35:45] = 7
    lab[14:16, 15:35] = 7
    return lab


# ------------------------------------------------------------------ label PNGs

def test_label_png_keeps_touching_cells_and_values_above_255():
    lab = np.zeros((6, 8), np.int32)
    lab[1:5, 1:4], lab[1:5, 4:7] = 300, 2       # touching, one value above 8 bits
    png = core_io.write_labels(None, lab)
    assert png[24] == 16                         # a 16-bit PNG
    assert np.array_equal(core_io.read_labels(png), lab)
    # an older 0/255 mask of the same pixels is one cell: its 8-connected component
    assert count_objects(core_io.read_labels(core_io.write_mask(None, lab > 0))) == 1
    with pytest.raises(core_io.ImageError, match="m.png.*6 x 8 px.*5 x 8"):
        core_io.read_labels(png, shape=(5, 8), name="m.png")


# ------------------------------------------------------------------ the edit rule

def test_erasing_a_neck_makes_two_cells_and_the_preview_is_what_is_stored():
    lab = _dumbbell()
    cut = np.zeros(lab.shape, bool)
    cut[12:18, 24:27] = True                     # across the neck only
    after = edited_labels(lab, [_edit("erase", cut)])
    assert count_objects(after) == 2
    # both sides as they were, minus the erased pixels; the larger piece keeps label 7
    assert np.array_equal(after > 0, (lab > 0) & ~cut)
    assert after[15, 10] != after[15, 40] and 7 in (after[15, 10], after[15, 40])
    # a stored label PNG holds exactly the cells the preview counts
    stored = core_io.read_labels(core_io.write_labels(None, after))
    assert count_objects(stored) == count_objects(after) == 2


def test_an_untouched_label_in_two_pieces_stays_one_cell_until_an_edit_cuts_it():
    lab = np.zeros((30, 40), np.int32)
    lab[2:8, 2:8] = lab[20:28, 2:14] = 1         # one imported cell in two pieces: 36 + 96 px
    lab[10:18, 20:38] = 2
    nick = np.zeros(lab.shape, bool)
    nick[10, 20:25] = True                        # trims cell 2, cuts nothing
    after = edited_labels(lab, [_edit("erase", nick)])
    assert np.unique(after).tolist() == [0, 1, 2] and (after == 1).sum() == 132
    cut = np.zeros(lab.shape, bool)
    cut[10:18, 28:30] = True                      # right through cell 2
    after = edited_labels(after, [_edit("erase", cut)])
    assert count_objects(after) == 3              # cell 2 is two cells; cell 1 still one
    assert (after == 1).sum() == 132 and sk_label(after == 1, connectivity=2).max() == 2
    # cutting one piece of cell 1: its smaller part is a new cell, the rest stays cell 1
    through = np.zeros(lab.shape, bool)
    through[20:28, 6] = True                      # parts of 4 x 8 and 7 x 8 px
    again = edited_labels(after, [_edit("erase", through)])
    assert count_objects(again) == 4
    assert (again == 1).sum() == 36 + 56 and again[22, 10] == 1 and again[4, 4] == 1
    assert again[22, 2] not in (0, 1, 2) and (again == again[22, 2]).sum() == 32


def test_pieces_below_the_minimum_area_are_dropped():
    lab = np.zeros((20, 40), np.int32)
    lab[5:15, 2:30] = 3
    cut = np.zeros(lab.shape, bool)
    cut[5:15, 27] = True                          # leaves a 2-column sliver: 20 px
    assert 20 < MIN_PIECE_AREA
    after = edited_labels(lab, [_edit("erase", cut)])
    assert np.unique(after).tolist() == [0, 3]
    assert (after == 3).sum() == 10 * 25 and not after[5:15, 28:30].any()
    kept = edited_labels(lab, [_edit("erase", cut)], min_area=20)
    assert count_objects(kept) == 2


def test_split_add_and_delete_keep_the_other_labels():
    lab = np.zeros((30, 60), np.int32)
    lab[5:25, 5:45] = 4
    lab[5:25, 50:58] = 9
    line = np.zeros(lab.shape, bool)
    line[:, 24:27] = True                         # a 3-pixel band through cell 4
    split = edited_labels(lab, [_edit("split", line)])
    assert count_objects(split) == 3 and ((split > 0) == (lab > 0)).all()  # nothing lost
    assert (split == 9).sum() == (lab == 9).sum()
    square = np.zeros(lab.shape, bool)
    square[8:14, 40:54] = True                    # over cell 4, the gap and cell 9
    added = edited_labels(split, [_edit("add", square)])
    new = set(np.unique(added)) - set(np.unique(split))
    assert len(new) == 1 and (added == new.pop()).sum() == 6 * 5  # only the gap's background
    gone = edited_labels(added, [Edit("delete", np.array([15]), np.array([54]))])
    assert 9 not in gone and count_objects(gone) == 3


# ------------------------------------------------------------------ imports: one object each

def test_touching_annotations_stay_two_cells_and_overlaps_are_reported(caplog):
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 6, 1, 6, 8, 1, 8]]},
               {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[6, 1, 11, 1, 11, 8, 6, 8]]},
               {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[9, 2, 11, 2, 11, 4, 9, 4]]}],
           "categories": [{"id": 1, "name": "cell"}]}
    (img,) = F.read_coco(doc)
    with caplog.at_level(logging.WARNING, logger="core.formats"):
        lab = F.regions_to_labels(img.regions, img.shape)
    assert lab[4, 5] == 1 and lab[4, 6] == 2 and lab[3, 9] == 3   # the later one wins
    assert count_objects(lab) == 3
    assert "1 of 3 annotations overlap later ones" in caplog.text


def test_coco_categories_are_chosen_by_name():
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
           "annotations": [{"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]},
                           {"image_id": 1, "category_id": 2, "segmentation": [[6, 6, 9, 6, 9, 9, 6, 9]]}],
           "categories": [{"id": 1, "name": "neuron"}, {"id": 2, "name": "glia"}]}
    with pytest.raises(F.CategoryError, match="2 categories: glia, neuron.*--categories"):
        F.read_coco(doc, name="c.json")
    (img,) = F.read_coco(doc, categories=["glia"])
    assert len(img.regions) == 1 and F.regions_to_labels(img.regions, (10, 10))[7, 7] == 1
    assert len(F.read_coco(doc, categories=["glia", "neuron"])[0].regions) == 2
    with pytest.raises(F.CategoryError, match="no category astro"):
        F.read_coco(doc, categories=["astro"])
    one = {**doc, "annotations": doc["annotations"][:1]}   # only one category in use
    assert len(F.read_coco(one)[0].regions) == 1


# ------------------------------------------------------------------ exports

def _ring_scene():
    """Touching cells, a ring with a cell in its hole, and a cell in two pieces."""
    lab = np.zeros((60, 70), np.int32)
    lab[draw.disk((12, 12), 7)] = 1
    lab[draw.disk((12, 24), 7)] = 2               # touches cell 1
    lab[draw.disk((38, 25), 15)] = 3
    lab[draw.disk((38, 25), 9)] = 0               # the ring's hole ...
    lab[draw.disk((38, 25), 5)] = 4               # ... with a cell in it, 4 px of gap around
    lab[3:9, 50:60] = lab[20:28, 52:66] = 5       # one cell, two pieces
    return lab


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_coco_export_is_reproduced_by_pycocotools(tmp_path):
    lab = _ring_scene()
    for rle in (False, True):
        path = tmp_path / f"coco_{rle}.json"
        path.write_text(json.dumps(F.coco_document([F.ExportImage("a.png", lab)], rle=rle)))
        coco = COCO(str(path))
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) == 5 and {a["iscrowd"] for a in anns} == {0}
        kinds = ["rle" if isinstance(a["segmentation"], dict) else "polygon" for a in anns]
        assert kinds == (["rle"] * 5 if rle else ["polygon", "polygon", "rle", "polygon", "rle"])
        for k, ann in enumerate(anns, start=1):
            assert np.array_equal(coco.annToMask(ann).astype(bool), lab == k)


def test_via_export_gives_one_region_per_cell_and_reads_back(tmp_path):
    lab = _ring_scene()
    doc = json.loads(json.dumps(F.via_document([F.ExportImage("a.png", lab)])))
    (entry,) = doc["_via_img_metadata"].values()
    assert len(entry["regions"]) == 5
    (img,) = F.read_via(doc)
    back = F.regions_to_labels(img.regions, lab.shape)
    # each region is the cell it overlaps most; the filled ring comes before the cell in its
    # hole (largest outline first), so that cell, painted later, keeps its pixels
    found = {int(np.bincount(lab[back == i]).argmax()): back == i for i in range(1, 6)}
    assert sorted(found) == [1, 2, 3, 4, 5]
    for k in (1, 2, 4):
        assert np.array_equal(found[k], lab == k)
    pieces = sk_label(lab == 5, connectivity=2)
    assert np.array_equal(found[5], pieces == np.bincount(pieces.ravel())[1:].argmax() + 1)
    filled = np.zeros(lab.shape, bool)
    filled[draw.disk((38, 25), 15)] = True
    assert np.array_equal(found[3], filled & (lab != 4))
