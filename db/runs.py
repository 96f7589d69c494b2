"""Model runs, their manifests, per-image evaluation results and per-object outcomes.

A run directory (``core.run``) is the model; the database keeps what the pages query: the
config, chosen threshold, metrics, manifest pairs, and for every scored test image its TP/FP/FN
counts, IoU, heatmap path and each object's outcome. Scoring a run on a test image locks that
image's split.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.postprocess import PostprocessParams
from core.run import MATCH_METHOD, Scoring, load_run
from db import audit
from db.masks import ground_truth, latest_approvals
from db.models import (RUN_ITEM_ROLES, SPLITS, Image, ImageResult, MaskVersion, ModelRun,
                       ObjectOutcome, RunItem, User)
from db.projects import get_project, lock_splits
from db.storage import Storage
from db.users import require_role

__all__ = ["TrainingItem", "training_items", "training_data", "register_run", "run_path",
           "get_run", "find_run", "list_runs", "runs_overview", "promote_run", "promoted_run",
           "set_threshold", "run_threshold", "run_scoring", "save_image_result", "ScoredImage",
           "replace_image_results", "run_results", "result_for", "scored_image_ids",
           "stored_heatmap_results", "result_objects", "SCORE_KEYS", "RUN_FILES", "training_shapes"]

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "thresholds.json", "metrics.json", "manifest.json")


class TrainingItem(NamedTuple):
    """One image whose ground truth exists, as training and scoring need it."""

    image_id: int
    image_path: str
    mask_version_id: int
    mask_path: str
    hard: bool
    hand_segmented: bool


def training_items(session: Session, project_id: int, split: str) -> list[TrainingItem]:
    """The images of a split that have ground truth (their latest approved version).

    Archived images are left out. The order is by image id, so a seeded split of the list is
    reproducible.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    gt = latest_approvals()
    query = (select(Image.id, Image.path, MaskVersion.id, MaskVersion.path, Image.hard,
                    Image.hand_segmented)
             .join(gt, gt.c.image_id == Image.id)
             .join(MaskVersion, MaskVersion.id == gt.c.version_id)
             .where(Image.project_id == project_id, Image.split == split,
                    Image.archived.is_(False))
             .order_by(Image.id))
    return [TrainingItem(*row) for row in session.execute(query).all()]


def training_data(session: Session, project_id: int) -> dict[str, int]:
    """What a run queued now would learn from and be scored on.

    Returns
    -------
    dict
        ``train_images, test_images, unassigned_images`` (archived images left out) and
        ``train_approved, test_approved``: those with an approved mask, the only ones a run uses.
    """
    gt = latest_approvals()
    q = (select(Image.split, func.count(Image.id), func.count(gt.c.version_id))
         .outerjoin(gt, gt.c.image_id == Image.id)
         .where(Image.project_id == project_id, Image.archived.is_(False))
         .group_by(Image.split))
    out = {f"{s}_images": 0 for s in SPLITS}
    out.update(train_approved=0, test_approved=0)
    for split, n, approved in session.execute(q).all():
        out[f"{split}_images"] = int(n)
        if split in ("train", "test"):
            out[f"{split}_approved"] = int(approved)
    return out


