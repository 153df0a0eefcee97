r"""The total gradient of a problem's loss with every problem below it at its best response.

``total_grad(ctx, P, wrt, params)`` is ``torch.func.grad`` of a composite: P's loss evaluated with
each descendant D replaced by its *response* :math:`\theta_D(\theta_{anc(D)})`, an
``autograd.Function`` whose value is D's current params and whose VJP is D's method:

* implicit: :math:`-(\partial_x g_D)^\top (\partial_\theta g_D)^{-\top} v` with D's optimality map
  :math:`g_D(\theta_D, x) =` ``total_grad(D, [D])`` — the same construction one level down, so the
  level above differentiates through the lowers' responses (CG or Neumann on middle levels too)
  and the derivative is exact wherever the solves are; autograd sums every path through the DAG.
* unrolled: D's ``unroll_steps`` updates ran once this step, as a window inside ``vjp``; the
  response's VJP is that pullback. Inside another level's transform (nested) the window is
  recomputed so that it can be differentiated again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.func import grad, jvp, vjp

from .. import hypergrad as hg
from .. import optim, tree
from .._errors import fail
from ._graph import API, Graph

PyTree = Any


@dataclass
class Window:
    """An unrolled problem's window run this step: its start, batches and pullback."""
    theta0: PyTree
    state0: PyTree
    batches: list
    pullback: Callable


@dataclass
class StepContext:
    """What one global step shares: the graph, each problem's current batch, this step's unrolled
    windows, solver diagnostics per edge (tensors), and how deep in nested transforms we are."""
    graph: Graph
    batch: dict
    state: dict = field(default_factory=dict)
    windows: dict = field(default_factory=dict)
    infos: dict = field(default_factory=dict)
    depth: int = 0
    moving: bool = False  # inside a finite difference: responses move to first order
    base: dict = field(default_factory=dict)  # committed params: where responses' values hold


def call_loss(ctx: StepContext, name: str, params: dict) -> tuple[torch.Tensor, dict, Any]:
    """``loss(params[name], batch, **reads)`` split into ``(scalar, metrics, new_state)``, checked
    (``new_state`` is None for problems without state)."""
    p = ctx.graph.problems[name]
    kw = {r: params[r] for r in p.reads}
    if p.state is not None:
        out = p.loss(params[name], ctx.batch.get(name), state=ctx.state[name], **kw)
        if not (isinstance(out, tuple) and len(out) == 3):
            fail(API, f"the loss of '{name}' has state, so it must return (value, metrics, new_state)",
                 type(out).__name__)
        value, metrics, new_state = out
    else:
        out = p.loss(params[name], ctx.batch.get(name), **kw)
        value, metrics = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
        new_state = None
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        fail(API, f"the loss of '{name}' must return a scalar float tensor or (scalar, metrics)",
             got, "Reduce it with .mean() / .sum().")
    if not isinstance(metrics, dict):
        fail(API, f"the loss of '{name}' returned metrics that are not a dict", type(metrics).__name__)
    return value, metrics, new_state


def total_grad(ctx: StepContext, name: str, wrt: tuple, params: dict) -> tuple[dict, Any, tuple]:
    """``({w: dL_name/dθ_w}, loss value, (metrics, new_state))`` with the descendants at their
    best response."""
    g = ctx.graph
    below = [d for d in reversed(g.order) if d in g.descendants[name]]  # top-down
    if ctx.depth == 0:
        ctx.base = params

    def composite(variables: dict) -> tuple[torch.Tensor, tuple]:
        env = {**params, **variables}
        for d in below:
            env[d] = respond(ctx, name, d, env, params)
        value, metrics, new_state = call_loss(ctx, name, env)
        return value, (value, metrics, () if new_state is None else new_state)  # aux: no None

    grads, (value, metrics, new_state) = grad(composite, has_aux=True)({w: params[w] for w in wrt})
    return grads, value, (metrics, None if isinstance(new_state, tuple) and not new_state else new_state)


