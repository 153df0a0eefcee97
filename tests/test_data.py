"""Offline data: bundled digits, long-tailed splits, task sampler, loaders for a user's disk."""
import pickle

import numpy as np
import pytest
import torch

from _idx import write_idx
from betty_func.data import (TaskSampler, load_cifar10, load_mnist, long_tailed_counts,
                             long_tailed_splits, mnist10k)


def test_long_tailed_splits_are_disjoint_balanced_and_long_tailed():
    X, y = mnist10k()
    s = long_tailed_splits(X, y, imbalance=100, meta_per_class=10, test_per_class=200, seed=3)
    assert torch.equal(torch.bincount(s.meta[1], minlength=10), torch.full((10,), 10))
    assert torch.equal(torch.bincount(s.test[1], minlength=10), torch.full((10,), 200))
    counts = torch.bincount(s.train[1], minlength=10).tolist()
    assert counts == s.counts and 90 <= max(counts) / min(counts) <= 110
    rows = lambda t: {tuple(r) for r in t[0].mul(255).round().to(torch.int64).tolist()}  # noqa
    # no image is in two splits (MNIST has a few duplicate images; allow none here)
    assert not (rows(s.train) & rows(s.test)) and not (rows(s.meta) & rows(s.test))
    other = long_tailed_splits(X, y, imbalance=100, seed=4)
    assert other.counts != s.counts  # the class order is shuffled per seed


def test_long_tailed_counts_and_errors():
    assert sorted(long_tailed_counts(100, 10.0, 3, seed=0)) == [10, 32, 100]
    X, y = mnist10k()
    with pytest.raises(ValueError, match=r"a class has too few examples for the held-out sets"):
        long_tailed_splits(X, y, test_per_class=900)


def test_task_sampler_shapes_labels_and_disjointness():
    X, y = mnist10k()
    sampler = TaskSampler(X, y, ways=5, shots=2, queries=3, classes=[5, 6, 7, 8, 9])
    t = sampler.sample(8, torch.Generator().manual_seed(0))
    assert t.support_x.shape == (8, 10, 784) and t.query_x.shape == (8, 15, 784)
    for i in range(8):
        assert sorted(t.support_y[i].tolist()) == sorted([0, 1, 2, 3, 4] * 2)
        sup = {tuple(r) for r in t.support_x[i].tolist()}
        assert not sup & {tuple(r) for r in t.query_x[i].tolist()}
        # every support image of label k has the same original class as the queries of label k
        for k in range(5):
            orig = lambda imgs: {int(y[(X == im).all(1)][0]) for im in imgs}  # noqa: E731
            assert (orig(t.support_x[i][t.support_y[i] == k])
                    == orig(t.query_x[i][t.query_y[i] == k]))
            assert orig(t.support_x[i][t.support_y[i] == k]) <= {5, 6, 7, 8, 9}
    same = sampler.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(same.query_x, t.query_x)
    # a batch of tasks is vmappable: per-task class means of the support set
    means = torch.vmap(lambda sx, sy: torch.stack([sx[sy == k].mean(0) for k in range(5)]))
    with pytest.raises(Exception):  # data-dependent masks do not vmap ...
        means(t.support_x, t.support_y)
    onehot = torch.nn.functional.one_hot(t.support_y, 5).float()  # ... the vmappable form does
    proto = torch.vmap(lambda sx, oh: oh.T @ sx / oh.sum(0)[:, None])(t.support_x, onehot)
    assert proto.shape == (8, 5, 784)


def test_task_sampler_errors():
    X, y = mnist10k()
    with pytest.raises(ValueError, match=r"5-way tasks need at least 5 classes\. Got 3"):
        TaskSampler(X, y, ways=5, shots=1, queries=1, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"`shots` must be >= 1"):
        TaskSampler(X, y, ways=2, shots=0, queries=1)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_a_fake_torchvision_folder(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, (7, 28, 28))
    labels = np.arange(7) % 10
    ext = ".gz" if gz else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{ext}", imgs, gz)
    write_idx(raw / f"t10k-labels-idx1-ubyte{ext}", labels, gz)
    X, y = load_mnist(tmp_path, train=False)
    assert X.shape == (7, 784) and torch.equal(y, torch.from_numpy(labels))
    assert torch.allclose(X * 255, torch.from_numpy(imgs.reshape(7, -1)).float())
    with pytest.raises(FileNotFoundError, match=r"data\.load_mnist\(root, train\): no file at "
                                                r"'.*train-images-idx3-ubyte'"):
        load_mnist(tmp_path, train=True)


def test_load_cifar10_from_a_fake_torchvision_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, (4, 3072)).astype(np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": [3, 1, 4, 1]}, f)
    X, y = load_cifar10(tmp_path, train=False)
    assert X.shape == (4, 3, 32, 32) and y.tolist() == [3, 1, 4, 1]
    assert torch.allclose(X[2] * 255, torch.from_numpy(data[2].reshape(3, 32, 32)).float())
    with pytest.raises(FileNotFoundError, match=r"no file at '.*data_batch_1'"):
        load_cifar10(tmp_path, train=True)