def training_shapes(session: Session, project_id: int) -> list[tuple[int, int, bool, bool]]:
    """``(rows, cols, hard, hand_segmented)`` of the train images a run queued now would learn
    from (those with an approved mask, archived images left out), for estimating its length."""
    gt = latest_approvals()
    q = (select(Image.height, Image.width, Image.hard, Image.hand_segmented)
         .join(gt, gt.c.image_id == Image.id)
         .where(Image.project_id == project_id, Image.archived.is_(False),
                Image.split == "train").order_by(Image.id))
    return [(int(h), int(w), bool(hard), bool(hand)) for h, w, hard, hand in session.execute(q)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the run directory is damaged.") from None


def _manifest_pairs(manifest: Mapping[str, Any]) -> Iterable[tuple[str, int, int | None]]:
    """(role, image id, version id) from a manifest of pairs or of dicts."""
    for role in RUN_ITEM_ROLES:
        for entry in manifest.get(role, []) or []:
            if isinstance(entry, Mapping):
                yield role, int(entry["image_id"]), entry.get("mask_version_id", entry.get("version_id"))
            else:
                yield role, int(entry[0]), (int(entry[1]) if len(entry) > 1 and entry[1] is not None
                                            else None)


def register_run(session: Session, project_id: int, run_dir: str | Path, *,
                 job_id: int | None = None, name: str | None = None,
                 storage: Storage | None = None) -> ModelRun:
    """Record a finished run directory: its config, thresholds, metrics and manifest.

    The JSON files are read from ``run_dir`` (missing ones are empty); the manifest's
    (image, mask version) pairs also go into ``run_items``. A manifest is a dict with lists
    ``train``, ``validation`` and ``test`` of ``[image_id, mask_version_id]`` pairs or of
    dicts with those keys.

    With ``storage``, a run directory below the data dir is recorded as its key
    (``runs/<name>``), so the row stays right when the data dir is mounted elsewhere; one
    outside it (``models/demo``) is recorded absolute, as is every run without ``storage``.
    """
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a run directory.")
    get_project(session, project_id)
    thresholds = _read_json(run_dir / "thresholds.json")
    manifest = _read_json(run_dir / "manifest.json")
    recorded = storage.key(run_dir) if storage is not None else str(run_dir)
    run = ModelRun(project_id=project_id, job_id=job_id, name=name or run_dir.name,
                   run_dir=recorded, config=_read_json(run_dir / "config.json"),
                   threshold=thresholds.get("chosen"), metrics=_read_json(run_dir / "metrics.json"),
                   manifest=manifest, promoted=False)
    session.add(run)
    session.flush()
    session.add_all(RunItem(run_id=run.id, image_id=i, version_id=v, role=r)
                    for r, i, v in _manifest_pairs(manifest))
    session.flush()
    return run


def get_run(session: Session, run_id: int) -> ModelRun:
    """A run by id; ValueError when there is none."""
    run = session.get(ModelRun, run_id)
    if run is None:
        raise ValueError(f"There is no model run {run_id}.")
    return run


def find_run(session: Session, storage: Storage, run_dir: str | Path) -> ModelRun | None:
    """The row of a run directory, found by its key or by its absolute path (how older rows
    recorded it); None when it is not registered."""
    path = storage.resolve(run_dir)
    return session.scalars(select(ModelRun).where(ModelRun.run_dir.in_(
        {str(run_dir), storage.key(path), str(path)})).order_by(ModelRun.id)).first()


def list_runs(session: Session, project_id: int) -> list[ModelRun]:
    """A project's runs, newest first."""
    return list(session.scalars(select(ModelRun).where(ModelRun.project_id == project_id)
                                .order_by(ModelRun.created_at.desc(), ModelRun.id.desc())))


#: Score columns of :func:`runs_overview`, in display order.
SCORE_KEYS = ("f1", "precision", "recall", "mae", "medae", "bias", "mean_iou", "n_images")
# Other spellings a metrics.json may use for the same score.
_ALIASES = {"medae": ("median_ae", "median_abs_error"), "mae": ("mean_abs_error",),
            "mean_iou": ("iou", "miou"), "n_images": ("images", "n")}


def _metric(metrics: dict, key: str) -> float:
    """One score from a run's metrics, whatever spelling it was stored under; NaN when absent."""
    lower = {str(k).lower(): v for k, v in (metrics or {}).items()}
    for name in (key, *_ALIASES.get(key, ())):
        value = lower.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def runs_overview(session: Session, project_id: int) -> pd.DataFrame:
    """Every run of a project, oldest first, with its test scores.

    Returns
    -------
    DataFrame
        Columns ``run_id, name, created_at, promoted, threshold, run_dir`` and :data:`SCORE_KEYS`
        (NaN where the run's metrics lack a score).
    """
    cols = ["run_id", "name", "created_at", "promoted", "threshold", "run_dir", *SCORE_KEYS]
    rows = [{"run_id": r.id, "name": r.name or f"run {r.id}", "created_at": r.created_at,
             "promoted": bool(r.promoted), "threshold": r.threshold, "run_dir": r.run_dir,
             **{k: _metric(r.metrics, k) for k in SCORE_KEYS}}
            for r in reversed(list_runs(session, project_id))]
    return pd.DataFrame(rows, columns=cols)


def promoted_run(session: Session, project_id: int) -> ModelRun | None:
    """The project's promoted model, or None."""
    return session.scalar(select(ModelRun).where(ModelRun.project_id == project_id,
                                                 ModelRun.promoted.is_(True)))


def promote_run(session: Session, run_id: int, *, actor: User) -> ModelRun:
    """Make a run the project's model (admins only); the previous one is demoted."""
    require_role(actor, "admin")
    run = get_run(session, run_id)
    previous = promoted_run(session, run.project_id)
    if previous is not None and previous.id != run.id:
        previous.promoted = False
        session.flush()
    run.promoted = True
    session.flush()
    audit.record(session, user_id=actor.id, action="run.promote", entity="model_runs",
                 entity_id=run.id, detail={"previous": previous.id if previous else None})
    return run


def run_path(run: ModelRun, storage: Storage | None = None) -> Path:
    """Where a run's directory is now: its recorded key or absolute path, through ``storage``.

    Without ``storage`` only an absolute record can be followed; a key raises ValueError.
    """
    if storage is not None:
        return storage.resolve(run.run_dir)
    path = Path(run.run_dir)
    if not path.is_absolute():
        raise ValueError(f"Run {run.id} is recorded below the data dir ({run.run_dir}); pass "
                         "the Storage so its directory can be found.")
    return path


def run_threshold(run: ModelRun, storage: Storage | None = None) -> float:
    """The threshold a registered run counts with: its row's (what an admin keeps with
    :func:`set_threshold`), else its directory's chosen one."""
    if run.threshold is not None:
        return float(run.threshold)
    return load_run(run_path(run, storage), with_model=False).threshold


def run_scoring(run: ModelRun, storage: Storage | None = None) -> Scoring:
    """The scoring rule a registered run counts with (:class:`core.run.Scoring`).

    The post-processing params come from the row's config (from the run directory for rows
    that lack them); the threshold is the row's, the one an admin keeps
    (:func:`set_threshold`), else the directory's chosen one.
    """
    config = run.config or {}
    params = config.get("postprocess")
    try:
        postprocess = PostprocessParams.from_dict(params) if isinstance(params, dict) else None
    except (TypeError, KeyError, ValueError):
        log.warning("run %s: the post-processing params in the database are invalid", run.id)
        postprocess = None
    if postprocess is None:
        postprocess = load_run(run_path(run, storage), with_model=False).postprocess
    return Scoring(postprocess, run_threshold(run, storage),
                   str(config.get("match_method") or MATCH_METHOD))


def set_threshold(session: Session, run_id: int, threshold: float, *, actor: User,
                  storage: Storage | None = None) -> ModelRun:
    """Keep a new chosen threshold for a run, in the database and its ``thresholds.json``.

    ``storage`` finds the run directory of a run recorded below the data dir.
    """
    require_role(actor, "operator", "expert", "admin")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"A threshold is a probability between 0 and 1; got {threshold}.")
    run = get_run(session, run_id)
    path = run_path(run, storage) / "thresholds.json"
    old, run.threshold = run.threshold, float(threshold)
    if path.exists():
        data = _read_json(path)
        data["chosen"] = float(threshold)
        path.write_text(json.dumps(data, indent=2))
    session.flush()
    audit.record(session, user_id=actor.id, action="run.threshold", entity="model_runs",
                 entity_id=run.id, detail={"from": old, "to": float(threshold)})
    return run


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return default


