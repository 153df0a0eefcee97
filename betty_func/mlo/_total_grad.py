r"""The total gradient of a problem's loss with every problem below it at its best response.

``total_grad(ctx, P, wrt, params)`` is ``torch.func.grad`` of a composite: P's loss evaluated with
each descendant D replaced by its *response* :math:`\theta_D(\theta_{anc(D)})`, an
``autograd.Function`` whose value is D's current params and whose VJP is D's method:

* implicit: :math:`-(\partial_x g_D)^\top (\partial_\theta g_D)^{-\top} v` with D's optimality map
  :math:`g_D(\theta_D, x) =` ``total_grad(D, [D])`` — the same construction one level down, so the
  level above differentiates through the lowers' responses (CG or Neumann on middle levels too)
  and the derivative is exact wherever the solves are; autograd sums every path through the DAG.
* unrolled: D's ``unroll_steps`` updates ran once this step, as a window inside ``vjp``
  (``_window.py``); the response's VJP is that pullback.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import grad, jvp

from .. import hypergrad as hg
from .. import tree
from . import _window
from ._context import StepContext, call_loss

PyTree = Any


def total_grad(ctx: StepContext, name: str, wrt: tuple, params: dict,
               scale: Any = None) -> tuple[dict, Any, tuple]:
    """``({w: dL_name/dθ_w}, loss value, (metrics, new_state))`` with the descendants at their
    best response; with ``scale`` (fp16 loss scaling) the gradients are of ``scale · L``."""
    g = ctx.graph
    below = [d for d in reversed(g.order) if d in g.descendants[name]]  # top-down
    if ctx.depth == 0:
        ctx.base = params

    def composite(variables: dict) -> tuple[torch.Tensor, tuple]:
        env = {**params, **variables}
        for d in below:
            env[d] = respond(ctx, name, d, env, params)
        value, metrics, new_state = call_loss(ctx, name, env)
        out = value if scale is None else value * scale.to(value.dtype)
        return out, (value, metrics, () if new_state is None else new_state)  # aux: no None

    grads, (value, metrics, new_state) = grad(composite, has_aux=True)({w: params[w] for w in wrt})
    no_state = isinstance(new_state, tuple) and not new_state
    return grads, value, (metrics, None if no_state else new_state)


@dataclass(eq=False)
class _Spec:
    """Everything a response's backward needs besides tensors. It holds the step context only
    weakly: the autograd node owns this spec, and a strong reference back into the context (whose
    diagnostics and windows hold tensors with history through that node) would form a cycle
    through C++ autograd objects that Python's garbage collector cannot see — a leak of one
    step's graph per step, measured at ~20 MB for a 784-200-10 MLP."""
    ctx: Any  # weakref.proxy(StepContext)
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
        theta0 = tree.leaves(spec.theta0)
        if len(leaves) == n_x:  # no shift
            return tuple(t.clone() for t in theta0)
        return tuple(t + d for t, d in zip(theta0, leaves[n_x:]))

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
    x_names = g.ancestors_in_order(name)
    x = {a: env[a] for a in x_names}
    x_leaves = tree.leaves(x)
    weak = ctx if isinstance(ctx, weakref.ProxyType) else weakref.proxy(ctx)  # nested: already weak
    spec = _Spec(weak, upper, name, params, x_names, tree.structure(x), params[name], ctx.depth > 0)
    shift = tree.leaves(_shift(spec, x)) if ctx.moving else []
    out = _Response.apply(spec, len(x_leaves), *x_leaves, *shift)
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
            moved = _window.run(s.ctx, s.name, w.theta0, w.state0, w.batches, x, s.params)[0]
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
        return _window.vjp_through(s.ctx, s.name, x, v, s.params, s.nested)
    info_wanted = not s.nested and getattr(method.solve, "tracks_residual", False)
    back, info = method.response_vjp(_Grad(s.ctx, s.name, s.params, True),
                                     _Grad(s.ctx, s.name, s.params, False),
                                     s.theta0, x, v, with_info=info_wanted)
    if info is not None:  # only what is logged, detached: no history kept past the step
        s.ctx.infos[(s.upper, s.name)] = info.residual_norm.detach()
    return back
