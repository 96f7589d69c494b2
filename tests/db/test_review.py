"""The review queue: filters, pagination, counts, neighbours, and the project's state."""
import pytest
from sqlalchemy.orm import Session

from db import adjudication, masks, review
from db.projects import ImageFilter
from tests.db.helpers import disks, project_with_images, user


def test_queue_pages_filters_and_counts(engine, storage):
    with Session(engine) as s, s.begin():
        ann = user(s, "ann")
        p, images = project_with_images(s, storage, 5)
        for im, split in zip(images, ["train", "train", "test", "test", "unassigned"]):
            im.split = split
        v = masks.save_mask_version(s, storage, images[0].id, disks((10, 10), (30, 30)),
                                    based_on=None, source="auto", author_id=None)
        adjudication.record_decision(s, storage, images[0].id, v.id, 1, user_id=ann.id, verdict="unsure")
        masks.approve(s, images[0].id, user_id=ann.id)
        masks.assign_review(s, images[3].id, ann.id)
        page = review.review_queue(s, p.id, page_size=2)
        assert (page.total, page.pages, len(page.rows)) == (5, 3, 2)
        assert page.counts == {"to_review": 4, "in_progress": 0, "approved": 1}
        first = page.rows[0]
        assert (first.object_count, first.decisions, first.unsure, first.pending_adjudications) == (
            2, 1, 1, 1)
        tests = review.review_queue(s, p.id, ImageFilter(split="test", status="to_review"))
        assert [r.image_id for r in tests.rows] == [images[2].id, images[3].id]
        mine = review.review_queue(s, p.id, ImageFilter(assigned_to=ann.id))
        assert [r.image_id for r in mine.rows] == [images[3].id]
        assert review.neighbours(s, p.id, images[2].id, ImageFilter(split="test")) == (
            None, images[3].id)
        state = review.project_state(s, p.id)
        assert (state["n_images"], state["share_reviewed"], state["pending_adjudications"]) == (
            5, 0.2, 1)
        with pytest.raises(ValueError, match="Unknown review status"):
            ImageFilter(status="done")
