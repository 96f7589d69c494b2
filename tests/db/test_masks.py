"""Mask versions, conflicts, approvals, decisions and adjudication."""
import pytest
from sqlalchemy.orm import Session

from db import adjudication, masks
from db.audit import audit_log
from db.models import AdjudicationItem, Image, MaskVersion, User
from db.review import image_history
from tests.db.helpers import disks, project_with_images, user


@pytest.fixture
def image_id(engine, storage):
    with Session(engine) as s, s.begin():
        _, [image] = project_with_images(s, storage)
        return image.id


def save(engine, storage, image_id, mask, based_on, author=None, source="manual"):
    with Session(engine) as s, s.begin():
        return masks.save_mask_version(s, storage, image_id, mask, based_on=based_on,
                                       source=source, author_id=author).id


def test_first_version_becomes_head_with_its_count(engine, storage, image_id):
    v1 = save(engine, storage, image_id, disks((10, 10), (25, 40)), None, source="auto")
    with Session(engine) as s:
        head = masks.head_version(s, image_id)
        assert head.id == v1 and head.object_count == 2 and head.source == "auto"
        assert s.get(Image, image_id).review_status == "to_review"


def test_conflict_between_two_sessions_keeps_both(engine, storage, image_id):
    v1 = save(engine, storage, image_id, disks((10, 10)), None, source="auto")
    a, b = Session(engine), Session(engine)
    try:
        with a.begin():
            base_a = masks.head_version(a, image_id).id
        with b.begin():
            base_b = masks.head_version(b, image_id).id
        with a.begin():
            va = masks.save_mask_version(a, storage, image_id, disks((10, 10), (30, 30)),
                                         based_on=base_a, source="manual", author_id=None).id
        with b.begin():
            with pytest.raises(masks.ConflictError) as err:
                masks.save_mask_version(b, storage, image_id, disks((20, 50)), based_on=base_b,
                                        source="manual", author_id=None)
    finally:
        a.close()
        b.close()
    assert err.value.head_id == va and err.value.based_on == v1
    vb = err.value.version_id
    with Session(engine) as s:
        assert s.get(Image, image_id).head_version_id == va
        kept = {v.id: v for v in masks.versions(s, image_id)}
        assert set(kept) == {v1, va, vb}
        assert kept[vb].conflict and not kept[va].conflict and kept[vb].parent_id == v1
    with Session(engine) as s, s.begin():
        masks.make_head(s, image_id, vb, user_id=None)
    with Session(engine) as s:
        assert s.get(Image, image_id).head_version_id == vb
        assert audit_log(s, action="mask.make_head")[0].detail == {"from": va, "to": vb}


def test_wrong_mask_size_is_refused(engine, storage, image_id):
    with Session(engine) as s, s.begin():
        with pytest.raises(ValueError, match="mask is"):
            masks.save_mask_version(s, storage, image_id, disks((5, 5), shape=(10, 10)),
                                    based_on=None, source="manual", author_id=None)


def test_ground_truth_is_latest_approved_version(engine, storage, image_id):
    v1 = save(engine, storage, image_id, disks((10, 10)), None, source="import")
    with Session(engine) as s, s.begin():
        assert masks.ground_truth(s, image_id) is None
        masks.approve(s, image_id, user_id=None)
    v2 = save(engine, storage, image_id, disks((10, 10), (30, 30)), v1)
    with Session(engine) as s, s.begin():
        assert masks.ground_truth(s, image_id).id == v1  # v2 is not approved yet
        assert s.get(Image, image_id).review_status == "in_progress"
        masks.approve(s, image_id, user_id=None)
    with Session(engine) as s:
        assert masks.ground_truth(s, image_id).id == v2
        assert s.get(Image, image_id).review_status == "approved"


