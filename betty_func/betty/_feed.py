"""Batches as Betty draws them: each loader cycled forever (a new iterator when one is spent),
a tuple of loaders giving a tuple batch, every tensor moved to the problem's device."""
from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from ..mlo._data import generators


class Feed:
    """The batches of one problem's ``train_data_loader`` (a loader or any re-iterable; a tuple
    of them for several)."""

    def __init__(self, name: str, loaders: Any, device: Any):
        self.name, self.device = name, device
        self.loaders = loaders if isinstance(loaders, tuple) else (loaders,)
        self.iterators: list = [None] * len(self.loaders)
        self.epochs = [0] * len(self.loaders)

    def _next(self, i: int) -> Any:
        if self.iterators[i] is None:
            self.iterators[i] = iter(self.loaders[i])
        try:
            return next(self.iterators[i])
        except StopIteration:
            self.epochs[i] += 1
            self.iterators[i] = iter(self.loaders[i])
            try:
                return next(self.iterators[i])
            except StopIteration:
                raise ValueError(f"train_data_loader of '{self.name}' yields no batch. Got an "
                                 "empty loader. Pass a non-empty one.") from None

    def next(self) -> Any:
        out = tuple(to_device(self._next(i), self.device) for i in range(len(self.loaders)))
        return out[0] if len(out) == 1 else out

    def peek(self) -> Any:
        """The batch :meth:`next` will give first, without moving (fresh iterators, the RNG and
        the loaders' generators restored)."""
        kept = [(g, g.get_state()) for loader in self.loaders for g in generators(loader)]
        with torch.random.fork_rng():
            try:
                out = tuple(to_device(next(iter(loader)), self.device)
                            for loader in self.loaders)
            finally:
                for g, s in kept:
                    g.set_state(s)
        return out[0] if len(out) == 1 else out


def to_device(batch: Any, device: Any) -> Any:
    """``batch`` with every tensor on ``device`` (nested tuples, lists and dicts)."""
    if device is None:
        return batch
    return pytree.tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, batch)
