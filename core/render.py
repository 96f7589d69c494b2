"""Overlays for the workbench: an RGB uint8 image in, a new RGB uint8 image out.

Everything here is for display only; the stored image is never changed. Axes are (row, col),
boxes are ``(r0, c0, r1, c1)`` with the maximum exclusive (as ``ndi.find_objects`` slices).

- :func:`adjust_display`: brightness, contrast and gamma for dim fluorescence images;
- :func:`draw_outlines`: the inner boundary of every labelled object;
- :func:`draw_boxes` and :func:`draw_outcome_boxes`: rectangles, and the paper's Fig. 7 boxes
  (TP green, FP red, FN blue) from a :class:`core.metrics.Match`;
- :func:`heatmap_overlay`: a probability heatmap blended over the image through a colormap;
- :func:`crop_around`: a magnified crop around an object, with its surroundings;
- :func:`object_contours` and :func:`contrast_color`: vector outlines for an interactive figure
  (drawn by the browser over an image sent once), in a colour that stands out on the stain.

Speed: a 1600 x 1200 image with 300 objects must redraw within a Streamlit rerun, so no function
loops over objects with a whole-frame operation; boxes work per bounding box, outlines with
neighbour comparisons, and colour tables go through Pillow's C lookups. Measured on the 2-core
CI machine, 300 objects (median of 15): outlines 7 ms, TP/FP/FN boxes 11 ms, heatmap 15 ms,
display adjust 13 ms; about twice that while other jobs shared the cores.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from core.objects import as_labels
from core.postprocess import quantise_heatmap

__all__ = ["adjust_display", "draw_outlines", "draw_boxes", "draw_outcome_boxes",
           "outcome_boxes", "OutcomeBox", "outcome_overlay", "heatmap_overlay", "colormap_lut",
           "crop_around", "object_contours", "contrast_color", "OUTCOME_COLORS",
           "COLORBLIND_OUTCOME_COLORS", "COLORS", "COLORMAPS", "STAIN_CONTRAST",
           "outcome_colors", "describe_outcome_colors", "hex_color"]

log = logging.getLogger(__name__)

#: Paper Fig. 7: true positives green, false positives red, false negatives blue (lightened a
#: little so FN boxes stay visible on the dark background).
OUTCOME_COLORS = {"TP": (0, 220, 0), "FP": (255, 40, 40), "FN": (60, 120, 255)}
#: The same roles in Okabe & Ito's colour-blind-safe palette: bluish green, vermillion, sky blue.
COLORBLIND_OUTCOME_COLORS = {"TP": (0, 158, 115), "FP": (213, 94, 0), "FN": (86, 180, 233)}
#: Every other colour the workbench draws with, in one table so pages never pick their own.
COLORS = {
    "outline": (255, 255, 0),        # a mask's cells: yellow, over any stain
    "picked": (0, 200, 255),         # the object a reviewer has picked
    "keep": (0, 220, 80), "drop": (255, 60, 60), "unsure": (255, 150, 0),  # review verdicts
    "appear": (0, 255, 0), "disappear": (255, 0, 0),   # a pre-labelling preview's changes
    "item": (255, 255, 0),           # the object an expert adjudicates
    "context": (0, 200, 255),        # the other cells around it
    "heatmap": (255, 0, 80),         # the model's probability, tinted over the image
    # Review's vector outlines, drawn thick by the browser (see STAIN_CONTRAST):
    "on_warm_stain": (0, 255, 255),  # cyan: opposite yellow, orange and red cells
    "on_green_stain": (255, 0, 255),  # magenta: opposite green cells
    "review_picked": (255, 255, 255),  # the picked object: white, apart from every verdict colour
    "number": (255, 255, 255),       # object numbers on the image
    # Bland-Altman's two sets (Okabe & Ito orange and sky blue): apart in hue and in lightness
    # for colour-blind eyes, and light enough for their limit lines to show on a dark theme.
    "agreement_before": (230, 159, 0),
    "agreement_after": (86, 180, 233),
}

#: How each outcome palette's colours are named to a reader (the Predictions checkbox, legends).
OUTCOME_COLOR_WORDS = {False: {"TP": "green", "FP": "red", "FN": "blue"},
                       True: {"TP": "bluish green", "FP": "vermillion", "FN": "sky blue"}}

#: Which :data:`COLORS` entry outlines cells of each stain: the hue opposite the stain's, so an
#: outline never disappears into the cell it surrounds. Stains not listed are warm.
STAIN_CONTRAST = {"green": "on_green_stain", "yellow": "on_warm_stain", "red": "on_warm_stain",
                  "orange": "on_warm_stain"}

#: Colormaps as RGB anchors evenly spaced from probability 0 to 1, interpolated linearly.
#: A handful of anchors is enough for a display map and avoids a matplotlib dependency.
#: ``viridis`` follows matplotlib's perceptually uniform map closely at its anchors;
#: ``magenta`` and ``cyan`` contrast with yellow-orange stained cells.
COLORMAPS = {
    "viridis": ((68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)),
    "fire": ((0, 0, 0), (128, 0, 0), (230, 40, 0), (255, 150, 0), (255, 230, 80),
             (255, 255, 255)),
    "magenta": ((40, 0, 40), (255, 0, 200)),
    "cyan": ((0, 30, 40), (0, 255, 255)),
    "gray": ((0, 0, 0), (255, 255, 255)),
}


def outcome_colors(*, colorblind: bool = False) -> dict[str, tuple[int, int, int]]:
    """The TP/FP/FN colours: the paper's (:data:`OUTCOME_COLORS`) or Okabe & Ito's colour-blind
    safe ones (:data:`COLORBLIND_OUTCOME_COLORS`), as a new dict.

    >>> outcome_colors()["FP"], outcome_colors(colorblind=True)["FP"]
    ((255, 40, 40), (213, 94, 0))
    """
    return dict(COLORBLIND_OUTCOME_COLORS if colorblind else OUTCOME_COLORS)


def describe_outcome_colors(*, colorblind: bool = False) -> str:
    """The palette in words, for a label beside an overlay.

    >>> describe_outcome_colors(colorblind=True)
    'TP bluish green, FP vermillion, FN sky blue'
    """
    words = OUTCOME_COLOR_WORDS[bool(colorblind)]
    return ", ".join(f"{k} {words[k]}" for k in ("TP", "FP", "FN"))


def hex_color(color) -> str:
    """An RGB triple as ``#rrggbb`` (for plotly and the browser).

    >>> hex_color((0, 158, 115))
    '#009e73'
    """
    r, g, b = (int(v) for v in _as_color(color, "hex_color"))
    return f"#{r:02x}{g:02x}{b:02x}"


def _as_rgb(rgb, who: str) -> np.ndarray:
    """A new, writable uint8 (rows, cols, 3) copy of ``rgb``, or a ValueError saying what is wrong."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{who} takes an RGB image of uint8 (rows, cols, 3); got {rgb.dtype} "
                         f"of shape {rgb.shape}. core.io.read_image returns one.")
    return rgb.copy()


