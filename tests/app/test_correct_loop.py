"""The Correct loop (issue 13): unsaved strokes are never lost, the outlines follow every edit,
and a conflict shows both versions.

AppTest cannot run the editor's JavaScript; a test sends strokes as the editor does, through the
component's ``strokes`` state (``{"doc": list, "items": [...]}``, image coordinates: x = column,
y = row), and reads what the page sends back to the editor (its data, JSON). Each test works on
its own image of the shared database.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image as PILImage
from skimage.segmentation import find_boundaries

SIZE = 20


def _image(app_db, index: int) -> int:
    from db import review

    with app_db.session() as s:
        return int(review.image_counts(s, app_db.project_id)["image_id"].iloc[index])


def _head(app_db, image_id):
    from db import masks

    with app_db.session() as s:
        return masks.head_version(s, image_id)


def _correct(app_as, image_id: int):
    at = app_as("operator", "pages/review.py")
    at.session_state["rv_image"] = image_id  # Correct opens on the image Review shows
    at.switch_page("pages/correct.py").run()
    assert not at.exception, at.exception
    assert at.session_state["cx_image"] == image_id
    return at


def _draw(at, *items) -> None:
    """Send the editor's whole list of strokes, as it does after every change."""
    at.session_state[at.session_state["cx_editor_key"]] = {
        "strokes": {"doc": at.session_state["cx_editor_doc"], "items": list(items)}}
    at.run()
    assert not at.exception, at.exception


def _newest_version(app_db, image_id) -> int:
    from db import masks

    with app_db.session() as s:
        return max(v.id for v in masks.versions(s, image_id))


def _metric(at, label: str) -> int:
    return int(next(m for m in at.metric if m.label == label).value)


def _editor(at) -> dict:
    (editor,) = at.get("bidi_component")
    return json.loads(editor.proto.json)


def _outlines(at) -> np.ndarray:
    """The outline pixels the page sent to the editor (its one-bit PNG, decoded)."""
    url = _editor(at)["outlines"]
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))[..., 3] > 0


def _square(sid: str, r: int, c: int) -> dict:
    return {"id": sid, "tool": "add",
            "points": [[c, r], [c + SIZE, r], [c + SIZE, r + SIZE], [c, r + SIZE]]}


def _empty_corner(labels) -> tuple[int, int]:
    """Top-left of a SIZE x SIZE square with no object within SIZE px of it."""
    busy = np.pad(labels > 0, SIZE, constant_values=True)
    for r in range(SIZE, labels.shape[0] - 2 * SIZE, SIZE):
        for c in range(SIZE, labels.shape[1] - 2 * SIZE, SIZE):
            if not busy[r:r + 3 * SIZE, c:c + 3 * SIZE].any():
                return r, c
    raise AssertionError("no room for a square")


def test_unsaved_strokes_survive_another_page_and_another_image(app_as, app_db):
    from db import masks

    image_id = _image(app_db, 5)
    head = _head(app_db, image_id)
    labels = app_db.storage.read_labels(head.path)
    r, c = _empty_corner(labels)
    at = _correct(app_as, image_id)
    _draw(at, _square("a", r, c), _square("b", r, c + 2 * SIZE))
    assert (_metric(at, "Edits"), _metric(at, "After your edits")) == (2, head.object_count + 2)

    at.switch_page("pages/review.py").run()              # leave the page ...
    at.switch_page("pages/correct.py").run()             # ... and come back
    assert (_metric(at, "Edits"), _metric(at, "After your edits")) == (2, head.object_count + 2)
    assert any("2 unsaved edit(s)" in c.value for c in at.caption)
    assert [s["id"] for s in _editor(at)["strokes"]] == ["a", "b"]  # the editor gets them back

    picker = at.selectbox(key="cx_image")
    assert picker.options[picker.index].endswith(" · 2 unsaved edit(s)")
    picker.select_index(1 if picker.index == 0 else 0).run()   # another image ...
    assert at.session_state["cx_image"] != image_id and _metric(at, "Edits") == 0
    assert any("Unsaved edits are kept on" in c.value for c in at.caption)
    at.selectbox(key="cx_image").set_value(image_id).run()  # ... and back
    assert _metric(at, "Edits") == 2

    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception, at.exception
    saved = _head(app_db, image_id)
    assert saved.parent_id == head.id and saved.object_count == head.object_count + 2
    assert _metric(at, "Edits") == 0                     # the strokes went into the version
    with app_db.session() as s:
        assert len(masks.versions(s, image_id)) >= 2


