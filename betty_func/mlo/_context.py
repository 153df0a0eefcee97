"""What the functions of one global step read (batches, buffers, windows), and the loss call."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import torch

from .. import tree
from .._errors import fail
from ._graph import API, Graph

PyTree = Any


@dataclass(frozen=True)
class Window:
    """An unrolled problem's window taken this step: its start, batches, the RNG state it began
    with, and (eager, when an upper updates in the same step) the pullback of the updates."""
    theta0: PyTree
    state0: PyTree
    batches: tuple
    rng: Any = None
    pullback: Optional[Callable] = None


@dataclass(frozen=True)
class Ctx:
    """What the functions of one global step read: the graph, each problem's batch, the
    problems' buffers, this step's unrolled windows, the data-parallel hook and the optimizer
    states (as of their updates so far this step: methods that read a lower's optimizer, SAMA)
    and the methods' carries (``{lower: {upper: carry}}``, the carry protocol of
    ``hypergrad/_method.py``). Immutable: a function that changes a batch or a buffer passes
    on a new one (``with_batch``)."""
    graph: Graph
    batch: dict
    state: dict = field(default_factory=dict)
    windows: dict = field(default_factory=dict)
    replicate: Any = None  # data parallel: params enter losses through it (see _replicate.py)
    opt_states: dict = field(default_factory=dict)
    carries: dict = field(default_factory=dict)

    def with_batch(self, name: str, batch: Any) -> "Ctx":
        return replace(self, batch={**self.batch, name: batch})


def call_loss(ctx: Ctx, name: str, params: dict) -> tuple[torch.Tensor, dict, Any]:
    """``loss(params[name], batch, **reads)`` split into ``(scalar, metrics, new_state)``, checked
    (``new_state`` is None for problems without state); under bf16/fp16 autocast for a problem
    with ``precision``, its value returned in the params' dtype."""
    p = ctx.graph.problems[name]
    if p.precision is None:
        return _call_loss(ctx, name, params)
    leaf = tree.leaves(params[name])[0]
    dtype = torch.bfloat16 if p.precision == "bf16" else torch.float16
    with torch.autocast(leaf.device.type, dtype=dtype):
        value, metrics, new_state = _call_loss(ctx, name, params)
    return value.to(leaf.dtype), metrics, new_state


def _call_loss(ctx: Ctx, name: str, params: dict) -> tuple[torch.Tensor, dict, Any]:
    p = ctx.graph.problems[name]
    if ctx.replicate is not None:  # one bucketed all-reduce in each derivative of this loss
        used = {n: params[n] for n in (name, *p.reads)}
        params = {**params, **tree.unflatten(tree.structure(used),
                                             ctx.replicate(tree.leaves(used)))}
    kw = {r: params[r] for r in p.reads}
    if p.state is not None:
        out = p.loss(params[name], ctx.batch[name], state=ctx.state[name], **kw)
        if not (isinstance(out, tuple) and len(out) == 3):
            fail(API,
                 f"the loss of '{name}' has state, so it must return (value, metrics, new_state)",
                 type(out).__name__)
        value, metrics, new_state = out
    else:
        out = p.loss(params[name], ctx.batch[name], **kw)
        value, metrics = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
        new_state = None
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        got = (f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
               else type(value).__name__)
        fail(API, f"the loss of '{name}' must return a scalar float tensor or (scalar, metrics)",
             got, "Reduce it with .mean() / .sum().")
    if not isinstance(metrics, dict):
        fail(API, f"the loss of '{name}' returned metrics that are not a dict",
             type(metrics).__name__)
    return value, metrics, new_state


def call_reset(p: Any, theta: PyTree, params: dict) -> PyTree:
    """``p.reset(theta, **reads)``: the start of an inner loop (MAML: the meta-parameters)."""
    return p.reset(theta, **{k: params[k] for k in p.reset_reads})