def _as_labels(labels, shape, who: str) -> np.ndarray:
    """An integer (rows, cols) label image matching ``shape``.

    A bool mask becomes its objects (:func:`core.objects.as_labels`); integer values are kept
    as they are, since callers key colours by them.
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(shape[:2]):
        raise ValueError(f"{who}: the label image is {labels.shape} but the image is "
                         f"{tuple(shape[:2])}; they must match pixel for pixel")
    if labels.dtype == bool:
        return as_labels(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{who} takes an integer label image or a bool mask, not {labels.dtype}")
    return labels


def _as_color(color, who: str) -> np.ndarray:
    color = np.asarray(color)
    if color.shape != (3,) or color.min() < 0 or color.max() > 255:
        raise ValueError(f"{who}: a colour is three values in 0..255, got {color.tolist()!r}")
    return color.astype(np.uint8)


def adjust_display(rgb, *, brightness=0.0, contrast=1.0, gamma=1.0):
    """Brighten a dim image for display with brightness, contrast and gamma.

    Each channel value ``x`` becomes ``255 * clip(contrast * (x / 255) ** gamma + brightness,
    0, 1)``, rounded to the nearest integer. Contrast is a gain about black, so the dark
    background stays dark while dim cells brighten; ``gamma < 1`` lifts the dim end most.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    brightness : float, optional
        Added after the gain, as a fraction of full scale (-1 to 1).
    contrast : float, optional
        Gain, >= 0.
    gamma : float, optional
        Exponent, > 0.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)
        A new array; equal to ``rgb`` at the defaults.

    Examples
    --------
    >>> x = np.array([[[0, 64, 255]]], np.uint8)
    >>> adjust_display(x, contrast=2.0).tolist()
    [[[0, 128, 255]]]
    >>> adjust_display(x, gamma=0.5).tolist()
    [[[0, 128, 255]]]
    """
    out = _as_rgb(rgb, "adjust_display")
    values = (brightness, contrast, gamma)
    if not all(np.isfinite(v) for v in values) or contrast < 0 or gamma <= 0:
        raise ValueError(f"adjust_display needs finite brightness, contrast >= 0 and gamma > 0; "
                         f"got brightness={brightness}, contrast={contrast}, gamma={gamma}")
    if brightness == 0 and contrast == 1 and gamma == 1:
        return out
    # A 256-entry table: one power per grey level instead of one per pixel.
    level = np.arange(256, dtype=np.float64) / 255.0
    table = np.clip(float(contrast) * level ** float(gamma) + float(brightness), 0.0, 1.0)
    table = np.rint(table * 255.0).astype(np.uint8).tolist()
    # Pillow applies a per-channel table in C, several times faster than NumPy's take.
    return np.array(Image.fromarray(out).point(table * 3))


def _inner_boundary(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another label (``find_boundaries(mode="inner")``).

    Two neighbour comparisons on views instead of skimage's grey dilation and erosion: the
    same pixels, several times faster on a full frame.
    """
    edge = np.zeros(labels.shape, bool)
    down = labels[1:] != labels[:-1]
    edge[1:] |= down
    edge[:-1] |= down
    right = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    return edge & (labels != 0)


