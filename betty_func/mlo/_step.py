"""One global step as a pure function of explicit state and this step's batches."""
from __future__ import annotations

from typing import Any

import torch

from .. import optim, tree
from ._graph import Graph
from . import _window
from ._context import StepContext, call_reset
from ._total_grad import total_grad

PyTree = Any


def step(graph: Graph, names: tuple, starts: tuple, params: dict, opt_states: dict, states: dict,
         batches: dict, last_batch: dict, replicate: Any = None
         ) -> tuple[dict, dict, dict, dict, dict]:
    """Update the problems ``names`` (due now, bottom-up); ``starts`` are those beginning a new
    inner loop (their ``reset`` runs first). Pure given its inputs, so it can be compiled.

    ``batches[name]`` holds the batches each updating problem consumes now (``accumulate`` of
    them, or ``unroll_steps`` for an unrolled window); ``last_batch`` the latest batch of every
    problem, read when lower problems' responses are evaluated; ``states`` the problems' buffers.
    Returns new ``params``, ``opt_states``, ``states``, ``last_batch`` and per-problem logs
    (tensors: no host sync). ``replicate`` (data parallel) wraps the params entering every loss
    so that each derivative is averaged over ranks (``_replicate.py``).
    """
    ctx = StepContext(graph, dict(last_batch), dict(states), replicate=replicate)
    params, opt_states, logs = dict(params), dict(opt_states), {}
    for name in names:
        p = graph.problems[name]
        if p.unrolled:
            theta, state = _window.update(ctx, name, params, opt_states[name], batches[name])
            value, metrics, grads, scale = None, {}, None, None
        else:
            if p.reset is not None and name in starts:
                params[name] = call_reset(p, params[name], params)
            scale = (None if p.optimizer.loss_scale is None
                     else p.optimizer.loss_scale(opt_states[name]))
            grads, value, metrics = _accumulated(ctx, name, params, batches[name], scale)
            theta, state = optim.step(p.optimizer, params[name], grads, opt_states[name])
            if p.project is not None:
                theta = p.project(theta)
            if scale is not None:  # fp16: the scale and skipped steps are logged too
                metrics = {**metrics, "loss_scale": scale, "skipped_steps": state[1].skipped}
        logs[name] = _log(value, metrics, grads, ctx, name)
        if scale is not None:  # the norm of the true (unscaled) gradient
            logs[name]["grad_norm"] = logs[name]["grad_norm"] / scale
        if p.optimizer.learning_rate is not None:  # the rate this update used
            logs[name]["lr"] = p.optimizer.learning_rate(opt_states[name])
        params[name], opt_states[name] = theta, state
    for name, batch_list in batches.items():
        ctx.batch[name] = batch_list[-1]
    return params, opt_states, ctx.state, ctx.batch, logs


def _accumulated(ctx: StepContext, name: str, params: dict, batches: list,
                 scale: Any = None) -> tuple[PyTree, torch.Tensor, dict]:
    total, value, metrics = None, 0.0, {}
    for b in batches:
        ctx.batch[name] = b
        g, v, (metrics, new_state) = total_grad(ctx, name, (name,), params, scale)
        if new_state is not None:  # buffers advance with each batch of the problem's own update
            ctx.state[name] = tree.map(torch.Tensor.detach, new_state)
        total = g[name] if total is None else tree.add(total, g[name])
        value = value + v.detach()
    n = len(batches)
    return (total if n == 1 else tree.scale(1.0 / n, total)), value / n, metrics


def _log(value: Any, metrics: dict, grads: Any, ctx: StepContext, name: str) -> dict:
    out = {}
    if value is not None:
        out["loss"] = value.detach()
    out.update({k: torch.as_tensor(v).detach() for k, v in metrics.items()})
    if grads is not None:
        out["grad_norm"] = tree.norm(grads).detach()
    for (upper, lower), residual in ctx.infos.items():
        if upper == name:
            out[f"residual/{lower}"] = residual
    return out
