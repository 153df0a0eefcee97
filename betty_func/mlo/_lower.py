r"""A lower problem as its methods see it (the protocol of ``hypergrad/_inner.py``).

``Lower(ctx, D, values)`` is D at ``values`` (every problem's params): its optimality map
:math:`g_D(\theta_D, x)` is D's total gradient (``_sweep.total_grad``, D's own lowers at their
responses), ``linearize`` differentiates it exactly through those responses, ``grad_outer`` is
D's total gradient in its ancestors with its lowers moved to first order (for finite-difference
mixed terms, so the difference sees them respond), and ``updates`` are D's unrolled window.
"""
from __future__ import annotations

from typing import Any

from .. import optim, tree
from .._autodiff import vjp
from .._errors import fail
from ..hypergrad import Keyed, Updates
from . import _sweep
from ._context import Ctx, call_reset
from ._graph import API

PyTree = Any


class Lower:
    """Lower problem ``name`` at ``values``, as the method protocol's ``inner``: ``grad``,
    ``linearize``, ``grad_outer``, ``updates``, ``start`` (``hypergrad/_inner.py``).
    ``nested``: inside another problem's derivative (no kept window pullback there: the window
    is re-run so that it can be differentiated again)."""

    def __init__(self, ctx: Ctx, name: str, values: dict, nested: bool = True):
        self.ctx, self.name, self.values, self.nested = ctx, name, values, nested
        g = ctx.graph
        loss = g.problems[name].loss
        self.key = getattr(loss, "__func__", loss)
        self.plain = not g.descendants[name]  # no lower problems of its own
        self.grad = Keyed(self._grad, self.key)
        self.grad_outer = Keyed(self._grad_outer, self.key)

    @property
    def start(self) -> Any:
        """``x -> θ₀``: where this lower starts each inner loop as a function of its ancestors'
        params (its ``reset``), or None for a lower that does not restart from them."""
        p = self.ctx.graph.problems[self.name]
        if p.reset is None:
            return None
        theta = self.values[self.name]
        return lambda x: call_reset(p, theta, {**self.values, **x})

    @property
    def optimizer(self) -> Any:
        """The lower's own optimizer (SAMA differentiates its step)."""
        return self.ctx.graph.problems[self.name].optimizer

    @property
    def optimizer_state(self) -> Any:
        """Its optimizer state as of its update this step (or the step's start)."""
        return self.ctx.opt_states.get(self.name)

    def _point(self, theta: PyTree, x: dict) -> dict:
        return {**self.values, **x, self.name: theta}

    def _grad(self, theta: PyTree, x: dict) -> PyTree:
        return self._grad_at(self._point(theta, x))

    def _grad_at(self, at: dict) -> PyTree:
        """D's optimality map at ``at`` (every problem's params)."""
        return _sweep.total_grad(self.ctx, self.name, at)[0][self.name]

    def linearize(self, theta: PyTree, x: dict) -> tuple[PyTree, Any]:
        """``(g, u -> ((∂θ g)ᵀu, (∂x g)ᵀu))`` with every path through D's lowers' responses."""
        below = _sweep.reached(self.ctx.graph, self.name)  # the lowers g_D reads
        if not below:
            return vjp(self._grad, theta, x)
        point = self._point(theta, x)

        def fn(th: PyTree, xx: dict, dd: dict) -> PyTree:
            return self._grad_at({**point, **xx, **dd, self.name: th})

        value, pull = vjp(fn, theta, x, {d: point[d] for d in below})

        def total_pull(u: PyTree) -> tuple[PyTree, dict]:
            c_theta, c_x, c_below = pull(u)
            cots, _, _ = _sweep.sweep(self.ctx, self.name, point,
                                      {self.name: c_theta, **c_x, **c_below}, below, True)
            return cots[self.name], {a: cots[a] for a in x}
        return value, total_pull

    def _grad_outer(self, theta: PyTree, x: dict) -> dict:
        point = moved(self.ctx, self.name, self._point(theta, x), self.values)
        return _sweep.total_grad(self.ctx, self.name, point, wrt=tuple(x))[0]

    @property
    def updates(self) -> Updates:
        """D's unrolled window of this step: ``unroll_steps`` updates from its start, reset
        first and projected after each, with D's own optimizer."""
        w = self.ctx.windows.get(self.name)
        if w is None:
            fail(API, f"no unrolled window of '{self.name}' ran in this step", None,
                 "An unrolled problem's uppers update only when its window closes (internal "
                 "error).")
        return Updates(w.theta0, w.state0, len(w.batches), self._step,
                       None if self.nested else w.pullback, w.rng)

    def _step(self, theta: PyTree, state: PyTree, x: dict, i: int) -> tuple[PyTree, PyTree]:
        p = self.ctx.graph.problems[self.name]
        at = {**self.values, **x}
        if i == 0 and p.reset is not None:
            theta = call_reset(p, theta, at)
        ctx = self.ctx.with_batch(self.name, self.ctx.windows[self.name].batches[i])
        g = _sweep.total_grad(ctx, self.name, {**at, self.name: theta})[0][self.name]
        theta, state = optim.step(p.optimizer, theta, g, state)
        return (p.project(theta) if p.project is not None else theta), state


def moved(ctx: Ctx, name: str, point: dict, base: dict) -> dict:
    r"""``point`` with ``name``'s descendants moved to first order from ``base``:
    :math:`\theta_e + J_e\,(x_e - x_{e,0})`, top-down, by each lower's ``response_jvp``."""
    g = ctx.graph
    out = dict(point)
    for e in reversed(g.order):
        if e not in g.descendants[name]:
            continue
        xs = g.ancestors_in_order(e)
        if all(out[a] is base[a] for a in xs):
            continue
        if g.descendants[e]:
            fail(API, f"a finite-difference mixed term (darts) on '{name}' needs the first-order "
                 f"move of '{e}', which has lower problems of its own", "darts two levels up",
                 f"Use an exact mixed term (hypergrad.cg / neumann) for '{name}'.")
        x0 = {a: base[a] for a in xs}
        dx = {a: tree.sub(out[a], base[a]) for a in xs}
        method = g.problems[e].method_for(name)
        out[e] = tree.add(base[e], method.response_jvp(Lower(ctx, e, base), base[e], x0, dx))
    return out