def _grow(edge: np.ndarray) -> np.ndarray:
    """``edge`` dilated by one 4-connected step."""
    out = edge.copy()
    out[1:] |= edge[:-1]
    out[:-1] |= edge[1:]
    out[:, 1:] |= edge[:, :-1]
    out[:, :-1] |= edge[:, 1:]
    return out


def _label_colors(values, color, colors) -> np.ndarray:
    """Colour per pixel for the label ``values``: ``colors[label]`` where given, else ``color``."""
    pixels = np.empty((values.size, 3), np.uint8)
    pixels[:] = color
    if colors:
        keys = np.array(sorted(colors), dtype=np.int64)
        table = np.array([_as_color(colors[k], "draw_outlines") for k in keys.tolist()])
        # Sorted keys and searchsorted: works for any label ids, however large, in one pass.
        where = np.clip(np.searchsorted(keys, values), 0, keys.size - 1)
        hit = keys[where] == values
        pixels[hit] = table[where[hit]]
    return pixels


def draw_outlines(rgb, labels, *, color=(0, 255, 255), thickness=1, colors=None):
    """Paint the outline of every object of a label image over the image.

    An outline pixel is an object pixel with a 4-neighbour of another label, the same pixels
    as ``skimage.segmentation.find_boundaries(labels, mode="inner")``: the line lies inside the
    object, so touching cells keep one line each and the background is not covered.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    labels : ndarray of int or bool, shape (rows, cols)
        0 is background. A bool mask's objects are its 8-connected components, so touching
        cells show no line between them; pass a label image to see them.
    color : tuple of 3 int, optional
        Outline colour (default cyan, which stands out on yellow-orange cells).
    thickness : int, optional
        Width of the line in pixels, growing inwards from the boundary.
    colors : dict of int to tuple of 3 int, optional
        Own colours for some labels; the others get ``color``.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)

    Examples
    --------
    >>> lab = np.zeros((5, 5), np.int32); lab[1:4, 1:4] = 1
    >>> out = draw_outlines(np.zeros((5, 5, 3), np.uint8), lab)
    >>> int((out[..., 1] == 255).sum()), int(out[2, 2, 1])   # 8 edge pixels, not the centre
    (8, 0)
    """
    out = _as_rgb(rgb, "draw_outlines")
    labels = _as_labels(labels, out.shape, "draw_outlines")
    if int(thickness) < 1:
        raise ValueError(f"draw_outlines: thickness must be at least 1 px, got {thickness}")
    color = _as_color(color, "draw_outlines")
    edge = _inner_boundary(labels)
    for _ in range(int(thickness) - 1):
        # Growth into a neighbour only reaches its own boundary pixels first, so every object
        # thickens inwards in its own colour.
        edge = _grow(edge) & (labels != 0)
    values = labels[edge]
    out[edge] = _label_colors(values.astype(np.int64, copy=False), color, colors)
    return out


