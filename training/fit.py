"""Train c-ResUnet with Keras ``fit``, resumably, then tune the threshold and score.

See docs/METHOD.md sections 5-7.

Only ``keras`` is imported, always inside functions, never TensorFlow: the same code trains under
``KERAS_BACKEND=jax`` or ``torch``. When Keras sees a GPU the global policy becomes
``mixed_float16`` (the model's output layer stays float32); on CPUs nothing changes.

Checkpoints live in ``<run_dir>/checkpoint/``::

    last-<epoch>.keras   full model with optimizer state after the latest finished epoch
    best.weights.h5      weights of the epoch with the lowest monitored loss
    state.json           epoch, learning rate, plateau and early-stopping counters, best value,
                         history and the seed; written last and atomically, so it is the commit point

A run resumed from ``state.json`` continues at the next epoch with the same weights, optimizer
moments, learning rate and counters, and (because batch ``i`` of epoch ``e`` depends only on
``(seed, e, i)``) sees the same crops as an uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.config import TrainConfig
from training.data import CropBatches, keras_dataset
from training.scoring import (Cancelled, check_cancel, predict_samples, score_samples,
                              scoring_for, tune_threshold)

__all__ = ["Cancelled", "FitResult", "fit", "use_accelerator", "load_state", "RunOutcome",
           "train_run"]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
BEST_FILE = "best.weights.h5"
_CANCEL_POLL_S = 1.0
_PROGRESS_EVERY_S = 2.0

Progress = Callable[[dict], None]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` hands back.

    Attributes
    ----------
    model : keras.Model
        The model with the best epoch's weights.
    history : list of dict
        One row per finished epoch (``epoch`` 1-based, ``loss``, ``val_loss``, ``learning_rate``,
        ``seconds``), including epochs run before a resume.
    best_epoch : int
        1-based epoch whose weights the model holds.
    resumed_from : int
        Epochs already finished when this call started (0 for a fresh run).
    stopped_early : bool
        Early stopping ended training before ``config.epochs``.
    """

    model: Any = field(repr=False)
    history: list
    best_epoch: int
    resumed_from: int
    stopped_early: bool


def use_accelerator() -> bool:
    """True when Keras sees a GPU; then switch the global policy to ``mixed_float16``.

    Call it before building a model. Works for the TensorFlow, JAX and PyTorch backends.
    """
    import keras

    try:
        gpus = keras.distribution.list_devices("gpu")
    except Exception:  # a backend without distribution support: ask it directly
        gpus = _backend_gpus(keras.backend.backend())
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        log.info("training on %s with mixed precision", ", ".join(map(str, gpus)))
        return True
    log.info("no GPU visible to keras (%s backend): training on CPU", keras.backend.backend())
    return False


def _backend_gpus(backend: str) -> list:
    """GPU list for backends whose ``keras.distribution`` lacks ``list_devices``."""
    try:
        if backend == "torch":
            import torch
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if backend == "jax":
            import jax
            return [d for d in jax.devices() if d.platform == "gpu"]
    except Exception:
        pass
    return []


