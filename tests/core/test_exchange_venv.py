"""In the extra venv (scripts/test.sh builds it): a count-only install, and bioimageio.core.

These tests fail, never skip, when the venv is missing: `make test` builds it; to run them by
hand, build it the same way (see scripts/test.sh) or point CELLTALLY_EXTRA_PYTHON at one.
"""
import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.exchange import export_package
from core.io import write_image
from core.model import build_cresunet
from core.postprocess import PostprocessParams
from core.predict import predict_heatmap
from core.run import load_run, save_run
from core.synthetic import make_image

ROOT = Path(__file__).resolve().parents[2]
EXTRA = Path(os.environ.get("CELLTALLY_EXTRA_PYTHON", ROOT / ".venv-extra" / "bin" / "python"))

BIOIMAGEIO = """
import sys
import numpy as np
from bioimageio.core import load_description, predict, test_model

summary = test_model(sys.argv[1])
failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
print("STATUS", summary.status, failed)
out = predict(model=load_description(sys.argv[1]), inputs={"rgb": np.load(sys.argv[2])})
np.save(sys.argv[3], np.asarray(out.members["heatmap"].data))
"""


def _extra(*args, **kwargs) -> subprocess.CompletedProcess:
    assert EXTRA.is_file(), (f"{EXTRA} is missing: `make test` builds it (scripts/test.sh), "
                             "or set CELLTALLY_EXTRA_PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(EXTRA), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env, **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(9)
    return save_run(tmp_path_factory.mktemp("runs") / "venv-run", model=build_cresunet(2),
                    config={"base_filters": 2}, postprocess=PostprocessParams.paper(20),
                    thresholds={"best": 0.5, "knee": None, "chosen": 0.5},
                    metrics={"f1": 0.7}, manifest={"train": [[1, 1]], "test": [[2, 2]]})


def test_the_extra_venv_has_no_tensorflow_nor_keras():
    done = _extra("-c", "import importlib.util as u; "
                        "print([m for m in ('tensorflow', 'keras', 'onnxruntime', 'bioimageio.core')"
                        " if u.find_spec(m.split('.')[0])])")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['onnxruntime', 'bioimageio.core']"


def test_bioimageio_test_model_passes_and_the_onnx_heatmap_is_keras(run_dir, tmp_path):
    package = export_package(run_dir, tmp_path / "package.zip")
    rgb, _ = make_image(np.random.default_rng(21), shape=(200, 328))
    np.save(tmp_path / "x.npy", rgb[None])
    script = tmp_path / "bio.py"
    script.write_text(BIOIMAGEIO)
    done = _extra(str(script), str(package), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STATUS passed []" in done.stdout, done.stdout
    heat = np.load(tmp_path / "y.npy")
    assert heat.shape == (1, 200, 328, 1)
    keras_heat = predict_heatmap(load_run(run_dir).model, rgb)
    assert np.abs(heat[0, ..., 0] - keras_heat).max() <= 1e-4


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(2):
        rgb, _ = make_image(rng, shape=(160, 200))
        paths.append(folder / f"im{i}.png")
        write_image(paths[-1], rgb)
    return paths


def test_count_only_install_counts_as_the_full_install(run_dir, tmp_path):
    paths = _images(tmp_path)
    full, only = tmp_path / "full.csv", tmp_path / "only.csv"
    assert main(["count", *map(str, paths), "--model", str(run_dir), "--out", str(full),
                 "-q"]) == 0
    done = _extra("-m", "core", "count", *map(str, paths), "--model", str(run_dir), "--out",
                  str(only), "-q")
    assert done.returncode == 0, done.stderr
    with full.open() as a, only.open() as b:
        assert list(csv.DictReader(a)) == list(csv.DictReader(b))


def test_count_only_install_refuses_a_run_without_onnx(run_dir, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    (old / "model.onnx").unlink()
    done = _extra("-m", "core", "count", str(_images(tmp_path)[0]), "--model", str(old),
                  "--out", str(tmp_path / "c.csv"))
    assert done.returncode == 2
    assert (f"{old} has no model.onnx; run `python -m core export {old}` on a full install"
            in done.stderr)
    assert not (old / "model.onnx").exists()