def _outcome(result_id: int, obj: Any) -> ObjectOutcome:
    kind = _field(obj, "outcome", "kind")
    if kind not in ("TP", "FP", "FN"):
        raise ValueError(f"An object outcome is TP, FP or FN; got {kind!r}.")
    centroid = _field(obj, "centroid")
    return ObjectOutcome(result_id=result_id, outcome=kind, centroid_row=float(centroid[0]),
                         centroid_col=float(centroid[1]),
                         bbox=[int(v) for v in _field(obj, "bbox")],
                         area=_field(obj, "area"), iou=_field(obj, "iou"),
                         probability=_field(obj, "probability"))


def save_image_result(session: Session, run_id: int, image_id: int, scores: Any, *,
                      objects: Iterable[Any] = (), heatmap_path: str | Path | None = None,
                      version_id: int | None = None) -> ImageResult:
    """Store how a run did on one image, with its objects; locks the image's split.

    Parameters
    ----------
    scores : mapping or object
        With ``tp``, ``fp``, ``fn``, ``n_true``, ``n_pred`` and ``iou`` (or ``mean_iou``),
        e.g. a ``core.metrics.Scores``.
    objects : iterable of mapping or object
        Each with ``outcome`` ('TP', 'FP' or 'FN'), ``centroid`` (row, col), ``bbox``
        (min_row, min_col, max_row, max_col) and optionally ``area``, ``iou``, ``probability``.
    heatmap_path : path, optional
        The stored uint8 heatmap (``Storage.put_heatmap``), recorded as its key below the data
        dir (``Storage.key``) so it is found when the data dir moves.
    version_id : int, optional
        The ground-truth version scored against (default: the image's ground truth now).
    """
    run = get_run(session, run_id)
    if version_id is None:
        truth = ground_truth(session, image_id)
        version_id = truth.id if truth is not None else None
    result = ImageResult(
        run_id=run.id, image_id=image_id, version_id=version_id,
        tp=int(_field(scores, "tp")), fp=int(_field(scores, "fp")), fn=int(_field(scores, "fn")),
        n_true=int(_field(scores, "n_true")), n_pred=int(_field(scores, "n_pred")),
        iou=_field(scores, "iou", "mean_iou"),
        heatmap_path=None if heatmap_path is None else str(heatmap_path))
    session.add(result)
    session.flush()
    session.add_all(_outcome(result.id, obj) for obj in objects)
    lock_splits(session, [image_id])
    session.flush()
    return result


