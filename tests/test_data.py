"""Tests of devvis.data: SyntheticShapes determinism, balance, ranges, class content; loaders; probes."""

from __future__ import annotations

import pytest
import torch

from devvis.data import CLASSES, SyntheticShapes, make_loaders, num_classes, probe_batch
from devvis.errors import ConfigError


def test_sample_shape_dtype_range():
    ds = SyntheticShapes(n=2 * num_classes, size=40, seed=3)
    x, y = ds.tensors()
    assert x.shape == (2 * num_classes, 3, 40, 40)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # Not degenerate: every image has contrast.
    assert bool((x.flatten(1).std(1) > 0.02).all())
    img, label = ds[5]
    assert img.shape == (3, 40, 40) and isinstance(label, int) and label == 5


def test_deterministic_per_index_and_order_independent():
    a = SyntheticShapes(n=50, seed=7)
    b = SyntheticShapes(n=50, seed=7)
    # Reading index 31 first, cold, gives the same tensor as reading it after others.
    first = b[31][0]
    _ = [a[i] for i in range(31)]
    assert torch.equal(a[31][0], first)
    assert torch.equal(a.tensors(10, 20)[0], torch.stack([b[i][0] for i in range(10, 20)]))
    # A longer data set with the same seed shares its prefix.
    assert torch.equal(SyntheticShapes(n=500, seed=7)[31][0], first)


def test_different_seed_and_split_differ():
    x0 = SyntheticShapes(n=12, seed=0).tensors()[0]
    x1 = SyntheticShapes(n=12, seed=1).tensors()[0]
    xt = SyntheticShapes(n=12, seed=0, split="test").tensors()[0]
    for other in (x1, xt):
        per_image = (x0 - other).abs().flatten(1).mean(1)
        assert bool((per_image > 0.01).all())


def test_classes_balanced():
    n = 10 * num_classes + 5
    _, y = SyntheticShapes(n=n, seed=0).tensors()
    counts = torch.bincount(y, minlength=num_classes)
    assert counts.min() >= n // num_classes and counts.max() <= n // num_classes + 1
    assert int(counts.sum()) == n


@pytest.mark.parametrize("name,channel", [("red blob", 0), ("green blob", 1), ("blue blob", 2)])
def test_colour_class_has_dominant_channel(name, channel):
    label = CLASSES.index(name)
    ds = SyntheticShapes(n=20 * num_classes, seed=0)
    x = torch.stack([ds[i][0] for i in range(label, len(ds), num_classes)])
    # Compare each image's most saturated pixels: the blob centre dominates there.
    sat = x.max(1).values - x.min(1).values  # (N, H, W)
    idx = sat.flatten(1).argmax(1)
    centre = x.flatten(2)[torch.arange(len(x)), :, idx]  # (N, 3)
    assert bool((centre.argmax(1) == channel).all())
    others = [c for c in range(3) if c != channel]
    assert float(centre[:, channel].mean()) > float(centre[:, others].mean()) + 0.3


def test_shape_classes_are_achromatic():
    # Shapes must not be identifiable by colour: channel means stay close on average.
    ds = SyntheticShapes(n=20 * num_classes, seed=0)
    for name in ("circle", "square", "triangle", "cross"):
        label = CLASSES.index(name)
        x = torch.stack([ds[i][0] for i in range(label, len(ds), num_classes)])
        m = x.mean((0, 2, 3))
        assert float(m.max() - m.min()) < 0.05, (name, m)


def test_gratings_are_oriented():
    # Horizontal stripes vary along y (rows), vertical ones along x (columns).
    ds = SyntheticShapes(n=20 * num_classes, seed=0)

    def grad_energy(label):
        x = torch.stack([ds[i][0] for i in range(label, len(ds), num_classes)]).mean(1)
        gy = (x[:, 1:, :] - x[:, :-1, :]).pow(2).mean()
        gx = (x[:, :, 1:] - x[:, :, :-1]).pow(2).mean()
        return float(gy), float(gx)

    gy, gx = grad_energy(CLASSES.index("horizontal grating"))
    assert gy > 2 * gx
    gy, gx = grad_energy(CLASSES.index("vertical grating"))
    assert gx > 2 * gy


def test_make_loaders_and_probe_batch():
    train, test = make_loaders(batch_size=8, n_train=24, n_test=16, size=32, seed=0)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    assert len(train.dataset) == 24 and len(test.dataset) == 16
    # Shuffling is seeded: two loaders built alike yield the same first batch.
    x2, y2 = next(iter(make_loaders(batch_size=8, n_train=24, n_test=16, size=32, seed=0)[0]))
    assert torch.equal(y, y2) and torch.equal(x, x2)
    p = probe_batch(6, size=32, seed=0)
    assert p.shape == (6, 3, 32, 32) and torch.equal(p, probe_batch(6, size=32, seed=0))
    # Probe images are held out: not the training or test images at the same index.
    assert not torch.equal(p[0], SyntheticShapes(1, 32, 0, "train")[0][0])
    assert not torch.equal(p[0], SyntheticShapes(1, 32, 0, "test")[0][0])


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="unknown split 'tets'.*did you mean 'test'"):
        SyntheticShapes(n=4, split="tets")
    with pytest.raises(ConfigError, match="image size .* got 8"):
        SyntheticShapes(n=4, size=8)
    with pytest.raises(ConfigError, match="non-negative integer; got -1"):
        SyntheticShapes(n=-1)
    with pytest.raises(IndexError):
        SyntheticShapes(n=4)[4]


def test_curriculum_phases_and_pools():
    from devvis.data.synthetic import CURRICULUM_PHASES, Curriculum

    c = Curriculum.build(300)
    assert c.starts == (0, 100, 200) and c.boundaries == [100, 200]
    assert c.classes_at(0) == c.classes_at(99) == CURRICULUM_PHASES["colour"]
    assert set(c.classes_at(100)) == set(CURRICULUM_PHASES["colour"] + CURRICULUM_PHASES["shape"])
    assert len(c.classes_at(299)) == 10  # the two conjunction classes are never trained
    labels = torch.arange(24) % num_classes
    assert set(labels[c.pool(5, labels)].tolist()) == {0, 1, 2}
    assert Curriculum.build(90, {"shape": 10, "texture": 50}) == Curriculum.build(90, (10, 50)) == Curriculum((0, 10, 50))
    assert [p["name"] for p in c.to_dict()["phases"]] == ["colour", "shape", "texture"]
    for bad in [(50, 10), (10,), {"shape": 10}, "yes", (10, 300)]:
        with pytest.raises(ConfigError):
            Curriculum.build(300, bad)