def test_outlines_follow_every_edit_and_its_undo(app_as, app_db):
    from core.objects import object_info

    image_id = _image(app_db, 6)
    head = _head(app_db, image_id)
    labels = app_db.storage.read_labels(head.path)
    at = _correct(app_as, image_id)
    assert np.array_equal(_outlines(at), find_boundaries(labels, mode="inner"))

    # Delete an object by clicking its centre pixel: its outline goes at once.
    victim = next(o for o in object_info(labels) if labels[round(o.centroid[0]),
                                                           round(o.centroid[1])] == o.label)
    click = {"id": "d", "tool": "delete",
             "points": [[round(victim.centroid[1]) + 0.5, round(victim.centroid[0]) + 0.5]]}
    _draw(at, click)
    without = np.where(labels == victim.label, 0, labels)
    assert np.array_equal(_outlines(at), find_boundaries(without, mode="inner"))

    # Add a square: its outline appears, and nothing else changes.
    r, c = _empty_corner(labels)
    _draw(at, click, _square("s", r, c))
    added = without.copy()
    added[r:r + SIZE, c:c + SIZE] = labels.max() + 1
    assert np.array_equal(_outlines(at), find_boundaries(added, mode="inner"))
    assert _metric(at, "After your edits") == head.object_count

    _draw(at, click)                                     # undo the square
    assert np.array_equal(_outlines(at), find_boundaries(without, mode="inner"))
    assert _metric(at, "After your edits") == head.object_count - 1


def test_a_conflict_shows_both_versions_side_by_side(app_as, app_db):
    from db import masks

    image_id = _image(app_db, 7)
    head = _head(app_db, image_id)
    labels = app_db.storage.read_labels(head.path)
    r, c = _empty_corner(labels)
    at = _correct(app_as, image_id)
    _draw(at, _square("mine", r, c))
    theirs = labels.copy()                               # someone else saves meanwhile
    theirs[r + 3 * SIZE:r + 4 * SIZE, c:c + SIZE] = labels.max() + 1
    with app_db.session() as s:
        other = masks.save_mask_version(s, app_db.storage, image_id, theirs, based_on=head.id,
                                        source="manual", author_id=None).id
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception, at.exception
    mine = _newest_version(app_db, image_id)
    assert any(f"version {other} was saved" in w.value for w in at.warning)
    pictures = at.get("image")
    captions = [p.captions[0] for p in pictures]
    assert len(pictures) == 2
    assert captions[0].startswith(f"Your version {mine}: {head.object_count + 1} objects, 1 ")
    assert captions[1].startswith(f"Version {other}: {head.object_count + 1} objects, 1 ")
    next(b for b in at.button if b.label == f"Keep version {other} current").click().run()
    assert not at.exception, at.exception
    assert _head(app_db, image_id).id == other and not at.get("image")
    assert _metric(at, f"Objects in version {other}") == head.object_count + 1


def test_reloading_the_current_version_carries_the_strokes_over(app_as, app_db):
    from db import masks

    image_id = _image(app_db, 5)
    head = _head(app_db, image_id)
    labels = app_db.storage.read_labels(head.path)
    r, c = _empty_corner(labels)
    at = _correct(app_as, image_id)
    _draw(at, _square("x", r, c))
    with app_db.session() as s:                          # someone else saves meanwhile
        other = masks.save_mask_version(s, app_db.storage, image_id, labels,
                                        based_on=head.id, source="manual", author_id=None).id
    at.run()
    assert any(f"the current version is now {other}" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Reload the current version").click().run()
    assert not at.exception, at.exception
    assert _metric(at, "Edits") == 1
    assert _metric(at, f"Objects in version {other}") == head.object_count
    assert _metric(at, "After your edits") == head.object_count + 1
    next(b for b in at.button if b.label == "Discard edits").click().run()
    assert _metric(at, "Edits") == 0 and not _editor(at)["strokes"]


def test_the_keys_are_listed_and_save_has_its_shortcut(app_as, app_db):
    at = _correct(app_as, _image(app_db, 5))
    keys = next(c.value for c in at.caption if c.value.startswith("Keys:"))
    for key in ("**P** polygon", "**E** erase", "**D** delete", "**S** split", "**H** pan",
                "**Ctrl+Z** undo", "**Ctrl+Shift+Z** redo", "**Ctrl+S** save"):
        assert key in keys
    save = next(b for b in at.button if b.label == "Save")
    assert save.proto.shortcut


def test_strokes_cover_the_pixels_shapely_says_they_cover():
    """``core.strokes.shapes_to_edits``, checked against shapely: an added outline covers the
    pixels whose centres it encloses; an erase brush those within half its width of its line
    (up to half a pixel either way, where the raster's round caps and edges fall)."""
    from shapely.geometry import LineString, Point, Polygon

    from core.strokes import shapes_to_edits

    shape = (40, 50)
    outline = [[3.3, 4.1], [30.7, 2.2], [44.6, 20.9], [20.2, 35.3], [6.1, 25.8]]
    brush = {"tool": "erase", "points": [[2.2, 30.4], [25.3, 12.6], [47.9, 33.1]], "width": 6.0}
    (add,), (erase,) = (shapes_to_edits([s], shape) for s in
                        ({"tool": "add", "points": outline}, brush))
    covered = {"add": set(zip(add.rows.tolist(), add.cols.tolist())),
               "erase": set(zip(erase.rows.tolist(), erase.cols.tolist()))}
    polygon, line = Polygon(outline), LineString(brush["points"])
    for r in range(shape[0]):
        for c in range(shape[1]):
            centre = Point(c + 0.5, r + 0.5)
            assert ((r, c) in covered["add"]) == polygon.contains(centre), (r, c)
            d = line.distance(centre)
            if d < 3.0 - 0.5:
                assert (r, c) in covered["erase"], (r, c)
            elif d > 3.0 + 0.5:
                assert (r, c) not in covered["erase"], (r, c)
