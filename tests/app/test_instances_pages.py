"""Cells as labels on the pages: the Correct page counts what it saves (issue 13: "The count
before saving differs from the count stored"), and the Export page writes label files of the
ground truth."""
import csv
import io
import zipfile

import numpy as np
import tifffile

BLOCK = 50


def _free_block(labels):
    """(row, col) of the last 50x50 block of the image that holds no cell."""
    h, w = (n // BLOCK * BLOCK for n in labels.shape)
    empty = np.add.reduceat(np.add.reduceat(labels[:h, :w] == 0, np.arange(0, h, BLOCK), 0),
                            np.arange(0, w, BLOCK), 1) == BLOCK * BLOCK
    return (np.argwhere(empty)[-1] * BLOCK).tolist()


def _metric(at, label):
    return int(next(m for m in at.metric if m.label == label).value)


def test_erasing_a_neck_counts_two_cells_before_and_after_saving(app_as, app_db):
    from db import masks

    at = app_as("operator", "pages/correct.py")
    image_id = at.session_state["cx_image"]
    with app_db.session() as s:
        head = masks.head_version(s, image_id)
        labels = app_db.storage.read_labels(head.path)
        r, c = _free_block(labels)
        dumbbell = np.zeros_like(labels)
        dumbbell[r + 5:r + 17, c + 3:c + 15] = dumbbell[r + 5:r + 17, c + 33:c + 45] = 1
        dumbbell[r + 10:r + 12, c + 15:c + 33] = 1          # a neck 2 px high
        labels[dumbbell > 0] = labels.max() + 1
        mine = masks.save_mask_version(s, app_db.storage, image_id, labels, based_on=head.id,
                                       source="manual", author_id=None)
        n = mine.object_count
    at.session_state[f"cx_base_{image_id}"] = mine.id        # as "Reload the current version"
    at.run()
    assert _metric(at, f"Objects in version {mine.id}") == n
    # the erase brush, 4 px wide, across the neck (image coordinates: x = column, y = row)
    stroke = {"id": "e1", "tool": "erase", "points": [[c + 24.5, r + 4.0], [c + 24.5, r + 18.0]],
              "width": 4}
    at.session_state[at.session_state["cx_editor_key"]] = {
        "strokes": {"doc": at.session_state["cx_editor_doc"], "items": [stroke]}}
    at.run()
    assert not at.exception, at.exception
    shown = _metric(at, "After your edits")
    assert shown == n + 1                                      # one cell became two
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception, at.exception
    with app_db.session() as s:
        saved = masks.head_version(s, image_id)
    assert saved.parent_id == mine.id and saved.object_count == shown
    assert [m.value for m in at.success] == [f"Saved version {saved.id} with {shown} objects."]


def test_export_page_writes_label_tiffs_of_the_ground_truth(app_as, app_db):
    from db import masks
    from db.models import Image
    from sqlalchemy import select

    at = app_as("viewer", "pages/export.py")
    at.radio(key="exp_which").set_value("ground truth (latest approved)")
    at.radio(key="exp_format").set_value("Label TIFFs (zip)")
    at.button(key="exp_prepare").click().run()           # one rerun with all three
    assert not at.exception, at.exception
    _, file_name, _, data = at.session_state["exp_ready"]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        tiffs = {n.split("/", 1)[1]: tifffile.imread(io.BytesIO(zf.read(n)))
                 for n in zf.namelist() if n.startswith("labels/")}
        counts = {r["image"]: r["count"] for r in csv.DictReader(io.StringIO(
            zf.read("counts.csv").decode()))}
    with app_db.session() as s:
        ids = s.scalars(select(Image.id).where(Image.project_id == app_db.project_id)).all()
        truth = {s.get(Image, i).original_name: masks.ground_truth(s, i) for i in ids}
    truth = {name: v for name, v in truth.items() if v is not None}
    assert file_name == "labels.zip" and len(tiffs) == len(truth) > 0
    for name, version in truth.items():
        stored = tiffs[name.rsplit(".", 1)[0] + ".tif"]
        assert stored.dtype == np.uint16
        assert np.array_equal(stored, app_db.storage.read_labels(version.path))
        assert len(np.unique(stored[stored > 0])) == version.object_count == int(counts[name])