def draw_boxes(rgb, boxes, *, color=(0, 255, 0), thickness=2):
    """Draw rectangles, clipped at the image edges.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    boxes : array-like of int, shape (n, 4)
        ``(r0, c0, r1, c1)`` per box, maxima exclusive; the line is drawn inside the box. A box
        is clipped to the image first, so one reaching past an edge is drawn closed along that
        edge (an object at the border stays visibly boxed); one wholly outside is skipped.
    color : tuple of 3 int or array-like of shape (n, 3), optional
        One colour for all boxes, or one per box.
    thickness : int, optional
        Line width in pixels.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)

    Examples
    --------
    >>> out = draw_boxes(np.zeros((6, 6, 3), np.uint8), [(1, 1, 5, 5)], thickness=1)
    >>> (out[..., 1] > 0).astype(int)[1:5, 1:5].tolist()
    [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    """
    out = _as_rgb(rgb, "draw_boxes")
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    colors = np.asarray(color)
    colors = (np.broadcast_to(_as_color(colors, "draw_boxes"), (len(boxes), 3))
              if colors.ndim == 1 else colors.astype(np.uint8))
    if colors.shape != (len(boxes), 3):
        raise ValueError(f"draw_boxes: {len(boxes)} boxes need one colour or {len(boxes)}, "
                         f"got colours of shape {colors.shape}")
    t = int(thickness)
    h, w = out.shape[:2]
    # Clip before slicing: a negative start would wrap round to the far side of the image.
    r0s, r1s = np.clip(boxes[:, 0], 0, h), np.clip(boxes[:, 2], 0, h)
    c0s, c1s = np.clip(boxes[:, 1], 0, w), np.clip(boxes[:, 3], 0, w)
    for r0, c0, r1, c1, col in zip(r0s.tolist(), c0s.tolist(), r1s.tolist(), c1s.tolist(), colors):
        if r1 <= r0 or c1 <= c0:
            continue
        out[r0:min(r0 + t, r1), c0:c1] = col
        out[max(r1 - t, r0):r1, c0:c1] = col
        out[r0:r1, c0:min(c0 + t, c1)] = col
        out[r0:r1, max(c1 - t, c0):c1] = col
    return out


class OutcomeBox(NamedTuple):
    """The box of one matched object: ``outcome`` is ``"TP"``, ``"FP"`` or ``"FN"``; ``label``
    is a predicted id for TP and FP, a true id for FN; ``r0, c0, r1, c1`` its bounding box with
    maxima exclusive."""

    outcome: str
    label: int
    r0: int
    c0: int
    r1: int
    c1: int


