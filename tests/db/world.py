"""A small hand-built project shared by the db and scoring tests (rows written directly, so
every count is known by hand): ``world`` and, with one scored run, ``scored``."""
import datetime as dt

import numpy as np
import pytest
from skimage.draw import disk
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.models import (Approval, Base, Image, ImageResult, MaskVersion, ModelRun, ObjectOutcome,
                       Project, User, utcnow)
from db.storage import Storage

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def at(minutes):
    return T0 + dt.timedelta(minutes=minutes)


def mask(shape, centres, radius=5):
    m = np.zeros(shape, bool)
    for c in centres:
        m[disk(c, radius, shape=shape)] = True
    return m


@pytest.fixture
def world(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    storage = Storage(tmp_path / "data")
    with Session(engine) as s, s.begin():
        users = {n: User(name=n, role=r, password_hash="x") for n, r in
                 [("ann", "operator"), ("bob", "operator"), ("eve", "expert")]}
        s.add_all(users.values())
        p = Project(name="p", stain="yellow", pixel_size_um=1.0)
        s.add(p)
        s.flush()
        imgs = []
        for i, (split, animal) in enumerate([("train", "m1"), ("train", "m1"), ("test", "m2"),
                                             ("test", "m2"), ("unassigned", None)]):
            img = Image(project_id=p.id, sha256=f"{i:064d}", path=f"/nowhere/{i}.png",
                        original_name=f"img{i}.png", width=1000, height=1000, split=split,
                        animal=animal, region="CA1" if i % 2 else "DG")
            s.add(img)
            imgs.append(img)
        s.flush()
        # Every image gets a head version; images 0 and 2 are approved (ground truth).
        versions = []
        for i, img in enumerate(imgs):
            stored = storage.put_mask(mask((40, 40), [(10, 10 + 8 * k) for k in range(i + 1)],
                                            radius=3))
            v = MaskVersion(image_id=img.id, source="auto", path=str(stored.path),
                            sha256=stored.sha256, object_count=i + 1, created_at=at(i))
            s.add(v)
            s.flush()
            img.head_version_id = v.id
            versions.append(v)
        s.add_all([Approval(image_id=imgs[0].id, version_id=versions[0].id, created_at=at(5)),
                   Approval(image_id=imgs[2].id, version_id=versions[2].id, created_at=at(5))])
        # Two runs; the second is promoted and scored image 2 and 3.
        r1 = ModelRun(project_id=p.id, name="first", run_dir="/r1", threshold=0.5,
                      metrics={"f1": 0.7, "MAE": 2.0}, created_at=at(10))
        r2 = ModelRun(project_id=p.id, name="second", run_dir="/r2", threshold=0.5,
                      metrics={"f1": 0.8, "precision": 0.9, "recall": 0.72, "mae": 1.5,
                               "median_ae": 1.0, "bias": -0.5, "iou": 0.6, "n_images": 2},
                      promoted=True, created_at=at(20))
        s.add_all([r1, r2])
        s.flush()
        res2 = ImageResult(run_id=r2.id, image_id=imgs[2].id, tp=3, fp=1, fn=0, n_true=3,
                           n_pred=4, iou=0.7)
        res3 = ImageResult(run_id=r2.id, image_id=imgs[3].id, tp=2, fp=0, fn=2, n_true=4,
                           n_pred=2, iou=0.5)
        s.add_all([res2, res3])
        s.flush()
        # Outcomes: one sure TP, one borderline TP, one giant FP.
        s.add_all([
            ObjectOutcome(result_id=res2.id, outcome="TP", centroid_row=10, centroid_col=10,
                          bbox=[7, 7, 14, 14], area=100, probability=0.97),
            ObjectOutcome(result_id=res2.id, outcome="TP", centroid_row=10, centroid_col=26,
                          bbox=[7, 23, 14, 30], area=100, probability=0.52),
            ObjectOutcome(result_id=res2.id, outcome="FP", centroid_row=30, centroid_col=30,
                          bbox=[20, 20, 40, 40], area=900, probability=0.95),
            ObjectOutcome(result_id=res3.id, outcome="TP", centroid_row=5, centroid_col=5,
                          bbox=[2, 2, 9, 9], area=110, probability=0.9),
            ObjectOutcome(result_id=res3.id, outcome="FN", centroid_row=20, centroid_col=5,
                          bbox=[17, 2, 24, 9], area=100, probability=0.3),
        ])
        s.flush()
        ids = {"project": p.id, "images": [i.id for i in imgs], "versions": [v.id for v in versions],
               "users": {n: u.id for n, u in users.items()}, "runs": [r1.id, r2.id]}
    return engine, storage, ids


@pytest.fixture
def scored(world, tmp_path):
    """A run scored on one 80x80 image: three clear cells and one faint blob (p = 0.4)."""
    from core.postprocess import PostprocessParams

    engine, storage, ids = world
    truth = mask((80, 80), [(15, 15), (15, 60), (60, 15)], radius=6)
    heat = np.where(truth, 0.8, 0.05).astype(np.float32)
    heat[disk((60, 60), 6)] = 0.4
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Session(engine) as s, s.begin():
        img = Image(project_id=ids["project"], sha256="f" * 64, path="/x.png", original_name="s.png",
                    width=80, height=80, split="test")
        s.add(img)
        s.flush()
        stored = storage.put_mask(truth)
        v = MaskVersion(image_id=img.id, source="manual", path=str(stored.path),
                        sha256=stored.sha256, object_count=3)
        s.add(v)
        s.flush()
        run = ModelRun(project_id=ids["project"], name="scored", run_dir=str(run_dir),
                       threshold=0.5, config={"postprocess":
                                              PostprocessParams.paper(cell_diameter=10).to_dict()})
        s.add(run)
        s.flush()
        s.add(ImageResult(run_id=run.id, image_id=img.id, version_id=v.id, tp=3, fp=0, fn=0,
                          n_true=3, n_pred=3, iou=1.0,
                          heatmap_path=str(storage.put_heatmap(heat).path)))
        ids = {**ids, "scored_run": run.id, "scored_image": img.id}
    return engine, storage, ids


class Clock:
    """A clock the test moves by hand (no sleeping): ``clock.step(59)``, ``clock.step(hours=8)``."""

    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def step(self, seconds: float = 0.0, **delta):
        self.now += dt.timedelta(seconds=seconds, **delta)


def item_on_image(world, rgb) -> int:
    """The world's second image given the pixels ``rgb`` (40 x 40) and an unsure item on label 1
    of its version, box rows/cols 7-13 around (10, 10); the item's id."""
    from db.models import AdjudicationItem

    engine, storage, ids = world
    stored = storage.put_image(rgb)
    with Session(engine) as s, s.begin():
        img = s.get(Image, ids["images"][1])
        img.path, img.width, img.height = str(stored.path), rgb.shape[1], rgb.shape[0]
        it = AdjudicationItem(project_id=ids["project"], image_id=img.id, kind="mask_object",
                              reason="unsure", version_id=ids["versions"][1], label=1,
                              centroid_row=10, centroid_col=10, bbox=[7, 7, 14, 14])
        s.add(it)
        s.flush()
        return it.id
