"""The Review loop (issue 13): what a verdict carries over, what it costs, and what the image shows.

AppTest reruns the whole page for every click (it has no fragment reruns; those are checked on
the wire in ``test_browser_review.py``), so what must not happen on a verdict is counted here
directly: no image is encoded again. Each test works on its own image of the shared database, so
their verdicts do not meet the other tests'.
"""
from __future__ import annotations

import colorsys
import json
import re

import numpy as np
from PIL import Image as PILImage

ALL = ["to_review", "in_progress", "approved"]


def _image(app_db, index: int, *, min_cells: int = 0) -> int:
    """The ``index``-th image of those holding at least ``min_cells`` cells."""
    from db import review

    with app_db.session() as s:
        counts = review.image_counts(s, app_db.project_id)
        return int(counts[counts["count"] >= min_cells]["image_id"].iloc[index])


def _review(app_as, image_id: int, role: str = "operator"):
    at = app_as(role, "pages/review.py")
    at.multiselect(key="rv_status").set_value(ALL).run()
    at.session_state["rv_image"] = image_id
    at.run()
    assert not at.exception, at.exception
    return at


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _picker(at):
    return next(w for w in at.selectbox if w.label.startswith("Pick an object"))


def _open_objects(at) -> list[int]:
    """The objects nobody judged yet, from the picker (``object 3``; judged ones say how)."""
    return [int(v.split()[1]) for v in _picker(at).options if re.fullmatch(r"object \d+", v)]


def _viewer(at) -> dict:
    (viewer,) = at.get("bidi_component")
    return json.loads(viewer.proto.json)


def _head(app_db, image_id):
    from db import masks

    with app_db.session() as s:
        return masks.head_version(s, image_id)


def test_a_verdict_empties_the_reason_so_the_next_drop_carries_none(app_as, app_db):
    from db import adjudication

    image_id = _image(app_db, 0, min_cells=3)
    at = _review(app_as, image_id)
    first, second = _open_objects(at)[:2]
    _picker(at).set_value(first).run()
    at.text_input(key="rv_reason").input("out of focus")
    _button(at, "Drop").click().run()
    assert not at.exception, at.exception
    assert at.text_input(key="rv_reason").value == ""
    _picker(at).set_value(second).run()
    _button(at, "Drop").click().run()             # no reason typed for this one
    with app_db.session() as s:
        reasons = {d.label: d.reason for d in adjudication.decisions(s, image_id)
                   if d.verdict == "drop"}
    assert reasons[first] == "out of focus"
    assert not reasons[second]
    # Nor does a reason typed and not used travel to the next image.
    at.text_input(key="rv_reason").input("half typed")
    at.run()
    _button(at, "Next ▶").click().run()
    assert at.session_state["rv_image"] != image_id
    assert at.text_input(key="rv_reason").value == ""


def test_a_verdict_or_a_pick_encodes_no_image_and_the_next_image_one(app_as, app_db, monkeypatch):
    at = _review(app_as, _image(app_db, 3))
    encoded = []
    save = PILImage.Image.save

    def counting(self, fp, format=None, **params):
        if (format or "").upper() in ("JPEG", "PNG", "WEBP"):
            encoded.append(format)
        return save(self, fp, format, **params)

    monkeypatch.setattr(PILImage.Image, "save", counting)
    _picker(at).set_value(_open_objects(at)[0]).run()
    _button(at, "Keep").click().run()
    assert not at.exception, at.exception
    assert encoded == []
    _button(at, "Next ▶").click().run()
    assert encoded == ["JPEG"]                     # the next image, once


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255.0))[0] * 360.0


def test_objects_carry_numbers_and_outlines_in_a_colour_opposite_the_stain(app_as, app_db):
    image_id = _image(app_db, 4)
    at = _review(app_as, image_id)
    data = _viewer(at)
    head = _head(app_db, image_id)
    labels = app_db.storage.read_labels(head.path)
    # Every object of the stored mask, numbered by its label, at its centre of mass.
    shown = {o[0]: o for o in data["objects"]}
    assert sorted(shown) == [int(v) for v in np.unique(labels) if v]
    for label, (_, x, y, path, state) in shown.items():
        rows, cols = np.nonzero(labels == label)
        assert abs(x - (cols.mean() + 0.5)) <= 0.06 and abs(y - (rows.mean() + 0.5)) <= 0.06
        corners = np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path)])
        xs, ys = corners[0::2], corners[1::2]
        assert xs.min() >= cols.min() - 1 and xs.max() <= cols.max() + 2
        assert ys.min() >= rows.min() - 1 and ys.max() <= rows.max() + 2
        assert state == ""
    assert data["numbers"] is True
    # The outline hue sits at least 90 degrees from the cells' own mean colour.
    from db.projects import get_image

    with app_db.session() as s:
        rgb = app_db.storage.read_image(get_image(s, image_id).path)
    cells = rgb[labels > 0].mean(axis=0)
    outline = [int(data["styles"][""][i:i + 2], 16) for i in (1, 3, 5)]
    gap = abs(_hue(cells) - _hue(outline)) % 360
    assert min(gap, 360 - gap) >= 90, (cells, outline)
    # Fill and numbers are the user's to switch.
    at.slider(key="rv_fill").set_value(0.5).run()
    at.toggle(key="rv_numbers").set_value(False).run()
    data = _viewer(at)
    assert data["fill"] == 0.5 and data["numbers"] is False


def test_the_preview_count_change_adds_up_beside_the_threshold(app_as, app_db):
    at = _review(app_as, _image(app_db, 5))
    n_old = int(next(m for m in at.metric if m.label == "Objects in the current mask").value)
    at.toggle(key="rv_preview").set_value(True).run()
    next(w for w in at.slider if w.label.startswith("Threshold (signal")).set_value(0.0).run()
    assert not at.exception, at.exception
    metric = next(m for m in at.metric if m.label == "Objects with these parameters")
    n_new, delta = int(metric.value), int(metric.delta)
    assert delta == n_new - n_old
    captions = [c.value for c in at.caption]
    appear, disappear = (int(w) for w in re.search(
        r"(\d+) would appear .*?(\d+) would disappear", " ".join(captions)).groups())
    rest = re.search(r"The other (\d+) would become (\d+)", " ".join(captions))
    before, after = (int(v) for v in rest.groups()) if rest else (0, 0)
    # Every object of the count change is accounted for, merges included.
    assert delta == appear - disappear + (after - before)
    assert before == n_old - disappear and after == n_new - appear
    # ... and it all sits with the threshold slider, in the same panel.
    (panel,) = [e for e in at.expander if e.label == "Pre-labelling parameters"]
    assert any(m.label == "Objects with these parameters" for m in panel.metric)
    assert any(w.label.startswith("Threshold (signal") for w in panel.slider)


def test_review_actions_have_keys_listed_on_the_page(app_as, app_db):
    at = _review(app_as, _image(app_db, 3))
    listed = next(c.value for c in at.caption if c.value.startswith("Keys:"))
    for label, key in [("◀ Previous", "p"), ("Next ▶", "n"), ("Keep", "k"), ("Drop", "d"),
                       ("Unsure", "u")]:
        assert _button(at, label).proto.shortcut.lower() == key, label
        assert f"**{key.upper()}**" in listed
