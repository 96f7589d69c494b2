"""The Correct page counts what it saves (issue 13: "The count before saving differs from the
count stored"): an erase across the thin neck of a cell makes two cells in the preview, in the
save message and in the stored version alike."""
import numpy as np

from core.strokes import TOOL_COLORS

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
    at.run()              # the page now sees a newer version than the one it opened on
    next(b for b in at.button if b.label == "Reload the current version").click().run()
    assert _metric(at, f"Objects in version {mine.id}") == n
    # the erase brush across the neck, on the unzoomed canvas (one canvas px per image px)
    stroke = {"type": "Line", "left": c + 24.5, "top": r + 11.0, "originX": "center",
              "originY": "center", "x1": 0, "y1": -7, "x2": 0, "y2": 7, "width": 0,
              "height": 14, "strokeWidth": 4, "stroke": TOOL_COLORS["erase"]}
    at.session_state[at.session_state["cx_canvas_key"]] = {
        "drawing": {"raw": {"objects": [stroke]}, "data": None}}
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
