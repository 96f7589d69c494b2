"""Crop starts (the paper's numbers) and the training config round trip and validation."""
import json

import pytest

from training.config import AugmentConfig, TrainConfig
from training.crops import crop_grid, crop_starts


def test_paper_crop_starts_for_1600x1200():
    assert crop_starts(1600, 512) == [0, 288, 688, 1088]
    assert crop_starts(1200, 512) == [0, 288, 688]
    assert len(crop_grid((1200, 1600), 512)) == 12


@pytest.mark.parametrize("length,crop", [(512, 512), (513, 512), (2000, 512), (160, 64), (97, 32)])
def test_crop_starts_cover_every_pixel(length, crop):
    starts = crop_starts(length, crop)
    assert starts[0] == 0 and starts[-1] == length - crop
    assert starts == sorted(set(starts))
    covered = set()
    for s in starts:
        covered.update(range(s, s + crop))
    assert covered == set(range(length))


def test_short_side_gets_one_crop():
    assert crop_starts(100, 128) == [0]


def test_config_round_trips_through_json():
    cfg = TrainConfig(base_filters=4, epochs=2, augment=AugmentConfig(hue=0.0))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_config_defaults_follow_the_method():
    cfg = TrainConfig()
    assert (cfg.crop_size, cfg.batch_size, cfg.epochs) == (512, 4, 100)
    assert (cfg.plateau_factor, cfg.plateau_patience, cfg.early_stopping_patience) == (0.7, 4, 20)
    assert (cfg.cell_weight, cfg.background_weight, cfg.sigma, cfg.ring) == (1.5, 1.0, 25.0, 50)
    assert cfg.validation_fraction == 0.3


def test_config_rejects_bad_values_with_sentences():
    with pytest.raises(ValueError, match="crop_size must be a positive multiple of 8"):
        TrainConfig(crop_size=100).validate()
    with pytest.raises(ValueError, match="Unknown training setting"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
