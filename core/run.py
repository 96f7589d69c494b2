"""A run directory: a trained model and everything needed to count with it (docs/ARCHITECTURE.md).

::

    model.keras        inference copy (no optimizer state), loaded with compile=False
    model.onnx         the same network for ONNX Runtime (core.exchange; counting, export)
    config.json        training config; "postprocess" holds the PostprocessParams
    thresholds.json    {"best": ..., "knee": ..., "chosen": ...}; counting uses "chosen".
                       Runs since issue 9 add "chosen_on" (validation | train+validation),
                       "min_cells", "images" and "curves"; older ones may hold one "curve"
    metrics.json       test scores
    manifest.json      the (image, mask version) pairs for train, validation and test
    history.csv        per-epoch losses and learning rate (optional)
    checkpoint/        resumable training state, owned by training; never written here

Like StarDist's model folder, a model *is* its directory: ``load_run(path)`` gives the network,
the post-processing params and the tuned threshold in one frozen record, so ``core`` can count
with a run without importing ``training``.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.io import default_file_mode

__all__ = ["Run", "Scoring", "save_run", "load_run", "model_sha256", "MODEL_FILE", "JSON_FILES",
           "HISTORY_FILE", "MATCH_METHOD"]

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
JSON_FILES = ("config.json", "thresholds.json", "metrics.json", "manifest.json")
THRESHOLD_KEYS = ("best", "knee", "chosen")
#: The images a threshold may have been chosen on (``thresholds.json["chosen_on"]``).
CHOSEN_ON = ("validation", "train+validation")
#: How a run's objects are matched to the truth unless its config says otherwise (docs/METHOD.md 7).
MATCH_METHOD = "hungarian"


@dataclass(frozen=True)
class Scoring:
    """How a run turns a heatmap into counted objects and matches them to the truth.

    This is the one scoring path: evaluation, threshold tuning, ``core count``, the Predictions
    recount, the dashboard's curves, adjudication crops, model pre-labelling and exports all call
    it, so they agree image by image. Heatmaps are thresholded on their uint8 levels
    (:func:`core.postprocess.foreground`), whether they come fresh from the network or from
    storage, and objects match within one cell diameter (``postprocess.cell_diameter``).

    Attributes
    ----------
    postprocess : core.postprocess.PostprocessParams
        The chain from a thresholded heatmap to labels; its ``cell_diameter`` is also the match
        distance. Its ``threshold`` field is not used: ``threshold`` below is.
    threshold : float
        The run's chosen threshold (``thresholds.json["chosen"]``).
    match_method : str
        ``hungarian`` (default), ``greedy`` or ``iou`` (:func:`core.metrics.match_objects`).

    Examples
    --------
    >>> from core.postprocess import PostprocessParams
    >>> rule = Scoring(PostprocessParams.paper(cell_diameter=20), threshold=0.5)
    >>> heat = np.zeros((40, 40), np.float32); heat[5:20, 5:20] = 0.8
    >>> labels = rule.labels(heat)
    >>> int(labels.max()), rule.match(labels, labels).f1, rule.match_distance
    (1, 1.0, 20.0)
    """

    postprocess: Any
    threshold: float
    match_method: str = MATCH_METHOD

    def __post_init__(self):
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"a run's threshold lies in [0, 1], got {self.threshold!r}")

    @property
    def match_distance(self) -> float:
        """Centroids at most this far apart (px) may pair: one expected cell diameter."""
        return float(self.postprocess.cell_diameter)

    def with_threshold(self, threshold: float) -> "Scoring":
        """The same rule at another threshold (the Predictions slider, a kept threshold)."""
        return dataclasses.replace(self, threshold=float(threshold))

    def labels(self, heatmap, threshold: float | None = None) -> np.ndarray:
        """The counted objects of a heatmap (float in [0, 1] or stored uint8), int32 labels."""
        from core.postprocess import heatmap_to_labels

        t = self.threshold if threshold is None else float(threshold)
        return heatmap_to_labels(heatmap, self.postprocess, threshold=t)

    def match(self, true_labels, labels):
        """Match predicted ``labels`` to ``true_labels`` (a mask or label image)."""
        from core.metrics import match_objects

        return match_objects(true_labels, labels, max_distance=self.match_distance,
                             method=self.match_method)

    def curve(self, heatmaps, true_labels, thresholds=None, *, progress=None):
        """F1, precision and recall against the threshold (:func:`core.metrics.threshold_curve`)."""
        from core.metrics import threshold_curve

        return threshold_curve(heatmaps, true_labels, self.postprocess, thresholds,
                               max_distance=self.match_distance, method=self.match_method,
                               progress=progress)


@dataclass(frozen=True)
class Run:
    """One loaded run directory.

    Attributes
    ----------
    path : Path
        Absolute path of the run directory.
    name : str
        The directory's name (shown as ``model:<name>`` in count exports).
    model : keras.Model or None
        The inference model, uncompiled; None when loaded with ``with_model=False``.
    config : dict
        ``config.json``: training config, including ``base_filters`` and ``postprocess``.
    postprocess : core.postprocess.PostprocessParams
        Built from ``config["postprocess"]``.
    thresholds : dict
        ``thresholds.json``: ``best``, ``knee`` and ``chosen``.
    threshold : float
        ``thresholds["chosen"]``, the one counting uses.
    metrics : dict
        ``metrics.json``: test scores.
    manifest : dict
        ``manifest.json``: which (image, mask version) pairs trained, validated and scored it.
    """

    path: Path
    name: str
    model: Any = field(repr=False)
    config: dict
    postprocess: Any
    thresholds: dict
    threshold: float
    metrics: dict
    manifest: dict = field(repr=False)

    @property
    def scoring(self) -> Scoring:
        """The run's scoring rule at its chosen threshold."""
        return Scoring(self.postprocess, self.threshold,
                       str(self.config.get("match_method") or MATCH_METHOD))

    def with_threshold(self, threshold: float) -> "Run":
        """The same run counting at another threshold (what an admin kept, say)."""
        t = float(threshold)
        return dataclasses.replace(self, threshold=t, thresholds={**self.thresholds, "chosen": t},
                                   postprocess=dataclasses.replace(self.postprocess, threshold=t))

    def labels(self, heatmap, threshold: float | None = None) -> np.ndarray:
        """The run's counted objects of a heatmap (see :class:`Scoring`)."""
        return self.scoring.labels(heatmap, threshold)

    def match(self, true_labels, labels):
        """Match objects as the run scores them (see :class:`Scoring`)."""
        return self.scoring.match(true_labels, labels)


