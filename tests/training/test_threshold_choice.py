"""The threshold is chosen on held-out validation images, or on train + validation below a minimum.

Heatmaps are drawn by hand: on the validation images the cells sit at 0.8 beside false blobs at
0.5, so their best threshold lies above 0.5; on the train images the cells sit at 0.45, so the
train images' best lies below 0.45. Expectations come from :func:`core.metrics.threshold_curve`
run directly on the same images (the independent route); no Keras.
"""
import json

import numpy as np
import pytest
from skimage.draw import disk

from core.metrics import DEFAULT_THRESHOLDS, threshold_curve
from core.run import load_run
from training.scoring import Cancelled, MIN_VALIDATION_CELLS, scoring_for, tune_threshold

from .conftest import draw_sample


def _heat(sample, cell_p, false_p=None, seed=0):
    heat = np.where(sample.labels > 0, cell_p, 0.05).astype(np.float32)
    if false_p is not None:
        rng = np.random.default_rng(seed)
        for _ in range(3):  # blobs where no cell is: false positives below their level
            centre = (int(rng.integers(10, 86)), int(rng.integers(10, 118)))
            rr, cc = disk(centre, 6, shape=heat.shape)
            keep = sample.labels[rr, cc] == 0
            heat[rr[keep], cc[keep]] = false_p
    return heat


@pytest.fixture
def sets():
    rng = np.random.default_rng(5)
    val = [draw_sample(rng, f"image:{i}") for i in range(3)]
    train = [draw_sample(rng, f"image:{i}") for i in range(3, 7)]
    val_heats = [_heat(s, 0.8, 0.5, seed=i) for i, s in enumerate(val)]
    train_heats = [_heat(s, 0.45) for s in train]
    return (val_heats, val), (train_heats, train)


def _direct(heats, samples, cfg):
    rule = scoring_for(cfg)
    return threshold_curve(heats, [s.labels for s in samples], rule.postprocess,
                           max_distance=rule.match_distance)


def test_enough_validation_cells_choose_on_validation_alone(sets, tiny_config):
    (vh, vs), (th, ts) = sets
    cells = sum(int(np.unique(s.labels).size - 1) for s in vs)
    got = tune_threshold((vh, vs), (th, ts), scoring_for(tiny_config), min_cells=cells)
    held_out, fitted = _direct(vh, vs, tiny_config), _direct(th, ts, tiny_config)
    assert got["chosen_on"] == "validation" and got["min_cells"] == cells
    assert got["chosen"] == got["best"] == held_out.best and 0.5 <= got["chosen"] < 0.8
    assert got["knee"] == held_out.knee
    assert fitted.best < 0.45 and got["curves"]["train"]["best"] == fitted.best
    for name, direct in (("validation", held_out), ("train", fitted)):
        curve = got["curves"][name]
        assert curve["thresholds"] == DEFAULT_THRESHOLDS.tolist()
        for key in ("f1", "precision", "recall"):
            assert curve[key] == getattr(direct, key).tolist()
    assert got["curves"]["validation"]["cells"] == cells
    assert got["curves"]["validation"]["images"] == 3
    assert got["images"] == {"validation": ["image:0", "image:1", "image:2"],
                             "train": ["image:3", "image:4", "image:5", "image:6"]}
    assert "train+validation" not in got["curves"]


def test_too_few_validation_cells_pool_train_and_validation(sets, tiny_config):
    (vh, vs), (th, ts) = sets
    cells = sum(int(np.unique(s.labels).size - 1) for s in vs)
    got = tune_threshold((vh, vs), (th, ts), scoring_for(tiny_config), min_cells=cells + 1)
    pooled = _direct(vh + th, vs + ts, tiny_config)
    assert got["chosen_on"] == "train+validation"
    assert got["chosen"] == pooled.best and got["knee"] == pooled.knee
    assert got["curves"]["train+validation"]["f1"] == pooled.f1.tolist()
    assert got["curves"]["validation"]["cells"] == cells   # both curves are still kept
    assert got["curves"]["train"]["f1"] == _direct(th, ts, tiny_config).f1.tolist()


def _run_dir(path, thresholds):
    """A run directory's JSON files written by hand (load_run reads them without Keras)."""
    from core.postprocess import PostprocessParams

    path.mkdir(exist_ok=True)
    files = {"config.json": {"postprocess": PostprocessParams.paper().to_dict()},
             "thresholds.json": thresholds, "metrics.json": {}, "manifest.json": {}}
    for name, payload in files.items():
        (path / name).write_text(json.dumps(payload))
    return path


def test_no_validation_images_fall_back_and_the_file_round_trips(sets, tiny_config, tmp_path):
    _, (th, ts) = sets
    got = tune_threshold(([], []), (th, ts), scoring_for(tiny_config))
    assert MIN_VALIDATION_CELLS == 50
    assert got["chosen_on"] == "train+validation" and got["curves"]["validation"] is None
    assert got["chosen"] == _direct(th, ts, tiny_config).best
    run = load_run(_run_dir(tmp_path / "new", got), with_model=False)
    assert run.threshold == got["chosen"] and run.thresholds["chosen_on"] == "train+validation"
    assert run.thresholds["curves"]["train"]["f1"] == got["curves"]["train"]["f1"]
    with pytest.raises(ValueError, match="chosen_on"):
        load_run(_run_dir(tmp_path / "bad", {**got, "chosen_on": "test"}), with_model=False)
    with pytest.raises(ValueError, match="needs images"):
        tune_threshold(([], []), ([], []), scoring_for(tiny_config))


def test_a_run_with_only_the_old_curve_still_loads(tmp_path):
    old = {"best": 0.6, "knee": 0.7, "chosen": 0.6,
           "curve": {"thresholds": [0.5, 0.6], "f1": [0.8, 0.9]}}
    run = load_run(_run_dir(tmp_path / "old", old), with_model=False)
    assert run.threshold == 0.6 and run.thresholds["curve"]["f1"] == [0.8, 0.9]
    minimal = {"best": None, "knee": None, "chosen": 0.4}
    assert load_run(_run_dir(tmp_path / "minimal", minimal), with_model=False).threshold == 0.4


def test_tuning_reports_every_step_of_both_curves_and_honours_cancel(sets, tiny_config):
    from training.tasks import _stage_fraction

    seen = []
    tune_threshold(*sets, scoring_for(tiny_config), progress=seen.append)
    total = 2 * len(DEFAULT_THRESHOLDS)
    assert [p["step"] for p in seen] == list(range(1, total + 1))
    assert {(p["stage"], p["steps"]) for p in seen} == {("tuning", total)}
    fraction, message = _stage_fraction(seen[2])
    assert message == f"Tuning the threshold: step 3/{total}" and 0.88 < fraction < 0.93
    seen.clear()
    with pytest.raises(Cancelled, match="while tuning the threshold after 2 of"):
        tune_threshold(*sets, scoring_for(tiny_config), progress=seen.append,
                       should_cancel=lambda: len(seen) >= 2)
