"""Adam and AdamW (with optional AMSGrad), matching ``torch.optim.Adam`` / ``AdamW``."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .. import tree
from .._errors import check_nonneg, fail
from ._base import (LearningRate, Optimizer, Schedule, check_lr, check_unit, count_init, hyper_at,
                    in_dtype, lr_value, next_lr, rate_in, scalar_dtype)


class AdamState(NamedTuple):
    """The state of :func:`adam` and :func:`adamw`: the step count, the rate of the next update,
    the first and second moment estimates (pytrees like the params) and AMSGrad's running max."""
    count: torch.Tensor  # type: ignore[assignment]  # a field shadowing tuple.count
    lr: torch.Tensor  #: the rate of the next update, (1,) float64 (``optim.tree_set`` changes it)
    mu: Any  #: first moment estimate, like params
    nu: Any  #: second moment estimate, like params
    nu_max: Any  #: running max of nu (AMSGrad), or None


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) derivative at 0: reverse mode through a step whose gradient is
    exactly zero stays finite (higher #125, TorchOpt #26)."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))),
                       torch.zeros_like(x))


def _adam(api: str, lr: LearningRate, betas: tuple[float | Schedule, float], eps: float,
          weight_decay: float, amsgrad: bool, decoupled: bool) -> Optimizer:
    check_lr(api, lr)
    if not isinstance(betas, (tuple, list)):
        fail(api, "`betas` must be a pair (beta1, beta2)", f"{type(betas).__name__} {betas!r}",
             "Pass e.g. betas=(0.9, 0.999).", exc=TypeError)
    if len(betas) != 2:
        fail(api, "`betas` must be a pair (beta1, beta2)", f"{len(betas)} values {betas!r}",
             "Pass e.g. betas=(0.9, 0.999).")
    b1, b2 = betas
    if not callable(b1):  # a schedule step -> beta1 (torch's OneCycleLR cycles it)
        check_unit(api, "betas[0]", b1, closed=False)
    check_unit(api, "betas[1]", b2, closed=False)
    check_nonneg(api, "eps", eps)
    check_nonneg(api, "weight_decay", weight_decay)

    def init(params: Any) -> AdamState:
        zeros, count = tree.zeros_like, count_init()
        return AdamState(count, lr_value(lr, count), zeros(params),
                         zeros(params), zeros(params) if amsgrad else None)

    def update(grads: Any, state: AdamState, params: Any = None) -> tuple[Any, AdamState]:
        dtype = scalar_dtype(grads)
        rate, t = rate_in(state.lr, dtype), (state.count + 1).to(dtype)
        if weight_decay and not decoupled:
            grads = tree.axpy(weight_decay, params, grads)
        beta1 = hyper_at(b1, state.count)
        mu = tree.map(lambda m, g: torch.lerp(m, g, 1 - in_dtype(beta1, m.dtype)), state.mu, grads)
        nu = tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        nu_max = tree.map(torch.maximum, state.nu_max, nu) if amsgrad else None
        step_size = rate / (1 - in_dtype(beta1, dtype) ** t)
        bc2_sqrt = torch.sqrt(1 - b2 ** t)
        # the 0-d factors in each leaf's dtype: a float64 one would promote a 0-d float32 leaf
        updates = tree.map(lambda m, v: -step_size.to(m.dtype) * m
                           / (_safe_sqrt(v) / bc2_sqrt.to(v.dtype) + eps),
                           mu, nu_max if amsgrad else nu)
        if weight_decay and decoupled:
            decay = rate * weight_decay
            updates = tree.map(lambda u, p: u - decay.to(p.dtype) * p, updates, params)
        count = state.count + 1
        return updates, AdamState(count, next_lr(lr, state.lr, count), mu, nu, nu_max)

    return Optimizer(init, update)


def adam(lr: LearningRate = 1e-3, betas: tuple[float | Schedule, float] = (0.9, 0.999),
         eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False) -> Optimizer:
    r"""Adam (Kingma & Ba, 2015) with L2 weight decay added to the gradient, as
    ``torch.optim.Adam``.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\ v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\
        \theta_{t+1} = \theta_t - \frac{\eta_t}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    Cost: ~10 elementwise ops per leaf; state two (three with AMSGrad) buffers like params.
    ``betas[0]`` may be a schedule ``step -> beta1`` (torch's ``OneCycleLR`` cycles it; the bias
    correction uses the current :math:`\beta_1^t`, as torch does).

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.adam(1e-2)
        >>> p = {"w": torch.zeros(3)}
        >>> p, s = optim.step(opt, p, {"w": torch.ones(3)}, opt.init(p))
        >>> round(float(p["w"][0]), 4)
        -0.01
    """
    return _adam("optim.adam(lr, betas, eps, weight_decay, amsgrad)", lr, betas, eps,
                 weight_decay, amsgrad, decoupled=False)


def adamw(lr: LearningRate = 1e-3, betas: tuple[float | Schedule, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False) -> Optimizer:
    r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled decay
    :math:`\theta \leftarrow \theta - \eta_t\,\text{wd}\,\theta`, as ``torch.optim.AdamW``.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.adamw(1e-2, weight_decay=0.1)
        >>> p = {"w": torch.ones(3)}
        >>> p, s = optim.step(opt, p, {"w": torch.zeros(3)}, opt.init(p))
        >>> round(float(p["w"][0]), 4)
        0.999
    """
    return _adam("optim.adamw(lr, betas, eps, weight_decay, amsgrad)", lr, betas, eps,
                 weight_decay, amsgrad, decoupled=True)
