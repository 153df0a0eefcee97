r"""The total gradient of a problem's loss as an explicit reverse sweep of pure functions.

For a problem P with descendants (lower problems at their best responses
:math:`\theta_D(\theta_{anc(D)})`), :func:`total_grad` computes
:math:`dL_P/d\theta_w` in two passes:

1. ``torch.func.grad`` of P's loss with respect to ``wrt`` and every descendant P's loss reaches,
   all as independent inputs at their current values (one gradient pass);
2. bottom-up over those descendants, D's accumulated cotangent is pulled back to D's ancestors
   through D's method (``method.pullback``, the protocol of ``hypergrad/_inner.py``); the
   contributions of every path through the DAG add up.

D's optimality map, what its method solves against, is :func:`total_grad` of D one level down;
its linearization (``_lower.Lower.linearize``) is a ``vjp`` of that function followed by the same
sweep over D's own descendants, so CG and Neumann on a middle level multiply by the Hessian of
its reduced objective, exact through its lowers' responses. Every input is an argument and every
result a return value; only ``torch.func`` transforms (plain autograd in plain eager code,
``_autodiff.py``): the sweep compiles and nests.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import tree
from .._autodiff import grad_aux
from . import _lower
from ._context import Ctx, call_loss

PyTree = Any


def reach(graph: Any, reads: set, below: Any) -> set:
    """The names whose cotangents may be non-zero when a function reads ``reads`` and the
    problems ``below`` respond: a reached descendant reaches its ancestors (its pullback)."""
    seen = set(reads)
    for d in graph.order:  # bottom-up: every deposit into d comes from below it, seen already
        if d in below and d in seen:
            seen |= graph.ancestors[d]
    return seen


def reached(graph: Any, name: str) -> tuple:
    """``name``'s descendants its total gradient pulls back through, bottom-up."""
    seen = reach(graph, {name, *graph.problems[name].reads}, graph.descendants[name])
    return tuple(d for d in graph.order if d in graph.descendants[name] and d in seen)


def total_grad(ctx: Ctx, name: str, values: dict, wrt: Optional[tuple] = None,
               scale: Any = None, nested: bool = True
               ) -> tuple[dict, Any, dict, Any, dict, dict]:
    """``({w: dL_name/dθ_w}, value, metrics, new_state, residuals, carries)`` at ``values``
    (every problem's params), ``name``'s descendants at their responses; ``wrt`` defaults to
    ``(name,)``. With ``scale`` (fp16 loss scaling) the gradients are of ``scale · L``.
    ``nested=False`` (the update of ``name`` itself): solver residuals and the new carries of
    the methods that carry state (``{lower: carry}``, detached) are returned, and an unrolled
    window's kept pullback is reused."""
    wrt = (name,) if wrt is None else wrt
    below = reached(ctx.graph, name)
    inputs = {n: values[n] for n in (*wrt, *below)}

    def f(sub: dict) -> tuple:
        value, metrics, new_state = call_loss(ctx, name, {**values, **sub})
        out = value if scale is None else value * scale.to(value.dtype)
        return out, (value, metrics, () if new_state is None else new_state)  # aux: no None

    cots, (value, metrics, new_state) = grad_aux(f, inputs)
    cots, residuals, carries = sweep(ctx, name, values, cots, below, nested)
    no_state = isinstance(new_state, tuple) and not new_state
    return ({w: cots[w] for w in wrt}, value, metrics, None if no_state else new_state,
            residuals, carries)


def sweep(ctx: Ctx, upper: str, values: dict, cots: dict, below: tuple,
          nested: bool) -> tuple[dict, dict, dict]:
    """Pull the cotangents of ``below`` (bottom-up) back into their ancestors' entries of
    ``cots``; ancestors without an entry are constants here. ``upper`` picks each lower's
    method (``Problem.method_for``). Returns the cotangents left and, when not ``nested``,
    ``{lower: CG residual norm}`` and ``{lower: new carry}`` (detached)."""
    cots, residuals, carries = dict(cots), {}, {}
    for d in below:
        back, residual, carry = pull_back(ctx, upper, d, values, cots.pop(d), nested)
        for a, c in back.items():
            if a in cots:
                cots[a] = tree.add(cots[a], c)
        if residual is not None:
            residuals[d] = residual
        if carry is not None:
            carries[d] = carry
    return cots, residuals, carries


def pull_back(ctx: Ctx, upper: str, name: str, values: dict, v: PyTree,
              nested: bool) -> tuple[dict, Any, Any]:
    """``v`` on ``name``'s params pulled back to its ancestors through its method for
    ``upper``, at ``values``: ``{ancestor: cotangent}``, the residual and the method's new
    carry (None where there is none, or ``nested``: there the carry is only read)."""
    g = ctx.graph
    method = g.problems[name].method_for(upper)
    x = {a: values[a] for a in g.ancestors_in_order(name)}
    carries = getattr(method, "carries", False)
    init = ctx.carries[name][upper] if carries else None
    info_wanted = not nested and (carries or getattr(getattr(method, "solve", None),
                                                     "tracks_residual", False))
    back, info = method.pullback(_lower.Lower(ctx, name, values, nested), values[name], x, v,
                                 init=init, with_info=info_wanted)
    residual = carry = None
    if info is not None and info.residual_norm is not None:
        residual = info.residual_norm.detach()
    if info is not None and carries:
        carry = tree.map(torch.Tensor.detach, info.solution)
    return back, residual, carry


def initial_carries(graph: Any, params: dict) -> dict:
    """``{lower: {upper: carry}}`` before the first step, for every pair whose method carries
    state (the carry protocol): the keys every later step's carries have."""
    out: dict = {}
    for upper in graph.order:
        for d in reached(graph, upper):
            method = graph.problems[d].method_for(upper)
            if getattr(method, "carries", False):
                carry = method.init_carry(params[d])
                out.setdefault(d, {})[upper] = tree.map(lambda t: t.detach().clone(), carry)
    return out
