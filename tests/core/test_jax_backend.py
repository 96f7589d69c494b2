"""Keras under JAX on the CPU, through bench/gpu_check.sh --tiny: it trains two steps, predicts
as TensorFlow does from the same weights, and exports the ONNX graph counting uses.

JAX runs in a subprocess: this suite's process has TensorFlow as its Keras backend, and Keras
picks its backend once per process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.model import build_cresunet

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny_trains_predicts_like_tensorflow_and_exports(tmp_path):
    import keras

    keras.utils.set_random_seed(4)
    model = build_cresunet(2)
    model.save_weights(tmp_path / "w.weights.h5")
    x = np.random.default_rng(1).random((2, 64, 96, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--tiny", "--weights",
                           str(tmp_path / "w.weights.h5"), "--x", str(tmp_path / "x.npy"),
                           "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["devices"][0].lower().startswith("cpu")
    assert np.isfinite(report["train_loss"]) and report["train_step_s"] > 0
    assert set(report["images_per_s"]) == {"float32", "mixed_bfloat16"}
    assert all(v > 0 for v in report["images_per_s"].values())
    assert report["onnx_max_diff"] <= 1e-4
    jax_heat = np.load(tmp_path / "out" / "pred_fp32.npy")
    assert np.abs(jax_heat - np.asarray(model.predict_on_batch(x))).max() <= 1e-4
