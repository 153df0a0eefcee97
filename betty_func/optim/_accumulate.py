"""Gradient accumulation: one update of an optimizer per ``every`` calls, on the mean gradient."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .. import tree
from .._errors import check_positive_int
from ._base import Optimizer, check_optimizer

PyTree = Any


class AccumulateState(NamedTuple):
    """The state of :func:`accumulate`: the wrapped optimizer's state and the running sum."""
    inner: PyTree        #: the wrapped optimizer's state (unchanged between its updates)
    total: PyTree        #: the sum of the gradients since its last update, like params
    seen: torch.Tensor   #: how many gradients ``total`` holds, 0-d int64 (0 to every - 1)


def accumulate(opt: Optimizer, every: int) -> Optimizer:
    r"""``opt`` applied once per ``every`` calls, to the mean of those ``every`` gradients.

    Calls :math:`1 \dots n-1` of a cycle of :math:`n` = ``every`` return zero updates and only
    add the gradient to a running sum (``opt``'s state unchanged); call :math:`n` returns
    :math:`\text{opt}(\tfrac1n \sum_{i=1}^n g_i)` and resets the sum. The choice is a
    ``torch.where`` on a count tensor: no host sync, one graph under ``torch.compile`` (both
    branches are computed, so each call costs one ``opt`` update plus a sum; state: ``opt``'s and
    one buffer like params). ``optim.learning_rate`` reads ``opt``'s rate: the rate of its next
    applied update. ``every == 1`` returns ``opt`` itself.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.accumulate(optim.sgd(1.0), every=2)
        >>> p = torch.zeros(2)
        >>> s = opt.init(p)
        >>> u, s = opt.update(torch.tensor([1.0, 2.0]), s, p)
        >>> u.tolist()
        [0.0, 0.0]
        >>> u, s = opt.update(torch.tensor([3.0, 4.0]), s, p)
        >>> u.tolist()
        [-2.0, -3.0]
    """
    api = "optim.accumulate(opt, every)"
    check_optimizer(api, "opt", opt)
    every = check_positive_int(api, "every", every)
    if every == 1:
        return opt

    def init(params: PyTree) -> AccumulateState:
        return AccumulateState(opt.init(params), tree.zeros_like(params),
                               torch.zeros((), dtype=torch.int64))

    def update(grads: PyTree, state: AccumulateState, params: PyTree = None
               ) -> tuple[PyTree, AccumulateState]:
        total, seen = tree.add(state.total, grads), state.seen + 1
        now = seen == every
        updates, inner = opt.update(tree.map(lambda x: x / every, total), state.inner, params)
        updates = tree.map(lambda u: torch.where(now, u, torch.zeros_like(u)), updates)
        inner = tree.where(now, inner, state.inner)
        total = tree.map(lambda x: torch.where(now, torch.zeros_like(x), x), total)
        return updates, AccumulateState(inner, total, torch.where(now, 0, seen))

    return Optimizer(init, update)
