"""One run, every surface, one answer (issue 10's acceptance test).

A run with ``cell_diameter`` 30 is scored through evaluation, ``core count``, the Predictions
recount, the dashboard's curve, adjudication crops, a count job and the counts export, and all
of them must agree image by image on TP, FP, FN and counts.

The "model" is a 1x1 convolution whose output is ``p = S * R / 255`` (red channel only), so
every pixel's probability is set by the picture drawn here, and each disagreement the old copies
had is exercised on purpose:

- a true cell and a bright blob 40 px apart: one TP when matched at 50 px (the old recount's
  default), an FN and an FP at the run's 30 px;
- a true cell of red 141, so p = 0.5505 lies just above the threshold 0.55 while its stored
  level round(255 p) = 140 lies below: the float heatmap counts it, the quantised one does not;
- a bright blob that is no cell: an FP, whose adjudication crop must be the counted object.
"""
import csv

import numpy as np
import pytest
from skimage.draw import disk
from sqlalchemy.orm import Session

from core.cli import main as count_main
from core.postprocess import PostprocessParams, quantise_heatmap
from core.run import load_run, save_run
from db import adjudication, exporting, jobs, masks, projects, runs
from db.engine import make_engine, upgrade
from db.settings import Settings
from db.storage import Storage
from training import scoring
from training.inference import prelabel_with_model
from training.tasks import JobContext, evaluate_run, run_count

SHAPE = (200, 200)
S = 0.5505 * 255 / 141            # p of red 141 is 0.5505: above 0.55, its level 140 is not
BRIGHT, DIM, BORDER = 240, 90, 141
THRESHOLD = 0.55

# (true cells, drawn red) per image: (row, col, red, is a true cell)
PICTURES = {
    "three_tp_one_fp_one_fn.png": [(40, 40, BRIGHT, True), (40, 140, BRIGHT, True),
                                   (140, 40, BRIGHT, True), (150, 150, BRIGHT, False),
                                   (100, 90, DIM, True)],
    "forty_px_apart.png": [(60, 50, DIM, True), (60, 90, BRIGHT, False),
                           (150, 100, BORDER, True)],
    "two_tp.png": [(50, 60, BRIGHT, True), (150, 130, BRIGHT, True)],
}
# What the run must find at 30 px and 0.55 on quantised levels, by hand.
EXPECTED = {"three_tp_one_fp_one_fn.png": (3, 1, 1), "forty_px_apart.png": (0, 1, 2),
            "two_tp.png": (2, 0, 0)}


def _picture(cells):
    rgb = np.zeros(SHAPE + (3,), np.uint8)
    rgb[..., 0] = 20
    labels = np.zeros(SHAPE, np.int32)
    for i, (r, c, red, is_cell) in enumerate(cells, start=1):
        rr, cc = disk((r, c), 10, shape=SHAPE)
        rgb[rr, cc, 0] = red
        if is_cell:
            labels[rr, cc] = i
    return rgb, labels


def _red_model():
    import keras

    inputs = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(1, 1, use_bias=False, name="red")(inputs)
    model = keras.Model(inputs, out)
    model.get_layer("red").set_weights([np.array([S, 0.0, 0.0], np.float32).reshape(1, 1, 3, 1)])
    return model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one-path")
    settings = Settings.from_env({"CELLTALLY_DATA_DIR": str(tmp / "data"),
                                  "CELLTALLY_DB_URL": f"sqlite:///{tmp / 'db.sqlite'}"})
    engine = make_engine(settings)
    upgrade(engine)
    storage = Storage.from_settings(settings)
    run_dir = save_run(storage.run_dir("one-path"), model=_red_model(), config={},
                       postprocess=PostprocessParams.paper(cell_diameter=30),
                       thresholds={"best": THRESHOLD, "knee": None, "chosen": THRESHOLD},
                       metrics={}, manifest={})
    with Session(engine) as s, s.begin():
        project = projects.create_project(s, "one path", stain="yellow")
        names = {}
        for name, cells in PICTURES.items():
            rgb, labels = _picture(cells)
            image = projects.register_image(s, storage, project.id, rgb, name=name).image
            version = masks.save_mask_version(s, storage, image.id, labels, based_on=None,
                                              source="import", author_id=None)
            masks.approve(s, image.id, user_id=None, version_id=version.id)
            names[image.id] = name
        projects.move_splits(s, list(names), "test", actor_id=None, reason="")
        run_id = runs.register_run(s, project.id, run_dir, storage=storage).id
        project_id = project.id
    evaluate_run(settings, run_id, engine=engine)
    yield settings, engine, storage, run_id, run_dir, project_id, names
    engine.dispose()


def _per_image(table, names):
    return {names[int(r.image_id)]: (int(r.tp), int(r.fp), int(r.fn)) for r in table.itertuples()}


