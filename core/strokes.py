"""Canvas strokes to full-resolution mask edits.

The Correct page's editor sends its strokes in image coordinates already
(:func:`shapes_to_edits`). The Count page's region tool draws on ``streamlit-drawable-canvas``,
a fabric.js canvas (:func:`objects_to_edits`, :func:`region_from_objects`). What comes back is
fabric's JSON: one dict per drawn object (``Path`` from the freehand brush, ``Polygon``, ``Line``,
``Circle`` from the point tool, ``Rect``), each with its own geometry plus ``left``/``top``,
``originX``/``originY``, ``scaleX``/``scaleY``, ``angle`` and ``flipX``/``flipY``. The canvas shows a
*window* of the full image, magnified by ``scale`` canvas pixels per image pixel. This module turns
those objects into edits in full-resolution pixels and applies them to a label image. It is pure
NumPy/scikit-image and never looks at the canvas's rendered bitmap (``image_data`` is ``None`` under
``AppTest``).

Which tool drew an object is told by its stroke colour (:data:`TOOL_COLORS`): the page sets the
colour with the tool, so the drawing itself carries the intent.

Coordinates: a canvas point ``(x, y)`` lies at the continuous image position
``(row, col) = (window.row + y / scale, window.col + x / scale)``; image pixel ``(i, j)`` covers
``[i, i + 1) x [j, j + 1)`` there, so its centre is at ``(i + 0.5, j + 0.5)``. A shape covers a
pixel when it covers the pixel's centre.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import draw, segmentation

from core.objects import MIN_PIECE_AREA, as_labels, edited_labels

__all__ = [
    "TOOL_COLORS", "Window", "Edit", "window_at", "objects_to_edits", "shapes_to_edits", "apply_edits",
    "compare_masks", "remove_objects", "region_from_objects",
]

#: Stroke colour of each tool on the canvas; the kind of an edit is read back from it.
TOOL_COLORS = {
    "add": "#00e040",
    "erase": "#ff40ff",
    "delete": "#ffd000",
    "split": "#00c8ff",
}

KINDS = tuple(TOOL_COLORS)  # the same as core.objects.EDIT_KINDS
_ORIGIN = {"left": 0.0, "center": 0.5, "right": 1.0, "top": 0.0, "bottom": 1.0}


@dataclass(frozen=True)
class Window:
    """The part of the image a canvas shows: rows ``row:row+height``, cols ``col:col+width``.

    ``scale`` is canvas pixels per image pixel (2.0 shows the region magnified twice).

    >>> w = Window(row=100, col=200, height=150, width=200, scale=4.0)
    >>> w.canvas_size
    (800, 600)
    >>> w.to_image(8.0, 4.0)
    (101.0, 202.0)
    """

    row: int
    col: int
    height: int
    width: int
    scale: float

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(canvas width, canvas height) in canvas pixels."""
        return round(self.width * self.scale), round(self.height * self.scale)

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Continuous image (row, col) of canvas point (x, y)."""
        return self.row + y / self.scale, self.col + x / self.scale

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The window's part of an image (a view)."""
        return image[self.row:self.row + self.height, self.col:self.col + self.width]


@dataclass(frozen=True)
class Edit:
    """One edit in full-resolution pixels.

    kind : ``"add"``, ``"erase"``, ``"delete"`` or ``"split"``.
    rows, cols : the pixels it covers (for ``delete``, the one clicked pixel).
    """

    kind: str
    rows: np.ndarray
    cols: np.ndarray


