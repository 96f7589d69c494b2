"""Weighted maps for the training loss (METHOD.md section 3, paper section 4.2).

Every object i spreads a weight ``w_i(x) = exp(-d_i(x)**2 / (2 sigma**2))`` around itself, where
``d_i(x)`` is the Euclidean distance from pixel x to the nearest pixel of object i. The weights of
all objects add up, so the gaps between crowded cells weigh more than open background.

How the pieces combine (our reading of METHOD.md, which follows the authors' code):

- cell pixels weigh ``cell_weight`` (1.5), whatever their neighbours;
- a background pixel weighs ``background_weight * max(1, S(x))`` where
  ``S(x) = sum_i w_i(x)`` over the objects with ``d_i(x) <= ring``. Next to a single cell
  ``w_i <= 1``, so the floor keeps it at ``background_weight``; only pixels between two or more
  cells rise above it;
- background farther than ``ring`` from every cell has an empty sum and weighs
  ``background_weight``.

The ring also truncates each contribution: an object farther than ``ring`` from a pixel adds
nothing there, even if another cell is near. This is what makes the per-object work local (a
window of the object's bounding box grown by ``ring``); the dropped terms are below
``exp(-ring**2 / (2 sigma**2))`` (0.135 at the defaults) each.

The class weight is applied here and only here; the loss multiplies per-pixel BCE by this map and
nothing else. Maps stay float32 throughout (the original loader cast them to bool).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["weight_map"]

log = logging.getLogger(__name__)

# Objects of a bool mask are its 8-connected components, as in core.postprocess.
_SQUARE = ndi.generate_binary_structure(2, 2)


def _as_labels(mask: np.ndarray) -> np.ndarray:
    """Label image of ``mask``: bool -> 8-connected components; integers are taken as labels."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2D array, got shape {mask.shape}")
    if mask.dtype == bool:
        return ndi.label(mask, structure=_SQUARE)[0]
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be bool or an integer label image, got dtype {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise ValueError("label image has negative values; labels must be 0 (background) or positive")
    return mask


def _proximity_sum(labels: np.ndarray, sigma: float, ring: float) -> np.ndarray:
    """``S(x)``: sum over objects within ``ring`` of x of ``exp(-d**2 / (2 sigma**2))``, float32."""
    total = np.zeros(labels.shape, dtype=np.float32)
    margin = int(math.ceil(ring))
    ring2 = np.float32(ring * ring)
    scale = np.float32(-0.5 / (sigma * sigma))
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:  # ids missing from the image (label gaps)
            continue
        # Every pixel within `ring` of the object lies in its box grown by `ring`.
        window = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        # The EDT of the complement gives each pixel its distance to the nearest object pixel.
        d2 = ndi.distance_transform_edt(labels[window] != index).astype(np.float32)
        d2 *= d2
        contribution = np.exp(d2 * scale)
        contribution[d2 > ring2] = 0.0
        total[window] += contribution
    return total


def weight_map(mask: np.ndarray, *, sigma: float = 25.0, ring: float = 50,
               cell_weight: float = 1.5, background_weight: float = 1.0) -> np.ndarray:
    """Per-pixel loss weights that grow in the gaps between crowded cells.

    Parameters
    ----------
    mask : (M, N) array of bool or int
        Target mask. A bool mask is split into objects by 8-connectivity; an integer array is a
        label image (0 = background, one object per positive id), so touching cells stay apart.
    sigma : float, optional
        Decay length of each object's weight in pixels (the paper: 25, the average cell radius).
    ring : float, optional
        Only background within this Euclidean distance (px) of an object takes its weight.
    cell_weight : float, optional
        Weight of every cell pixel.
    background_weight : float, optional
        Weight of background pixels, multiplied by ``max(1, S)`` inside the ring.

    Returns
    -------
    weights : (M, N) ndarray of float32
        ``cell_weight`` on cells; ``background_weight * max(1, S(x))`` on background, with
        ``S(x) = sum_i exp(-d_i(x)**2 / (2 sigma**2))`` over objects i with ``d_i(x) <= ring``.

    Examples
    --------
    >>> m = np.zeros((5, 9), bool)
    >>> m[:, 2] = m[:, 6] = True            # two lines, two pixels apart
    >>> w = weight_map(m, sigma=1.0, ring=3)
    >>> w.dtype, float(w[0, 2]), float(w[0, 0])
    (dtype('float32'), 1.5, 1.0)
    >>> round(float(w[0, 4]), 4)             # 2 * exp(-4 / 2): both lines at distance 2
    1.0
    >>> round(float(weight_map(m, sigma=2.0, ring=3)[0, 4]), 4)   # 2 * exp(-4 / 8)
    1.2131
    """
    labels = _as_labels(mask)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if not ring >= 0:
        raise ValueError(f"ring must not be negative, got {ring!r}")
    if cell_weight < 0 or background_weight < 0:
        raise ValueError("cell_weight and background_weight must not be negative")
    weights = _proximity_sum(labels, float(sigma), float(ring))
    np.maximum(weights, np.float32(1.0), out=weights)
    weights *= np.float32(background_weight)
    weights[labels > 0] = np.float32(cell_weight)
    return weights
