"""core.strokes: fabric.js canvas objects -> full-resolution edits -> label image."""
import numpy as np
import pytest
from skimage import draw

from core.strokes import (TOOL_COLORS, Edit, Window, apply_edits, objects_to_edits,
                          region_from_objects, window_at)

ADD, ERASE, DELETE, SPLIT = (TOOL_COLORS[k] for k in ("add", "erase", "delete", "split"))


def _mask(edit, shape):
    m = np.zeros(shape, bool)
    m[edit.rows, edit.cols] = True
    return m


def test_window_whole_image_and_zoom_inside_image():
    w = window_at((1200, 1600), canvas_width=800)
    assert (w.row, w.col, w.height, w.width, w.scale) == (0, 0, 1200, 1600, 0.5)
    assert w.canvas_size == (800, 600)
    z = window_at((1200, 1600), canvas_width=800, zoom=2, center=(600, 800))
    assert (z.row, z.col, z.height, z.width, z.scale) == (300, 400, 600, 800, 1.0)
    corner = window_at((1200, 1600), canvas_width=800, zoom=4, center=(0, 0))
    assert (corner.row, corner.col) == (0, 0)
    with pytest.raises(ValueError):
        window_at((1200, 1600), canvas_width=800, zoom=0.5)


def test_rect_on_magnified_window_maps_to_exact_pixels():
    # canvas x in [40, 80), y in [20, 60) at 4x, window at (100, 200): cols 210..219, rows 105..114
    w = Window(row=100, col=200, height=50, width=50, scale=4.0)
    rect = {"type": "Rect", "left": 40, "top": 20, "width": 40, "height": 40, "strokeWidth": 0,
            "stroke": ADD, "originX": "left", "originY": "top"}
    [e] = objects_to_edits([rect], w, (300, 400))
    m = _mask(e, (300, 400))
    expected = np.zeros_like(m)
    expected[105:115, 210:220] = True
    assert e.kind == "add"
    np.testing.assert_array_equal(m, expected)


def test_stroke_counts_in_fabric_origin_box():
    # fabric measures the box with the stroke: left/top is the stroke's outer corner
    w = Window(row=0, col=0, height=40, width=40, scale=1.0)
    rect = {"type": "Rect", "left": 9, "top": 9, "width": 10, "height": 10, "strokeWidth": 2,
            "stroke": ERASE, "fill": "#fff"}
    [e] = objects_to_edits([rect], w, (40, 40))
    rows, cols = e.rows, e.cols
    # outline centred on x = 10 and 20, 2 px wide: covers 9..20 inclusive
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 20, 9, 20)


def test_polygon_points_are_canvas_coordinates():
    w = Window(row=0, col=0, height=100, width=100, scale=1.0)
    pts = [{"x": 10, "y": 10}, {"x": 30, "y": 10}, {"x": 30, "y": 30}, {"x": 10, "y": 30}]
    poly = {"type": "Polygon", "points": pts, "left": 9.5, "top": 9.5, "width": 20, "height": 20,
            "strokeWidth": 1, "stroke": ADD, "originX": "left", "originY": "top"}
    [e] = objects_to_edits([poly], w, (100, 100))
    assert (e.rows.min(), e.rows.max(), e.cols.min(), e.cols.max()) == (10, 29, 10, 29)
    # moved 5 px right in edit mode: left changes, points do not
    [moved] = objects_to_edits([{**poly, "left": 14.5}], w, (100, 100))
    assert moved.cols.min() == 15 and moved.cols.max() == 34


def test_freehand_path_is_closed_and_filled():
    w = Window(row=0, col=0, height=100, width=100, scale=1.0)
    path = [["M", 20, 20], ["Q", 60, 20, 60, 40], ["L", 60, 60], ["L", 20, 60], ["L", 20, 22]]
    obj = {"type": "Path", "path": path, "left": 19, "top": 19, "width": 40, "height": 40,
           "strokeWidth": 2, "stroke": ADD, "fill": None}
    [e] = objects_to_edits([obj], w, (100, 100))
    m = _mask(e, (100, 100))
    assert m[40, 40] and m[30, 30]          # inside: filled
    assert not m[5, 5] and not m[80, 80]    # outside
    lab = apply_edits(np.zeros((100, 100), np.int32), [e])
    assert lab.max() == 1


def test_line_coordinates_are_relative_to_its_centre():
    # fabric exports a line's x1..y2 around its centre (calcLinePoints)
    w = Window(row=0, col=0, height=50, width=50, scale=1.0)
    line = {"type": "Line", "left": 25, "top": 25, "originX": "center", "originY": "center",
            "x1": 0, "y1": -20, "x2": 0, "y2": 20, "width": 0, "height": 40, "strokeWidth": 3,
            "stroke": SPLIT}
    [e] = objects_to_edits([line], w, (50, 50))
    assert e.kind == "split"
    assert set(np.unique(e.cols)) <= {23, 24, 25, 26}
    assert e.rows.min() <= 5 and e.rows.max() >= 44


def test_point_tool_deletes_the_object_under_the_click():
    # the point tool puts a circle's left edge at x - (radius + stroke/2), originY centre
    lab = np.zeros((60, 60), np.int32)
    lab[draw.disk((20, 20), 6)] = 1
    lab[draw.disk((40, 40), 6)] = 2
    w = Window(row=0, col=0, height=30, width=30, scale=2.0)  # top-left quarter at 2x
    x, y, r, sw = 40.0, 40.0, 3, 20
    point = {"type": "Circle", "left": x - (r + sw / 2), "top": y, "originX": "left",
             "originY": "center", "radius": r, "width": 2 * r, "height": 2 * r,
             "strokeWidth": sw, "stroke": DELETE}
    [e] = objects_to_edits([point], w, lab.shape)
    assert (e.kind, int(e.rows[0]), int(e.cols[0])) == ("delete", 20, 20)
    out = apply_edits(lab, [e])
    # the other cell keeps its label: erasing and deleting never renumber what remains
    assert np.unique(out).tolist() == [0, 2] and out[40, 40] == 2 and out[20, 20] == 0