def outcome_boxes(match, true_labels, pred_labels):
    """The bounding box of every object of a match, with its outcome (TP, FP or FN).

    Parameters
    ----------
    match : core.metrics.Match
        From ``match_objects(true_labels, pred_labels)``.
    true_labels, pred_labels : ndarray of int, shape (rows, cols)
        The label images the match was computed from.

    Returns
    -------
    list of OutcomeBox
        TP (the predicted object's box) in the order of ``match.pairs`` (by true id), then FP,
        then FN, each in ascending label order.

    Raises
    ------
    ValueError
        The match names an id absent from its label image (labels and match do not belong
        together).

    Examples
    --------
    >>> from core.metrics import match_objects
    >>> t = np.zeros((8, 8), np.int32); t[1:3, 1:3] = 1
    >>> p = np.zeros((8, 8), np.int32); p[1:3, 1:4] = 1; p[6:8, 6:8] = 2
    >>> [(b.outcome, b.label, b.r0, b.c0, b.r1, b.c1) for b in outcome_boxes(
    ...     match_objects(t, p), t, p)]
    [('TP', 1, 1, 1, 3, 4), ('FP', 2, 6, 6, 8, 8)]
    """
    groups = [("TP", pred_labels, "pred_labels", [int(p) for _, p, _ in match.pairs]),
              ("FP", pred_labels, "pred_labels", sorted(int(i) for i in match.unmatched_pred)),
              ("FN", true_labels, "true_labels", sorted(int(i) for i in match.unmatched_true))]
    found = {}
    out = []
    for outcome, labels, name, ids in groups:
        if name not in found:
            # The ids of a match are those of core.objects.as_labels, as match_objects read them.
            found[name] = ndi.find_objects(as_labels(labels, name=name))
        slices = found[name]
        for i in ids:
            box = slices[i - 1] if 0 < i <= len(slices) else None
            if box is None:
                raise ValueError(f"the match names object {i}, which {name} does not hold; "
                                 "pass the label images the match was computed from")
            out.append(OutcomeBox(outcome, i, box[0].start, box[1].start, box[0].stop,
                                  box[1].stop))
    return out


def draw_outcome_boxes(rgb, match, true_labels, pred_labels, *, thickness=2, pad=None,
                       colors=None):
    """Boxes around matched objects as in the paper's Fig. 7: TP green, FP red, FN blue.

    A TP gets the box of its predicted object, an FP its predicted object's box, an FN its true
    object's box. Errors are drawn last, so they stay visible where boxes overlap.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    match : core.metrics.Match
    true_labels, pred_labels : ndarray of int, shape (rows, cols)
        The label images the match was computed from.
    thickness : int, optional
        Line width in pixels.
    pad : int, optional
        Pixels between the object's bounding box and the outside of the line; the default,
        ``thickness``, puts the line just outside the object. Boxes are clipped at the edges.
    colors : dict, optional
        ``{"TP": rgb, "FP": rgb, "FN": rgb}``; default :data:`OUTCOME_COLORS`.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)

    Examples
    --------
    >>> from core.metrics import match_objects
    >>> t = np.zeros((10, 10), np.int32); t[4:6, 4:6] = 1
    >>> p = np.zeros((10, 10), np.int32)
    >>> out = draw_outcome_boxes(np.zeros((10, 10, 3), np.uint8), match_objects(t, p), t, p,
    ...                          thickness=1)
    >>> out[3, 3].tolist() == list(OUTCOME_COLORS["FN"]), out[4, 4].tolist()   # FN box, cell untouched
    (True, [0, 0, 0])
    """
    image = np.asarray(rgb)
    _as_labels(true_labels, image.shape, "draw_outcome_boxes (true_labels)")
    _as_labels(pred_labels, image.shape, "draw_outcome_boxes (pred_labels)")
    colors = {**OUTCOME_COLORS, **(colors or {})}
    pad = int(thickness) if pad is None else int(pad)
    order = {"TP": 0, "FP": 1, "FN": 2}
    found = sorted(outcome_boxes(match, true_labels, pred_labels), key=lambda b: order[b.outcome])
    boxes = np.array([(b.r0 - pad, b.c0 - pad, b.r1 + pad, b.c1 + pad) for b in found],
                     dtype=np.int64).reshape(-1, 4)
    palette = np.array([_as_color(colors[b.outcome], "draw_outcome_boxes") for b in found],
                       dtype=np.uint8).reshape(-1, 3)
    return draw_boxes(image, boxes, color=palette, thickness=thickness)


