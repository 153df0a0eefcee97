"""Batches as Betty draws them: each loader cycled forever (a new iterator when one is spent),
a tuple of loaders giving a tuple batch, every tensor moved to the problem's device."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.utils._pytree as pytree

from .._errors import fail

API = "betty.Engine(...)"


class Feed:
    """The batches of one problem's ``train_data_loader`` (a loader or any re-iterable; a tuple
    of them for several)."""

    def __init__(self, name: str, loaders: Any, device: Any):
        self.name, self.device = name, device
        self.loaders = loaders if isinstance(loaders, tuple) else (loaders,)
        for loader in self.loaders:
            if not isinstance(loader, Iterable) or isinstance(loader, Iterator):
                what = "a one-shot iterator (it cannot be cycled)" if isinstance(
                    loader, Iterator) else "not iterable"
                fail(API, f"train_data_loader of '{name}' is {what}", type(loader).__name__,
                     "Pass a DataLoader or another re-iterable of batches (a list), or a tuple "
                     "of them.", exc=TypeError)
        self.iterators: list = [None] * len(self.loaders)

    def _next(self, i: int) -> Any:
        if self.iterators[i] is None:
            self.iterators[i] = iter(self.loaders[i])
        try:
            return next(self.iterators[i])
        except StopIteration:
            self.iterators[i] = iter(self.loaders[i])
            try:
                return next(self.iterators[i])
            except StopIteration:
                fail(API, f"train_data_loader of '{self.name}' yields no batch", "an empty "
                     "loader", "Pass a non-empty one (drop_last=True with fewer examples than "
                     "batch_size gives none).")

    def next(self) -> Any:
        out = tuple(to_device(self._next(i), self.device) for i in range(len(self.loaders)))
        return out[0] if len(out) == 1 else out


def to_device(batch: Any, device: Any) -> Any:
    """``batch`` with every tensor on ``device`` (nested tuples, lists and dicts)."""
    if device is None:
        return batch
    return pytree.tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, batch)