def test_split_cuts_touching_cells_into_two_labels_that_keep_every_pixel():
    from skimage.measure import label
    mask = np.zeros((40, 60), bool)
    mask[draw.disk((20, 20), 10)] = True
    mask[draw.disk((20, 36), 10)] = True
    assert label(mask).max() == 1
    w = Window(row=0, col=0, height=40, width=60, scale=1.0)
    line = {"type": "Line", "left": 28.5, "top": 20.5, "originX": "center", "originY": "center",
            "x1": -4, "y1": -18, "x2": 4, "y2": 18, "width": 8, "height": 36, "strokeWidth": 2,
            "stroke": SPLIT}
    out = apply_edits(mask, objects_to_edits([line], w, mask.shape))
    assert np.unique(out).tolist() == [0, 1, 2]
    # the line's pixels go back to the pieces: the two cells touch, as they did, in one piece each
    assert ((out > 0) == mask).all()
    assert [label(out == k, connectivity=2).max() for k in (1, 2)] == [1, 1]
    assert out[20, 20] != out[20, 36]


def test_split_line_that_does_not_cross_leaves_object_whole():
    lab = np.zeros((40, 40), np.int32)
    lab[draw.disk((20, 20), 10)] = 1
    cut = Edit("split", np.arange(10, 20), np.full(10, 20))
    out = apply_edits(lab, [cut])
    assert out.max() == 1


def test_add_takes_the_background_it_covers_and_erase_clears():
    lab = np.zeros((30, 30), np.int32)
    lab[5:15, 5:15] = 1
    region = np.zeros_like(lab, bool)
    region[5:15, 10:25] = True
    rr, cc = np.nonzero(region)
    out = apply_edits(lab, [Edit("add", rr, cc)])
    assert out.max() == 2
    assert (out[5:15, 5:15] == 1).all()        # existing object untouched
    assert (out[5:15, 15:25] == 2).all()       # a new label right beside it: no gap needed
    er, ec = np.nonzero(out == 2)
    assert apply_edits(out, [Edit("erase", er, ec)]).max() == 1


def test_edit_order_is_drawing_order_and_input_unchanged():
    lab = np.zeros((20, 20), np.int32)
    rr, cc = np.nonzero(np.pad(np.ones((6, 6), bool), 7))
    added_then_erased = apply_edits(lab, [Edit("add", rr, cc), Edit("erase", rr, cc)])
    erased_then_added = apply_edits(lab, [Edit("erase", rr, cc), Edit("add", rr, cc)])
    assert added_then_erased.max() == 0 and erased_then_added.max() == 1
    assert lab.max() == 0


def test_unknown_object_type_is_a_clear_error():
    w = Window(row=0, col=0, height=10, width=10, scale=1.0)
    with pytest.raises(ValueError, match="not a drawing tool"):
        objects_to_edits([{"type": "Textbox", "text": "hi"}], w, (10, 10))
    with pytest.raises(ValueError, match="Unknown edit"):
        apply_edits(np.zeros((3, 3), np.int32), [Edit("paint", np.array([0]), np.array([0]))])


def test_scaled_and_rotated_rect():
    # a 10x10 rect scaled 2x about its top-left corner, and the same rotated by 90 degrees
    w = Window(row=0, col=0, height=60, width=60, scale=1.0)
    rect = {"type": "Rect", "left": 10, "top": 10, "width": 10, "height": 10, "strokeWidth": 0,
            "scaleX": 2, "scaleY": 2, "stroke": ADD}
    [e] = objects_to_edits([rect], w, (60, 60))
    assert (e.rows.min(), e.rows.max(), e.cols.min(), e.cols.max()) == (10, 29, 10, 29)
    rot = {**rect, "angle": 90, "scaleX": 1, "scaleY": 1}
    [r] = objects_to_edits([rot], w, (60, 60))
    # rotating about the top-left corner by 90 degrees puts the square to the left of it
    assert (r.rows.min(), r.rows.max(), r.cols.min(), r.cols.max()) == (10, 19, 0, 9)


def test_display_helpers_are_not_duplicated_here():
    """Outlines and display adjust live in core.render; the pages use those."""
    import core.render
    import core.strokes

    for name in ("adjust_display", "outline_overlay"):
        assert not hasattr(core.strokes, name), f"core.strokes.{name} duplicates core.render"
    assert callable(core.render.adjust_display) and callable(core.render.draw_outlines)


def test_region_from_objects_maps_a_drawn_rectangle_to_full_resolution():
    rect = {"type": "rect", "left": 10, "top": 5, "width": 20, "height": 10,
            "stroke": TOOL_COLORS["add"], "strokeWidth": 0, "fill": "rgba(0,0,0,0.2)",
            "scaleX": 1, "scaleY": 1, "angle": 0, "originX": "left", "originY": "top"}
    region = region_from_objects([rect], (100, 200), 0.5)   # canvas at half size
    rows, cols = np.nonzero(region)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 29, 20, 59)
    with pytest.raises(ValueError, match="Draw a polygon"):
        region_from_objects([], (100, 200), 0.5)