@dataclass(eq=False)
class _Spec:
    """Everything a response's backward needs besides tensors."""
    ctx: StepContext
    upper: str
    name: str
    params: dict
    x_names: tuple
    x_def: Any
    theta0: PyTree
    nested: bool


class _Response(torch.autograd.Function):
    """Value: ``theta0 + shift`` (a first-order move, or zeros); VJP: the lower's method."""
    generate_vmap_rule = True

    @staticmethod
    def forward(spec: _Spec, n_x: int, *leaves: torch.Tensor) -> tuple:
        return tuple(t + d for t, d in zip(tree.leaves(spec.theta0), leaves[n_x:]))

    @staticmethod
    def setup_context(fctx: Any, inputs: tuple, output: Any) -> None:
        fctx.spec, fctx.n_x = inputs[0], inputs[1]
        fctx.save_for_backward(*inputs[2:2 + inputs[1]])

    @staticmethod
    def backward(fctx: Any, *v_leaves: torch.Tensor) -> tuple:
        s = fctx.spec
        x = tree.unflatten(s.x_def, list(fctx.saved_tensors))
        v = tree.unflatten(tree.structure(s.theta0), list(v_leaves))
        cot = _pull_back(s, x, v)
        return (None, None, *tree.leaves({k: cot[k] for k in s.x_names}),
                *([None] * len(v_leaves)))


@torch.compiler.disable  # traced by dynamo, this Function's backward came out wrong (see README)
def respond(ctx: StepContext, upper: str, name: str, env: dict, params: dict) -> PyTree:
    r"""``name``'s params as a differentiable function of all its ancestors' (values from ``env``).

    The value is the current params; inside a finite difference (``ctx.moving``) it moves to first
    order with its ancestors, :math:`\theta_0 + J\,(x - x_0)`, so the differences see the lower
    problems respond. The derivative is always the method's VJP (the shift is not differentiated).
    """
    g = ctx.graph
    x_names = tuple(a for a in g.order if a in g.ancestors[name])
    x = {a: env[a] for a in x_names}
    spec = _Spec(ctx, upper, name, params, x_names, tree.structure(x), params[name], ctx.depth > 0)
    shift = _shift(spec, x) if ctx.moving else tree.zeros_like(params[name])
    out = _Response.apply(spec, len(tree.leaves(x)), *tree.leaves(x), *tree.leaves(shift))
    return tree.unflatten(tree.structure(params[name]), list(out))


def _shift(s: _Spec, x: dict) -> PyTree:
    r"""First-order move of the response: :math:`-(\partial_\theta g)^{-1}(\partial_x g)(x - x_0)`
    with the lower's own solver (an unrolled lower re-runs its window at ``x``)."""
    x0 = {a: s.ctx.base[a] for a in x}
    method = s.ctx.graph.problems[s.name].method_for(s.upper)
    moving, s.ctx.moving = s.ctx.moving, False
    try:
        if isinstance(method, hg.Unrolled):
            w = s.ctx.windows[s.name]
            moved = run_window(s.ctx, s.name, w.theta0, w.state0, w.batches, x, s.params)[0]
            return tree.sub(moved, s.theta0)
        g = _Grad(s.ctx, s.name, s.params, True)
        _, u = jvp(lambda xx: g(s.theta0, xx), (x0,), (tree.sub(x, x0),))
        matvec = lambda v: jvp(lambda th: g(th, x0), (s.theta0,), (v,))[1]  # noqa: E731
        return method.solve(matvec, tree.neg(u))
    finally:
        s.ctx.moving = moving


