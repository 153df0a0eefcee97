r"""Implicit differentiation: the hypergradient at an inner optimum, from a linear solve."""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.func import jvp

from .. import linsolve as ls
from .. import tree
from .._errors import check_type, fail
from ._exact_mixed import exact_mixed
from ._hvp import reverse_over_reverse
from ._inner import LossInner
from ._method import HypergradInfo, Loss, outer_grads

PyTree = Any


class Implicit:
    r"""Hypergradient by the implicit function theorem at a stationary point θ* of the inner
    problem:

    .. math:: \frac{dF}{d\lambda} = \nabla_\lambda F - (\partial_\lambda g)^\top p,
              \qquad (\partial_\theta g)^\top p = \nabla_\theta F,
              \qquad g(\theta, \lambda) = \nabla_\theta L

    Build with :func:`implicit`. ``method(outer_loss, inner_loss, θ, λ, args, init, with_info)`` is
    what ``hypergrad.grad`` calls; :meth:`pullback` is the method protocol (``_inner.py``) that
    ``mlo.solve`` uses too, where ``g`` is a lower problem's total gradient.
    """

    unrolls = False

    def __init__(self, solve: ls.LinearSolver, mixed: Callable, hvp: Callable,
                 warm_start: bool = False):
        self.solve, self.mixed, self.hvp = solve, mixed, hvp
        self.carries = warm_start  # mlo keeps p between steps (the carry protocol, _method.py)
        knobs = [f"solve={solve!r}"]  # every knob in the repr (ranks compare methods by it)
        mixed_name = getattr(mixed, "name", "hypergrad.exact_mixed()")
        if mixed_name != "hypergrad.exact_mixed()":
            knobs.append(f"mixed={mixed_name}")
        if hvp is not reverse_over_reverse:
            knobs.append(f"hvp={getattr(hvp, '__name__', repr(hvp))}")
        if warm_start:
            knobs.append("warm_start=True")
        self.api = f"hypergrad.implicit({', '.join(knobs)})"

    def __repr__(self) -> str:
        return self.api

    def init_carry(self, theta: PyTree) -> PyTree:
        """The carry before the first solve (``warm_start=True``): :math:`p_0 = 0`."""
        return tree.zeros_like(theta)

    def pullback(self, inner: Any, theta: PyTree, lam: PyTree, v: PyTree,
                 init: Optional[PyTree] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        r"""Pull the cotangent ``v`` on θ* back to λ: :math:`-(\partial_\lambda g)^\top
        (\partial_\theta g)^{-\top} v`. Cost: the solver's products + one mixed term."""
        if init is not None:
            tree.check_same(self.api, init, theta, ("init", "inner_params"))
        matvec, mixed, linearized = self._linearize(inner, theta, lam)
        info = None
        if with_info:
            p, s = self.solve.with_info(matvec, v, init)
            g = linearized()  # ∇θL at θ, free once linearized
            g = inner.grad(theta, lam) if g is None else g
            info = HypergradInfo(s.residual_norm, s.iterations, tree.norm(g), p)
        else:
            p = self.solve(matvec, v, init)
        return tree.neg(mixed(p)), info

    def response_jvp(self, inner: Any, theta: PyTree, lam: PyTree, dlam: PyTree) -> PyTree:
        r"""The first-order move of θ* when λ moves by ``dlam``:
        :math:`-(\partial_\theta g)^{-1}(\partial_\lambda g)\,d\lambda` (forward mode)."""
        u = jvp(lambda lv: inner.grad(theta, lv), (lam,), (dlam,))[1]
        matvec = lambda w: jvp(lambda th: inner.grad(th, lam), (theta,), (w,))[1]  # noqa: E731
        return self.solve(matvec, tree.neg(u))

    def _linearize(self, inner: Any, theta: PyTree,
                   lam: PyTree) -> tuple[Callable, Callable, Callable]:
        """``(v -> H v, p -> (∂λ g)ᵀ p, () -> g or None)``. With reverse-over-reverse products, one
        linearization of ``g`` in (θ, λ), on the first product, serves every product and (with
        the exact mixed term) the mixed term too: no second gradient pass."""
        if self.hvp is reverse_over_reverse:
            cache: dict = {}

            def pull(u: PyTree) -> tuple:
                if "vjp" not in cache:
                    cache["grad"], cache["vjp"] = inner.linearize(theta, lam)
                return cache["vjp"](u)
            if hasattr(self.mixed, "check"):
                self.mixed.check(inner.grad, theta, lam)
                mixed = lambda p: pull(p)[1]  # noqa: E731
            else:
                mixed = lambda p: self.mixed(inner.grad, inner.grad_outer, theta, lam, p)  # noqa
            return (lambda u: pull(u)[0]), mixed, (lambda: cache.get("grad"))
        if not getattr(inner, "plain", True):
            fail(self.api, "forward-over-reverse products are not available on a problem that "
                 "has lower problems of its own (its optimality map is differentiated in reverse "
                 "mode through their responses)", "hvp=forward_over_reverse",
                 "Use the default hvp=reverse_over_reverse on middle levels.")
        matvec = self.hvp(lambda th: inner.grad(th, lam), theta)
        return (matvec, lambda p: self.mixed(inner.grad, inner.grad_outer, theta, lam, p),
                getattr(matvec, "gradient", lambda: None))

    def __call__(self, outer_loss: Loss, inner_loss: Loss, theta: PyTree, lam: PyTree, args: tuple,
                 init: Optional[PyTree], with_info: bool) -> tuple[PyTree, Optional[HypergradInfo]]:
        v, direct = outer_grads(self.api, outer_loss, theta, lam, args)
        back, info = self.pullback(LossInner(self.api, inner_loss, args), theta, lam, v, init,
                                   with_info)
        return tree.add(direct, back), info


def implicit(solve: Optional[ls.LinearSolver] = None, mixed: Optional[Callable] = None,
             hvp: Callable = reverse_over_reverse, warm_start: bool = False) -> Implicit:
    r"""Implicit hypergradient :math:`\nabla_\lambda F - (\nabla^2_{\lambda\theta} L)\,p` with
    :math:`(\nabla^2_{\theta\theta} L)\, p = \nabla_\theta F`, at the inner stationary point θ*.

    ``solve`` (any :mod:`betty_func.linsolve` solver, default ``cg(maxiter=10)``) approximates
    :math:`p`; ``mixed`` (``exact_mixed()`` default, or ``finite_difference(eps)``) the mixed
    term; ``hvp`` builds Hessian-vector products (``reverse_over_reverse`` default, or
    ``forward_over_reverse``). ``init`` warm-starts the solve; ``warm_start=True`` has
    ``mlo.solve`` / ``mlo.step`` do so with the previous step's :math:`p` (kept in
    ``State.carries``; in ``hypergrad.grad`` pass ``init=info.solution`` yourself), for solvers
    that read a start (``linsolve.cg``). Cost: one gradient of ``F`` + the solver's HVPs (+1
    gradient pass to linearize; +1 HVP for a warm start's first residual) + one mixed term
    (≈ 1 HVP).

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg, linsolve
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2     # θ*(λ) = λ
        >>> F = lambda th, lam: (th ** 2).sum() / 2             # dF/dλ = θ* = λ
        >>> g = hg.grad(F, L, hg.implicit(solve=linsolve.cg(maxiter=1)))
        >>> g(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])).tolist()
        [1.0, 2.0]
    """
    api = "hypergrad.implicit(solve, mixed, hvp, warm_start)"
    if solve is not None and not isinstance(solve, ls.LinearSolver):
        fail(api, "`solve` must be a linear solver from betty_func.linsolve",
             type(solve).__name__, "Pass e.g. linsolve.cg(maxiter=10); hypergrad.cg(...) is a "
             "whole method, not a solver.", exc=TypeError)
    for name, fn in (("mixed", mixed), ("hvp", hvp)):
        if fn is not None and not callable(fn):
            fail(api, f"`{name}` must be a function", f"{type(fn).__name__} {fn!r}",
                 "Pass e.g. mixed=hypergrad.finite_difference(0.01) or "
                 "hvp=hypergrad.forward_over_reverse.", exc=TypeError)
    solve = solve if solve is not None else ls.cg(maxiter=10)
    check_type(api, "warm_start", warm_start, bool, "True or False", "Pass warm_start=True.")
    if warm_start and not solve.warm_starts:
        fail(api, "`warm_start=True` needs a solver that starts from a given point", repr(solve),
             "Use linsolve.cg (hypergrad.cg(..., warm_start=True)); Neumann, identity and "
             "dense solves have no iterate to warm-start.")
    return Implicit(solve, mixed if mixed is not None else exact_mixed(), hvp, warm_start)
