"""Agreement, density, group summaries and doubt: hand-computed values and invariants."""
import math

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from core.density import count_density, count_in_region, polygon_mask, summarize_groups
from core.objects import doubt, object_stats
from core.rater_agreement import bland_altman


def test_bland_altman_by_hand():
    # differences 2, -1, 0, 3 -> mean 1, sample variance (1+4+1+4)/3 = 10/3
    ag = bland_altman([12, 9, 10, 13], [10, 10, 10, 10])
    sd = math.sqrt(10 / 3)
    assert ag.n == 4
    assert ag.bias == pytest.approx(1.0)
    assert ag.sd == pytest.approx(sd)
    assert ag.lower == pytest.approx(1 - 1.96 * sd)
    assert ag.upper == pytest.approx(1 + 1.96 * sd)
    assert ag.mean_abs_difference == pytest.approx(1.5)
    assert ag.means == (11.0, 9.5, 10.0, 11.5)
    assert ag.differences == (2.0, -1.0, 0.0, 3.0)


def test_bland_altman_swapping_raters_mirrors_the_limits():
    a, b = [5, 7, 9, 4], [6, 7, 7, 5]
    ab, ba = bland_altman(a, b), bland_altman(b, a)
    assert ab.bias == pytest.approx(-ba.bias)
    assert ab.lower == pytest.approx(-ba.upper)
    assert ab.sd == pytest.approx(ba.sd)


def test_bland_altman_identical_counts_agree_perfectly():
    ag = bland_altman([3, 4, 5], [3, 4, 5])
    assert (ag.bias, ag.sd, ag.lower, ag.upper) == (0.0, 0.0, 0.0, 0.0)


def test_bland_altman_one_pair_has_no_limits():
    ag = bland_altman([3], [1])
    assert ag.bias == 2.0 and math.isnan(ag.sd) and math.isnan(ag.upper)


@pytest.mark.parametrize("a, b, words", [
    ([1, 2], [1], "paired"),
    ([], [], "No image"),
    ([1, np.nan], [1, 2], "finite"),
])
def test_bland_altman_refuses_bad_input_with_a_sentence(a, b, words):
    with pytest.raises(ValueError, match=words):
        bland_altman(a, b)


def test_density_by_hand():
    # 1600 x 1200 px at 0.5 um: 0.8 mm x 0.6 mm = 0.48 mm²; 24 cells -> 50 per mm²
    assert count_density(24, 1600 * 1200, 0.5) == pytest.approx(50.0)
    assert np.allclose(count_density([24, 48], [1600 * 1200] * 2, 0.5), [50.0, 100.0])
    assert math.isnan(count_density(5, 0, 1.0))
    assert np.isnan(count_density([1, 2], [10, 10], 0)).all()


def test_summarize_groups_by_hand():
    t = pd.DataFrame({"region": ["CA1", "CA1", None, "DG"], "count": [10, 20, 5, 7],
                      "area_px": [1e6, 1e6, 1e6, 2e6]})
    out = summarize_groups(t, "region", pixel_size_um=1.0).set_index("region")
    assert list(out.index) == ["(none)", "CA1", "DG"]
    assert out.loc["CA1", "images"] == 2 and out.loc["CA1", "total"] == 30
    assert out.loc["CA1", "mean"] == 15.0
    assert out.loc["CA1", "sd"] == pytest.approx(math.sqrt(50))
    assert out.loc["CA1", "density_per_mm2"] == pytest.approx(15.0)
    assert out.loc["DG", "density_per_mm2"] == pytest.approx(3.5)
    assert summarize_groups(t, "region")["density_per_mm2"].isna().all()


def test_summarize_groups_names_a_missing_field():
    with pytest.raises(ValueError, match="animal"):
        summarize_groups(pd.DataFrame({"count": [1]}), "animal")
    assert summarize_groups(pd.DataFrame(columns=["animal", "count"]), "animal").empty


def test_object_stats_of_drawn_disks():
    lab = np.zeros((60, 60), np.int32)
    lab[disk((15, 15), 6)] = 3
    lab[disk((40, 45), 9)] = 7
    prob = np.zeros((60, 60), np.uint8)
    prob[lab == 3] = 255
    prob[lab == 7] = 51
    st = object_stats(lab, prob).set_index("label")
    assert list(st.index) == [3, 7]
    assert st.loc[3, "area"] == (lab == 3).sum()
    assert (st.loc[7, "row"], st.loc[7, "col"]) == pytest.approx((40.0, 45.0))
    assert st.loc[3, "mean_prob"] == pytest.approx(1.0)
    assert st.loc[7, "mean_prob"] == pytest.approx(0.2)
    assert object_stats(np.zeros((4, 4), int)).empty
    with pytest.raises(ValueError, match="heatmap"):
        object_stats(lab, prob[:10])


def test_relabelling_never_changes_the_stats():
    lab = np.zeros((30, 30), np.int32)
    lab[disk((8, 8), 4)] = 1
    lab[disk((20, 20), 5)] = 2
    swapped = np.where(lab == 1, 9, np.where(lab == 2, 4, 0))
    a = object_stats(lab).sort_values("area")[["area", "row", "col"]].to_numpy()
    b = object_stats(swapped).sort_values("area")[["area", "row", "col"]].to_numpy()
    assert np.allclose(a, b)


def test_doubt_orders_objects_by_how_unsure_the_model_is():
    d = doubt([0.5, 0.6, 0.9, 0.98, 0.98, np.nan], [100, 100, 100, 100, 25, 100],
              threshold=0.5, typical_area=100)
    assert d[0] == 1.0                      # exactly at the threshold
    assert d[0] > d[1] > d[2] > d[3]        # further from the threshold: surer
    assert d[4] == 1.0                      # four times smaller than usual
    assert d[5] == 0.0                      # no heatmap, usual size: no reason to doubt
    assert ((d >= 0) & (d <= 1)).all()
    with pytest.raises(ValueError, match="threshold"):
        doubt(0.5, 10, threshold=1.2, typical_area=10)


def test_polygon_region_and_counting_inside_it():
    lab = np.zeros((40, 40), np.int32)
    lab[disk((10, 10), 4)] = 1
    lab[disk((10, 30), 4)] = 2
    lab[disk((30, 30), 4)] = 3
    left = polygon_mask(lab.shape, [(0, 0), (0, 19), (39, 19), (39, 0)])
    assert left.sum() == 40 * 20
    assert count_in_region(lab, left) == 1
    assert count_in_region(lab, ~left) == 2                       # the two sides tile the image
    whole = polygon_mask(lab.shape, [(0, 0), (0, 39), (39, 39), (39, 0)])
    assert whole.all() and count_in_region(lab, whole) == 3
    with pytest.raises(ValueError, match="three corners"):
        polygon_mask(lab.shape, [(0, 0), (5, 5)])
    with pytest.raises(ValueError, match="outside"):
        polygon_mask(lab.shape, [(100, 100), (100, 120), (120, 120)])