class ScoredImage(NamedTuple):
    """One image's result for :func:`replace_image_results` (the fields of
    :func:`save_image_result`)."""

    image_id: int
    scores: Any
    objects: Iterable[Any] = ()
    heatmap_path: str | Path | None = None
    version_id: int | None = None


def replace_image_results(session: Session, run_id: int, results: Iterable[ScoredImage], *,
                          metrics: Mapping[str, Any] | None = None) -> list[ImageResult]:
    """Replace every per-image result of a run (and their objects) by ``results``.

    What a re-evaluation stores: images scored before and missing now lose their result, the
    others get the new one. It all happens in the caller's transaction, so readers see the old
    results or the new ones, never a mix; scored images' splits stay locked.

    Parameters
    ----------
    results : iterable of ScoredImage (or mappings with its fields)
        At most one per image.
    metrics : mapping, optional
        The scores of this evaluation; they replace those keys of the run's stored metrics
        (the Dashboard's figures), other keys (epochs run, say) are kept.

    Returns
    -------
    list of ImageResult
        The new rows, in the order given.
    """
    run = get_run(session, run_id)
    rows = [ScoredImage(**r) if isinstance(r, Mapping) else ScoredImage(*r) for r in results]
    ids = [int(r.image_id) for r in rows]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"Images {twice} have more than one result; give one result per image.")
    old = set(session.scalars(select(ImageResult.id).where(ImageResult.run_id == run.id)))
    if old:
        session.execute(delete(ObjectOutcome).where(ObjectOutcome.result_id.in_(old)),
                        execution_options={"synchronize_session": False})
        session.execute(delete(ImageResult).where(ImageResult.id.in_(old)),
                        execution_options={"synchronize_session": False})
    # The bulk deletes bypass the session; forget the loaded copies of what they removed.
    for obj in list(session.identity_map.values()):
        if (isinstance(obj, ImageResult) and obj.id in old
                or isinstance(obj, ObjectOutcome) and obj.result_id in old):
            session.expunge(obj)
    if metrics is not None:
        run.metrics = {**(run.metrics or {}), **dict(metrics)}
    return [save_image_result(session, run.id, r.image_id, r.scores, objects=r.objects,
                              heatmap_path=r.heatmap_path, version_id=r.version_id)
            for r in rows]


