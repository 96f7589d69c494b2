"""core.polygons: exact pixel-edge outlines, checked against shapely and skimage.draw."""
import numpy as np
import pytest
import shapely
from shapely.geometry import LinearRing, MultiPolygon, Polygon
from skimage import draw

from core.polygons import label_outlines, rasterise, rasterise_labels, signed_area


def _scene():
    """Every hard case in one 40 x 48 label image (values chosen, not consecutive)."""
    lab = np.zeros((40, 48), np.int32)
    lab[2:8, 2:8] = 1                  # two cells sharing an edge
    lab[2:8, 8:12] = 2
    lab[12:15, 2:5] = 3                # touches 4 only at the corner (15, 5)
    lab[15:18, 5:8] = 4
    lab[20, 2] = lab[21, 3] = 5        # one cell of two pixels touching at a corner
    lab[10:30, 20:40] = 6              # a ring...
    lab[14:26, 24:36] = 0
    lab[17:23, 27:33] = 7              # ...with a cell inside its hole
    lab[32:36, 2:6] = 9                # one cell in two pieces
    lab[32:36, 12:16] = 9
    lab[30:37, 40:47] = 11             # a ring whose hole meets the outside only at a corner
    lab[31:36, 41:46] = 0
    lab[30, 40] = 0
    rr, cc = draw.disk((10, 45), 2.6, shape=lab.shape)
    lab[rr, cc] = 65535                # a large label value, a round outline
    return lab


def _shapely(cell):
    """The cell as a shapely MultiPolygon, vertices as (x, y) = (col, row)."""
    return MultiPolygon([Polygon(p.exterior[:, ::-1], [h[:, ::-1] for h in p.holes])
                         for p in cell.parts])


def _centres_inside(geometry, shape):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return shapely.contains_xy(geometry, cols + 0.5, rows + 0.5)


def test_every_cell_rasterises_back_exactly_by_two_routes():
    lab = _scene()
    cells = label_outlines(lab)
    assert sorted(cells) == sorted(set(np.unique(lab)) - {0})
    for value, cell in cells.items():
        truth = lab == value
        assert np.array_equal(rasterise(cell.rings(), lab.shape), truth), value
        geometry = _shapely(cell)
        assert geometry.is_valid, (value, shapely.is_valid_reason(geometry))
        assert geometry.area == truth.sum() == cell.area
        assert np.array_equal(_centres_inside(geometry, lab.shape), truth), value


def test_parts_and_holes_of_the_hard_cases():
    cells = label_outlines(_scene())
    assert cells[1].simple and cells[2].simple and cells[7].simple
    ring = cells[6]
    assert not ring.simple and len(ring.parts) == 1 and len(ring.parts[0].holes) == 1
    # the hole's ring runs around the inner cell: 12 x 12 pixels of background and cell 7
    assert abs(signed_area(ring.parts[0].holes[0])) == 144
    assert [len(p.holes) for p in cells[5].parts] == [0, 0]      # corner touch: two parts
    assert [len(p.holes) for p in cells[9].parts] == [0, 0]
    assert cells[9].area == 32
    assert cells[3].simple and cells[4].simple                   # touching at a corner only
    notch = cells[11]                                            # hole meets outside at a corner
    assert len(notch.parts) == 1 and len(notch.parts[0].holes) == 1


def test_rings_are_simple_and_follow_the_right_hand_rule():
    for cell in label_outlines(_scene()).values():
        for part in cell.parts:
            assert LinearRing(part.exterior[:, ::-1]).is_ccw
            assert LinearRing(part.exterior[:, ::-1]).is_simple
            for hole in part.holes:
                assert not LinearRing(hole[:, ::-1]).is_ccw
                assert LinearRing(hole[:, ::-1]).is_simple


def test_an_l_shape_has_its_six_corners_by_hand():
    lab = np.zeros((4, 4), np.uint8)
    lab[1:3, 1] = 1
    lab[2, 2] = 1
    (cell,) = label_outlines(lab).values()
    assert cell.simple and cell.area == 3
    assert cell.parts[0].exterior.tolist() == [[1, 1], [1, 2], [2, 2], [2, 3], [3, 3], [3, 1]]


def test_random_label_images_round_trip_and_stay_valid():
    rng = np.random.default_rng(7)
    for _ in range(150):
        shape = tuple(rng.integers(3, 14, 2))
        lab = rng.integers(0, 4, shape) * (rng.random(shape) < rng.uniform(0.3, 0.9))
        for value, cell in label_outlines(lab).items():
            assert np.array_equal(rasterise(cell.rings(), shape), lab == value)
            geometry = _shapely(cell)
            assert geometry.is_valid, shapely.is_valid_reason(geometry)
            assert geometry.area == cell.area


def test_bool_masks_are_split_into_8_connected_cells():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = True
    mask[3:, 3:] = True
    cells = label_outlines(mask)
    assert [c.area for c in cells.values()] == [2, 4]


def test_huge_label_values_keep_their_value():
    lab = np.zeros((3, 3), np.uint32)
    lab[0, 0], lab[2, 2] = 4_000_000_000, 7
    assert sorted(label_outlines(lab)) == [7, 4_000_000_000]


def test_rasterise_float_polygons_like_skimage():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        rows, cols = rng.uniform(-3, 23, n), rng.uniform(-3, 33, n)   # may cross itself
        ours = rasterise([np.stack([rows, cols], axis=1)], (20, 30))
        theirs = np.zeros((20, 30), bool)
        rr, cc = draw.polygon(rows - 0.5, cols - 0.5, shape=(20, 30))  # skimage: centres at ints
        theirs[rr, cc] = True
        # skimage decides points on an edge its own way; nothing lands on one at random
        assert np.array_equal(ours, theirs)


def test_rasterise_even_odd_and_clipping():
    outer = np.array([[-5, -5], [-5, 6], [6, 6], [6, -5]])
    inner = np.array([[1, 1], [1, 3], [3, 3], [3, 1]])
    out = rasterise([outer, inner], (4, 4))
    assert out.sum() == 16 - 4 and not out[1:3, 1:3].any()
    assert not rasterise([np.array([[10, 10], [10, 12], [12, 12]])], (4, 4)).any()


def test_centres_on_a_shared_edge_go_to_exactly_one_polygon():
    # both squares' sides run through pixel centres (half-integer corner coordinates)
    a = np.array([[0.5, 0.5], [0.5, 2.5], [2.5, 2.5], [2.5, 0.5]])
    b = a + [0, 2]
    in_a, in_b = rasterise([a], (4, 5)), rasterise([b], (4, 5))
    assert not (in_a & in_b).any()
    assert in_a[:, :2].sum() == 4 and in_a.sum() == 4      # rows 0-1, cols 0-1: left/top kept
    assert in_b[:2, 2:4].all() and in_b.sum() == 4


def test_rasterise_labels_later_cells_win():
    square = np.array([[0, 0], [0, 2], [2, 2], [2, 0]])
    lab = rasterise_labels([[square], [square + 1], [square + 10]], (3, 3))
    assert lab.tolist() == [[1, 1, 0], [1, 2, 2], [0, 2, 2]]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 2, 2), int), "2-D"),
    (np.array([[0, -1]]), "negative"),
    (np.array([[0.0, 1.5]]), "integers"),
])
def test_bad_label_images_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        label_outlines(bad)


def test_rasterise_refuses_non_finite_coordinates():
    with pytest.raises(ValueError, match="not finite"):
        rasterise([np.array([[0, 0], [0, np.nan], [2, 2]])], (4, 4))
