"""The scale benchmark's own machinery, tiny: bulk fill (COPY / executemany) and a Review click."""
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.bench_scale import OPEN_FILTER, concurrent_clicks, fill, review_click
from db.models import Image, MaskVersion, ObjectDecision


def test_a_tiny_fill_and_clicks_read_the_clicked_image(engine):
    filled = fill(engine, n_images=300, n_decisions=3000, seed=1)
    with Session(engine) as s:
        assert s.scalar(select(func.count(ObjectDecision.id))) == 3000
        assert s.scalar(select(func.count(MaskVersion.id))) == 300
        heads = s.scalars(select(Image.head_version_id).where(Image.project_id ==
                                                              filled.project_id)).all()
        assert len(heads) == 300 and None not in heads
        open_ids = s.scalars(select(Image.id).where(
            Image.review_status.in_(OPEN_FILTER.status)).order_by(Image.id)).all()
        approved = s.scalar(select(Image.id).where(Image.review_status == "approved"))
    deep = open_ids[-3]
    assert review_click(engine, filled, deep) == deep          # a page far down the queue
    assert review_click(engine, filled, approved) == open_ids[0]   # filtered out: the first
    assert len(concurrent_clicks(engine, filled, 2, sessions=3)) == 6
