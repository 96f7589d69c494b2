"""Counting on ONNX Runtime and Dask: the same CSV as one process, no TensorFlow, checks."""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import counting
from core.cli import main
from core.counting import COLUMNS, CountSpec, check_objects, count_chunk
from core.io import write_image
from core.model import build_cresunet
from core.postprocess import PostprocessParams
from core.run import model_sha256, save_run
from core.synthetic import make_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    return save_run(tmp_path_factory.mktemp("runs") / "count-run", model=build_cresunet(2),
                    config={"base_filters": 2}, postprocess=PostprocessParams.paper(20),
                    thresholds={"best": 0.5, "knee": None, "chosen": 0.5}, metrics={},
                    manifest={})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five small synthetic images, a corrupt file and a missing one, in a fixed order."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(8)
    paths = []
    for i in range(5):
        rgb, _ = make_image(rng, shape=(160, 200))
        paths.append(folder / f"img{i}.png")
        write_image(paths[-1], rgb)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [paths[0], folder / "broken.png", *paths[1:3], folder / "missing.png", *paths[3:]]


def _csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_historic_columns_come_first():
    assert COLUMNS[:5] == ("file", "count", "method", "threshold", "error")
    assert COLUMNS[5:] == ("check", "model_sha256", "version")


def test_local_cluster_of_two_processes_writes_the_serial_csv(run_dir, images, tmp_path):
    serial, spread = tmp_path / "serial.csv", tmp_path / "dask.csv"
    args = [str(p) for p in images] + ["--model", str(run_dir), "-q"]
    assert main(["count", *args, "--out", str(serial)]) == 0
    assert main(["count", *args, "--out", str(spread), "--dask-workers", "2",
                 "--chunk-size", "2"]) == 0
    assert spread.read_bytes() == serial.read_bytes()
    rows = _csv(serial)
    assert [r["file"] for r in rows] == [str(p) for p in images]
    assert [r["error"] != "" for r in rows] == [False, True, False, False, True, False, False]
    assert {r["model_sha256"] for r in rows} == {model_sha256(run_dir)}
    assert all(r["version"].startswith(counting.VERSION) for r in rows)


def test_serial_rows_do_not_depend_on_overlapping_the_stages(run_dir, images):
    counter = counting.build_counter(CountSpec(run_dir=str(run_dir)))
    overlapped = list(counting.count_rows(counter, images, overlap=True))
    in_turn = list(counting.count_rows(counter, images, overlap=False))
    assert overlapped == in_turn


def test_a_chunk_whose_model_cannot_load_is_rows_not_a_hole(tmp_path, images):
    spec = CountSpec(run_dir=str(tmp_path / "gone"), onnx=str(tmp_path / "gone.onnx"))
    rows = count_chunk(spec, [str(p) for p in images[:3]])
    assert [r["file"] for r in rows] == [str(p) for p in images[:3]]
    assert all("could not load the model" in r["error"] and r["count"] == "" for r in rows)


def test_check_counts_objects_near_the_threshold_and_of_odd_size():
    labels = np.zeros((60, 60), np.int32)
    labels[2:12, 2:12] = 1       # 100 px, typical size, mean 0.55: near t = 0.5 (logit 0.2)
    labels[20:30, 20:30] = 2     # 100 px, mean 0.99: sure (logit 4.6 against 0)
    labels[40:42, 40:42] = 3     # 4 px: 25 times smaller than typical, and p = 0.99
    prob = np.select([labels == 1, labels > 1], [0.55, 0.99], 0.0)
    assert check_objects(labels, prob, threshold=0.5, typical_area=100.0) == \
        "1 near the threshold; 1 of odd size"
    # Without a heatmap (automatic counting) only size can be odd.
    assert check_objects(labels, None, threshold=None, typical_area=100.0) == "1 of odd size"
    assert check_objects(np.zeros((5, 5), int), None, threshold=None, typical_area=9.0) == ""


def test_count_imports_no_tensorflow_when_onnx_serves(run_dir, images, tmp_path):
    code = ("import sys; from core.cli import main; "
            f"status = main(['count', {str(images[0])!r}, '--model', {str(run_dir)!r}, "
            f"'--out', {str(tmp_path / 'c.csv')!r}, '-q']); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'tensorflow', 'keras', 'jax', 'torch'}); print(status, heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "0 []"