def colormap_lut(colormap="viridis"):
    """A 256-entry RGB table from a colormap name or a sequence of RGB anchors.

    Parameters
    ----------
    colormap : str or array-like of shape (n, 3)
        A key of :data:`COLORMAPS`, or anchors evenly spaced from 0 to 1 (one anchor is a
        single colour).

    Returns
    -------
    ndarray of uint8, shape (256, 3)

    Examples
    --------
    >>> lut = colormap_lut("gray")
    >>> lut[0].tolist(), lut[128].tolist(), lut[255].tolist()
    ([0, 0, 0], [128, 128, 128], [255, 255, 255])
    """
    if isinstance(colormap, str):
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)} "
                             "or give RGB anchors")
        colormap = COLORMAPS[colormap]
    anchors = np.asarray(colormap, dtype=np.float64).reshape(-1, 3)
    if anchors.size == 0 or anchors.min() < 0 or anchors.max() > 255:
        raise ValueError("colormap anchors must be RGB triples in 0..255")
    if len(anchors) == 1:
        return np.repeat(anchors.astype(np.uint8), 256, axis=0)
    where = np.linspace(0.0, 1.0, len(anchors))
    level = np.arange(256) / 255.0
    table = np.stack([np.interp(level, where, anchors[:, k]) for k in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


def heatmap_overlay(rgb, prob, *, alpha=0.5, colormap="viridis", fade=False):
    """Blend a probability heatmap over the image through a colormap.

    With ``w = alpha`` (or ``alpha * p`` when ``fade``), each pixel becomes
    ``(1 - w) * rgb + w * colormap(p)``, rounded, with ``p`` and ``w`` quantised to steps of
    1/255 (invisible on screen; it lets table lookups replace per-pixel arithmetic).

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    prob : ndarray, shape (rows, cols)
        Probabilities in [0, 1] (clipped; NaN counts as 0), or uint8 0..255 as heatmaps are
        stored.
    alpha : float, optional
        Opacity of the heatmap in [0, 1]; 0 returns the image unchanged.
    colormap : str or array-like of shape (n, 3), optional
        See :func:`colormap_lut`.
    fade : bool, optional
        Scale the opacity by ``p``, so low probabilities leave the tissue readable and only
        likely cells are tinted.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)

    Examples
    --------
    >>> rgb = np.full((1, 2, 3), 100, np.uint8)
    >>> p = np.array([[0.0, 1.0]])
    >>> heatmap_overlay(rgb, p, alpha=1.0, colormap="gray").tolist()
    [[[0, 0, 0], [255, 255, 255]]]
    >>> heatmap_overlay(rgb, p, alpha=1.0, colormap="gray", fade=True).tolist()
    [[[100, 100, 100], [255, 255, 255]]]
    """
    out = _as_rgb(rgb, "heatmap_overlay")
    level = _quantise(prob, out.shape)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"heatmap_overlay: alpha must lie in [0, 1], got {alpha}")
    lut = colormap_lut(colormap)
    if alpha == 0:
        return out
    # Pillow's LUT and compositing run in C: a frame takes a few ms against tens in NumPy,
    # where every table lookup is a gather over 5.8 million values.
    colour = Image.fromarray(level, "L").convert("RGB").point(lut.T.ravel().tolist())
    if fade:
        weight = np.rint(float(alpha) * np.arange(256)).astype(np.uint8).tolist()
        mask = Image.fromarray(level, "L").point(weight)
    else:
        mask = Image.new("L", colour.size, int(round(255 * float(alpha))))
    return np.array(Image.composite(colour, Image.fromarray(out), mask))


def _quantise(prob, shape) -> np.ndarray:
    """Heatmap as the uint8 levels it is stored in (:func:`core.postprocess.quantise_heatmap`)."""
    prob = np.asarray(prob)
    if prob.shape != tuple(shape[:2]):
        raise ValueError(f"heatmap_overlay: the heatmap is {prob.shape} but the image is "
                         f"{tuple(shape[:2])}; they must match pixel for pixel")
    return quantise_heatmap(prob)


def outcome_overlay(rgb, match, true_labels, pred_labels, *, heatmap=None, boxes=True,
                    outlines=False, colors=None, pad=3, width=2):
    """The image with a scored image's objects drawn on it (a new uint8 RGB array).

    Boxes around objects, TP green, FP red, FN blue (paper Fig. 7); optionally the heatmap
    tinted in :data:`COLORS` ``["heatmap"]`` (opacity growing with p, so only likely cells are
    tinted) and the predicted objects' outlines.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    match : core.metrics.Match
    true_labels, pred_labels : ndarray of int, shape (rows, cols)
        The label images the match was computed from.
    heatmap : ndarray, shape (rows, cols), optional
        Drawn when given.
    boxes, outlines : bool
    colors : dict, optional
        TP/FP/FN colours; default :data:`OUTCOME_COLORS` (or :data:`COLORBLIND_OUTCOME_COLORS`).
    pad, width : int
        Box padding and line width in pixels.

    Examples
    --------
    >>> from core.metrics import match_objects
    >>> t = np.zeros((12, 12), np.int32); t[5:7, 5:7] = 1
    >>> p = np.zeros((12, 12), np.int32)
    >>> out = outcome_overlay(np.zeros((12, 12, 3), np.uint8), match_objects(t, p), t, p,
    ...                       pad=1, width=1)
    >>> out[4, 4].tolist() == list(OUTCOME_COLORS["FN"])
    True
    """
    out = _as_rgb(rgb, "outcome_overlay")
    if heatmap is not None:
        out = heatmap_overlay(out, heatmap, alpha=0.5, colormap=[COLORS["heatmap"]], fade=True)
    if outlines:
        out = draw_outlines(out, pred_labels, color=COLORS["outline"])
    if boxes:
        out = draw_outcome_boxes(out, match, true_labels, pred_labels, thickness=width, pad=pad,
                                 colors=colors)
    return out


def crop_around(image, bbox, *, margin=40, scale=4):
    """A crop around a box, with ``margin`` pixels of context, magnified ``scale`` times.

    Parameters
    ----------
    image : ndarray, shape (rows, cols) or (rows, cols, channels)
        An image, a mask or a label image (any dtype), so all of them can be cut alike.
    bbox : tuple of 4 int
        ``(r0, c0, r1, c1)``, maxima exclusive.
    margin : int, optional
        Context on every side; the window is clipped at the image edges.
    scale : int, optional
        Nearest-neighbour magnification: pixels stay square and sharp, so an expert sees the
        real pixels of a borderline cell.

    Returns
    -------
    ndarray
        Shape ``(scale * window rows, scale * window cols[, channels])``, same dtype.

    Examples
    --------
    >>> img = np.arange(25).reshape(5, 5)
    >>> crop_around(img, (0, 0, 1, 1), margin=1, scale=2).tolist()
    [[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6], [5, 5, 6, 6]]
    """
    image = np.asarray(image)
    r0, c0, r1, c1 = (int(v) for v in bbox)
    if int(scale) < 1 or int(margin) < 0:
        raise ValueError(f"crop_around: scale must be >= 1 and margin >= 0, got {scale}, {margin}")
    h, w = image.shape[:2]
    top, left = min(max(r0 - margin, 0), h), min(max(c0 - margin, 0), w)
    bottom, right = max(min(r1 + margin, h), top), max(min(c1 + margin, w), left)
    crop = image[top:bottom, left:right]
    if scale == 1:
        return crop.copy()
    return np.repeat(np.repeat(crop, int(scale), axis=0), int(scale), axis=1)


def contrast_color(stain: str | None) -> tuple[int, int, int]:
    """The outline colour that stands out on cells of ``stain`` (:data:`STAIN_CONTRAST`).

    >>> contrast_color("yellow"), contrast_color("Green"), contrast_color(None)
    ((0, 255, 255), (255, 0, 255), (0, 255, 255))
    """
    key = STAIN_CONTRAST.get((stain or "").strip().lower(), "on_warm_stain")
    return COLORS[key]


def object_contours(labels, *, tolerance=0.4):
    """The outline of every object as polygons, for a figure that draws them as vectors.

    Each object's outline is the 0.5 iso-line of its pixels (``skimage.measure.find_contours``
    on its bounding box with a one-pixel margin, so every line closes), thinned: twice, every
    other vertex lying within ``tolerance`` px of the line through its two neighbours is
    dropped, so no simplified line strays more than ``2 * tolerance`` px from the iso-line; then
    vertices on a straight run go. A round cell keeps about a quarter of its vertices, which
    keeps what the browser is sent small.
    Coordinates are (row, col) in pixel-index units: pixel (r, c)'s centre is (r, c), so a
    figure whose image spans [0, cols] x [0, rows] adds 0.5 to both.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (rows, cols)
        0 is background; a bool mask's objects are its 8-connected components.
    tolerance : float, optional
        Distance in px below which a vertex is dropped (0 keeps all).

    Returns
    -------
    dict of int to list of ndarray of float, shape (n, 2)
        Closed polylines (first vertex repeated last) per label: one per piece of the
        object, and one per hole.

    Examples
    --------
    >>> lab = np.zeros((6, 6), np.int32); lab[1:5, 2:4] = 7
    >>> (ring,) = object_contours(lab)[7]
    >>> [float(f(ring[:, axis])) for axis in (0, 1) for f in (np.min, np.max)]
    [0.5, 4.5, 1.5, 3.5]
    >>> bool((ring[0] == ring[-1]).all())
    True
    """
    from skimage.measure import find_contours

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"object_contours takes a (rows, cols) label image, got shape "
                         f"{labels.shape}")
    labels = _as_labels(labels, labels.shape, "object_contours")
    if not tolerance >= 0:
        raise ValueError(f"object_contours: tolerance is a distance >= 0 px, got {tolerance}")
    out: dict[int, list[np.ndarray]] = {}
    for i, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        # The zero margin closes every contour, even for an object touching the frame.
        crop = np.pad(labels[box] == i + 1, 1).astype(np.float32)
        offset = (box[0].start - 1, box[1].start - 1)
        out[i + 1] = [_simplify(ring, tolerance) + offset for ring in find_contours(crop, 0.5)]
    return out


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Two thinning passes within ``tolerance``, then exactly collinear vertices (no error)."""
    ring = _thin(_thin(ring, tolerance), tolerance)
    for _ in range(8):
        shorter = _thin(ring, 1e-9)
        if len(shorter) == len(ring):
            break
        ring = shorter
    return ring


def _thin(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """``ring`` without the odd-numbered vertices within ``tolerance`` of their neighbours' chord.

    Only every other vertex is a candidate, so both neighbours of a dropped vertex stay and its
    distance to the new line is exactly the one measured.
    """
    if tolerance <= 0 or len(ring) < 5:  # a closed ring of 4 is a triangle: keep it
        return ring
    a, p, b = ring[:-2:2], ring[1:-1:2], ring[2::2]
    ab, ap = b - a, p - a
    cross = np.abs(ab[:, 0] * ap[:, 1] - ab[:, 1] * ap[:, 0])
    near = cross <= tolerance * np.maximum(np.hypot(ab[:, 0], ab[:, 1]), 1e-9)
    keep = np.ones(len(ring), bool)
    keep[1:-1:2] = ~near
    return ring[keep]