def load_state(checkpoint_dir) -> dict | None:
    """The saved ``state.json`` of a checkpoint directory, or None when there is none."""
    target = Path(checkpoint_dir) / STATE_FILE
    if not target.is_file():
        return None
    state = json.loads(target.read_text(encoding="utf-8"))
    if not (Path(checkpoint_dir) / state["last"]).is_file():
        log.warning("checkpoint %s names a missing %s; starting over", target, state["last"])
        return None
    return state


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same directory and rename into place."""
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _build_or_resume(config: TrainConfig, checkpoint_dir: Path, state: dict | None):
    """A compiled model: fresh and seeded, or the last checkpoint with its optimizer state."""
    import keras

    from core.model import build_cresunet, weighted_bce

    if state is not None:
        model = keras.saving.load_model(checkpoint_dir / state["last"],
                                        custom_objects={"weighted_bce": weighted_bce})
        # The saved compile config does not keep how steps run; apply this config's choice.
        if config.execution == "eager":
            model.run_eagerly = True
        else:
            model.jit_compile = config.execution == "xla"
        model.optimizer.learning_rate = state["learning_rate"]
        log.info("resuming after epoch %d at learning rate %.3g", state["epoch"],
                 state["learning_rate"])
        return model
    keras.utils.set_random_seed(config.seed)
    model = build_cresunet(config.base_filters)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss=weighted_bce, **_execution(config))
    return model


def _execution(config: TrainConfig) -> dict:
    """``compile`` arguments for ``config.execution``."""
    return {"graph": {"jit_compile": False}, "xla": {"jit_compile": True},
            "eager": {"run_eagerly": True}}[config.execution]


def _restorable(base, saved: dict | None, names: tuple[str, ...]):
    """Instance of a subclass of Keras callback ``base`` whose counters survive a restart."""

    class Restorable(base):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            for name in names:
                if saved and name in saved:
                    setattr(self, name, saved[name])

        def counters(self) -> dict:
            return {name: _plain(getattr(self, name, None)) for name in names}

    return Restorable


def _plain(value):
    """JSON-safe scalar (Keras keeps some counters as NumPy numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _callbacks(config: TrainConfig, state: dict | None, monitor: str):
    """ReduceLROnPlateau and EarlyStopping, restored from ``state`` when resuming."""
    import keras

    saved = state or {}
    plateau = _restorable(keras.callbacks.ReduceLROnPlateau, saved.get("plateau"),
                          ("wait", "best", "cooldown_counter"))(
        monitor=monitor, factor=config.plateau_factor, patience=config.plateau_patience,
        min_lr=1e-7)
    stopper = _restorable(keras.callbacks.EarlyStopping, saved.get("early_stopping"),
                          ("wait", "best", "best_epoch"))(
        monitor=monitor, patience=config.early_stopping_patience)
    return plateau, stopper


def _callback_classes():
    """The project's Keras callbacks, defined on first use so that importing stays Keras-free."""
    import keras

    class EpochSetter(keras.callbacks.Callback):
        """Tell the loader which epoch starts, before its worker threads fetch a batch."""

        def __init__(self, batches: CropBatches):
            super().__init__()
            self.batches = batches

        def on_epoch_begin(self, epoch, logs=None):
            self.batches.set_epoch(epoch)

    return EpochSetter, _checkpointer_class(keras), _reporter_class(keras)


def _checkpointer_class(keras):
    """Callback saving last (full), best (weights) and ``state.json`` after every epoch."""

    class Checkpointer(keras.callbacks.Callback):
        def __init__(self, directory: Path, config: TrainConfig, state: dict | None,
                     monitor: str, plateau, stopper):
            super().__init__()
            self.directory, self.config, self.monitor = directory, config, monitor
            self.plateau, self.stopper = plateau, stopper
            self.history = list((state or {}).get("history", []))
            self.best = (state or {}).get("best", {"value": None, "epoch": 0})
            self.started = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, "loss": _plain(logs.get("loss")),
                   "val_loss": _plain(logs.get("val_loss")), "learning_rate": lr,
                   "seconds": round(time.monotonic() - self.started, 2)}
            self.history.append(row)
            value = logs.get(self.monitor)
            if value is not None and (self.best["value"] is None or value < self.best["value"]):
                self.best = {"value": float(value), "epoch": epoch + 1}
                _write_atomic(self.directory / BEST_FILE, self.model.save_weights)
            self._save_last(epoch + 1, lr)

        def _save_last(self, epochs_done: int, lr: float):
            name = f"last-{epochs_done}.keras"
            _write_atomic(self.directory / name, self.model.save)
            state = {"epoch": epochs_done, "last": name, "learning_rate": lr,
                     "plateau": self.plateau.counters(), "early_stopping": self.stopper.counters(),
                     "best": self.best, "history": self.history,
                     "random": {"seed": self.config.seed, "next_epoch": epochs_done},
                     # EarlyStopping ran before this callback: a resume must not train on.
                     "stopped_early": bool(self.model.stop_training),
                     "config": self.config.to_dict()}
            text = json.dumps(state, indent=1)
            _write_atomic(self.directory / STATE_FILE, lambda p: p.write_text(text))
            for old in self.directory.glob("last-*.keras"):
                if old.name != name:
                    old.unlink(missing_ok=True)

    return Checkpointer


