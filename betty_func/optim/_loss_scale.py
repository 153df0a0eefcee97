"""Dynamic loss scaling for float16 training, as a wrapper around any optimizer."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .. import tree
from .._errors import check_positive, fail
from ._base import Optimizer, check_optimizer, refuse_loss_scaled_inside

PyTree = Any


class LossScaleState(NamedTuple):
    """The scaler's part of :func:`loss_scaled`'s state ``(inner_state, LossScaleState)``."""
    loss_scale: torch.Tensor  #: the factor the loss is multiplied by before differentiation
    good: torch.Tensor        #: finite steps since the scale last changed
    skipped: torch.Tensor     #: steps skipped for non-finite gradients, in total


def loss_scaled(opt: Optimizer, init_scale: float = 2.0 ** 16, growth_interval: int = 2000,
                factor: float = 2.0) -> Optimizer:
    r"""Wrap ``opt`` for gradients of ``scale · loss`` (float16 training).

    ``update`` divides the gradients by the current scale; if any is inf or NaN the step is
    skipped — zero updates, ``opt``'s state unchanged, the scale divided by ``factor``, ``skipped``
    counted — else ``opt`` steps and the scale grows by ``factor`` after ``growth_interval``
    finite steps in a row. All of it with ``torch.where``: no host sync, compiles. The state is
    ``(opt_state, LossScaleState)``; ``optim.loss_scale(state)`` is the factor for the next loss
    (``mlo.Problem(precision="fp16")`` wraps its optimizer with this and applies it). It must
    wrap the whole optimizer: ``loss_scaled(chain(clip_by_global_norm(1.0), adam(1e-3)))``
    (``chain`` and ``sharded`` refuse it inside, where parts would see scaled gradients or skip
    alone).

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.loss_scaled(optim.sgd(0.1), init_scale=8.0)
        >>> s = opt.init(torch.zeros(2))
        >>> u, s = opt.update(torch.tensor([float("inf"), 8.0]), s, torch.zeros(2))
        >>> u.tolist(), float(optim.loss_scale(s)), int(s[1].skipped)
        ([0.0, 0.0], 4.0, 1)
        >>> u, s = opt.update(torch.tensor([4.0, 4.0]), s, torch.zeros(2))   # 4 / 4 = gradient 1
        >>> [round(x, 4) for x in u.tolist()]
        [-0.1, -0.1]
    """
    api = "optim.loss_scaled(opt, init_scale, growth_interval, factor)"
    check_optimizer(api, "opt", opt)
    check_positive(api, "init_scale", init_scale)
    if not factor > 1.0 or not isinstance(growth_interval, int) or growth_interval < 1:
        fail(api, "`factor` must be > 1 and `growth_interval` an int >= 1",
             f"factor={factor}, growth_interval={growth_interval}")

    def init(params: PyTree) -> tuple:
        inner, zero = opt.init(params), torch.zeros((), dtype=torch.int64)
        refuse_loss_scaled_inside(api, "opt", inner)
        return inner, LossScaleState(torch.tensor(float(init_scale)), zero, zero)

    def update(grads: PyTree, state: tuple, params: PyTree = None) -> tuple[PyTree, tuple]:
        inner, s = state
        grads = tree.map(lambda g: g / s.loss_scale.to(g.dtype), grads)
        finite = tree.all_finite(grads)
        grads = tree.map(lambda g: torch.where(finite, g, torch.zeros_like(g)), grads)  # no NaN in
        updates, new_inner = opt.update(grads, inner, params)
        updates = tree.map(lambda u: torch.where(finite, u, torch.zeros_like(u)), updates)
        new_inner = tree.where(finite, new_inner, inner)
        good = torch.where(finite, s.good + 1, torch.zeros_like(s.good))
        grow = good >= growth_interval
        old = s.loss_scale
        scale = torch.where(finite, torch.where(grow, old * factor, old), old / factor)
        good = torch.where(grow, torch.zeros_like(good), good)
        skipped = s.skipped + (~finite).to(s.skipped.dtype)
        return updates, (new_inner, LossScaleState(scale, good, skipped))

    return Optimizer(init, update)