def test_votes_on_the_same_cell_share_a_key_and_disagreement_is_queued(engine, storage, image_id):
    with Session(engine) as s, s.begin():
        ann, bob = user(s, "ann").id, user(s, "bob").id
    v1 = save(engine, storage, image_id, disks((10, 10), (25, 40)), None, source="auto")
    v2 = save(engine, storage, image_id, disks((11, 10), (25, 40), (30, 10)), v1)
    with Session(engine) as s, s.begin():
        project_id = s.get(Image, image_id).project_id
        d1 = adjudication.record_decision(s, storage, image_id, v1, 1, user_id=ann, verdict="keep")
        d2 = adjudication.record_decision(s, storage, image_id, v2, 2, user_id=bob, verdict="keep")
        assert d1.cell_key != d2.cell_key
        assert adjudication.pending_adjudications(s, project_id) == 0
        d3 = adjudication.record_decision(s, storage, image_id, v2, 1, user_id=bob, verdict="drop",
                                   reason="too dim")
        assert d3.cell_key == d1.cell_key  # moved by a pixel: IoU >= 0.5, the same cell
        queue = adjudication.adjudication_queue(s, project_id)
        assert [(r.reason, r.version_id, r.label) for r in queue.itertuples()] == [
            ("disagreement", v2, 1)]
        adjudication.record_decision(s, storage, image_id, v2, 3, user_id=ann, verdict="unsure")
        assert adjudication.pending_adjudications(s, project_id, image_id=image_id) == 2
        assert len(adjudication.decisions(s, image_id, cell_key=d1.cell_key)) == 2


def test_expert_decision_makes_an_adjudicated_version(engine, storage, image_id):
    with Session(engine) as s, s.begin():
        ann, eve = user(s, "ann").id, user(s, "eve", "expert").id
    v1 = save(engine, storage, image_id, disks((10, 10), (25, 40)), None, source="auto")
    with Session(engine) as s, s.begin():
        masks.approve(s, image_id, user_id=ann)
        adjudication.record_decision(s, storage, image_id, v1, 2, user_id=ann, verdict="unsure")
        [item_id] = adjudication.adjudication_queue(s, s.get(Image, image_id).project_id)["item_id"]
        item = s.get(AdjudicationItem, int(item_id))
        with pytest.raises(PermissionError, match="expert"):
            adjudication.decide_adjudication(s, storage, item.id, expert=s.get(User, ann),
                                      verdict="drop", reason="debris")
        expert = s.get(User, eve)
        decision = adjudication.decide_adjudication(s, storage, item.id, expert=expert, verdict="drop",
                                             reason="debris, not a neuron")
        new_id, item_id = decision.version_id, item.id
    with Session(engine) as s:
        new = s.get(MaskVersion, new_id)
        assert new.source == "adjudicated" and new.object_count == 1 and new.parent_id == v1
        assert masks.head_version(s, image_id).id == new.id
        assert masks.ground_truth(s, image_id).id == new.id  # the image was approved
        assert audit_log(s, action="adjudication.decide")[0].entity_id == item_id
        assert adjudication.adjudication_queue(s, s.get(Image, image_id).project_id).empty
        what = list(image_history(s, image_id)["what"])
        assert what[-3:] == ["version (adjudicated)", "approved", "adjudicated: drop"]


def test_item_pixels_is_the_queued_object(engine, storage, image_id):
    v1 = save(engine, storage, image_id, disks((10, 10), (25, 40)), None, source="auto")
    with Session(engine) as s, s.begin():
        item = adjudication.queue_mask_object(s, storage, image_id, v1, 2, reason="unsure")
        pixels = adjudication.item_pixels(s, storage, item, (40, 60))
        assert pixels.dtype == bool and (pixels == disks((25, 40))).all()
        missed = AdjudicationItem(project_id=item.project_id, image_id=image_id, kind="run_fn",
                                  version_id=v1, bbox=None, reason="prediction_fn")
        assert not adjudication.item_pixels(s, storage, missed, (40, 60)).any()  # no box to look in
        gone = AdjudicationItem(project_id=item.project_id, image_id=image_id, kind="mask_object",
                                version_id=v1, label=9, reason="unsure")
        with pytest.raises(ValueError, match="no object 9"):
            adjudication.item_pixels(s, storage, gone, (40, 60))


def test_blind_reviews_stay_off_the_head(engine, storage, image_id):
    with Session(engine) as s, s.begin():
        ann, bob = user(s, "ann").id, user(s, "bob").id
        masks.assign_review(s, image_id, ann, blind=True)
        masks.assign_review(s, image_id, bob, blind=True)
    v1 = save(engine, storage, image_id, disks((10, 10)), None, source="auto")
    va = save(engine, storage, image_id, disks((10, 10), (30, 30)), v1, author=ann)
    vb = save(engine, storage, image_id, disks((10, 10)), v1, author=bob)  # no conflict
    with Session(engine) as s:
        assert masks.head_version(s, image_id).id == v1
        got = {a.user_id: a.version_id for a in masks.assignments(s, image_id=image_id)}
        assert got == {ann: va, bob: vb}
