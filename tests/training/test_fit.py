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


def test_prediction_and_scoring_check_cancel_before_every_image(samples, tiny_config):
    import numpy as np

    from core.model import build_cresunet
    from training.scoring import predict_samples, score_samples, scoring_for

    model, seen = build_cresunet(2), []

    def progress(p):
        seen.append((p["stage"], p["step"]))

    with pytest.raises(Cancelled, match="during threshold after 1 of 6 images"):
        predict_samples(model, samples, stage="threshold", progress=progress,
                        should_cancel=lambda: len(seen) >= 1)
    assert seen == [("threshold", 1)]
    seen.clear()
    params = scoring_for(tiny_config, 0.5)
    with pytest.raises(Cancelled, match="during test after 2 of 6 images"):
        score_samples(model, samples, params, progress=progress,
                      should_cancel=lambda: len(seen) >= 2)
    assert seen == [("test", 1), ("test", 2)]
    answers = iter([False, True])  # from stored heatmaps: the post-processing loop checks too
    heats = [np.zeros(s.labels.shape, np.float32) for s in samples]
    with pytest.raises(Cancelled, match="while scoring after 1 of 6 images"):
        score_samples(None, samples, params, heatmaps=heats, should_cancel=lambda: next(answers))


def test_train_run_honours_a_cancel_during_threshold_tuning(samples, tiny_config, tmp_path):
    from training.fit import train_run

    train, validation = split_samples(samples[:4], 0.3, tiny_config.seed)
    stages = []
    with pytest.raises(Cancelled, match="during threshold after 1 of"):
        train_run(train, validation, samples[4:], tiny_config, tmp_path / "run", manifest={},
                  progress=lambda p: stages.append(p.get("stage")),
                  should_cancel=lambda: "threshold" in stages)
    assert stages.count("threshold") == 1 and "test" not in stages
    # model.onnx is written before tuning: the threshold is tuned on what counting will run.
    assert (tmp_path / "run" / "model.onnx").is_file()
    assert not (tmp_path / "run" / "model.keras").exists()


def test_threshold_tuning_reports_every_step_and_honours_cancel(samples, tiny_config):
    import numpy as np

    from training.scoring import scoring_for, tune_threshold
    from training.tasks import _stage_fraction

    heats = [np.where(s.labels > 0, 0.8, 0.2).astype(np.float32) for s in samples[:2]]
    seen = []
    got = tune_threshold((heats, samples[:2]), ([], []), scoring_for(tiny_config),
                         progress=seen.append)
    steps = len(got["curves"]["validation"]["thresholds"])
    assert [p["step"] for p in seen] == list(range(1, steps + 1))
    assert {(p["stage"], p["steps"]) for p in seen} == {("tuning", steps)}
    fraction, message = _stage_fraction(seen[2])
    assert message == f"Tuning the threshold: step 3/{steps}" and 0.88 < fraction < 0.93
    seen.clear()
    with pytest.raises(Cancelled, match="while tuning the threshold after 2 of"):
        tune_threshold((heats, samples[:2]), ([], []), scoring_for(tiny_config),
                       progress=seen.append, should_cancel=lambda: len(seen) >= 2)
