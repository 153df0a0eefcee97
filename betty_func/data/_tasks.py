"""N-way K-shot tasks over labelled tensors, batched with a leading task dimension (vmappable)."""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from .._errors import check_nonneg_int, fail


class Tasks(NamedTuple):
    """A batch of tasks: ``support_x`` (T, N*K, ...), ``support_y`` (T, N*K) with labels 0..N-1,
    ``query_x`` (T, N*Q, ...), ``query_y`` (T, N*Q)."""
    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


class TaskSampler:
    """Draw N-way K-shot tasks from the classes ``classes`` of ``(X, y)``.

    Each task picks ``ways`` classes, then ``shots`` support and ``queries`` query examples per
    class without overlap, and relabels the classes 0..N-1 in a random order. ``sample(T, gen)``
    returns :class:`Tasks` with a leading task dimension, so ``torch.vmap`` runs a meta-batch.

    Example:
        >>> import torch
        >>> from betty_func.data import TaskSampler, mnist10k
        >>> X, y = mnist10k()
        >>> t = TaskSampler(X, y, ways=5, shots=1, queries=15, classes=range(5)).sample(
        ...     4, torch.Generator().manual_seed(0))
        >>> tuple(t.support_x.shape), tuple(t.query_y.shape)
        ((4, 5, 784), (4, 75))
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, ways: int, shots: int, queries: int,
                 classes: Optional[Sequence[int]] = None):
        api = "data.TaskSampler(X, y, ways, shots, queries, classes)"
        for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
            if check_nonneg_int(api, name, v) == 0:
                fail(api, f"`{name}` must be >= 1", 0)
        classes = list(range(int(y.max()) + 1)) if classes is None else list(classes)
        if len(classes) < ways:
            fail(api, f"{ways}-way tasks need at least {ways} classes", len(classes))
        self.X, self.ways, self.shots, self.queries = X, ways, shots, queries
        self.by_class = [torch.nonzero(y == c).squeeze(1) for c in classes]
        small = min(len(i) for i in self.by_class)
        if small < shots + queries:
            fail(api, "a class has fewer examples than shots + queries", small)

    def _one(self, gen: torch.Generator) -> tuple:
        chosen = torch.randperm(len(self.by_class), generator=gen)[:self.ways]
        sx, sy, qx, qy = [], [], [], []
        for label, c in enumerate(chosen.tolist()):
            idx = self.by_class[c]
            pick = idx[torch.randperm(len(idx), generator=gen)[:self.shots + self.queries]]
            sx.append(pick[:self.shots])
            qx.append(pick[self.shots:])
            sy += [label] * self.shots
            qy += [label] * self.queries
        dev = self.X.device  # labels where the inputs are (a CUDA X gives CUDA tasks)
        return (self.X[torch.cat(sx)], torch.tensor(sy, device=dev), self.X[torch.cat(qx)],
                torch.tensor(qy, device=dev))

    def sample(self, n_tasks: int, generator: Optional[torch.Generator] = None) -> Tasks:
        gen = generator if generator is not None else torch.Generator().manual_seed(
            int(torch.randint(0, 2 ** 31, ())))
        parts = [self._one(gen) for _ in range(n_tasks)]
        return Tasks(*(torch.stack([p[i] for p in parts]) for i in range(4)))
