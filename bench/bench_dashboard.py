"""Benchmark: the Dashboard page renders in at most 1 s for a run with 100 test images (issue 6).

A throwaway database holds one project with 100 test images (animal, region and condition
metadata, approved ground truth), two runs scored on all of them (per-image results and a stored
threshold curve), and 20 images reviewed blind by two operators with a few adjudications. The page
is run with ``AppTest`` through the router, signed in as a viewer, so the figure includes the
sidebar and every query, chart and table the page draws. Wall and CPU time of each rerun are
printed; the median of the reruns after the first (warm caches) is the figure.

Run: ``.venv/bin/python bench/bench_dashboard.py [--images 100] [--repeat 7]``
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402

from common import machine_line, today  # noqa: E402

TARGET_S = 1.0


def build(data_dir: Path, n_images: int, seed: int = 0) -> None:
    """The benchmark's database (see module docstring)."""
    from skimage.draw import disk
    from sqlalchemy.orm import Session

    from db import users
    from db.engine import make_engine, upgrade
    from db.models import (AdjudicationDecision, AdjudicationItem, Approval, Image, ImageResult,
                           MaskVersion, ModelRun, Project, ReviewAssignment)
    from db.settings import Settings
    from db.storage import Storage

    rng = np.random.default_rng(seed)
    settings = Settings.from_env()
    engine = make_engine(settings)
    upgrade(engine)
    storage = Storage(data_dir)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    grid = np.round(np.arange(0.05, 0.95 + 1e-9, 0.025), 3)
    with Session(engine) as s, s.begin():
        for name, role in (("viewer", "viewer"), ("ann", "operator"), ("bob", "operator"),
                           ("eve", "expert")):
            users.create_user(s, name, f"{name}-password", role=role)
        ids = {u.name: u.id for u in users.list_users(s)}
        project = Project(name="bench", stain="yellow", pixel_size_um=0.5)
        s.add(project)
        s.flush()
        images = []
        for i in range(n_images):
            img = Image(project_id=project.id, sha256=f"{i:064x}", path=f"/bench/{i}.png",
                        original_name=f"img_{i:03d}.png", width=1600, height=1200, split="test",
                        animal=f"m{i % 5}", region=("CA1", "CA3", "DG")[i % 3],
                        condition=("ctrl", "sleep")[i % 2], review_status="approved")
            s.add(img)
            images.append(img)
        s.flush()
        truth = {}
        for img in images:
            n = int(rng.integers(0, 40))
            v = MaskVersion(image_id=img.id, source="manual", path="/bench/mask.png",
                            sha256="0" * 64, object_count=n)
            s.add(v)
            s.flush()
            img.head_version_id = v.id
            s.add(Approval(image_id=img.id, version_id=v.id))
            truth[img.id] = (n, v.id)
        for k, (name, f1) in enumerate((("first", 0.82), ("second", 0.86))):
            curve = 0.9 - 2.0 * (grid - 0.55) ** 2
            run = ModelRun(project_id=project.id, name=name, run_dir=f"/bench/run{k}",
                           threshold=0.55, promoted=k == 1, created_at=t0 + dt.timedelta(days=k),
                           metrics={"f1": f1, "precision": 0.85, "recall": 0.87, "mae": 1.1,
                                    "medae": 1.0, "bias": 0.2, "mean_iou": 0.72,
                                    "n_images": n_images,
                                    "threshold_curve": {"thresholds": grid.tolist(),
                                                        "f1": curve.tolist(),
                                                        "precision": (curve + 0.03).tolist(),
                                                        "recall": (curve - 0.03).tolist()}})
            s.add(run)
            s.flush()
            for img in images:
                n, vid = truth[img.id]
                pred = max(0, n + int(rng.integers(-3, 4)))
                tp = min(n, pred) - int(rng.integers(0, 2) if min(n, pred) else 0)
                s.add(ImageResult(run_id=run.id, image_id=img.id, version_id=vid, tp=tp,
                                  fp=pred - tp, fn=n - tp, n_true=n, n_pred=pred,
                                  iou=float(rng.uniform(0.6, 0.85))))
        # Blind double review of 20 images: two operators' masks on disk, 5 adjudications.
        for j, img in enumerate(images[:20]):
            for user in ("ann", "bob"):
                mask = np.zeros((1200, 1600), bool)
                for _ in range(int(rng.integers(5, 15))):
                    mask[disk((int(rng.integers(30, 1170)), int(rng.integers(30, 1570))), 20,
                              shape=mask.shape)] = True
                stored = storage.put_mask(mask)
                from db.masks import count_objects
                v = MaskVersion(image_id=img.id, source="manual", path=str(stored.path),
                                sha256=stored.sha256, object_count=count_objects(mask),
                                author_id=ids[user])
                s.add(v)
                s.flush()
                s.add(ReviewAssignment(image_id=img.id, user_id=ids[user], blind=True, done=True,
                                       version_id=v.id))
            if j < 5:
                item = AdjudicationItem(project_id=project.id, image_id=img.id,
                                        kind="mask_object", reason="disagreement",
                                        centroid_row=600.0, centroid_col=800.0,
                                        bbox=[580, 780, 620, 820], status="decided")
                s.add(item)
                s.flush()
                s.add(AdjudicationDecision(item_id=item.id, expert_id=ids["eve"],
                                           verdict="keep", reason="bench"))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    os.environ.update({"CELLTALLY_DATA_DIR": str(tmp), "CELLTALLY_DB_URL":
                       f"sqlite:///{tmp}/bench.db", "CELLTALLY_DEMO": "0"})
    start = time.perf_counter()
    build(tmp, args.images)
    print(f"built the database in {time.perf_counter() - start:.1f} s")

    from streamlit.testing.v1 import AppTest

    from db.engine import make_engine, transaction
    from db.sessions import start_session
    from db.users import get_user
    from pages.ui import TOKEN_KEY

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    engine = make_engine(f"sqlite:///{tmp}/bench.db")
    with transaction(engine) as s:  # signed in as a sign-in leaves a tab: a session's token
        at.session_state[TOKEN_KEY] = start_session(s, get_user(s, "viewer"))
    engine.dispose()
    at.run()
    at.switch_page("pages/dashboard.py")
    walls, cpus = [], []
    for _ in range(args.repeat + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        at.run()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if at.exception:
            print(at.exception)
            return 1
    charts = len(at.get("plotly_chart"))
    warm_wall, warm_cpu = statistics.median(walls[1:]), statistics.median(cpus[1:])
    print(machine_line())
    print(f"dashboard, {args.images} test images, 2 runs, 20 double-reviewed images: "
          f"first {walls[0] * 1000:.0f} ms; warm median {warm_wall * 1000:.0f} ms wall, "
          f"{warm_cpu * 1000:.0f} ms CPU over {args.repeat} reruns; {charts} plotly charts; "
          f"target <= {TARGET_S * 1000:.0f} ms: {'ok' if warm_wall <= TARGET_S else 'MISSED'}")
    print(f"({today()})")
    return 0 if warm_wall <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