def _json_default(obj):
    """Make NumPy scalars/arrays and paths JSON-serialisable (configs often carry them)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a run's JSON files")


def _check_thresholds(thresholds) -> dict:
    """Validate ``{"best", "knee", "chosen"}``: chosen in [0, 1]; best and knee in [0, 1] or None.

    Other keys (the curves, ``images``, ``min_cells``) are kept as they are; ``chosen_on``, when
    present, must be one of :data:`CHOSEN_ON`.
    """
    if not isinstance(thresholds, dict) or set(THRESHOLD_KEYS) - set(thresholds):
        raise ValueError(f"thresholds must be a dict with keys {list(THRESHOLD_KEYS)}, "
                         f"got {thresholds!r}")
    if thresholds.get("chosen_on", CHOSEN_ON[0]) not in CHOSEN_ON:
        raise ValueError(f"threshold 'chosen_on' must be one of {list(CHOSEN_ON)}, got "
                         f"{thresholds['chosen_on']!r}")
    out = dict(thresholds)
    for key in THRESHOLD_KEYS:
        value = out[key]
        if value is None and key != "chosen":
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold {key!r} must be a number in [0, 1], got {out[key]!r}")
        out[key] = value
    return out


def _history_rows(history) -> tuple[list[str], list[list]]:
    """Columns and rows of a history given as a dict of lists (Keras ``History.history``),
    a list of per-epoch dicts, or a pandas DataFrame."""
    if hasattr(history, "to_dict") and not isinstance(history, dict):
        history = history.to_dict(orient="list")
    if isinstance(history, dict):
        columns = list(history)
        n = max((len(v) for v in history.values()), default=0)
        rows = [[history[c][i] if i < len(history[c]) else "" for c in columns] for i in range(n)]
    else:
        history = list(history)
        columns = list(dict.fromkeys(k for row in history for k in row))
        rows = [[row.get(c, "") for c in columns] for row in history]
    if "epoch" not in columns:
        columns = ["epoch", *columns]
        rows = [[i + 1, *row] for i, row in enumerate(rows)]
    return columns, [[_json_default(v) if isinstance(v, np.generic) else v for v in r] for r in rows]


def _temp_path(directory: Path, final_name: str) -> Path:
    """A fresh temp file next to ``final_name`` (same filesystem, so the rename is atomic)."""
    suffix = Path(final_name).suffix  # keras insists on the .keras extension
    fd, name = tempfile.mkstemp(prefix=f".{final_name}.", suffix=f".tmp{suffix}", dir=directory)
    os.close(fd)
    return Path(name)


def _write_inference_model(model, target: Path) -> None:
    """Save a weight-identical, uncompiled clone: no optimizer state, no compile config."""
    import keras

    # Rebuilt from the layer config rather than clone_model, which carries the compile settings
    # (and so needs the loss function importable) along with it.
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    clone.save(target, overwrite=True)


def _write_onnx(model, temps: dict, run_dir: Path) -> None:
    """Add model.onnx (core.exchange) to the files being written, stamped with the Keras hash."""
    from core.exchange import ONNX_FILE, save_onnx

    temps[ONNX_FILE] = _temp_path(run_dir, ONNX_FILE)
    with temps[MODEL_FILE].open("rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    try:
        save_onnx(model, temps[ONNX_FILE], keras_sha256=sha)
    except ValueError as exc:  # a network the converter does not know still saves, for Keras
        log.warning("%s: no model.onnx (%s); the run predicts with Keras", run_dir, exc)
        temps.pop(ONNX_FILE).unlink(missing_ok=True)


def save_run(path, *, model, config: dict, postprocess, thresholds: dict, metrics: dict,
             manifest: dict, history=None) -> Path:
    """Write a run directory (creating it if needed) and return its absolute path.

    Every file is written to a temp file in the directory first and renamed into place only once
    all of them were written, so a failure (full disk, unserialisable config) leaves an earlier
    run's files intact and a reader never sees half a JSON file. ``checkpoint/`` and any other
    entry are left alone.

    Parameters
    ----------
    path : str or Path
        The run directory.
    model : keras.Model
        The trained model; an uncompiled copy is saved as ``model.keras``, and the same network
        as ``model.onnx`` (:mod:`core.exchange`) for ONNX Runtime and other tools.
    config : dict
        Training config (JSON-serialisable). ``config["postprocess"]`` is set from ``postprocess``.
    postprocess : core.postprocess.PostprocessParams
        Post-processing params; stored with ``to_dict()``.
    thresholds : dict
        ``{"best": ..., "knee": ..., "chosen": ...}``; chosen must be in [0, 1], best and knee
        may be None (no knee found). Other keys are stored as given (``chosen_on``, when
        given, is one of :data:`CHOSEN_ON`).
    metrics, manifest : dict
        Test scores and the (image, mask version) pairs; stored as given.
    history : dict of lists, list of dicts or DataFrame, optional
        Per-epoch values; written to ``history.csv`` when given.

    Returns
    -------
    Path
    """
    run_dir = Path(path).resolve()
    thresholds = _check_thresholds(thresholds)
    config = {**config, "postprocess": postprocess.to_dict()}
    run_dir.mkdir(parents=True, exist_ok=True)
    payloads = {"config.json": config, "thresholds.json": thresholds,
                "metrics.json": metrics, "manifest.json": manifest}
    temps: dict[str, Path] = {}
    try:
        for fname, payload in payloads.items():
            temps[fname] = _temp_path(run_dir, fname)
            text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default)
            temps[fname].write_text(text + "\n", encoding="utf-8")
        if history is not None:
            temps[HISTORY_FILE] = _temp_path(run_dir, HISTORY_FILE)
            columns, rows = _history_rows(history)
            with temps[HISTORY_FILE].open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([columns, *rows])
        temps[MODEL_FILE] = _temp_path(run_dir, MODEL_FILE)
        _write_inference_model(model, temps[MODEL_FILE])
        _write_onnx(model, temps, run_dir)
    except BaseException:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    # The model first and config last: a reader racing this sees the new config only with the new model.
    mode = default_file_mode()  # mkstemp's 0o600 would hide the run from other users
    for fname in [MODEL_FILE, *(f for f in temps if f not in (MODEL_FILE, "config.json")), "config.json"]:
        os.chmod(temps[fname], mode)
        os.replace(temps[fname], run_dir / fname)
    log.info("saved run %s", run_dir)
    return run_dir


def _read_json(run_dir: Path, fname: str) -> dict:
    """Read one JSON object of a run, or raise a ValueError naming the directory and file."""
    target = run_dir / fname
    if not target.is_file():
        raise ValueError(f"run directory {run_dir} has no {fname}; the run is incomplete: "
                         "train it again or copy the whole directory")
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"run directory {run_dir}: {fname} is unreadable ({exc}); "
                         "restore it from a copy or train the run again") from exc
    if not isinstance(data, dict):
        raise ValueError(f"run directory {run_dir}: {fname} must hold a JSON object, "
                         f"found {type(data).__name__}; restore it from a copy")
    return data


def _load_postprocess(run_dir: Path, config: dict):
    """Build PostprocessParams from config.json, naming the file when it does not fit."""
    from core.postprocess import PostprocessParams

    if not isinstance(config.get("postprocess"), dict):
        raise ValueError(f"run directory {run_dir}: config.json has no \"postprocess\" object; "
                         "the run was not written by save_run: train it again")
    try:
        return PostprocessParams.from_dict(config["postprocess"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"run directory {run_dir}: config.json has invalid post-processing "
                         f"params ({exc}); fix \"postprocess\" or train the run again") from exc


def _load_model(run_dir: Path):
    """Load model.keras uncompiled, or raise a ValueError naming it."""
    import keras

    target = run_dir / MODEL_FILE
    if not target.is_file():
        raise ValueError(f"run directory {run_dir} has no {MODEL_FILE}; the run is incomplete: "
                         "train it again or copy the whole directory")
    try:
        return keras.saving.load_model(target, compile=False)
    except Exception as exc:  # keras raises many types for a damaged zip or config
        raise ValueError(f"run directory {run_dir}: {MODEL_FILE} cannot be loaded ({exc}); "
                         "restore it from a copy or train the run again") from exc


def load_run(path, *, with_model: bool = True) -> Run:
    """Load a run directory written by ``save_run``.

    Parameters
    ----------
    path : str or Path
        The run directory, e.g. ``models/demo``.
    with_model : bool
        Load ``model.keras`` too (seconds); False reads only the small JSON files, e.g. to list runs.

    Returns
    -------
    Run

    Raises
    ------
    ValueError
        When the directory or one of its files is missing or damaged; the message names both.
    """
    run_dir = Path(path).resolve()
    if not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} does not exist; give the folder that holds "
                         f"{MODEL_FILE} and config.json (e.g. models/demo)")
    config, thresholds, metrics, manifest = (_read_json(run_dir, f) for f in JSON_FILES)
    try:
        thresholds = _check_thresholds(thresholds)
    except ValueError as exc:
        raise ValueError(f"run directory {run_dir}: thresholds.json is invalid ({exc}); "
                         "tune the threshold again or fix the file") from exc
    # The chosen threshold is the one home of the run's threshold; the copy in the
    # post-processing params follows it, so nothing can read a stale one there.
    postprocess = dataclasses.replace(_load_postprocess(run_dir, config),
                                      threshold=thresholds["chosen"])
    model = _load_model(run_dir) if with_model else None
    return Run(path=run_dir, name=run_dir.name, model=model, config=config,
               postprocess=postprocess, thresholds=thresholds, threshold=thresholds["chosen"],
               metrics=metrics, manifest=manifest)


def model_sha256(path) -> str | None:
    """SHA-256 of a run directory's model file (what predicted a count); None when it is missing.

    Examples
    --------
    >>> model_sha256("/nonexistent") is None
    True
    """
    target = Path(path) / MODEL_FILE
    try:
        with target.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