def _reporter_class(keras):
    """Callback reporting progress and polling the cancel flag."""

    class Reporter(keras.callbacks.Callback):
        def __init__(self, epochs: int, steps: int, progress, should_cancel):
            super().__init__()
            self.epochs, self.steps = epochs, steps
            self.progress, self.should_cancel = progress, should_cancel
            self.begin = time.monotonic()
            self.steps_done = 0
            self.last_report = self.last_poll = 0.0
            self.val_loss = None
            self.epoch = 0

        def on_train_begin(self, logs=None):
            # A job cancelled while queued or while the data was prepared stops before step 1.
            if self.should_cancel and self.should_cancel():
                raise Cancelled("cancelled before the first step")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.steps_done += 1
            now = time.monotonic()
            if self.should_cancel and now - self.last_poll >= _CANCEL_POLL_S:
                self.last_poll = now
                if self.should_cancel():
                    raise Cancelled(f"cancelled in epoch {self.epoch + 1}, step {batch + 1}")
            if self.progress and (now - self.last_report >= _PROGRESS_EVERY_S
                                  or batch + 1 == self.steps):
                self.last_report = now
                self.progress(self._payload(batch, logs or {}))

        def on_epoch_end(self, epoch, logs=None):
            self.val_loss = _plain((logs or {}).get("val_loss"))
            if self.should_cancel and self.should_cancel():
                raise Cancelled(f"cancelled after epoch {epoch + 1}")

        def _payload(self, batch: int, logs: dict) -> dict:
            per_step = (time.monotonic() - self.begin) / max(self.steps_done, 1)
            left = (self.steps - batch - 1) + self.steps * (self.epochs - self.epoch - 1)
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            return {"stage": "train", "epoch": self.epoch + 1, "epochs": self.epochs,
                    "step": batch + 1, "steps": self.steps, "loss": _plain(logs.get("loss")),
                    "val_loss": self.val_loss, "learning_rate": lr,
                    "seconds_left": round(per_step * left, 1)}

    return Reporter