def test_evaluation_finds_what_was_drawn(world):
    _, engine, _, run_id, _, _, names = world
    with Session(engine) as s:
        stored = _per_image(runs.run_results(s, run_id), names)
    assert stored == EXPECTED


def test_every_surface_agrees_image_by_image(world, tmp_path):
    settings, engine, storage, run_id, run_dir, project_id, names = world
    with Session(engine) as s:
        stored = runs.run_results(s, run_id)
        recount = scoring.recount(s, storage, run_id, THRESHOLD)
        outcomes = {i: scoring.image_outcome(s, storage, run_id, i) for i in names}
        curve = scoring.threshold_curve_for_run(s, storage, run_id, compute=True)
        metrics = runs.get_run(s, run_id).metrics
        paths = {names[i]: storage.resolve(projects.get_image(s, i).path) for i in names}
    n_pred = {names[int(r.image_id)]: int(r.n_pred) for r in stored.itertuples()}
    assert _per_image(recount, names) == EXPECTED
    assert {names[i]: (o.match.tp, o.match.fp, o.match.fn) for i, o in outcomes.items()} == EXPECTED
    # The dashboard's curve, at the run's threshold, is the evaluation's pooled score.
    at = curve["thresholds"].index(THRESHOLD)
    assert (curve["f1"][at], curve["precision"][at], curve["recall"][at]) == pytest.approx(
        (metrics["f1"], metrics["precision"], metrics["recall"]))

    out = tmp_path / "counts.csv"
    assert count_main(["count", *map(str, paths.values()), "--model", str(run_dir),
                       "--out", str(out)]) == 0
    with out.open() as fh:
        counted = {r["file"].rsplit("/", 1)[-1]: int(r["count"]) for r in csv.DictReader(fh)}
    by_file = {p.name: name for name, p in paths.items()}
    assert {by_file[f]: c for f, c in counted.items()} == n_pred

    ctx = JobContext(settings, engine, job_id=None, progress=lambda f, m: None,
                     should_cancel=lambda: False)
    # The Count page's job counts the same files kept in the store (not as project images).
    with Session(engine) as s:
        counted = [{"item": n, "name": names[i], "path": projects.get_image(s, i).path}
                   for n, i in enumerate(names)]
    result = run_count(ctx, project_id, {"run_dir": str(run_dir), "images": counted}, {})
    with Session(engine) as s, s.begin():
        job_id = jobs.queue_job(s, "count", project_id=project_id, config={}).id
        jobs.finish_job(s, job_id, result=result)
    with Session(engine) as s:
        table = scoring.count_results(s, storage, job_id)
    assert {r.file: int(r.count) for r in table.itertuples()} == n_pred
    # An older job, of project images named by id, still counts them.
    legacy = run_count(ctx, project_id, {"run_dir": str(run_dir), "image_ids": list(names)}, {})
    assert {names[e["image_id"]]: e["count"] for e in legacy["counts"]} == n_pred


def test_adjudication_crops_show_the_counted_object(world):
    _, engine, storage, run_id, _, _, names = world
    with Session(engine) as s, s.begin():
        rule = load_run(runs.run_path(runs.get_run(s, run_id), storage), with_model=False).scoring
        fps = [(i, o) for i in names for o in runs.result_objects(
            s, runs.result_for(s, run_id, i).id, outcome="FP")]
        assert len(fps) == 2
        for image_id, outcome in fps:
            item = adjudication.queue_run_object(s, outcome.id)
            pixels = adjudication.item_pixels(s, storage, item, SHAPE)
            heat = storage.read_heatmap(runs.result_for(s, run_id, image_id).heatmap_path)
            counted = rule.labels(heat)
            assert pixels.sum() == outcome.area
            assert len(np.unique(counted[pixels])) == 1 and counted[pixels][0] > 0
            assert adjudication.item_crop(s, storage, item.id).ndim == 3


def test_prelabelled_masks_export_the_counts_they_were_made_with(world):
    _, engine, storage, run_id, run_dir, project_id, names = world
    run = load_run(run_dir)
    with Session(engine) as s, s.begin():
        prelabel_with_model(s, storage, run, list(names), run_id=run_id)
    with Session(engine) as s:
        n_pred = {names[int(r.image_id)]: int(r.n_pred)
                  for r in runs.run_results(s, run_id).itertuples()}
        text = exporting.export_counts(s, project_id)
    rows = {r["image"]: r for r in csv.DictReader(text.splitlines())}
    assert {name: int(rows[name]["count"]) for name in names.values()} == n_pred
    assert {(r["source"], r["threshold"], r["model_run"]) for r in rows.values()} == {
        ("model", "0.55", "one-path")}


def test_the_borderline_cell_is_where_float_and_stored_levels_disagree():
    """The picture really exercises quantisation: float p > 0.55, stored level not."""
    p = np.float32(S * BORDER / 255)
    assert p > THRESHOLD and quantise_heatmap(np.array([p]))[0] / 255 <= THRESHOLD
