"""The Adjudicate loop (issue 13): the model's doubts are the objects near its threshold, on both
sides (near-misses included), with p and t; a reason fits its verdict; the crop shows context
under display controls; the keys are listed.

The model's doubts are checked on the hand-built ``scored`` world of the db tests (one 80x80
image whose heatmap each test draws), the page with AppTest on the shared app database.
"""
from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import adjudication
from db.models import AdjudicationDecision, AdjudicationItem, ImageResult, ModelRun
from tests.db.world import item_on_image, scored, world  # noqa: F401 (fixtures)

CELLS = ((15, 15), (15, 60), (60, 15), (60, 60))


def _promote_with(engine, storage, ids, peaks, threshold):
    """The scored run promoted at ``threshold``, its image's heatmap four flat disks of radius 6
    at :data:`CELLS` with the probabilities ``peaks`` on a 0.02 background."""
    heat = np.full((80, 80), 0.02, np.float32)
    for centre, p in zip(CELLS, peaks):
        heat[disk(centre, 6)] = p
    with Session(engine) as s, s.begin():
        for run in s.scalars(select(ModelRun).where(ModelRun.project_id == ids["project"])):
            run.promoted = run.id == ids["scored_run"]
        s.get(ModelRun, ids["scored_run"]).threshold = threshold
        result = s.scalars(select(ImageResult)
                           .where(ImageResult.run_id == ids["scored_run"])).one()
        result.heatmap_path = str(storage.put_heatmap(heat).path)


def _stored(p: float) -> float:
    return round(p * 255) / 255  # the level a heatmap keeps


def test_near_misses_below_the_threshold_are_doubts_with_p_and_t(scored):
    engine, storage, ids = scored
    # A clear cell, one just counted, one just missed, one far below (t = 0.5, delta 0.1).
    _promote_with(engine, storage, ids, (0.9, 0.55, 0.45, 0.2), threshold=0.5)
    with Session(engine) as s:
        c = adjudication.model_doubt_candidates(s, storage, ids["project"])
    got = {(round(r.centroid_row), round(r.centroid_col)): r for r in c.itertuples()}
    assert set(got) == {(15, 60), (60, 15)}
    barely, missed = got[(15, 60)], got[(60, 15)]
    assert barely.counted and not missed.counted
    assert (barely.probability, missed.probability) == pytest.approx((_stored(0.55),
                                                                      _stored(0.45)))
    assert (barely.threshold, missed.drawn_at) == (0.5, pytest.approx(0.4))
    for row in (barely, missed):
        assert row.why == "uncertain"
        assert row.doubt == pytest.approx(1 - abs(row.probability - 0.5) / 0.1)

    with Session(engine) as s, s.begin():
        n = adjudication.queue_model_doubts(s, storage, ids["project"], user_id=None)
    with Session(engine) as s:
        q = adjudication.adjudication_queue(s, ids["project"])
        assert n == 2 and set(q["group"]) == {"near the threshold"}
        assert set(q["kind"]) == {"run_near"}
        near = q[[not g["counted"] for g in q["geometry"]]].iloc[0]
        assert near["geometry"]["threshold"] == 0.5
        assert near["probability"] == pytest.approx(_stored(0.45))
        # The expert sees (and decides on) the near-miss's own pixels: the faint disk.
        pixels = adjudication.item_pixels(s, storage, s.get(AdjudicationItem,
                                                            int(near["item_id"])), (80, 80))
    blob = np.zeros((80, 80), bool)
    blob[disk(CELLS[2], 6)] = True
    assert np.count_nonzero(pixels & blob) / np.count_nonzero(pixels | blob) > 0.9


def test_at_a_high_threshold_saturated_cells_are_not_near_it(scored):
    engine, storage, ids = scored
    # The demo model's threshold, 0.95: near means within 0.025 (half the way to 1).
    _promote_with(engine, storage, ids, (1.0, 0.99, 0.96, 0.93), threshold=0.95)
    with Session(engine) as s:
        c = adjudication.model_doubt_candidates(s, storage, ids["project"])
    assert adjudication.near_band(0.95) == 0.025
    assert sorted(c["probability"]) == pytest.approx([_stored(0.93), _stored(0.96)])
    assert sorted(c["counted"]) == [False, True]


