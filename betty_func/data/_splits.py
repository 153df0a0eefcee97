"""Splits for the tutorials: a long-tailed train set, a balanced meta set, a balanced test set."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._errors import check_positive, fail


class Splits(NamedTuple):
    """What :func:`long_tailed_splits` returns: three disjoint ``(X, y)`` sets and the counts."""
    train: tuple  #: (X, y), long-tailed
    meta: tuple   #: (X, y), balanced
    test: tuple   #: (X, y), balanced, held out
    counts: list  #: train examples per class


def long_tailed_counts(n_max: int, imbalance: float, classes: int, seed: int) -> list:
    """Per-class counts ``n_max * imbalance ** (-rank / (classes - 1))``: the most common class has
    ``imbalance`` times the examples of the rarest; which class gets which rank is shuffled."""
    check_positive("data.long_tailed_counts(n_max, imbalance, ...)", "imbalance", imbalance)
    ranks = torch.randperm(classes, generator=torch.Generator().manual_seed(seed)).tolist()
    return [max(1, round(n_max * imbalance ** (-r / max(classes - 1, 1)))) for r in ranks]


def long_tailed_splits(X: torch.Tensor, y: torch.Tensor, imbalance: float = 100.0,
                       meta_per_class: int = 10, test_per_class: int = 200, seed: int = 0,
                       n_max: Optional[int] = None) -> Splits:
    """Disjoint splits of ``(X, y)``: a balanced test set and a balanced meta set are held out
    per class first, then the train set keeps ``long_tailed_counts`` of the rest.

    Example:
        >>> from betty_func.data import mnist10k, long_tailed_splits
        >>> s = long_tailed_splits(*mnist10k(), imbalance=100, seed=0)
        >>> s.counts, len(s.meta[1]), len(s.test[1])
        ([84, 391, 18, 51, 141, 7, 653, 11, 30, 235], 100, 2000)
    """
    api = "data.long_tailed_splits(X, y, imbalance, meta_per_class, test_per_class, seed)"
    classes = int(y.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(y == c).squeeze(1) for c in range(classes)]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    held = meta_per_class + test_per_class
    room = min(len(idx) for idx in per_class) - held
    if room < 1:
        fail(api, "a class has too few examples for the held-out sets",
             f"smallest class {room + held}, held out {held}", "Lower meta/test_per_class.")
    counts = long_tailed_counts(min(n_max or room, room), imbalance, classes, seed)
    test = torch.cat([idx[:test_per_class] for idx in per_class])
    meta = torch.cat([idx[test_per_class:held] for idx in per_class])
    train = torch.cat([idx[held:held + n] for idx, n in zip(per_class, counts)])
    train = train[torch.randperm(len(train), generator=gen)]
    return Splits((X[train], y[train]), (X[meta], y[meta]), (X[test], y[test]), counts)
