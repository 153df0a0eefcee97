"""Step-0 checks of a program's values: finite params and losses, callbacks that keep the
params' structure, and every declared coupling real (else a hypergradient is a silent zero)."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch.func import grad, jvp, vjp

from .. import tree
from .._errors import fail
from ..hypergrad._checks import tracks
from ._context import call_reset
from ._graph import API, Graph


def check_finite_params(params: dict) -> None:
    for name, p in params.items():
        if bool(tree.all_finite(p)):  # one host read per problem; the leaf only on failure
            continue
        for path, x in zip(tree.paths(p), tree.leaves(p)):
            if not bool(torch.isfinite(x).all()):
                fail(API, f"the initial params of '{name}' are not finite (leaf {path} holds "
                     f"{int((~torch.isfinite(x)).sum())} NaN or inf values)", None,
                     "Initialize them with finite values.")


def check_callbacks(g: Graph, params: dict, names: Optional[list] = None) -> None:
    """``project`` and ``reset`` run once on the initial params and must keep their structure
    and shapes (their output becomes the params); ``names``: of those problems only."""
    for name in (list(g.problems) if names is None else names):
        p = g.problems[name]
        for what, run in (("project", lambda p=p: p.project(params[p.name])),
                          ("reset", lambda p=p: call_reset(p, params[p.name], params))):
            if getattr(p, what) is None:
                continue
            out = run()
            if tree.structure(out) != tree.structure(params[name]) or any(
                    not isinstance(a, torch.Tensor) or a.shape != b.shape
                    for a, b in zip(tree.leaves(out), tree.leaves(params[name]))):
                fail(API, f"`{what}` of '{name}' must return params of the same structure and "
                     "shapes as it is given", f"{_shape(out)} from {_shape(params[name])}",
                     f"Return the params themselves, changed (e.g. clamped), from `{what}`.")


def _shape(x: Any) -> str:
    try:
        return str(tree.map(lambda t: tuple(t.shape), x))
    except Exception:  # noqa: BLE001 - only for the message
        return type(x).__name__


def _moves(fn: Any, x: Any) -> bool:
    """Whether ``fn(x)`` depends on ``x``: read inside a ``vjp`` over ``x`` alone, where
    ``requires_grad`` shows that transform's tracking (the pullback is never built)."""
    seen: list = []

    def probe(x: Any) -> Any:
        out = fn(x)
        seen.append(tracks(out))
        return out
    vjp(probe, x)
    return seen[0]


def check_finite_loss(name: str, value: torch.Tensor) -> None:
    """The loss of ``name`` at its first batch (the preflight's evaluation) is finite."""
    if not math.isfinite(float(value)):
        fail(API, f"the loss of '{name}' is {float(value)} at its first batch, before any "
             "update", None, "Check the loss for a log of 0, a division by 0 or an overflow, "
             "and the batch for NaN.")


def check_solvers(g: Graph, name: str, loss: Callable, params: dict,
                  iterations: int = 20) -> None:
    """The linear solvers of ``name``'s hypergradients, at step 0. One whose memory grows like
    n² (dense, ``hypergrad.exact``) must fit in the free memory of the params' device. One that
    converges only below an eigenvalue bound (Neumann: |λ| < 2 / alpha) is checked against a
    power-iteration estimate of the largest |eigenvalue| of the Hessian of ``name``'s loss in
    its params, at the initial params and first batch (``iterations`` HVPs, once). The estimate
    is a lower bound, so a refusal is certain; a pass is not a guarantee."""
    methods = (g.problems[name].method_for(u) for u in g.uppers[name])
    every = {repr(s): s for s in (getattr(m, "solve", None) for m in methods) if s is not None}
    for s in every.values():  # dense: O(n²) memory, refused at step 0 when it cannot fit
        if getattr(s, "memory", None) is not None:
            s.check_memory(params[name], f" (the params of '{name}')")
    solvers = {k: s for k, s in every.items() if getattr(s, "eig_bound", None) is not None}
    if not solvers:
        return
    theta = params[name]
    grad_fn = grad(lambda th: loss({name: th}))
    hvp = lambda v: jvp(grad_fn, (theta,), (v,))[1]  # noqa: E731
    gen = torch.Generator().manual_seed(0)  # a fixed start: the user's stream is not touched
    v = tree.map(lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device), theta)
    lam = 0.0
    for _ in range(iterations):
        v = tree.scale(1.0 / tree.norm(v), v)
        v = hvp(v)
        lam = float(tree.norm(v))
        if lam == 0.0:
            return
    for s in solvers.values():
        if lam + s.damping >= s.eig_bound:
            safe = 1.0 / (lam + s.damping)
            fail(API, f"{s!r} on '{name}' diverges: it needs every |eigenvalue| of the Hessian "
                 f"(+ damping) below {s.eig_bound:g}, and power iteration finds "
                 f"{lam + s.damping:.4g} at the initial params", None,
                 f"Use alpha <= {safe:.3g} (1 / that estimate), or hypergrad.cg.")


def _through_gradient(method: Any) -> bool:
    """Whether ``method`` reaches the upper through the lower's gradient in it (implicit
    methods), not through its updates (unrolled) or its start (first order)."""
    return not (getattr(method, "unrolls", False) or getattr(method, "through_start", False))


def check_couplings(g: Graph, name: str, loss: Callable, params: dict) -> None:
    """At its first batch (``loss(sub)``: the loss of ``name`` with ``sub`` replacing those
    params): every lower it reads moves it; and its gradient moves with each upper it reads
    (implicit methods differentiate through that coupling; without it their hypergradient is an
    exact zero)."""
    p = g.problems[name]
    for r in p.reset_reads:  # MAML: starts from an upper its loss does not read
        m = p.method_for(r)
        if r in p.reads or not _through_gradient(m):
            continue
        fail(API, f"'{name}' starts from its upper '{r}' (reset) but its loss does not read "
             f"'{r}', and {m!r} differentiates the loss's gradient in '{r}': an exact zero",
             None, "For MAML use hypergrad.first_order() or hypergrad.unrolled().")
    for r in p.reads:
        if r in g.descendants[name]:
            if not _moves(lambda x, r=r: loss({r: x}), params[r]):
                fail(API, f"the loss of '{name}' reads its lower '{r}' but does not depend on "
                     f"it, so the hypergradient through '{r}' would be a silent zero", None,
                     f"Use '{r}' in the loss of '{name}' (not detached), or drop the read.")
        elif r in g.uppers[name] and _through_gradient(p.method_for(r)) and \
                not g.descendants[name]:
            # (a problem with lowers of its own: its gradient may depend on the upper only
            # through their responses, which this partial derivative does not see)
            def inner_grad(x: Any, r: str = r) -> Any:
                return grad(lambda th: loss({name: th, r: x}))(params[name])
            if not _moves(inner_grad, params[r]):
                maml = (f" '{name}' starts from '{r}' (reset): for MAML use "
                        "hypergrad.first_order() or hypergrad.unrolled();"
                        if r in p.reset_reads else "")
                fail(API, f"the gradient of the loss of '{name}' in its params does not depend "
                     f"on its upper '{r}', so '{r}''s hypergradient through '{name}' would be "
                     f"a silent zero with {p.method_for(r)!r}", None, f"{maml} Couple the loss "
                     f"of '{name}' to '{r}' (e.g. a term in both), or drop the edge "
                     f"'{r}' -> '{name}'.".strip())
