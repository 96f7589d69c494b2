"""The CPU time estimate of a run (training.estimate): hand-counted crops and scaled steps."""
import pytest

from training.config import TrainConfig
from training.estimate import LONG_RUN_S, estimate_training, quick_config, step_seconds


def test_step_scales_with_batch_crop_area_and_width_squared():
    ref = step_seconds(TrainConfig())
    assert ref == pytest.approx(2.54)
    assert step_seconds(TrainConfig(batch_size=8)) == pytest.approx(2 * ref)
    assert step_seconds(TrainConfig(crop_size=256)) == pytest.approx(ref / 4)
    assert step_seconds(TrainConfig(base_filters=32)) == pytest.approx(4 * ref)


def test_crops_repeats_validation_share_and_cap_count_by_hand():
    # A 600x800 image at 512 px crops: rows start 0 and 88, columns 0 and 288 -> 4 crops.
    # One hand-segmented image repeats 10x: 40 + 3 x 4 = 52 crops; a quarter of 4 images (one)
    # is held out, so 52 x 3/4 = 39 crops -> 10 batches of 4.
    images = [(600, 800, False, True), (600, 800), (600, 800), (600, 800)]
    est = estimate_training(TrainConfig(validation_fraction=0.25, epochs=3), images)
    assert est.steps_per_epoch == 10
    assert est.seconds == pytest.approx(3 * 10 * 2.54)
    capped = estimate_training(TrainConfig(validation_fraction=0.25, steps_per_epoch=7), images)
    assert capped.steps_per_epoch == 7


def test_the_papers_settings_are_long_and_the_quick_preset_is_short():
    images = [(1200, 1600)] * 20
    assert estimate_training(TrainConfig(), images).seconds > LONG_RUN_S
    quick = estimate_training(quick_config(TrainConfig()), images)
    assert not quick.long and quick.seconds == pytest.approx(20 * 40 * 2.54 / 16)


def test_no_images_no_steps():
    assert estimate_training(TrainConfig(), []).seconds == 0.0
