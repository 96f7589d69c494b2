"""Counts per image, groups, operator agreement and history (db.review)."""

import pytest
from sqlalchemy.orm import Session

from db import review
from db.models import (AdjudicationDecision, AdjudicationItem, MaskVersion, ObjectDecision, ReviewAssignment)
from tests.db.world import at, mask, scored, world  # noqa: F401 (fixtures)


def test_image_counts_prefer_ground_truth_and_group_with_density(world):
    engine, _, ids = world
    with Session(engine) as s:
        t = review.image_counts(s, ids["project"], run_id=ids["runs"][1])
        g = review.group_summary(s, ids["project"], "animal")
        gp = review.group_summary(s, ids["project"], "animal", run_id=ids["runs"][1])
    assert list(t["count"]) == [1, 2, 3, 4, 5]
    assert list(t["approved"]) == [True, False, True, False, False]
    assert t["n_pred"].tolist()[2:4] == [4, 2]
    g = g.set_index("animal")
    assert g.loc["m1", "total"] == 3 and g.loc["m2", "total"] == 7 and g.loc["(none)", "total"] == 5
    # 1000 x 1000 px at 1 um = 1 mm² per image
    assert g.loc["m2", "density_per_mm2"] == pytest.approx(3.5)
    assert gp.set_index("animal").loc["m2", "total"] == 6 and len(gp) == 1
    with Session(engine) as s, pytest.raises(ValueError, match="Group by"):
        review.group_summary(s, ids["project"], "colour")


def test_image_counts_show_split_locks(world):
    from db.projects import lock_splits

    engine, _, ids = world
    with Session(engine) as s, s.begin():
        assert not review.image_counts(s, ids["project"])["split_locked"].any()
        third = int(review.image_counts(s, ids["project"])["image_id"][2])
        lock_splits(s, [third])
    with Session(engine) as s:
        t = review.image_counts(s, ids["project"])
    assert t["split_locked"].dtype == bool
    assert t.loc[t["split_locked"], "image_id"].tolist() == [third]


def test_operator_agreement_before_and_after_adjudication(world):
    engine, storage, ids = world
    u = ids["users"]
    with Session(engine) as s, s.begin():
        rows = []
        # Image 0: ann sees 3 cells, bob 2 (bob missed the one at (30, 30)).
        # Image 1: ann 2, bob 2, the same cells.
        for img_i, (a_cells, b_cells) in enumerate([
                ([(10, 10), (10, 25), (30, 30)], [(10, 10), (10, 25)]),
                ([(10, 10), (25, 25)], [(10, 10), (25, 25)])]):
            img = ids["images"][img_i]
            for user, cells in (("ann", a_cells), ("bob", b_cells)):
                stored = storage.put_mask(mask((40, 40), cells))
                v = MaskVersion(image_id=img, source="manual", path=str(stored.path),
                                sha256=stored.sha256, object_count=len(cells),
                                author_id=u[user])
                s.add(v)
                s.flush()
                rows.append(ReviewAssignment(image_id=img, user_id=u[user], blind=True,
                                             done=True, version_id=v.id))
        s.add_all(rows)
        # The expert keeps the disputed cell: bob's count rises to 3.
        it = AdjudicationItem(project_id=ids["project"], image_id=ids["images"][0],
                              kind="mask_object", reason="disagreement", centroid_row=30,
                              centroid_col=30, bbox=[25, 25, 35, 35], status="decided")
        s.add(it)
        s.flush()
        s.add(AdjudicationDecision(item_id=it.id, expert_id=u["eve"], verdict="keep",
                                   reason="clear soma"))
    with Session(engine) as s:
        ag = review.operator_agreement(s, storage, ids["project"])
    assert list(ag.table["count_a"]) == [3, 2] and list(ag.table["count_b"]) == [2, 2]
    assert list(ag.table["count_b_after"]) == [3, 2]
    assert ag.before.bias == pytest.approx(0.5) and ag.before.n == 2
    assert ag.after.bias == 0.0 and ag.after.sd == 0.0
    assert list(ag.table["operator_a"]) == ["ann", "ann"]


def test_operator_agreement_without_double_reviews_is_empty(world):
    engine, storage, ids = world
    with Session(engine) as s:
        ag = review.operator_agreement(s, storage, ids["project"])
    assert ag.table.empty and ag.before is None and ag.after is None


def test_image_history_lists_versions_approvals_votes_and_decisions(world):
    engine, _, ids = world
    img = ids["images"][0]
    with Session(engine) as s, s.begin():
        s.add(ObjectDecision(image_id=img, version_id=ids["versions"][0], label=1, cell_key=1,
                             centroid_row=10, centroid_col=10, bbox=[7, 7, 14, 14],
                             user_id=ids["users"]["ann"], verdict="unsure", reason="faint",
                             created_at=at(30)))
        it = AdjudicationItem(project_id=ids["project"], image_id=img, kind="mask_object",
                              reason="unsure", centroid_row=10, centroid_col=10,
                              bbox=[7, 7, 14, 14], status="decided")
        s.add(it)
        s.flush()
        s.add(AdjudicationDecision(item_id=it.id, expert_id=ids["users"]["eve"], verdict="drop",
                                   reason="debris", created_at=at(40)))
    with Session(engine) as s:
        h = review.image_history(s, img)
    assert list(h["what"])[-2:] == ["vote: unsure", "adjudicated: drop"]
    assert h.iloc[-1]["who"] == "eve" and "debris" in h.iloc[-1]["detail"]
    assert "version (auto)" in set(h["what"]) and "approved" in set(h["what"])
