"""``bench/bench_accuracy.py --smoke``: the accuracy benchmark's whole path, on a tiny model.

It trains base 2 for three steps through the product's commands, scores HELDOUT images in
another project, counts them with ``python -m core count``, and prints the table. The figures
mean nothing at this size; the test checks the path and that the two counting routes agree.
"""
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import pytest

from bench import bench_accuracy
from core.synthetic import HELDOUT, config_hash, make_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_benchmark_runs_the_products_path(tmp_path):
    done = subprocess.run([sys.executable, "bench/bench_accuracy.py", "--smoke", "--workdir",
                           str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert f"HELDOUT sha256 {config_hash(HELDOUT)}" in out
    for step in ("-m db import", "-m db split", "-m training train", "-m training evaluate",
                 "--project heldout", "-m core count"):
        assert step in out, step
    assert "base 2, 1 epochs x 3 steps = 3 optimizer steps" in out
    # Both routes count with the run's threshold and post-processing: the same MAE.
    assert out.count("`core count` MAE equals the evaluation's") == 2
    assert "DIFFERS" not in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| figure | model |") and "baseline (threshold only)" in table[0]
    rows = {line.split("|")[1].strip(): line for line in table[1:]}
    assert set(rows) == {"f1", "precision", "recall", "mae", "medae", "bias"}
    # Every figure of the model's evaluation carries its interval: value [low, high].
    value = re.compile(r"(-?\d+\.\d{3}) \[(-?\d+\.\d{3}), (-?\d+\.\d{3})\]")
    for key, line in rows.items():
        got = value.search(line.split("|")[2])
        assert got, (key, line)
        low, point, high = float(got[2]), float(got[1]), float(got[3])
        assert low <= point <= high or key == "medae", (key, line)
    # The run and the data live in the work folder; the images were written as a lab's folder,
    # the masks as 16-bit label images holding exactly the generator's cells.
    masks = sorted((tmp_path / "work" / "incoming" / "heldout" / "masks").glob("*.png"))
    assert len(masks) == 3
    smoke = bench_accuracy.parse_args(["--smoke"])
    drawn = make_dataset(smoke.heldout_images, bench_accuracy.HELDOUT_SEED, tuple(smoke.shape),
                         config=HELDOUT)
    for path, (_, labels) in zip(masks, drawn):
        written = imageio.imread(path)
        assert written.dtype == np.uint16
        assert np.array_equal(written, labels)