def window_at(image_shape, *, canvas_width: int, zoom: float = 1.0, center=None) -> Window:
    """The window of an image shown on a canvas ``canvas_width`` wide, magnified ``zoom`` times.

    At ``zoom=1`` the whole image fits the canvas width. Higher zooms show a region around
    ``center`` (image row, col; the image centre by default), kept inside the image.

    >>> w = window_at((1200, 1600), canvas_width=800)
    >>> (w.row, w.col, w.height, w.width, w.scale)
    (0, 0, 1200, 1600, 0.5)
    >>> w = window_at((1200, 1600), canvas_width=800, zoom=4, center=(10, 1590))
    >>> (w.row, w.col, w.height, w.width, w.scale)
    (0, 1200, 300, 400, 2.0)
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    if h < 1 or w < 1 or canvas_width < 1 or zoom < 1:
        raise ValueError(f"Cannot show a {h}x{w} image at zoom {zoom} on a canvas {canvas_width} wide.")
    scale = canvas_width / w * zoom
    win_w = min(w, max(1, math.floor(canvas_width / scale)))
    win_h = min(h, max(1, math.floor(h / zoom)))
    cr, cc = center if center is not None else (h / 2, w / 2)
    row = int(min(max(round(cr - win_h / 2), 0), h - win_h))
    col = int(min(max(round(cc - win_w / 2), 0), w - win_w))
    return Window(row=row, col=col, height=win_h, width=win_w, scale=scale)


# ---------------------------------------------------------------- fabric geometry

def _matrix(obj: dict, pivot: tuple[float, float]):
    """Map an object's own coordinates to canvas coordinates: returns f(points (N,2) x,y)."""
    sx = float(obj.get("scaleX", 1) or 1) * (-1 if obj.get("flipX") else 1)
    sy = float(obj.get("scaleY", 1) or 1) * (-1 if obj.get("flipY") else 1)
    theta = math.radians(float(obj.get("angle", 0) or 0))
    cos, sin = math.cos(theta), math.sin(theta)
    # fabric places an object by its origin corner; the box it measures includes the stroke.
    sw = float(obj.get("strokeWidth", 0) or 0)
    width, height = float(obj.get("width", 0) or 0), float(obj.get("height", 0) or 0)
    if obj.get("strokeUniform"):
        box_w, box_h = width * abs(sx) + sw, height * abs(sy) + sw
    else:
        box_w, box_h = (width + sw) * abs(sx), (height + sw) * abs(sy)
    dx = (0.5 - _ORIGIN.get(obj.get("originX", "left"), 0.0)) * box_w
    dy = (0.5 - _ORIGIN.get(obj.get("originY", "top"), 0.0)) * box_h
    left, top = float(obj.get("left", 0) or 0), float(obj.get("top", 0) or 0)
    cx, cy = left + cos * dx - sin * dy, top + sin * dx + cos * dy
    px, py = pivot

    def apply(points: np.ndarray) -> np.ndarray:
        x = (points[:, 0] - px) * sx
        y = (points[:, 1] - py) * sy
        return np.column_stack([cx + cos * x - sin * y, cy + sin * x + cos * y])

    return apply


def _cubic_bounds(p0, p1, p2, p3) -> list[tuple[float, float]]:
    """End points and extremes of a cubic Bezier (as fabric's getBoundsOfCurve returns them)."""
    out = [tuple(p0), tuple(p3)]
    for axis in (0, 1):
        a = -p0[axis] + 3 * p1[axis] - 3 * p2[axis] + p3[axis]
        b = 2 * (p0[axis] - 2 * p1[axis] + p2[axis])
        c = p1[axis] - p0[axis]
        if abs(a) < 1e-12:
            roots = [-c / b] if abs(b) > 1e-12 else []
        else:
            disc = b * b - 4 * a * c
            roots = [] if disc < 0 else [(-b + s * math.sqrt(disc)) / (2 * a) for s in (1, -1)]
        for t in roots:
            if 0 < t < 1:
                out.append(tuple(_bezier([p0, p1, p2, p3], np.array([t]))[0]))
    return out


def _bezier(ctrl, t: np.ndarray) -> np.ndarray:
    """Points of a Bezier curve (2 to 4 control points) at parameters t."""
    ctrl = [np.asarray(p, float) for p in ctrl]
    n = len(ctrl) - 1
    t = t[:, None]
    return sum(math.comb(n, k) * (1 - t) ** (n - k) * t ** k * ctrl[k] for k in range(n + 1))