def fit(train: CropBatches, validation: CropBatches | None, config: TrainConfig, checkpoint_dir,
        *, progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
        resume: bool = True) -> FitResult:
    """Train (or resume training) and return the model with the best epoch's weights.

    Parameters
    ----------
    train, validation : CropBatches
        Augmented training batches and fixed validation batches (None or empty: monitor the
        training loss instead).
    config : TrainConfig
    checkpoint_dir : path
        Where ``state.json`` and the checkpoints live; an existing state is resumed.
    progress : callable, optional
        Called with a dict (stage, epoch, epochs, step, steps, loss, val_loss, learning_rate,
        seconds_left) at most every 2 s and at the end of every epoch.
    should_cancel : callable, optional
        Polled about once a second; returning True raises :class:`Cancelled` (the last finished
        epoch's checkpoint stays, so the job could be resumed).
    resume : bool
        Ignore an existing checkpoint when False.

    Returns
    -------
    FitResult
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    use_accelerator()
    state = load_state(checkpoint_dir) if resume else None
    done = state["epoch"] if state else 0
    model = _build_or_resume(config, checkpoint_dir, state)
    monitor = "val_loss" if validation is not None and len(validation.entries) else "loss"
    plateau, stopper = _callbacks(config, state, monitor)
    EpochSetter, Checkpointer, Reporter = _callback_classes()
    saver = Checkpointer(checkpoint_dir, config, state, monitor, plateau, stopper)
    callbacks = [EpochSetter(train), plateau, stopper, saver,
                 Reporter(config.epochs, len(train), progress, should_cancel)]
    workers = config.loader_workers
    val_data = keras_dataset(validation, workers=workers) if monitor == "val_loss" else None
    if done < config.epochs and not (state or {}).get("stopped_early"):
        model.fit(keras_dataset(train, workers=workers), validation_data=val_data,
                  epochs=config.epochs, initial_epoch=done, shuffle=False, verbose=0,
                  callbacks=callbacks)
    best_epoch = saver.best["epoch"]
    if (checkpoint_dir / BEST_FILE).is_file():
        model.load_weights(checkpoint_dir / BEST_FILE)
    last = saver.history[-1]["epoch"] if saver.history else done
    return FitResult(model=model, history=saver.history, best_epoch=best_epoch,
                     resumed_from=done, stopped_early=last < config.epochs)


# ---------------------------------------------------------------- after training


def _tune(model, validation, train, rule, *, progress, should_cancel) -> dict:
    """Predict the validation and train images once and choose the threshold on them."""
    heats = predict_samples(model, validation + train, stage="threshold", progress=progress,
                            should_cancel=should_cancel)
    return tune_threshold((heats[:len(validation)], validation),
                          (heats[len(validation):], train), rule, progress=progress,
                          should_cancel=should_cancel)


@dataclass(frozen=True)
class RunOutcome:
    """A finished training run: its directory, thresholds, test scores and per-image results."""

    path: Path
    thresholds: dict
    metrics: dict
    results: list = field(repr=False)
    history: list = field(repr=False)
    fit: FitResult = field(repr=False)


def _counting_network(model, run_dir: Path):
    """Write ``model.onnx`` now and predict through it, as counting will (Keras without ORT)."""
    from core.exchange import ONNX_FILE, save_onnx
    from core.predict import OnnxNetwork

    path = save_onnx(model, run_dir / ONNX_FILE)  # save_run stamps it with model.keras's hash
    try:
        return OnnxNetwork(path)
    except ImportError:
        return model


def train_run(train, validation, test, config: TrainConfig, run_dir, *, manifest: dict,
              progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
              cache_dir=None) -> RunOutcome:
    """Train on ``train`` (validate on ``validation``), tune the threshold, score ``test``, save.

    Parameters
    ----------
    train, validation, test : sequences of training.data.Sample
        Whole source images; the caller made the per-image split.
    config : TrainConfig
    run_dir : path
        The run directory (docs/ARCHITECTURE.md), written by ``core.run.save_run``; the
        checkpoint goes in ``run_dir/checkpoint``, and an existing one is resumed.
    manifest : dict
        Which (image, mask version) pairs were used; stored as ``manifest.json``.
    progress, should_cancel : callables, optional
        See :func:`fit`; later stages report ``stage`` "threshold" and "test".
    cache_dir : path, optional
        Disk cache for weight maps (see ``training.data.prepare``).

    Returns
    -------
    RunOutcome

    Notes
    -----
    The threshold is chosen on the validation images when they hold enough cells
    (:func:`training.scoring.tune_threshold`); ``thresholds.json`` and ``metrics.json``
    (``threshold_chosen_on``) say which images it was chosen on.
    """
    from core.run import save_run
    from training.data import prepare

    config.validate()
    run_dir = Path(run_dir).resolve()
    batches = CropBatches(prepare(train, config, cache_dir=cache_dir), config, augment=True)
    val = (CropBatches(prepare(validation, config, cache_dir=cache_dir, oversample=False), config,
                       augment=False, shuffle=False) if validation else None)
    result = fit(batches, val, config, run_dir / "checkpoint", progress=progress,
                 should_cancel=should_cancel)
    del batches, val
    check_cancel(should_cancel, "after training")
    rule = scoring_for(config)
    network = _counting_network(result.model, run_dir)
    thresholds = _tune(network, list(validation), list(train), rule, progress=progress,
                       should_cancel=should_cancel)
    check_cancel(should_cancel, "after threshold tuning")
    rule = rule.with_threshold(thresholds["chosen"])
    metrics, results = score_samples(network, test, rule, progress=progress,
                                     should_cancel=should_cancel)
    metrics = {**metrics, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "threshold_chosen_on": thresholds["chosen_on"]}
    save_run(run_dir, model=result.model, config=config.to_dict(),
             postprocess=dataclasses.replace(rule.postprocess, threshold=rule.threshold),
             thresholds=thresholds, metrics=metrics, manifest=manifest, history=result.history)
    log.info("run %s: test F1 %s over %d images", run_dir, metrics.get("f1"), len(results))
    return RunOutcome(run_dir, thresholds, metrics, results, result.history, result)
