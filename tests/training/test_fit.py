"""Fitting: resume continues where the checkpoint left off; cancel stops.

The complete run (threshold, scoring, run directory) is exercised through the worker in
``test_worker.py``.
"""
import pytest

from training.data import CropBatches, prepare, split_samples
from training.fit import Cancelled, fit, load_state

pytestmark = pytest.mark.slow


def _batches(samples, cfg):
    train, val = split_samples(samples, 0.3, cfg.seed)
    return (CropBatches(prepare(train, cfg), cfg, augment=True),
            CropBatches(prepare(val, cfg), cfg, augment=False, shuffle=False))


def test_resume_continues_at_the_next_epoch(samples, tiny_config, tmp_path):
    train, val = _batches(samples, tiny_config)
    first = fit(train, val, tiny_config, tmp_path)
    assert first.resumed_from == 0 and len(first.history) == 1
    state = load_state(tmp_path)
    assert state["epoch"] == 1 and "wait" in state["plateau"] and "wait" in state["early_stopping"]
    longer = tiny_config.with_(epochs=2)
    second = fit(train, val, longer, tmp_path)
    assert second.resumed_from == 1
    assert [row["epoch"] for row in second.history] == [1, 2]
    iterations = int(second.model.optimizer.iterations.numpy())
    assert iterations == 2 * len(train)  # optimizer state carried over, not restarted


def test_cancel_raises_and_keeps_no_partial_epoch(samples, tiny_config, tmp_path):
    train, val = _batches(samples, tiny_config)
    with pytest.raises(Cancelled):
        fit(train, val, tiny_config, tmp_path, should_cancel=lambda: True)
    assert load_state(tmp_path) is None