def _path_polylines(path: list) -> tuple[list[np.ndarray], list[bool], tuple[float, float]]:
    """Sampled subpaths of fabric path commands, whether each is closed, and fabric's pathOffset."""
    subpaths, closed, bounds = [], [], []
    current: list = []
    pos = start = (0.0, 0.0)
    for cmd in path:
        if not cmd:
            continue
        op, args = str(cmd[0]).upper(), [float(v) for v in cmd[1:]]
        if op == "M":
            if len(current) > 1:
                subpaths.append(np.array(current)), closed.append(False)
            pos = start = (args[0], args[1])
            current = [pos]
        elif op == "L":
            bounds += [pos, (args[0], args[1])]
            pos = (args[0], args[1])
            current.append(pos)
        elif op in ("Q", "C"):
            ctrl = [pos] + [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
            # fabric bounds a quadratic as the cubic (p0, q, q, p2), so pathOffset follows that.
            cubic = ctrl if op == "C" else [ctrl[0], ctrl[1], ctrl[1], ctrl[2]]
            bounds += _cubic_bounds(*cubic)
            length = sum(math.dist(a, b) for a, b in zip(ctrl, ctrl[1:]))
            t = np.linspace(0, 1, max(2, math.ceil(length)) + 1)[1:]
            current.extend(map(tuple, _bezier(ctrl, t)))
            pos = ctrl[-1]
        elif op == "Z":
            bounds += [pos, start]
            if len(current) > 1:
                subpaths.append(np.array(current)), closed.append(True)
            pos, current = start, [start]
        else:
            raise ValueError(f"The canvas sent a path command {cmd[0]!r} that cannot be drawn; "
                             "undo that stroke and draw it again.")
    if len(current) > 1:
        subpaths.append(np.array(current)), closed.append(False)
    if not bounds:
        bounds = [pos]
    b = np.array(bounds)
    offset = ((b[:, 0].min() + b[:, 0].max()) / 2, (b[:, 1].min() + b[:, 1].max()) / 2)
    return subpaths, closed, offset


def _geometry(obj: dict) -> tuple[list[np.ndarray], list[bool], np.ndarray | None]:
    """An object as canvas-coordinate polylines (x, y), their closedness, and its centre point."""
    kind = str(obj.get("type", "")).lower()
    if kind == "path":
        lines, closed, offset = _path_polylines(obj.get("path") or [])
        f = _matrix(obj, offset)
        return [f(p) for p in lines], closed, f(np.array([offset]))[0]
    if kind in ("polygon", "polyline"):
        pts = np.array([[p["x"], p["y"]] for p in obj.get("points") or []], float).reshape(-1, 2)
        if len(pts) == 0:
            return [], [], None
        offset = ((pts[:, 0].min() + pts[:, 0].max()) / 2, (pts[:, 1].min() + pts[:, 1].max()) / 2)
        f = _matrix(obj, offset)
        return [f(pts)], [kind == "polygon"], f(np.array([offset]))[0]
    f = _matrix(obj, (0.0, 0.0))
    centre = f(np.zeros((1, 2)))[0]
    if kind == "line":
        pts = np.array([[obj.get("x1", 0), obj.get("y1", 0)], [obj.get("x2", 0), obj.get("y2", 0)]], float)
        return [f(pts)], [False], centre
    if kind in ("circle", "ellipse"):
        rx = float(obj.get("rx", obj.get("radius", 0)) or 0)
        ry = float(obj.get("ry", obj.get("radius", 0)) or 0)
        t = np.linspace(0, 2 * math.pi, max(8, math.ceil(2 * math.pi * max(rx, ry))), endpoint=False)
        return [f(np.column_stack([rx * np.cos(t), ry * np.sin(t)]))], [True], centre
    if kind in ("rect", "labeledrect"):
        w2, h2 = float(obj.get("width", 0)) / 2, float(obj.get("height", 0)) / 2
        return [f(np.array([[-w2, -h2], [w2, -h2], [w2, h2], [-w2, h2]]))], [True], centre
    raise ValueError(f"The canvas sent a {obj.get('type')!r} object, which is not a drawing tool here; "
                     "undo it and use the add, erase, delete or split tool.")


# ---------------------------------------------------------------- rasterising

def _to_pixels(points_xy: np.ndarray, window: Window) -> np.ndarray:
    """Canvas (x, y) -> skimage (row, col) with pixel centres at integer coordinates."""
    rows = window.row + points_xy[:, 1] / window.scale - 0.5
    cols = window.col + points_xy[:, 0] / window.scale - 0.5
    return np.column_stack([rows, cols])


def _fill(out: np.ndarray, rc: np.ndarray) -> None:
    if len(rc) >= 3:
        rr, cc = draw.polygon(rc[:, 0], rc[:, 1], shape=out.shape)
        out[rr, cc] = True


def _stroke(out: np.ndarray, rc: np.ndarray, width: float) -> None:
    """A round-capped polyline ``width`` pixels wide, at least one pixel thick."""
    half = width / 2
    r_max, c_max = out.shape[0] - 1, out.shape[1] - 1
    for (r0, c0), (r1, c1) in zip(rc[:-1], rc[1:]):
        rr, cc = draw.line(*(math.floor(min(max(v, 0), m) + 0.5) for v, m in
                             ((r0, r_max), (c0, c_max), (r1, r_max), (c1, c_max))))
        out[rr, cc] = True
        length = math.hypot(r1 - r0, c1 - c0)
        if half > 0.5 and length > 0:
            nr, nc = -(c1 - c0) / length * half, (r1 - r0) / length * half
            _fill(out, np.array([[r0 + nr, c0 + nc], [r1 + nr, c1 + nc],
                                 [r1 - nr, c1 - nc], [r0 - nr, c0 - nc]]))
    if half > 0.5:
        for r, c in rc:
            rr, cc = draw.disk((r, c), half, shape=out.shape)
            out[rr, cc] = True


def objects_to_edits(objects, window: Window, image_shape, *, tools=None) -> list[Edit]:
    """Turn canvas objects into full-resolution edits, in drawing order.

    Parameters
    ----------
    objects : list of dict
        ``json_data["objects"]`` from the canvas.
    window : Window
        The image region the canvas showed, and its magnification.
    image_shape : tuple
        (rows, cols) of the full image; edits are clipped to it.
    tools : dict, optional
        Tool name -> stroke colour (default :data:`TOOL_COLORS`); an object whose colour is
        not listed is an ``add``.

    Returns
    -------
    list of Edit
        ``add``: the filled outline plus its stroke (freehand shapes are closed);
        ``erase``: the brush stroke (closed shapes are filled);
        ``delete``: the pixel under the click (the object's centre);
        ``split``: the cut, the drawn line widened to a 4-connected band, so no diagonal step
        joins the two sides of the cut.

    Examples
    --------
    >>> w = Window(row=0, col=0, height=20, width=20, scale=2.0)
    >>> rect = {"type": "Rect", "left": 4, "top": 4, "width": 8, "height": 8, "strokeWidth": 0,
    ...         "stroke": TOOL_COLORS["add"]}
    >>> [e] = objects_to_edits([rect], w, (20, 20))
    >>> e.kind, len(e.rows), int(e.rows.min()), int(e.rows.max())
    ('add', 16, 2, 5)
    """
    colour_kind = {str(c).lower(): k for k, c in (tools or TOOL_COLORS).items()}
    shape = (int(image_shape[0]), int(image_shape[1]))
    edits = []
    for obj in objects or []:
        kind = colour_kind.get(str(obj.get("stroke") or "").lower(), "add")
        lines, closed, centre = _geometry(obj)
        if centre is None:
            continue
        width = float(obj.get("strokeWidth", 0) or 0) * abs(float(obj.get("scaleX", 1) or 1))
        width /= window.scale
        out = np.zeros(shape, bool)
        if kind == "delete":
            r, c = (math.floor(v + 0.5) for v in _to_pixels(centre[None], window)[0])
            if 0 <= r < shape[0] and 0 <= c < shape[1]:
                edits.append(Edit("delete", np.array([r]), np.array([c])))
            continue
        for line, is_closed in zip(lines, closed):
            rc = _to_pixels(line, window)
            filled = kind == "add" or (kind == "erase" and is_closed)
            if filled:
                _fill(out, rc)
            if kind == "split":
                _stroke(out, rc, 1.0)
            elif not filled or width > 1:  # a thin outline adds nothing to a filled shape
                _stroke(out, np.vstack([rc, rc[:1]]) if filled else rc, width)
        if kind == "split":
            out = ndi.binary_dilation(out)  # a 4-connected band: no diagonal step joins the halves
        rows, cols = np.nonzero(out)
        if len(rows):
            edits.append(Edit(kind, rows, cols))
    return edits


def shapes_to_edits(shapes, image_shape) -> list[Edit]:
    """Turn the Correct editor's strokes into full-resolution edits, in drawing order.

    The editor keeps its strokes in image coordinates, whatever the zoom: a point ``[x, y]``
    is the continuous position ``(row, col) = (y, x)``, so pixel ``(i, j)`` covers
    ``[j, j + 1) x [i, i + 1)`` and its centre is at ``[j + 0.5, i + 0.5]``.

    Parameters
    ----------
    shapes : list of dict
        ``{"tool": kind, "points": [[x, y], ...], "width": w}`` per stroke, where ``kind`` is
        ``"add"`` (a closed outline: the pixels whose centres it encloses), ``"erase"`` (a
        round brush ``width`` image pixels wide along the points), ``"delete"`` (the pixel under
        the first point) or ``"split"`` (the line through the points, widened to a 4-connected
        band so no diagonal step joins its two sides). Other keys (an ``id``) are ignored.
    image_shape : tuple
        (rows, cols) of the image; edits are clipped to it.

    Returns
    -------
    list of Edit
        One per stroke that covers a pixel of the image.

    Raises
    ------
    ValueError
        When a stroke names no known tool or its points are not numbers.

    Examples
    --------
    >>> square = {"tool": "add", "points": [[2, 1], [6, 1], [6, 4], [2, 4]]}
    >>> [e] = shapes_to_edits([square], (8, 8))
    >>> e.kind, sorted(set(e.rows.tolist())), sorted(set(e.cols.tolist()))
    ('add', [1, 2, 3], [2, 3, 4, 5])
    >>> [d] = shapes_to_edits([{"tool": "delete", "points": [[3.7, 5.2]]}], (8, 8))
    >>> int(d.rows[0]), int(d.cols[0])
    (5, 3)
    """
    shape = (int(image_shape[0]), int(image_shape[1]))
    window = Window(row=0, col=0, height=shape[0], width=shape[1], scale=1.0)
    edits = []
    for stroke in shapes or []:
        kind = stroke.get("tool") if isinstance(stroke, dict) else None
        if kind not in KINDS:
            raise ValueError(f"The editor sent a stroke with tool {kind!r}; only "
                             f"{', '.join(KINDS)} are known. Undo it and draw it again.")
        try:
            points = np.asarray(stroke.get("points") or [], dtype=float).reshape(-1, 2)
            width = float(stroke.get("width") or 1.0)
        except (TypeError, ValueError) as err:
            raise ValueError(f"The editor sent a {kind} stroke whose points are not numbers "
                             f"({err}). Undo it and draw it again.") from None
        if len(points) == 0 or not np.isfinite(points).all() or not math.isfinite(width):
            continue
        rc = _to_pixels(points, window)
        if kind == "delete":
            r, c = (math.floor(v + 0.5) for v in rc[0])
            if 0 <= r < shape[0] and 0 <= c < shape[1]:
                edits.append(Edit("delete", np.array([r]), np.array([c])))
            continue
        # Rasterise in the stroke's own box (with room for the brush and the split's band), so
        # a stroke costs its size, not the image's.
        pad = (width if kind == "erase" else 1.0) / 2 + 3
        r0, c0 = (max(math.floor(v - pad), 0) for v in rc.min(axis=0))
        r1, c1 = (min(math.ceil(v + pad) + 1, n) for v, n in zip(rc.max(axis=0), shape))
        if r0 >= r1 or c0 >= c1:
            continue  # wholly outside the image
        out = np.zeros((r1 - r0, c1 - c0), bool)
        local = rc - (r0, c0)
        if kind == "add":
            _fill(out, local)
        else:
            _stroke(out, local, width if kind == "erase" else 1.0)
        if kind == "split":
            out = ndi.binary_dilation(out)  # a 4-connected band: no diagonal step joins the halves
        rows, cols = np.nonzero(out)
        if len(rows):
            edits.append(Edit(kind, rows + r0, cols + c0))
    return edits


def apply_edits(labels: np.ndarray, edits, *, min_area: int = MIN_PIECE_AREA) -> np.ndarray:
    """Apply edits to a label image: :func:`core.objects.edited_labels`, the one rule.

    Kept under this name for the canvas code; see ``edited_labels`` for what each edit does.

    >>> lab = np.zeros((5, 9), np.int32); lab[1:4, 1:8] = 1
    >>> cut = Edit("split", np.arange(5), np.full(5, 4))
    >>> out = apply_edits(lab, [cut], min_area=1)
    >>> int(out.max()), int((out > 0).sum())          # two cells, no pixel lost
    (2, 21)
    """
    return edited_labels(labels, edits, min_area=min_area)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive labels 1..n in order of first appearance (row-major)."""
    relabelled, _, _ = segmentation.relabel_sequential(labels)
    return relabelled.astype(np.int32)


# ---------------------------------------------------------------- what the review compares
# (drawing outlines and adjusting the display live in core.render)

def compare_masks(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Objects that would appear and disappear if ``old`` were replaced by ``new``.

    Returns ``(appeared, disappeared)``: label images (objects 1..n, by
    :func:`core.objects.as_labels`) of the objects of ``new`` that touch no object of ``old``, and
    of ``old`` that touch none of ``new``.

    >>> a = np.zeros((5, 9), bool); a[1:3, 1:3] = True
    >>> b = np.zeros((5, 9), bool); b[1:3, 6:8] = True
    >>> [int(x.max()) for x in compare_masks(a, b)]
    [1, 1]
    """
    def lone(mask, other):
        lab = as_labels(mask).copy()
        hit = np.unique(lab[np.asarray(other) > 0])
        lab[np.isin(lab, hit[hit > 0])] = 0
        return _relabel(lab)

    return lone(new, old), lone(old, new)


def remove_objects(labels: np.ndarray, drop) -> np.ndarray:
    """A copy of a label image without the objects in ``drop`` (rejected in review).

    >>> remove_objects(np.array([[1, 0, 2, 3]]), [2]).tolist()
    [[1, 0, 0, 3]]
    """
    out = np.asarray(labels).copy()
    out[np.isin(out, list(drop))] = 0
    return out


def region_from_objects(objects, shape, scale: float) -> np.ndarray:
    """A region of interest drawn on a canvas that shows the whole image at ``scale`` canvas
    pixels per image pixel: the union of the closed shapes, in full-resolution pixels.

    Raises
    ------
    ValueError
        When nothing closed was drawn.

    >>> square = {"type": "Rect", "left": 2, "top": 2, "width": 4, "height": 4,
    ...           "strokeWidth": 0, "stroke": "#00e040"}
    >>> int(region_from_objects([square], (10, 10), 2.0).sum())
    4
    """
    h, w = int(shape[0]), int(shape[1])
    window = Window(row=0, col=0, height=h, width=w, scale=float(scale))
    region = np.zeros((h, w), bool)
    for edit in objects_to_edits(list(objects or []), window, (h, w)):
        if edit.kind == "add":  # the region tool draws in a colour of its own: every shape adds
            region[edit.rows, edit.cols] = True
    if not region.any():
        raise ValueError("Draw a polygon around the region first: click its corners, then click "
                         "the first corner again to close it.")
    return region