class _Grad:
    """``(θ_D, x) -> total_grad(D)`` in θ_D (``own=True``) or in ``x``; ``key`` is D's loss."""

    def __init__(self, ctx: StepContext, name: str, params: dict, own: bool):
        self.ctx, self.name, self.params, self.own = ctx, name, params, own
        loss = ctx.graph.problems[name].loss
        self.key = getattr(loss, "__func__", loss)

    def __call__(self, theta: PyTree, x: dict) -> Any:
        """``own``: the optimality map at a base point; else ∇x, used by finite differences at
        perturbed θ_D, so D's own lowers move with it (``ctx.moving``)."""
        depth, moving = self.ctx.depth, self.ctx.moving
        self.ctx.depth, self.ctx.moving = depth + 1, (not self.own)
        try:
            wrt = (self.name,) if self.own else tuple(x)
            grads = total_grad(self.ctx, self.name, wrt, {**self.params, **x, self.name: theta})[0]
        finally:
            self.ctx.depth, self.ctx.moving = depth, moving
        return grads[self.name] if self.own else grads


def _pull_back(s: _Spec, x: dict, v: PyTree) -> dict:
    p = s.ctx.graph.problems[s.name]
    method = p.method_for(s.upper)
    if isinstance(method, hg.Unrolled):
        return _window_vjp(s, x, v)
    info_wanted = not s.nested and getattr(method.solve, "tracks_residual", False)
    back, info = method.response_vjp(_Grad(s.ctx, s.name, s.params, True),
                                     _Grad(s.ctx, s.name, s.params, False),
                                     s.theta0, x, v, with_info=info_wanted)
    if info is not None:
        s.ctx.infos[(s.upper, s.name)] = info
    return back


def run_window(ctx: StepContext, name: str, theta: PyTree, state: PyTree, batches: list,
               x: dict, params: dict) -> tuple[PyTree, PyTree]:
    """``len(batches)`` differentiable updates of ``name`` (reset first, project after each)."""
    p = ctx.graph.problems[name]
    merged = {**params, **x}
    if p.reset is not None:
        theta = call_reset(p, theta, merged)
    ctx.depth += 1
    try:
        for b in batches:
            ctx.batch[name] = b
            g = total_grad(ctx, name, (name,), {**merged, name: theta})[0][name]
            theta, state = optim.step(p.optimizer, theta, g, state)
            if p.project is not None:
                theta = p.project(theta)
    finally:
        ctx.depth -= 1
    return theta, state


def call_reset(p: Any, theta: PyTree, params: dict) -> PyTree:
    """``p.reset(theta, **reads)``: the start of an inner loop (MAML: the meta-parameters)."""
    return p.reset(theta, **{k: params[k] for k in p.reset_reads})


def unrolled_update(ctx: StepContext, name: str, params: dict, state: PyTree,
                    batches: list) -> tuple[PyTree, PyTree]:
    """Run ``name``'s window once inside ``vjp`` over all its ancestors; keep the pullback."""
    g = ctx.graph
    x = {a: params[a] for a in g.order if a in g.ancestors[name]}
    theta0 = params[name]

    def window(xx: dict) -> tuple[PyTree, list]:
        theta, new_state = run_window(ctx, name, theta0, state, batches, xx, params)
        return theta, tree.leaves(new_state)  # aux must be tensors (a state may hold None)

    ctx.base = params
    theta, pullback, leaves = vjp(window, x, has_aux=True)
    ctx.windows[name] = Window(theta0, state, batches, pullback)
    return theta, tree.unflatten(tree.structure(state), leaves)


def _window_vjp(s: _Spec, x: dict, v: PyTree) -> dict:
    w = s.ctx.windows.get(s.name)
    if w is None:
        fail(API, f"no unrolled window of '{s.name}' ran in this step", None,
             "An unrolled problem's uppers update only when its window closes (internal error).")
    if not s.nested:
        return w.pullback(v)[0]
    fn = lambda xx: run_window(s.ctx, s.name, w.theta0, w.state0, w.batches, xx, s.params)[0]  # noqa
    return vjp(fn, x)[1](v)[0]
