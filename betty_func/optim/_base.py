"""The optimizer protocol: an ``(init, update)`` pair over pytrees, pure and out of place.

``state = opt.init(params)``; ``updates, state = opt.update(grads, state, params)``;
``params = apply_updates(params, updates)``. Because nothing is written in place, reverse mode
differentiates straight through a sequence of updates (unrolled hypergradients rely on it).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import math

import torch

from .. import tree
from .._errors import check_number, fail
from ._hyper import occurrences

PyTree = Any
Schedule = Callable[[torch.Tensor], Union[float, torch.Tensor]]
LearningRate = Union[float, Schedule]


class Optimizer(NamedTuple):
    """A functional optimizer (or gradient transformation).

    init(params) -> state
    update(grads, state, params) -> (updates, new_state)

    Hyperparameters that change during training live in the state, found by name wherever the
    combinators nest them: ``optim.learning_rate(state)`` (the ``lr`` field: the rate the next
    update will use), ``optim.loss_scale(state)`` (see ``loss_scaled``), ``optim.tree_get`` /
    ``optim.tree_set`` for any field.
    """
    init: Callable[[PyTree], PyTree]
    update: Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree]]


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
        states = tuple(t.init(params) for t in transforms)
        for i, s in enumerate(states):
            refuse_loss_scaled_inside("optim.chain(*transforms)", f"transforms[{i}]", s)
        return states

    def update(grads: PyTree, state: tuple, params: PyTree = None) -> tuple[PyTree, tuple]:
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return Optimizer(init, update)


def refuse_loss_scaled_inside(api: str, name: str, state: PyTree) -> None:
    """A ``loss_scaled`` optimizer must wrap the whole optimizer: inside ``chain`` the transforms
    before it would see scaled gradients (and those after it would step on a skipped update),
    inside ``sharded`` each rank would test only its slice for overflow and skip alone."""
    if next(occurrences(state, "loss_scale"), None) is not None:
        fail(api, f"`{name}` is a loss_scaled optimizer, which must wrap the whole optimizer "
             "(here other parts would see scaled gradients, or skip on their own)", name,
             "Put it outermost: optim.loss_scaled(optim.chain(optim.clip_by_global_norm(1.0), "
             "optim.sharded(optim.adam(1e-3)))).")


def count_init() -> torch.Tensor:
    """The step counter every optimizer keeps: a 0-d int64 tensor (no host sync to increment)."""
    return torch.zeros((), dtype=torch.int64)


def scalar_dtype(grads: PyTree) -> torch.dtype:
    """float64 if any leaf is float64, else float32: the precision for step counts and rates."""
    return torch.float64 if any(x.dtype == torch.float64 for x in tree.leaves(grads)) else \
        torch.float32


def lr_value(lr: LearningRate, count: torch.Tensor) -> torch.Tensor:
    """The rate of update ``count`` (0-based) as a float64 tensor of shape (1,): the number
    ``lr``, or ``lr(count)`` for a schedule, evaluated in float64 as torch's schedulers do in
    Python. Optimizers keep it in their state's ``lr`` field: at ``init`` the rate of update 0,
    after each update the rate of the next, and read it with :func:`rate_in`. Shape (1,), not
    0-d: torch.compile (2.13) restarts its whole analysis for each 0-d float64 CPU tensor among
    a graph's inputs (it takes them for wrapped Python floats), doubling compile times."""
    value = lr(count.to(torch.float64)) if callable(lr) else lr
    return torch.as_tensor(value, dtype=torch.float64).reshape(1)


def rate_in(field: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An ``lr`` field as a 0-d tensor of ``dtype`` (cast as a Python float is when it meets a
    tensor of that dtype; a float64 0-d tensor meeting a 0-d float32 leaf would promote it)."""
    return field[0].to(dtype)


def next_lr(lr: LearningRate, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The ``lr`` field after an update: a schedule's value at the new ``count``; for a constant,
    the current field as it is (so a rate set by ``optim.tree_set`` stays)."""
    return lr_value(lr, count) if callable(lr) else current


def hyper_at(value: LearningRate, count: torch.Tensor) -> Union[float, torch.Tensor]:
    """A hyperparameter other than the rate (SGD's momentum, Adam's beta1) at update ``count``:
    the number itself, or a schedule's value as a 0-d float64 tensor (torch's ``OneCycleLR``
    cycles momentum). Cast it to a leaf's dtype with :func:`in_dtype`."""
    if not callable(value):
        return value
    return torch.as_tensor(value(count.to(torch.float64)), dtype=torch.float64).reshape(())


def in_dtype(value: Union[float, torch.Tensor], dtype: torch.dtype) -> Union[float, torch.Tensor]:
    """A number as it is, a 0-d tensor cast to ``dtype`` (as torch casts a Python scalar)."""
    return value.to(dtype) if isinstance(value, torch.Tensor) else value


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
