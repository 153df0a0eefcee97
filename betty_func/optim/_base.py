"""The optimizer protocol: an ``(init, update)`` pair over pytrees, pure and out of place.

``state = opt.init(params)``; ``updates, state = opt.update(grads, state, params)``;
``params = apply_updates(params, updates)``. Because nothing is written in place, reverse mode
differentiates straight through a sequence of updates (unrolled hypergradients rely on it).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import math

import torch

from .. import tree
from .._errors import check_number, fail

PyTree = Any
Schedule = Callable[[torch.Tensor], Union[float, torch.Tensor]]
LearningRate = Union[float, Schedule]


class Optimizer(NamedTuple):
    """A functional optimizer (or gradient transformation).

    init(params) -> state
    update(grads, state, params) -> (updates, new_state)
    learning_rate(state) -> the rate the next update will use (None for plain transformations)
    loss_scale(state) -> the factor to multiply the loss by before differentiating (None: 1;
                         see ``loss_scaled``)
    """
    init: Callable[[PyTree], PyTree]
    update: Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree]]
    learning_rate: Optional[Callable[[PyTree], Any]] = None
    loss_scale: Optional[Callable[[PyTree], Any]] = None


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``params + updates`` leafwise (out of place)."""
    return tree.add(params, updates)


def step(opt: Optimizer, params: PyTree, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
    """One optimizer step: ``(new_params, new_state)``."""
    updates, state = opt.update(grads, state, params)
    return apply_updates(params, updates), state


def chain(*transforms: Optimizer) -> Optimizer:
    """Compose transformations left to right, e.g. ``chain(clip_by_global_norm(1.0), sgd(0.1))``."""
    if not transforms:
        fail("optim.chain(*transforms)", "`chain` needs at least one transformation (with none, "
             "the update is the raw gradient, added to the params: ascent)", "chain()",
             "Pass e.g. optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1)).")
    for i, t in enumerate(transforms):
        check_optimizer("optim.chain(*transforms)", f"transforms[{i}]", t)

    def init(params: PyTree) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update(grads: PyTree, state: tuple, params: PyTree = None) -> tuple[PyTree, tuple]:
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    with_rate = [(i, t) for i, t in enumerate(transforms) if t.learning_rate is not None]
    rate = None
    if with_rate:
        i, t = with_rate[-1]
        rate = lambda state: t.learning_rate(state[i])  # noqa: E731
    return Optimizer(init, update, rate)


def count_init() -> torch.Tensor:
    """The step counter every optimizer keeps: a 0-d int64 tensor (no host sync to increment)."""
    return torch.zeros((), dtype=torch.int64)


def scalar_dtype(grads: PyTree) -> torch.dtype:
    """float64 if any leaf is float64, else float32: the precision for step counts and rates."""
    return torch.float64 if any(x.dtype == torch.float64 for x in tree.leaves(grads)) else \
        torch.float32


def lr_at(lr: LearningRate, count: torch.Tensor, dtype: torch.dtype) -> Any:
    """The learning rate for step ``count``: a constant, or ``schedule(count)`` in ``dtype``."""
    if callable(lr):
        return lr(count.to(dtype))
    return lr


def rate_of(lr: LearningRate) -> Callable[[Any], torch.Tensor]:
    """``state -> current learning rate`` (a tensor) for optimizers whose state has ``count``."""
    return lambda state: torch.as_tensor(lr_at(lr, state.count, torch.float64))


def check_lr(api: str, lr: LearningRate) -> None:
    """Raise a clear error for a learning rate that is neither a number >= 0 nor a schedule."""
    if callable(lr):
        return
    fix = "Pass e.g. lr=0.1 or lr=optim.multistep(0.1, [1500, 2500], 0.1)."
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        fail(api, "`lr` must be a number >= 0 or a schedule `step -> lr`",
             f"{type(lr).__name__} {lr!r}", fix, exc=TypeError)
    if not math.isfinite(lr) or lr < 0:
        fail(api, "`lr` must be a finite number >= 0 or a schedule `step -> lr`", repr(lr), fix)


def check_unit(api: str, name: str, value: float, closed: bool = True) -> None:
    """Raise a clear error unless ``0 <= value <= 1`` (``< 1`` when ``closed`` is False)."""
    check_number(api, name, value, 0, 1, open_high=not closed)


def check_optimizer(api: str, name: str, opt: Any) -> None:
    """A ``TypeError`` unless ``opt`` is a betty_func optimizer (not a ``torch.optim`` one)."""
    if not isinstance(opt, Optimizer):
        fail(api, f"`{name}` must be a betty_func.optim optimizer", type(opt).__name__,
             "Pass e.g. optim.sgd(0.1) or optim.adam(1e-3); a torch.optim optimizer mutates "
             "params in place and cannot be differentiated through.", exc=TypeError)
