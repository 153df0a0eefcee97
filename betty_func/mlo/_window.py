"""Unrolled windows: a lower's ``unroll_steps`` updates run once, differentiably, inside ``vjp``.

The uppers reuse the pullback, so the updates are not run twice. Inside another level's
transform (nested) a window is recomputed so that it can be differentiated again.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.func import vjp

from .. import optim, tree
from .._errors import fail
from . import _total_grad
from ._context import StepContext, Window, call_reset
from ._graph import API

PyTree = Any


def run(ctx: StepContext, name: str, theta: PyTree, state: PyTree, batches: list, x: dict,
        params: dict) -> tuple[PyTree, PyTree]:
    """``len(batches)`` differentiable updates of ``name`` (reset first, project after each)."""
    p = ctx.graph.problems[name]
    merged = {**params, **x}
    if p.reset is not None:
        theta = call_reset(p, theta, merged)
    ctx.depth += 1
    try:
        for b in batches:
            ctx.batch[name] = b
            g = _total_grad.total_grad(ctx, name, (name,), {**merged, name: theta})[0][name]
            theta, state = optim.step(p.optimizer, theta, g, state)
            if p.project is not None:
                theta = p.project(theta)
    finally:
        ctx.depth -= 1
    return theta, state


@torch.compiler.disable  # its pullback outlives the step: inductor cannot trace a kept vjp
def update(ctx: StepContext, name: str, params: dict, state: PyTree,
           batches: list) -> tuple[PyTree, PyTree]:
    """Run ``name``'s window once inside ``vjp`` over all its ancestors; keep the pullback.
    Under ``solve(compile=True)`` the window runs eagerly (inductor failed on it: "Cannot access
    storage of TensorWrapper"); the rest of the step compiles."""
    x = {a: params[a] for a in ctx.graph.ancestors_in_order(name)}
    theta0 = params[name]

    def window(xx: dict) -> tuple[PyTree, list]:
        theta, new_state = run(ctx, name, theta0, state, batches, xx, params)
        return theta, tree.leaves(new_state)  # aux must be tensors (a state may hold None)

    ctx.base = params
    theta, pullback, leaves = vjp(window, x, has_aux=True)
    ctx.windows[name] = Window(theta0, state, batches, pullback)
    return theta, tree.unflatten(tree.structure(state), leaves)


def vjp_through(ctx: StepContext, name: str, x: dict, v: PyTree, params: dict,
                nested: bool) -> dict:
    """Pull ``v`` on the window's result back to ``name``'s ancestors ``x``."""
    w = ctx.windows.get(name)
    if w is None:
        fail(API, f"no unrolled window of '{name}' ran in this step", None,
             "An unrolled problem's uppers update only when its window closes (internal error).")
    if not nested:
        return w.pullback(v)[0]
    fn = lambda xx: run(ctx, name, w.theta0, w.state0, w.batches, xx, params)[0]  # noqa: E731
    return vjp(fn, x)[1](v)[0]
