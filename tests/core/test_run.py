"""Run directories: a round trip with a tiny model, and clear errors for missing or damaged files."""
import dataclasses
import json
import zipfile

import numpy as np
import pytest

from core.model import build_cresunet, weighted_bce
from core.postprocess import PostprocessParams
from core.run import Run, load_run, save_run

THRESHOLDS = {"best": 0.55, "knee": 0.7, "chosen": 0.55}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One run saved once for the module (saving and loading a model takes a second or two)."""
    import keras

    keras.utils.set_random_seed(3)
    model = build_cresunet(2)
    model.compile(optimizer="adam", loss=weighted_bce)  # the saved copy must drop this
    params = PostprocessParams.fnc_v2(cell_diameter=24)
    path = save_run(
        tmp_path_factory.mktemp("runs") / "run-7", model=model,
        config={"base_filters": 2, "learning_rate": np.float32(0.001), "epochs": np.int64(3)},
        postprocess=params, thresholds=THRESHOLDS,
        metrics={"f1": 0.8, "mae": 1.5, "n_images": 3},
        manifest={"train": [[1, 4]], "validation": [], "test": [[2, 5]]},
        history={"loss": [0.9, 0.5], "val_loss": [1.0, 0.7], "learning_rate": [1e-3, 1e-3]})
    return path, model, params


def test_round_trip(saved, rng):
    path, model, params = saved
    run = load_run(path)
    assert isinstance(run, Run) and run.path == path and run.name == "run-7"
    # The chosen threshold is the run's one threshold: the params' copy follows it.
    assert run.postprocess == dataclasses.replace(params, threshold=0.55)
    assert run.thresholds == THRESHOLDS and run.threshold == 0.55
    assert run.config["base_filters"] == 2 and run.config["epochs"] == 3
    assert run.metrics["f1"] == 0.8 and run.manifest["test"] == [[2, 5]]
    for before, after in zip(model.get_weights(), run.model.get_weights()):
        np.testing.assert_array_equal(before, after)
    x = rng.random((1, 16, 24, 3), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_on_batch(x), run.model.predict_on_batch(x))


def test_files_on_disk(saved):
    path, _, _ = saved
    names = {p.name for p in path.iterdir()}
    assert names == {"model.keras", "model.onnx", "config.json", "thresholds.json",
                     "metrics.json", "manifest.json", "history.csv"}  # no temps, no checkpoint/
    config = json.loads((path / "config.json").read_text())
    assert config["postprocess"]["preset"] == "fnc_v2"
    with zipfile.ZipFile(path / "model.keras") as zf:
        model_config = json.loads(zf.read("config.json"))
    assert not model_config.get("compile_config")  # an inference copy: no optimizer
    lines = (path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,val_loss,learning_rate" and lines[2].startswith("2,0.5,0.7")


def test_without_model_and_checkpoint_left_alone(saved):
    path, _, _ = saved
    (path / "checkpoint").mkdir(exist_ok=True)
    (path / "checkpoint" / "state").write_text("resumable")
    run = load_run(str(path), with_model=False)
    assert run.model is None and run.threshold == 0.55
    assert (path / "checkpoint" / "state").read_text() == "resumable"


def _copy_run(src, dst, skip=()):
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("missing", ["config.json", "thresholds.json", "metrics.json",
                                     "manifest.json", "model.keras"])
def test_missing_file_named(saved, tmp_path, missing):
    run_dir = _copy_run(saved[0], tmp_path / "broken", skip={missing})
    with pytest.raises(ValueError, match=f"{run_dir}.*{missing}"):
        load_run(run_dir)


@pytest.mark.parametrize("fname, content, message", [
    ("metrics.json", "{not json", "metrics.json is unreadable"),
    ("manifest.json", "[1, 2]", "manifest.json must hold a JSON object"),
    ("thresholds.json", '{"best": 0.5, "knee": null}', "thresholds.json is invalid"),
    ("thresholds.json", '{"best": 0.5, "knee": null, "chosen": 1.7}', "thresholds.json"),
    ("config.json", '{"base_filters": 2}', "config.json has no \"postprocess\""),
    ("config.json", '{"postprocess": {"no_such_field": 1}}', "config.json has invalid"),
    ("model.keras", "not a zip", "model.keras cannot be loaded"),
])
def test_damaged_file_named(saved, tmp_path, fname, content, message):
    run_dir = _copy_run(saved[0], tmp_path / "damaged")
    (run_dir / fname).write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_run(run_dir, with_model=fname == "model.keras")
    assert str(run_dir) in str(err.value)


def test_not_a_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_bad_thresholds_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="chosen"):
        save_run(tmp_path / "r", model=None, config={}, postprocess=PostprocessParams.paper(),
                 thresholds={"best": 0.5, "knee": None, "chosen": None}, metrics={}, manifest={})
    assert not (tmp_path / "r").exists()


def test_failed_save_keeps_the_earlier_run(saved, tmp_path):
    run_dir = _copy_run(saved[0], tmp_path / "again")
    before = (run_dir / "metrics.json").read_text()
    with pytest.raises(TypeError, match="cannot store"):
        save_run(run_dir, model=None, config={}, postprocess=PostprocessParams.paper(),
                 thresholds=THRESHOLDS, metrics={"f1": object()}, manifest={})
    assert (run_dir / "metrics.json").read_text() == before
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in saved[0].iterdir()
                                                               if p.is_file())


def test_run_files_are_readable_by_others_under_the_umask(tmp_path):
    """mkstemp makes 0o600 files; a run renamed into place must get the umask's mode instead."""
    import os
    import stat

    from core.io import default_file_mode
    from core.model import build_cresunet
    from core.postprocess import PostprocessParams
    from core.run import save_run

    old = os.umask(0o022)
    try:
        run = save_run(tmp_path / "r", model=build_cresunet(base_filters=2), config={},
                       postprocess=PostprocessParams.paper(),
                       thresholds={"best": 0.5, "knee": 0.5, "chosen": 0.5}, metrics={},
                       manifest={})
        assert default_file_mode() == 0o644
        for f in run.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
    finally:
        os.umask(old)
