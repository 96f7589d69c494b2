"""What one GPU host does under Keras's JAX backend: training step time and inference speed.

Run through ``bench/gpu_check.sh`` (it sets ``KERAS_BACKEND=jax`` and installs carried wheels).
Prints one JSON line:

- ``train_step_s``: median seconds per training step (batch 8, 512x512 crops, base 16), after
  one step that compiles; the model is built and compiled as ``training.fit`` does, so on a GPU
  the policy is mixed_float16 (``training.fit.use_accelerator``);
- ``images_per_s``: inference on 1200x1600 images in ``float32`` and ``mixed_bfloat16``;
- ``onnx_max_diff``: the network written by ``core.exchange.save_onnx`` (what ``save_run`` does
  on this host) against the JAX model on one batch.

``--tiny`` shrinks everything (base 2, 64 px crops, batch 2, 64x96 images, 2 training steps) so
``make test`` runs it on the CPU. Inference uses the trained weights, or ``--weights``; its
float32 prediction of the images (``--x``, else random) goes to ``--out``/pred_fp32.npy, which
the test compares with TensorFlow's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = dict(base=16, crop=512, batch=8, steps=6, shape=(1200, 1600), images=4, repeat=5)
TINY = dict(base=2, crop=64, batch=2, steps=2, shape=(64, 96), images=2, repeat=1)


def _train_step_s(size: dict) -> tuple[float, float, object]:
    """Median step time after the compiling step, the last loss, and the trained model."""
    import keras

    from core.model import build_cresunet, weighted_bce
    from core.synthetic import make_dataset
    from training.config import TrainConfig
    from training.data import CropBatches, Sample, prepare
    from training.fit import use_accelerator

    use_accelerator()  # mixed_float16 on a GPU, as training does
    shape = (max(size["crop"] * 2, 96), max(size["crop"] * 2, 128))
    samples = [Sample(f"s{i}", rgb, labels)
               for i, (rgb, labels) in enumerate(make_dataset(3, 0, shape=shape))]
    cfg = TrainConfig(base_filters=size["base"], crop_size=size["crop"],
                      batch_size=size["batch"], epochs=1, loader_workers=0)
    batches = CropBatches(prepare(samples, cfg), cfg, augment=True)
    keras.utils.set_random_seed(0)
    model = build_cresunet(size["base"])
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=weighted_bce,
                  jit_compile=True)
    times, loss = [], float("nan")
    for step in range(size["steps"]):
        x, y = batches[step % len(batches)]
        start = time.perf_counter()
        loss = float(np.asarray(model.train_on_batch(x, y)))
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), loss, model


def _images_per_s(weights: Path, policy: str, size: dict, x: np.ndarray):
    """Images per second of a fresh model under ``policy`` with ``weights``; the model and its
    prediction of ``x``."""
    import keras

    from core.model import build_cresunet

    keras.mixed_precision.set_global_policy(policy)
    model = build_cresunet(size["base"])
    model.load_weights(weights)
    pred = np.asarray(model.predict_on_batch(x))  # compiles
    start = time.perf_counter()
    for _ in range(size["repeat"]):
        np.asarray(model.predict_on_batch(x))
    return size["repeat"] * len(x) / (time.perf_counter() - start), model, pred


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized check for the tests")
    parser.add_argument("--weights", type=Path, help="weights to predict --x with (float32)")
    parser.add_argument("--x", type=Path, help="float32 (batch, y, x, 3) input in [0, 1]")
    parser.add_argument("--out", type=Path, default=Path("bench/out/gpu_check"))
    args = parser.parse_args(argv)
    import jax
    import keras

    from core.exchange import save_onnx
    from core.predict import OnnxNetwork

    size = TINY if args.tiny else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    step_s, loss, trained = _train_step_s(size)
    weights = args.out / "trained.weights.h5"
    trained.save_weights(weights)
    x = (np.load(args.x) if args.x else
         np.random.default_rng(0).random((size["images"], *size["shape"], 3), np.float32))
    weights = args.weights or weights
    speed = {}
    speed["mixed_bfloat16"], _, _ = _images_per_s(weights, "mixed_bfloat16", size, x)
    speed["float32"], model, pred = _images_per_s(weights, "float32", size, x)
    np.save(args.out / "pred_fp32.npy", pred)
    onnx_pred = OnnxNetwork(save_onnx(model, args.out / "model.onnx")).predict_on_batch(x)
    print(json.dumps({"backend": keras.backend.backend(),
                      "devices": [str(d) for d in jax.devices()],
                      "train_step_s": step_s, "train_loss": loss, "batch": size["batch"],
                      "crop": size["crop"], "base_filters": size["base"],
                      "image_shape": list(x.shape[1:3]),
                      "images_per_s": speed,
                      "onnx_max_diff": float(np.abs(onnx_pred - pred).max())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
