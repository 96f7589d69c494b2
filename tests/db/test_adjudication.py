"""The experts' queue: its one order, the model's doubts, the crop an expert sees."""

import numpy as np
from sqlalchemy.orm import Session

from core import render
from db import adjudication
from db.models import (AdjudicationItem, ObjectDecision)
from tests.db.world import at, item_on_image, mask, scored, world  # noqa: F401 (fixtures)


def test_queue_orders_unsure_then_disagreement_then_sent(world):
    engine, _, ids = world
    img = ids["images"][1]
    with Session(engine) as s, s.begin():
        def item(reason, kind="mask_object", priority=0.0, minute=0, row=10.0):
            it = AdjudicationItem(project_id=ids["project"], image_id=img, kind=kind,
                                  reason=reason, version_id=ids["versions"][1], label=1,
                                  centroid_row=row, centroid_col=10.0, bbox=[7, 7, 14, 14],
                                  priority=priority, created_at=at(minute))
            s.add(it)
            return it
        item("sent", kind="run_fp", minute=1, row=30)
        item("disagreement", minute=2, row=20)
        item("unsure", minute=3)
        item("unsure", priority=5.0, minute=4, row=35)
        closed = item("unsure", minute=0, row=38)
        closed.status = "decided"
        s.add(ObjectDecision(image_id=img, version_id=ids["versions"][1], label=1, cell_key=7,
                             centroid_row=10, centroid_col=10, bbox=[7, 7, 14, 14],
                             user_id=ids["users"]["ann"], verdict="unsure", reason="dim"))
    with Session(engine) as s:
        q = adjudication.adjudication_queue(s, ids["project"])
    assert list(q["reason"]) == ["unsure", "unsure", "disagreement", "sent"]
    assert list(q["priority"])[:2] == [5.0, 0.0]
    votes = q.iloc[1]["votes"]
    assert [(v["user"], v["verdict"], v["reason"]) for v in votes] == [("ann", "unsure", "dim")]
    with Session(engine) as s:
        assert len(adjudication.adjudication_queue(s, ids["project"], limit=2)) == 2


def test_model_doubt_candidates_borderline_and_odd_sized_first(world):
    engine, storage, ids = world
    with Session(engine) as s:
        c = adjudication.model_doubt_candidates(s, storage, ids["project"])
    # p = 0.52 at threshold 0.5, and an FP nine times the usual area; the sure ones stay out.
    assert len(c) == 2
    assert set(c["probability"]) == {0.52, 0.95}
    assert (c["doubt"] >= adjudication.MIN_DOUBT).all()
    with Session(engine) as s, s.begin():
        s.add(AdjudicationItem(project_id=ids["project"], image_id=ids["images"][2],
                               kind="run_fp", reason="sent", centroid_row=31, centroid_col=29,
                               bbox=[20, 20, 40, 40]))
    with Session(engine) as s:
        assert list(adjudication.model_doubt_candidates(s, storage, ids["project"])["probability"]) == [0.52]


def test_queue_model_doubts_puts_them_in_the_experts_queue(world):
    engine, storage, ids = world
    with Session(engine) as s:
        c = adjudication.model_doubt_candidates(s, storage, ids["project"])
    assert dict(zip(c["probability"], c["why"])) == {0.52: "uncertain", 0.95: "size"}
    with Session(engine) as s, s.begin():
        n = adjudication.queue_model_doubts(s, storage, ids["project"], user_id=ids["users"]["eve"])
    with Session(engine) as s:
        q = adjudication.adjudication_queue(s, ids["project"])
        assert adjudication.model_doubt_candidates(s, storage, ids["project"]).empty
    # The borderline TP lies on the ground truth (image 2 has cells at (10, 10+8k)); the FP is
    # queued as the run's FP.
    assert n == 2 and list(q["reason"]) == ["prediction_fp", "uncertain"]   # QUEUE_ORDER
    assert list(q["group"]) == ["sent from Predictions", "near the threshold"]


def test_item_crop_outlines_the_object_magnified(world):
    from core.io import encode_png

    engine, storage, ids = world
    item_id = item_on_image(world, np.zeros((40, 40, 3), np.uint8))
    with Session(engine) as s:
        crop = adjudication.item_crop(s, storage, item_id, margin=5, zoom=3)
    assert crop.shape == (3 * 17, 3 * 17, 3)       # rows 2..19, cut at the box + margin
    yellow = np.all(crop == render.COLORS["item"], axis=-1)
    cyan = np.all(crop == render.COLORS["context"], axis=-1)
    assert yellow.any() and cyan.any()             # the object, and its neighbour at col 18
    assert encode_png(crop)
