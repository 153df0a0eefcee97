"""One global step as a pure function of explicit state and this step's batches."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .. import optim, tree
from .._autodiff import vjp
from ..hypergrad._unrolled import _rng_snapshot, _run
from ._context import Ctx, Window, call_reset
from ._graph import Graph
from ._lower import Lower
from ._sweep import total_grad

PyTree = Any


def step(graph: Graph, names: tuple, starts: tuple, params: dict, opt_states: dict, states: dict,
         batches: dict, last_batch: dict, carries: dict, replicate: Any = None,
         logs: bool = True, skip_nonfinite: bool = False
         ) -> tuple[dict, dict, dict, dict, dict, dict]:
    """Update the problems ``names`` (due now, bottom-up); ``starts`` are those beginning a new
    inner loop (their ``reset`` runs first). Pure given its inputs, so it can be compiled.

    ``batches[name]`` holds the batches each updating problem consumes now (``accumulate`` of
    them, or ``unroll_steps`` for an unrolled window); ``last_batch`` the latest batch of every
    problem, read when lower problems' responses are evaluated; ``states`` the problems' buffers;
    ``carries`` what the methods that carry state kept (``{lower: {upper: carry}}``).
    Returns new ``params``, ``opt_states``, ``states``, ``last_batch``, ``carries`` and
    per-problem logs
    (tensors: no host sync). ``replicate`` (data parallel) wraps the params entering every loss
    so that each derivative is averaged over ranks (``_replicate.py``). ``logs=False`` skips
    the logging work (norms, rates). Every updating problem's logs hold ``nonfinite`` (always):
    a bit mask of what was NaN or inf in its update, 1 the loss, 2 the gradient, 4 a CG
    residual, 8 the new params (0: all finite); ``skip_nonfinite`` drops such an update (params
    and optimizer state stay as they were, by ``torch.where``: no host sync). Under data
    parallel the skip is decided by the averaged quantities alone (a rank's own loss, non-finite
    while the averaged gradient is finite, would make that rank skip alone), so bit 1 is then
    dropped from the mask; the loss still shows in the logged (mean) loss.
    """
    ctx = Ctx(graph, dict(last_batch), dict(states), {}, replicate, dict(opt_states),
              dict(carries))
    want = logs
    out_logs: dict[str, dict] = {}  # by problem name
    params, opt_states = dict(params), dict(opt_states)
    for name in names:
        p = graph.problems[name]
        value, grads, scale = None, None, None
        metrics: dict = {}
        residuals: dict = {}
        carried = ctx.carries  # before this update (kept when it is skipped)
        if p.unrolled:
            theta, state, ctx = _window(ctx, name, params, opt_states[name], batches[name], names)
        else:
            if p.reset is not None and name in starts:
                params[name] = call_reset(p, params[name], params)
            scale = optim.loss_scale(opt_states[name])
            grads, value, metrics, residuals, ctx = _accumulated(ctx, name, params,
                                                                 batches[name], scale)
            theta, state = optim.step(p.optimizer, params[name], grads, opt_states[name])
            if p.project is not None:
                theta = p.project(theta)
            if scale is not None:  # fp16: the scale and skipped steps are logged too
                metrics = {**metrics, "loss_scale": scale,
                           "skipped_steps": optim.tree_get(state, "skipped")}
        # under fp16 loss scaling an overflowing loss or gradient is the scaler's signal (it
        # skips that step and lowers the scale): only the params it keeps are checked
        code = (nonfinite_code(value, grads, residuals, theta) if scale is None
                else nonfinite_code(None, None, {}, theta))
        if skip_nonfinite:
            if replicate is not None:  # data parallel: the loss is this rank's own, the rest is
                code = code & ~1       # averaged, so only those decide (all ranks skip alike)
            ok = code == 0
            theta = tree.where(ok, theta, params[name])
            state = tree.where(ok, state, opt_states[name])
            ctx = replace(ctx, carries=tree.where(ok, ctx.carries, carried))
        out_logs[name] = {"nonfinite": code}
        if want:
            out_logs[name].update(_log(value, metrics, grads, residuals))
            if scale is not None:  # the norm of the true (unscaled) gradient
                out_logs[name]["grad_norm"] = out_logs[name]["grad_norm"] / scale
            rate = optim.learning_rate(opt_states[name])  # the rate this update used
            if rate is not None:
                out_logs[name]["lr"] = rate
        params[name], opt_states[name] = theta, state
        ctx = replace(ctx, opt_states={**ctx.opt_states, name: state})
    last = {**ctx.batch, **{n: bl[-1] for n, bl in batches.items()}}
    return params, opt_states, ctx.state, last, ctx.carries, out_logs


def _accumulated(ctx: Ctx, name: str, params: dict, batches: list,
                 scale: Any = None) -> tuple[PyTree, torch.Tensor, dict, dict, Ctx]:
    total = None
    value: Any = 0.0  # a tensor from the first batch on
    metrics: dict = {}
    residuals: dict = {}
    for b in batches:
        ctx = ctx.with_batch(name, b)
        g, v, metrics, new_state, residuals, carries = total_grad(ctx, name, params,
                                                                  scale=scale, nested=False)
        if carries:  # the next batch's (and the next step's) solve starts from these
            ctx = replace(ctx, carries={**ctx.carries, **{
                d: {**ctx.carries[d], name: c} for d, c in carries.items()}})
        if new_state is not None:  # buffers advance with each batch of the problem's own update
            ctx = replace(ctx, state={**ctx.state, name: tree.map(torch.Tensor.detach, new_state)})
        total = g[name] if total is None else tree.add(total, g[name])
        value = value + v.detach()
    n = len(batches)
    grads = total if n == 1 else tree.scale(1.0 / n, total)
    return grads, value / n, metrics, residuals, ctx


def _window(ctx: Ctx, name: str, params: dict, state: PyTree, batches: list,
            names: tuple) -> tuple[PyTree, PyTree, Ctx]:
    """An unrolled problem's ``unroll_steps`` updates. When an upper updates in this same step
    (eager), they run inside ``vjp`` over the ancestors and the pullback is kept for it, so the
    window is not run twice; compiled, the upper's pullback re-runs it."""
    g = ctx.graph
    w = Window(params[name], state, tuple(batches), _rng_snapshot(params[name]))
    ctx = replace(ctx, windows={**ctx.windows, name: w})
    u = Lower(ctx, name, params).updates
    x = {a: params[a] for a in g.ancestors_in_order(name)}
    keep = (not torch.compiler.is_compiling() and any(up in names for up in g.uppers[name])
            and not any(getattr(g.problems[name].method_for(up), "checkpoint_every", 0)
                        for up in g.uppers[name]))
    if not keep:
        theta, new_state = _run(u, x, u.theta0, u.state0, 0, u.steps)
        return theta, new_state, ctx

    def window(xx: dict) -> tuple[PyTree, list]:
        th, st = _run(u, xx, u.theta0, u.state0, 0, u.steps)
        return th, tree.leaves(st)  # aux must be tensors (a state may hold None)

    theta, pull, leaves = vjp(window, x, has_aux=True)
    w = replace(w, pullback=lambda v: pull(v)[0])
    ctx = replace(ctx, windows={**ctx.windows, name: w})
    return theta, tree.unflatten(tree.structure(state), leaves), ctx


def nonfinite_code(value: Any, grads: Any, residuals: dict, theta: Any) -> torch.Tensor:
    """The bit mask of non-finite quantities of one update (see :func:`step`)."""
    code = 8 * (~tree.all_finite(theta)).to(torch.int32)
    if value is not None:
        code = code + (~torch.isfinite(value)).to(torch.int32)
    if grads is not None:
        code = code + 2 * (~tree.all_finite(grads)).to(torch.int32)
    if residuals:
        code = code + 4 * (~tree.all_finite(list(residuals.values()))).to(torch.int32)
    return code


def _log(value: Any, metrics: dict, grads: Any, residuals: dict) -> dict:
    out = {}
    if value is not None:
        out["loss"] = value.detach()
    out.update({k: torch.as_tensor(v).detach() for k, v in metrics.items()})
    if grads is not None:
        out["grad_norm"] = tree.norm(grads).detach()
    for lower, residual in residuals.items():
        out[f"residual/{lower}"] = residual
    return out
