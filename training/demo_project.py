"""The demo project: users of every role, synthetic images, masks, ground truth, the demo model.

``seed_demo(settings)`` is idempotent: it builds what is missing and leaves the rest alone, so
the app calls it on every start in demo mode (``make run``) and a second start costs a few
queries. The app-test suite calls it too, with fewer and smaller images.

What it builds:

- the accounts of :data:`DEMO_USERS` (listed on the sign-in page in demo mode only);
- project :data:`DEMO_PROJECT` with ``n_images`` synthetic fluorescence images
  (``core.synthetic.TRAIN`` with the yellow stain only: cells among artefacts), each with its automatic
  threshold mask (source ``auto``);
- a seeded random split (a quarter test), and the generator's true cells as an approved
  version (source ``manual``) for every test image and every other train image. Touching
  cells keep the generator's 1-px gap, so the 0/255 mask reads back as the same cells;
- the demo model from ``models/demo/`` registered as the project's promoted run and scored on
  the demo test split (``training.tasks.evaluate_run``: per-image results, object outcomes,
  heatmaps).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from core.prelabel import auto_mask
from core.synthetic import TRAIN, make_dataset
from db import masks, projects, runs, users
from db.engine import make_engine, transaction, upgrade
from db.storage import Storage
from training.tasks import evaluate_run

log = logging.getLogger(__name__)

#: (name, password, role) of the demo accounts.
DEMO_USERS = (("admin", "admin-demo", "admin"), ("expert", "expert-demo", "expert"),
              ("operator", "operator-demo", "operator"), ("viewer", "viewer-demo", "viewer"))
DEMO_PROJECT = "Demo (yellow)"
#: TRAIN's cells and artefacts, in the project's one stain: its automatic masks read the
#: yellow signal, which a red or green image does not have.
DEMO_IMAGES_CONFIG = dataclasses.replace(TRAIN, stains=(("yellow", 1.0),))
DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "demo"


def seed_demo(settings, *, engine=None, n_images: int = 24, shape=(600, 800), seed: int = 0,
              model_dir: Path | None = DEMO_MODEL_DIR, progress=None) -> int:
    """Build the demo project where it is missing; returns the project id.

    Parameters
    ----------
    settings : db.settings.Settings
    engine : Engine, optional
        An engine already migrated (the app's); one is made and migrated otherwise.
    n_images, shape, seed
        How many synthetic images, their (rows, cols), and the seed of everything random.
    model_dir : Path or None
        The demo run directory to register; None skips the model.
    progress : callable, optional
        Called with (done, total) while images are made.
    """
    if engine is None:
        engine = make_engine(settings)
        upgrade(engine)
    storage = Storage.from_settings(settings)
    with transaction(engine) as s:
        for name, password, role in DEMO_USERS:
            if users.get_user(s, name) is None:
                users.create_user(s, name, password, role=role)
        known = {p.name: p.id for p in projects.list_projects(s)}
        pid = known.get(DEMO_PROJECT) or projects.create_project(s, DEMO_PROJECT, stain="yellow").id
        admin = users.get_user(s, "admin")
        expert = users.get_user(s, "expert")
        has_images = bool(projects.list_batches(s, pid))
    if not has_images:
        data = make_dataset(n_images, seed, shape=shape, config=DEMO_IMAGES_CONFIG)
        with transaction(engine) as s:
            batch = projects.create_batch(s, pid, user_id=admin.id, source="core.synthetic demo")
            imported, truth = [], {}
            for i, (rgb, labels) in enumerate(data):
                reg = projects.register_image(s, storage, pid, rgb, name=f"demo_{i + 1:02d}.png",
                                              batch_id=batch.id)
                auto = masks.save_mask_version(s, storage, reg.image.id, auto_mask(rgb),
                                               based_on=None, source="auto", author_id=None)
                imported.append(reg.image.id)
                truth[reg.image.id] = (labels, auto.id)  # the generator's cells, one label each
                if progress is not None:
                    progress(i + 1, n_images)
            projects.finish_batch(s, batch, {"imported": imported, "skipped": []})
            projects.assign_random_splits(s, pid, test_share=0.25, seed=seed, actor=admin)
            s.expire_all()
            splits = {img: projects.get_image(s, img).split for img in imported}
            train_seen = 0
            for image_id, (mask, auto_id) in truth.items():
                if splits[image_id] == "train":
                    train_seen += 1
                    if train_seen % 2 == 0:
                        continue  # leave half the train images for people to review
                v = masks.save_mask_version(s, storage, image_id, mask, based_on=auto_id,
                                            source="manual", author_id=expert.id,
                                            note="synthetic ground truth")
                masks.approve(s, image_id, user_id=expert.id, version_id=v.id)
        log.info("Demo project %s: %d synthetic images.", DEMO_PROJECT, n_images)
    if model_dir is not None:
        _register_demo_model(engine, settings, storage, pid, Path(model_dir))
    return pid


def _register_demo_model(engine, settings, storage, pid: int, model_dir: Path) -> None:
    """Register, promote and score the committed demo run on the test split, once.

    A start that stopped after registering (the server killed while scoring) scores the run
    on the next start: the check is for results, not for the run row.
    """
    if not (model_dir / "config.json").is_file():
        log.info("No demo model at %s; run `make demo-model` to build it.", model_dir)
        return
    recorded = {str(model_dir.resolve()), storage.key(model_dir.resolve())}
    with transaction(engine) as s:
        run = next((r for r in runs.list_runs(s, pid) if r.run_dir in recorded), None)
        if run is None:
            run = runs.register_run(s, pid, model_dir, name="demo", storage=storage)
            runs.promote_run(s, run.id, actor=users.get_user(s, "admin"))
        run_id, scored = run.id, bool(runs.scored_image_ids(s, run.id))
    if not scored:
        # Scored here, in this process, so the Predictions and Dashboard pages have per-image
        # results, object outcomes and heatmaps on the first visit (no job, no worker).
        evaluate_run(settings, run_id, engine=engine)
