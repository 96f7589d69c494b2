"""Synthetic fluorescence images of stained neurons, with instance labels.

The pictures imitate the Fluorescent Neuronal Cells yellow set (see
``shared/reference-images``): a dark, faintly red, textured background (median about RGB
(4, 0, 0)); yellow-orange somata (G/R about 0.8 and B/R about 0.07 where bright) of
equivalent diameter around 43 px, irregular, some with thin processes, some in touching
clumps; and things that are *not* cells and stay out of the labels: dim unstained
(greyish) cells, bright specks, a bright rod-shaped artefact, tissue edges, defocus and
sensor noise. Cell density varies from near-empty to dense fields.

Sizes are physical (pixels at the FNC scale) whatever the image shape, so a small image
simply holds fewer cells. Every object is drawn inside its own bounding box, which
keeps one 1200 x 1600 image well under a second.

Used by the demo and by tests; real images will differ, so everything is varied.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

logger = logging.getLogger(__name__)

CELL_DIAMETER = 43.0  # px, median equivalent diameter of FNC yellow cells
_FULL_AREA = 1200 * 1600
# (share of images, expected stained cells in a full 1200 x 1600 field)
_DENSITIES = ((0.15, 1.5), (0.35, 12.0), (0.30, 35.0), (0.20, 90.0))


def make_image(rng, shape=(1200, 1600)):
    """Draw one synthetic fluorescence image and its cell labels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random choice; the same generator state gives the same image.
    shape : tuple of int
        (rows, cols) of the image.

    Returns
    -------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    labels : ndarray of int32, shape (rows, cols)
        0 is background; stained cells are 1..n, one id each. Cells that touch in the image
        are kept one pixel apart in the labels, so a 0/255 mask of them reads back as the same
        cells (8-connected components).
        Dim unstained cells, specks, rods and tissue edges are not labelled.

    Examples
    --------
    >>> import numpy as np
    >>> rgb, labels = make_image(np.random.default_rng(0), shape=(64, 80))
    >>> rgb.shape, rgb.dtype, labels.dtype
    ((64, 80, 3), dtype('uint8'), dtype('int32'))
    """
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must be positive (rows, cols); got {shape}")
    background, inside = _draw_background(rng, (rows, cols))
    red = background.copy()
    green = background * rng.uniform(0.05, 0.15) - 0.6  # below zero: G median clips to 0
    layers = np.stack([red, green, np.zeros_like(red)])
    _draw_unstained(rng, layers)
    labels = _draw_cells(rng, layers, inside)
    _draw_specks(rng, layers)
    _draw_rods(rng, layers)
    rgb = _finish(rng, layers)
    logger.debug("synthetic image %s with %d cells", (rows, cols), labels.max())
    return rgb, labels


def make_dataset(n, seed, shape=(1200, 1600)):
    """Draw ``n`` synthetic images, reproducibly from ``seed``.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed of the generator; the same seed gives the same list.
    shape : tuple of int
        (rows, cols) of every image.

    Returns
    -------
    list of (rgb, labels)
        As returned by :func:`make_image`.

    Examples
    --------
    >>> data = make_dataset(2, seed=3, shape=(32, 32))
    >>> len(data), data[0][0].shape
    (2, (32, 32, 3))
    """
    rng = np.random.default_rng(seed)
    return [make_image(rng, shape) for _ in range(n)]


def _upsample(coarse, factor, shape):
    """Bilinear upsampling of a coarse field, cropped to ``shape``."""
    return ndi.zoom(coarse, factor, order=1, prefilter=False)[: shape[0], : shape[1]]


def _draw_background(rng, shape):
    """Red autofluorescence with texture and, often, a tissue edge.

    Returns the red background level and a coarse boolean map of where tissue (and so
    stained cells) may be.
    """
    factor = 8
    coarse_shape = (-(-shape[0] // factor) + 1, -(-shape[1] // factor) + 1)
    # Smooth patches of tissue (about 100 px) plus finer mottling (about 16 px).
    smooth = ndi.gaussian_filter(rng.normal(0, 1, coarse_shape), 6, mode="reflect")
    smooth /= smooth.std() + 1e-9
    mottle = rng.normal(0, 1, coarse_shape)
    level = rng.uniform(3.0, 5.5) * (1 + 0.25 * smooth + 0.12 * mottle)
    inside = np.ones(coarse_shape, bool)
    if rng.random() < 0.45:
        level, inside = _add_tissue_edge(rng, level, factor)
    # Nearest-neighbour is enough for the tissue map: it only gates cell centres.
    inside = inside[np.arange(shape[0]) // factor][:, np.arange(shape[1]) // factor]
    return _upsample(level, factor, shape).astype(np.float32), inside


def _add_tissue_edge(rng, level, factor):
    """A wavy boundary: beyond it either empty slide (dark) or a bright fold."""
    rr, cc = np.indices(level.shape, dtype=float) * factor
    angle = rng.uniform(0, 2 * np.pi)
    along = rr * np.sin(angle) + cc * np.cos(angle)
    across = -rr * np.cos(angle) + cc * np.sin(angle)
    offset = rng.uniform(0.15, 0.85) * np.abs(across).max() * np.sign(rng.normal())
    wave = rng.uniform(10, 60) * np.sin(along / rng.uniform(60, 250) + rng.uniform(0, 6.3))
    distance = across - offset + wave
    beyond = 1 / (1 + np.exp(-distance / rng.uniform(3, 15)))
    if rng.random() < 0.6:  # outside the slice: almost black, and no cells there
        return level * (1 - 0.8 * beyond), beyond < 0.5
    fold = rng.uniform(4, 14) * beyond * np.exp(-np.maximum(distance, 0) / rng.uniform(40, 200))
    return level * (1 + 0.5 * beyond) + fold, np.ones(level.shape, bool)


def _blob(rng, radius):
    """An irregular soma outline: a disk with random low harmonics, stretched and turned.

    Returns a bool patch centred on the blob and the patch's half-size.
    """
    half = int(np.ceil(radius * 1.6)) + 2
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(1.0, 1.5)
    u = (rr * np.cos(angle) + cc * np.sin(angle)) / np.sqrt(stretch)
    v = (-rr * np.sin(angle) + cc * np.cos(angle)) * np.sqrt(stretch)
    theta = np.arctan2(v, u)
    edge = np.ones_like(theta)
    for k in range(2, 6):
        edge += rng.normal(0, 0.16 / k**0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= radius * edge, half


def _draw_processes(rng, half, radius, count):
    """Thin tapering dendrite-like lines leaving the soma; float intensity patch."""
    out = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    for _ in range(count):
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.6, 1.6) * radius
        point = half + radius * 0.7 * np.array([np.sin(heading), np.cos(heading)])
        width = rng.uniform(2.0, 4.0)
        for step in range(4):  # a few bent segments, each drawn only in its own box
            heading += rng.normal(0, 0.35)
            end = point + length / 4 * np.array([np.sin(heading), np.cos(heading)])
            lo = np.clip(np.floor(np.minimum(point, end) - width), 0, 2 * half).astype(int)
            hi = np.clip(np.ceil(np.maximum(point, end) + width) + 1, 0, 2 * half + 1).astype(int)
            rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
            dist = _distance_to_segment(rr, cc, point, end)
            line = (1 - step / 5) * np.clip(1 - dist / (width * (1 - step / 5)), 0, 1) ** 0.7
            box = out[lo[0]:hi[0], lo[1]:hi[1]]
            np.maximum(box, line, out=box)
            point = end
    return out


def _distance_to_segment(rr, cc, start, end):
    seg = end - start
    t = ((rr - start[0]) * seg[0] + (cc - start[1]) * seg[1]) / (seg @ seg + 1e-9)
    t = np.clip(t, 0, 1)
    return np.hypot(rr - start[0] - t * seg[0], cc - start[1] - t * seg[1])


def _paste_max(layers, patch_rgb, center, half, *, where=None):
    """Composite a (3, h, w) patch by maximum, clipped at the image border.

    Returns the (row slice, col slice) in the image and in the patch, or None when the
    patch misses the image.
    """
    rows, cols = layers.shape[1:]
    r0, c0 = center[0] - half, center[1] - half
    img = np.s_[max(r0, 0):min(r0 + 2 * half + 1, rows), max(c0, 0):min(c0 + 2 * half + 1, cols)]
    if img[0].stop <= img[0].start or img[1].stop <= img[1].start:
        return None
    pat = np.s_[img[0].start - r0:img[0].stop - r0, img[1].start - c0:img[1].stop - c0]
    region = layers[:, img[0], img[1]]
    np.maximum(region, patch_rgb[:, pat[0], pat[1]], out=region)
    return img, pat


def _soma_profile(rng, body, half, radius):
    """Bright centre fading to a dim rim, with granular cytoplasm; 0 outside ``body``.

    In the reference the median pixel inside a mask is about a third of the 90th
    percentile, so the profile is peaked rather than flat.
    """
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1]
    offset = rng.normal(0, 0.15 * radius, 2)  # nucleus rarely dead centre
    dist = np.hypot(rr - offset[0], cc - offset[1]) / radius
    grain = ndi.gaussian_filter(rng.normal(0, 1, body.shape), 1.2)
    profile = np.exp(-rng.uniform(1.2, 2.4) * dist**2) * (1 + 0.25 * grain)
    return np.where(body, np.clip(profile, 0.05, None), 0).astype(np.float32)


def _colourise(intensity, peak, green_ratio):
    """Yellow-orange: the green share drops in dim parts, as in the reference cells."""
    red = peak * intensity
    green = red * green_ratio * np.clip(intensity, 0, 1) ** 0.25
    return np.stack([red, green, 0.07 * red])


def _cell_count(rng, shape):
    share = np.array([p for p, _ in _DENSITIES])
    expected = _DENSITIES[rng.choice(len(_DENSITIES), p=share)][1]
    return rng.poisson(expected * shape[0] * shape[1] / _FULL_AREA)


def _cell_centres(rng, shape, inside, count):
    """Scattered centres, a share of them seeding touching clumps of 2-4 cells."""
    centres = []
    for _ in range(20 * count):  # bounded: the tissue may cover little or none of the frame
        if len(centres) >= count:
            break
        centre = np.array([rng.uniform(0, shape[0]), rng.uniform(0, shape[1])])
        if not inside[int(centre[0]), int(centre[1])]:
            continue
        centres.append(centre)
        if rng.random() < 0.25:
            for _ in range(rng.integers(1, 4)):
                angle = rng.uniform(0, 2 * np.pi)
                step = CELL_DIAMETER * rng.uniform(0.75, 1.0)
                centres.append(centres[-1] + step * np.array([np.sin(angle), np.cos(angle)]))
    return [np.round(c).astype(int) for c in centres[:count]]


def _draw_cells(rng, layers, inside):
    """Stained somata (labelled) with processes (not labelled); returns int32 labels."""
    shape = layers.shape[1:]
    labels = np.zeros(shape, np.int32)
    next_id = 1
    for centre in _cell_centres(rng, shape, inside, _cell_count(rng, shape)):
        diameter = np.clip(CELL_DIAMETER * np.exp(rng.normal(0, 0.18)), 26, 72)
        body, half = _blob(rng, diameter / 2)
        soma = _soma_profile(rng, body, half, diameter / 2)
        n_proc = rng.choice(5, p=[0.3, 0.2, 0.2, 0.2, 0.1])
        if n_proc:
            half_p = half + int(diameter * 0.9)
            pad = half_p - half
            soma = np.pad(soma, pad)
            body = np.pad(body, pad)
            soma = np.maximum(soma, 0.6 * _draw_processes(rng, half_p, diameter / 2, n_proc))
            half = half_p
        # Per-cell focus: some cells sit above or below the focal plane.
        soma = ndi.gaussian_filter(soma, rng.uniform(0.5, 2.5))
        peak = float(np.clip(np.exp(rng.normal(np.log(120), 0.5)), 35, 450))
        colour = _colourise(soma, peak, rng.uniform(0.7, 0.95))
        placed = _paste_max(layers, colour, centre, half)
        if placed is None:
            continue
        img, pat = placed
        free = body[pat] & (labels[img] == 0)
        if free.sum() < 0.5 * body[pat].sum() or free.sum() < 40:
            continue  # mostly hidden under a neighbour or cut by the border: not countable
        labels[img][free] = next_id
        next_id += 1
    return _separate_touching(labels)


def _separate_touching(labels):
    """Clear the lower-labelled side of every contact between two cells.

    Masks are stored as 0/255 with instances as connected components, as annotators' masks
    are; without a background line two touching cells would read back as one. The image keeps
    the cells touching; only the ground truth gets the one-pixel gap an annotator draws.
    """
    labels = labels.copy()
    labels[ndi.maximum_filter(labels, size=3, mode="constant") > labels] = 0
    # A sliver could vanish entirely: keep the ids contiguous (1..n).
    present = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels]


def _draw_unstained(rng, layers):
    """Dim greyish somata: unstained neurons that an operator must not count."""
    shape = layers.shape[1:]
    count = rng.poisson(rng.uniform(2, 40) * shape[0] * shape[1] / _FULL_AREA)
    for _ in range(count):
        body, half = _blob(rng, CELL_DIAMETER / 2 * np.exp(rng.normal(0, 0.2)))
        soma = ndi.gaussian_filter(_soma_profile(rng, body, half, half / 1.6), rng.uniform(1, 3))
        level = rng.uniform(6, 22)
        grey = np.stack([level * soma, 0.7 * level * soma, 0.3 * level * soma])
        centre = (rng.integers(0, shape[0]), rng.integers(0, shape[1]))
        _paste_max(layers, grey, centre, half)


def _draw_specks(rng, layers):
    """Small bright dots (debris, precipitated dye), 1-4 px in radius."""
    shape = layers.shape[1:]
    count = rng.poisson(rng.uniform(5, 40) * shape[0] * shape[1] / _FULL_AREA) + 1
    for _ in range(count):
        radius = rng.uniform(1, 4)
        half = int(np.ceil(radius)) + 2
        rr, cc = np.mgrid[-half:half + 1, -half:half + 1]
        dot = np.clip(radius + 0.5 - np.hypot(rr, cc), 0, 1).astype(np.float32)
        level = rng.uniform(80, 300)
        tint = rng.uniform(0.6, 1.0)
        speck = np.stack([level * dot, tint * level * dot, rng.uniform(0.05, 0.6) * level * dot])
        centre = (rng.integers(0, shape[0]), rng.integers(0, shape[1]))
        _paste_max(layers, speck, centre, half)


def _draw_rods(rng, layers):
    """Now and then a bright straight strip: a fibre or scratch as bright as a cell."""
    shape = layers.shape[1:]
    if rng.random() > 0.2 + 0.3 * min(1.0, shape[0] * shape[1] / _FULL_AREA):
        return
    length, width = rng.uniform(40, 220), rng.uniform(7, 20)
    half = int(length / 2 + width) + 2
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    start = -length / 2 * np.array([np.sin(angle), np.cos(angle)])
    dist = _distance_to_segment(rr, cc, start, -start)
    rod = ndi.gaussian_filter(np.clip(1 - dist / (width / 2), 0, 1) ** 0.5, 1.0)
    level = rng.uniform(90, 250)
    strip = np.stack([level * rod, rng.uniform(0.6, 0.9) * level * rod, 0.1 * level * rod])
    centre = (rng.integers(0, shape[0]), rng.integers(0, shape[1]))
    _paste_max(layers, strip.astype(np.float32), centre, half)


def _finish(rng, layers):
    """Global defocus, shot and read noise, then 8-bit quantisation."""
    sigma = rng.uniform(0.6, 2.0)
    for channel in layers:
        ndi.gaussian_filter(channel, sigma, output=channel)
    # Shot noise (variance proportional to signal) and read noise, drawn as one normal;
    # in place, because this full-frame step dominates the run time.
    noise = np.clip(layers, 0, None)
    noise *= np.float32(rng.uniform(0.2, 0.6))
    noise += np.float32(rng.uniform(0.6, 1.4) ** 2)
    np.sqrt(noise, out=noise)
    noise *= rng.standard_normal(layers.shape, dtype=np.float32)
    noise += layers
    noise += np.float32(0.5)  # round half up when truncating below
    np.clip(noise, 0, 255, out=noise)
    return np.ascontiguousarray(noise.astype(np.uint8).transpose(1, 2, 0))
