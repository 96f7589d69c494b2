"""Applying a trained run to project images outside training: model pre-labelling.

The run counts through its own scoring rule (:class:`core.run.Scoring`), at the threshold its
row keeps, so a pre-labelled mask holds exactly the objects evaluation and ``core count`` would
count; the version stores the run's labels (cells its watershed split stay separate cells) and
records the run, threshold and model file that made it (:class:`db.masks.MaskProvenance`).
"""
from __future__ import annotations

import logging

from core.predict import predict_heatmap
from core.run import model_sha256
from db import masks, projects

__all__ = ["prelabel_with_model"]

log = logging.getLogger(__name__)


def prelabel_with_model(session, storage, run, image_ids, *, run_id: int | None = None,
                        user_id: int | None = None, progress=None) -> int:
    """Give images the loaded run's prediction as their new mask version (source ``model``).

    Parameters
    ----------
    run : core.run.Run
        Loaded with its model, counting at the threshold to use (the row's, see
        ``pages.ui.model_run``).
    image_ids : iterable of int
    run_id : int, optional
        The run's row, recorded on every version.
    user_id : int, optional
        Who asked.
    progress : callable(done, total), optional

    Returns
    -------
    int
        How many images were pre-labelled. Each version is based on the image's head, so
        nothing is overwritten; one saved over someone's newer edit is kept beside it, flagged.
    """
    if run.model is None:
        raise ValueError(f"The run {run.name} was loaded without its model; load it with the model.")
    provenance = masks.MaskProvenance(run_id, run.threshold, model_sha256(run.path))
    ids = list(image_ids)
    for done, image_id in enumerate(ids, start=1):
        image = projects.get_image(session, image_id)
        labels = run.labels(predict_heatmap(run.model, storage.read_image(image.path)))
        try:
            masks.save_mask_version(session, storage, image_id, labels,
                                    based_on=image.head_version_id, source="model",
                                    author_id=user_id, note=f"model:{run.name}",
                                    provenance=provenance)
        except masks.ConflictError:
            log.info("image %s: the model's mask is kept beside a newer head", image_id)
        if progress is not None:
            progress(done, len(ids))
    return len(ids)
