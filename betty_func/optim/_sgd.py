"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .. import tree
from .._errors import check_nonneg, fail
from ._base import (LearningRate, Optimizer, Schedule, check_lr, check_unit, count_init, hyper_at,
                    in_dtype, lr_value, next_lr, rate_in)


class SgdState(NamedTuple):
    """The state of :func:`sgd`: the step count, the rate of the next update and the momentum
    buffer."""
    count: torch.Tensor  # type: ignore[assignment]  # a field shadowing tuple.count
    lr: torch.Tensor  #: the rate of the next update, (1,) float64 (``optim.tree_set`` changes it)
    momentum: Any  #: pytree like params, or None when momentum == 0


def sgd(lr: LearningRate, momentum: float | Schedule = 0.0, dampening: float = 0.0,
        nesterov: bool = False, weight_decay: float = 0.0) -> Optimizer:
    r"""SGD, step for step the same arithmetic as ``torch.optim.SGD``.

    .. math::
        d_t = g_t + \text{wd}\,\theta_t,\quad
        b_t = \begin{cases} d_t & t = 0 \\ \mu b_{t-1} + (1-\tau) d_t & t > 0\end{cases},\quad
        \theta_{t+1} = \theta_t - \eta_t\,(d_t + \mu b_t \text{ if nesterov else } b_t)

    Cost: a few elementwise ops per leaf; state is one buffer when ``momentum > 0``.
    ``momentum`` may be a schedule ``step -> mu`` like ``lr`` (:math:`\mu_t` above; torch's
    ``OneCycleLR`` cycles it): it should stay > 0 (torch skips the buffer at 0, this does not).

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.sgd(0.1, momentum=0.9)
        >>> p = {"w": torch.ones(2)}
        >>> p, s = optim.step(opt, p, {"w": torch.ones(2)}, opt.init(p))
        >>> p["w"]
        tensor([0.9000, 0.9000])
    """
    api = "optim.sgd(lr, momentum, dampening, nesterov, weight_decay)"
    check_lr(api, lr)
    if not callable(momentum):
        check_unit(api, "momentum", momentum, closed=False)
    check_unit(api, "dampening", dampening)
    check_nonneg(api, "weight_decay", weight_decay)
    if nesterov and ((not callable(momentum) and momentum <= 0) or dampening != 0):
        fail(api, "Nesterov momentum needs momentum > 0 and dampening == 0",
             f"momentum={momentum}, dampening={dampening}")

    def init(params: Any) -> SgdState:
        buf = tree.zeros_like(params) if momentum else None
        count = count_init()
        return SgdState(count, lr_value(lr, count), buf)

    def update(grads: Any, state: SgdState, params: Any = None) -> tuple[Any, SgdState]:
        if weight_decay:
            grads = tree.axpy(weight_decay, params, grads)
        buf = state.momentum
        if momentum:
            first, mu = state.count == 0, hyper_at(momentum, state.count)
            buf = tree.map(lambda b, d: torch.where(
                first, d, in_dtype(mu, d.dtype) * b + (1 - dampening) * d), buf, grads)
            grads = tree.map(lambda b, d: in_dtype(mu, d.dtype) * b + d, buf, grads) \
                if nesterov else buf
        count = state.count + 1
        updates = tree.map(lambda g: -rate_in(state.lr, g.dtype) * g, grads)
        return updates, SgdState(count, next_lr(lr, state.lr, count), buf)

    return Optimizer(init, update)