def test_the_crop_takes_the_context_and_the_display_settings(world):
    engine, storage, ids = world
    rng = np.random.default_rng(0)
    item_id = item_on_image(world, rng.integers(20, 60, (40, 40, 3), dtype=np.uint8))
    with Session(engine) as s:
        near = adjudication.item_crop(s, storage, item_id, margin=2, zoom=1)
        wide = adjudication.item_crop(s, storage, item_id, margin=20, zoom=1)
        bright = adjudication.item_crop(s, storage, item_id, margin=20, zoom=1,
                                        display={"brightness": 0.3})
    assert near.shape == (11, 11, 3) and wide.shape == (34, 34, 3)  # clipped at the top left
    corner = (slice(30, 34), slice(30, 34))                         # far from any outline
    assert np.all(bright[corner].astype(int) - wide[corner] >= 70)  # + 0.3 of 255, about


# ---------------------------------------------------------------- the page

def _item(app_db, label_index: int, *, reason="unsure", priority=1e8, **fields) -> int:
    """An open item on one object of the first image's head, first in its group of the queue."""
    from db import masks
    from db.models import Image

    with app_db.session() as s:
        img = s.scalars(select(Image).where(Image.project_id == app_db.project_id,
                                            Image.head_version_id.is_not(None))
                        .order_by(Image.id.desc())).first()
        head = masks.head_version(s, img.id)
        labels = app_db.storage.read_labels(head.path)
        label = int(np.unique(labels[labels > 0])[label_index])
        item = adjudication.queue_mask_object(s, app_db.storage, img.id, head.id, label,
                                              reason=reason, note="loop test")
        item.priority = priority
        for k, v in fields.items():
            setattr(item, k, v)
        return item.id


def _show(at, app_db, item_id):
    """Point the page at the item, wherever other tests' items put it in the queue."""
    with app_db.session() as s:
        ids = list(adjudication.adjudication_queue(s, app_db.project_id)["item_id"])
    at.session_state["adj_pos"] = ids.index(item_id)
    at.run()
    assert not at.exception, at.exception


def _dismiss(app_db, *item_ids):
    with app_db.session() as s:
        for item_id in item_ids:
            item = s.get(AdjudicationItem, item_id)
            if item.status == "open":
                item.status = "dismissed"


def _reason(app_db, item_id) -> str:
    with app_db.session() as s:
        return s.scalars(select(AdjudicationDecision.reason)
                         .where(AdjudicationDecision.item_id == item_id)).one()


def test_a_drop_gets_a_reason_to_drop_and_reasons_do_not_carry_over(app_as, app_db):
    # Each with a probability, so that the page does not ask the model for one.
    first = _item(app_db, 0, priority=2e8, probability=0.8)
    second = _item(app_db, 1, priority=1.5e8, probability=0.8)
    try:
        at = app_as("expert", "pages/adjudicate.py")
        _show(at, app_db, first)
        assert at.selectbox(key="adj_why_drop").value == "debris or artefact"
        at.text_input(key="adj_reason_text").input("a fibre").run()
        at.button(key="adj_drop").click().run()
        assert not at.exception, at.exception
        assert _reason(app_db, first) == "debris or artefact; a fibre"
        _show(at, app_db, second)
        assert at.text_input(key="adj_reason_text").value == ""
        at.button(key="adj_keep").click().run()
        assert _reason(app_db, second) == "clear soma, stained"
    finally:
        _dismiss(app_db, first, second)


def test_an_item_near_the_threshold_shows_p_and_t_and_the_keys_are_listed(app_as, app_db):
    item_id = _item(app_db, 0, reason="uncertain", probability=0.93,
                    geometry={"threshold": 0.95, "counted": False, "drawn_at": 0.925,
                              "peak": 0.93})
    try:
        at = app_as("expert", "pages/adjudicate.py")
        _show(at, app_db, item_id)
        assert any("near the threshold (uncertain)" in c.value for c in at.caption)
        shown = {m.label: m.value for m in at.metric}
        assert shown["Model probability (peak)"] == "0.93" and shown["Threshold"] == "0.95"
        assert any("below t 0.95" in c.value and "near-miss" in c.value for c in at.caption)
        assert any(c.value == "Keys: **K** keep · **D** drop · **S** skip" for c in at.caption)
        assert [b.proto.shortcut for b in at.button if b.key in ("adj_keep", "adj_drop",
                                                                 "adj_skip")] == ["k", "d", "s"]
        at.slider(key="adj_margin").set_value(120).run()
        assert any("120 px around it" in i.captions[0] for i in at.get("image"))
        at.slider(key="adj_gamma").set_value(0.5).run()
        assert not at.exception, at.exception
    finally:
        _dismiss(app_db, item_id)
