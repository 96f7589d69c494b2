"""Training data: per-source split, batch shapes, determinism, oversampling."""
import dataclasses

import numpy as np

from training.data import CropBatches, Sample, prepare, split_samples


def test_split_is_per_source_image_and_seeded(samples):
    # Two entries of the same source must land on the same side.
    doubled = samples + [dataclasses.replace(s) for s in samples[:3]]
    train, val = split_samples(doubled, 0.3, seed=5)
    assert {s.key for s in train}.isdisjoint({s.key for s in val})
    assert len({s.key for s in val}) == 2
    again = split_samples(doubled, 0.3, seed=5)
    assert [s.key for s in again[1]] == [s.key for s in val]


def test_batches_have_the_loss_layout(samples, tiny_config):
    batches = CropBatches(prepare(samples[:2], tiny_config), tiny_config, augment=True)
    x, y = batches[0]
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.float32
    assert y.shape == (4, 64, 64, 2) and y.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y[..., 0]).tolist()) <= {0.0, 1.0}
    assert y[..., 1].min() >= 1.0  # background weight 1, cells 1.5, gaps more


def test_batch_depends_only_on_seed_epoch_and_index(samples, tiny_config):
    a = CropBatches(prepare(samples[:2], tiny_config), tiny_config, augment=True)
    b = CropBatches(prepare(samples[:2], tiny_config), tiny_config, augment=True)
    a.set_epoch(3)
    b.set_epoch(3)
    _ = b[1]  # order of requests must not matter (worker threads fetch out of order)
    assert all(np.array_equal(p, q) for p, q in zip(a[0], b[0]))
    b.set_epoch(4)
    assert not np.array_equal(a[0][0], b[0][0])


def test_oversampling_repeats_flagged_images(samples, tiny_config):
    flagged = [dataclasses.replace(samples[0], manual=True), samples[1]]
    batches = CropBatches(prepare(flagged, tiny_config), tiny_config, augment=False)
    counts = np.bincount(batches.entries[:, 0])
    assert counts[0] == tiny_config.oversample_manual * counts[1]


def test_weight_maps_are_cached_on_disk(samples, tiny_config, tmp_path):
    first = prepare(samples[:1], tiny_config, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("weights-*.npy"))) == 1
    second = prepare(samples[:1], tiny_config, cache_dir=tmp_path)
    assert np.array_equal(first[0].weights, second[0].weights)


def test_touching_cells_are_parted_in_the_target_and_the_border_weighs_most(tiny_config):
    """Two labels that touch: the target has a background line between them, and that line
    carries both cells' weight (more than background beside one cell)."""
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:30] = 1
    labels[10:30, 30:50] = 2  # touching along column 29/30
    rgb = np.zeros((40, 60, 3), np.uint8)
    (prepared,) = prepare([Sample("touch", rgb, labels)], tiny_config, oversample=False)
    mask, weights = prepared.mask[:40, :60], prepared.weights[:40, :60]
    assert not mask[10:30, 29].any() and mask[10:30, 30].all() and mask[10:30, 28].all()
    assert weights[20, 29] > weights[20, 5] and weights[20, 29] > weights[5, 20]
