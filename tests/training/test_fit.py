"""Fitting: a one-epoch run writes a complete run dir; resume continues; cancel stops."""
import json

import pytest

from training.data import CropBatches, prepare, split_samples
from training.fit import Cancelled, fit, load_state, train_run

pytestmark = pytest.mark.slow


def _batches(samples, cfg):
    train, val = split_samples(samples, 0.3, cfg.seed)
    return (CropBatches(prepare(train, cfg), cfg, augment=True),
            CropBatches(prepare(val, cfg), cfg, augment=False, shuffle=False))


def test_one_epoch_run_writes_a_complete_run_dir(samples, tiny_config, tmp_path):
    train, val = split_samples(samples[:4], 0.3, 0)
    seen = []
    out = train_run(train, val, samples[4:], tiny_config, tmp_path / "run",
                    manifest={"train": [s.key for s in train]}, progress=seen.append)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.keras", "config.json", "thresholds.json", "metrics.json", "manifest.json",
            "history.csv", "checkpoint"} <= names
    thresholds = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    assert thresholds["chosen"] == thresholds["best"]
    assert out.metrics["n_images"] == 2 and len(out.results) == 2
    assert {p["stage"] for p in seen} >= {"train", "threshold", "test"}
    assert any("seconds_left" in p for p in seen)


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