RESULT_COLUMNS = ["result_id", "image_id", "name", "animal", "region", "condition", "width",
                  "height", "n_true", "n_pred", "tp", "fp", "fn", "iou", "error", "abs_error",
                  "heatmap_path", "image_path", "version_id"]


def run_results(session: Session, run_id: int, *, sort: str = "image", only_errors: bool = False,
                limit: int | None = None, offset: int = 0) -> pd.DataFrame:
    """A run's per-image results on its test images.

    Parameters
    ----------
    sort : str
        ``image`` (by id), ``errors`` (FP + FN, most first), ``count_error`` (|predicted -
        true|, most first), ``fp``, ``fn`` or ``name``.
    only_errors : bool
        Keep images with any FP or FN.
    limit, offset : int
        One page of the results.

    Returns
    -------
    DataFrame
        Columns :data:`RESULT_COLUMNS`; ``error`` is ``n_pred - n_true``.
    """
    errors = ImageResult.fp + ImageResult.fn
    orders = {"image": [], "errors": [errors.desc()],
              "count_error": [func.abs(ImageResult.n_pred - ImageResult.n_true).desc()],
              "fp": [ImageResult.fp.desc()], "fn": [ImageResult.fn.desc()],
              "name": [Image.original_name]}
    if sort not in orders:
        raise ValueError(f"Unknown sort {sort!r}; use one of {', '.join(orders)}.")
    query = (select(ImageResult, Image).join(Image, Image.id == ImageResult.image_id)
             .where(ImageResult.run_id == run_id)
             .order_by(*orders[sort], Image.id).offset(offset))
    if only_errors:
        query = query.where(errors > 0)
    if limit is not None:
        query = query.limit(limit)
    rows = [{"result_id": r.id, "image_id": img.id, "name": img.original_name or f"image {img.id}",
             "animal": img.animal, "region": img.region, "condition": img.condition,
             "width": img.width, "height": img.height, "n_true": r.n_true, "n_pred": r.n_pred,
             "tp": r.tp, "fp": r.fp, "fn": r.fn, "iou": r.iou, "error": r.n_pred - r.n_true,
             "abs_error": abs(r.n_pred - r.n_true), "heatmap_path": r.heatmap_path,
             "image_path": img.path, "version_id": r.version_id}
            for r, img in session.execute(query).all()]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def result_for(session: Session, run_id: int, image_id: int) -> ImageResult | None:
    """A run's result on one image, or None when the run did not score it."""
    return session.scalar(select(ImageResult).where(ImageResult.run_id == run_id,
                                                    ImageResult.image_id == image_id))


def scored_image_ids(session: Session, run_id: int) -> list[int]:
    """The images a run was scored on, by id."""
    return list(session.scalars(select(ImageResult.image_id).where(ImageResult.run_id == run_id)
                                .order_by(ImageResult.image_id)))


def stored_heatmap_results(session: Session, run_id: int) -> list[ImageResult]:
    """A run's results that kept a heatmap, by image id."""
    return list(session.scalars(select(ImageResult).where(
        ImageResult.run_id == run_id, ImageResult.heatmap_path.is_not(None))
        .order_by(ImageResult.image_id)))


def result_objects(session: Session, result_id: int, *, outcome: str | None = None) -> list[ObjectOutcome]:
    """The stored objects of one image result (optionally only TP, FP or FN)."""
    query = select(ObjectOutcome).where(ObjectOutcome.result_id == result_id)
    if outcome is not None:
        query = query.where(ObjectOutcome.outcome == outcome)
    return list(session.scalars(query.order_by(ObjectOutcome.id)))
