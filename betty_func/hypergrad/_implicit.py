r"""Implicit differentiation: the hypergradient at an inner optimum, from a linear solve."""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.func import grad, vjp

from .. import linsolve as ls
from .. import tree
from ._checks import depends
from ._exact_mixed import exact_mixed
from ._hvp import reverse_over_reverse
from ._method import HypergradInfo, Loss, outer_grads

PyTree = Any
GradFn = Callable[[PyTree, PyTree], PyTree]


class LossGrad:
    """``(θ, λ) -> ∇ loss(θ, λ, *args)`` in θ (``argnum=0``) or λ (``argnum=1``), with the loss
    checked for scalar output and for depending on the differentiated argument. ``key`` is the
    user's loss, a stable identity for per-loss caches (bound methods: their function)."""

    def __init__(self, api: str, loss: Loss, argnum: int, args: tuple):
        name = ("inner_params", "outer_params")[argnum]
        self._fn = grad(depends(api, "inner_loss", loss, name), argnums=argnum)
        self.key, self._args = getattr(loss, "__func__", loss), args

    def __call__(self, theta: PyTree, lam: PyTree) -> PyTree:
        return self._fn(theta, lam, *self._args)


class Implicit:
    r"""Hypergradient by the implicit function theorem at a stationary point θ* of the inner problem:

    .. math:: \frac{dF}{d\lambda} = \nabla_\lambda F - (\partial_\lambda g)^\top p,
              \qquad (\partial_\theta g)^\top p = \nabla_\theta F,
              \qquad g(\theta, \lambda) = \nabla_\theta L

    Build with :func:`implicit`. Two entry points: ``method(outer_loss, inner_loss, θ, λ, args, init,
    with_info)`` (what ``hypergrad.grad`` calls) and :meth:`response_vjp`, the root form used by the
    multilevel scheduler, where ``g`` may be any differentiable optimality map.
    """

    def __init__(self, solve: ls.LinearSolver, mixed: Callable, hvp: Callable):
        self.solve, self.mixed, self.hvp = solve, mixed, hvp
        self.api = f"hypergrad.implicit(solve={solve!r})"

    def __repr__(self) -> str:
        return self.api

    def response_vjp(self, grad_theta: GradFn, grad_lam: Optional[GradFn], theta: PyTree,
                     lam: PyTree, v: PyTree, init: Optional[PyTree] = None, with_info: bool = False
                     ) -> tuple[PyTree, Optional[HypergradInfo]]:
        r"""Pull the cotangent ``v`` on θ* back to λ: :math:`-(\partial_\lambda g)^\top
        (\partial_\theta g)^{-\top} v`. ``grad_lam`` (∇λ of the inner objective) is needed only
        by ``finite_difference``. Cost: the solver's products + one mixed term."""
        if init is not None:
            tree.check_same(self.api, init, theta, ("init", "inner_params"))
        matvec, mixed, linearized = self._linearize(grad_theta, grad_lam, theta, lam)
        info = None
        if with_info:
            p, s = self.solve.with_info(matvec, v, init)
            g = linearized()  # ∇θL at θ, free once linearized
            g = grad_theta(theta, lam) if g is None else g
            info = HypergradInfo(s.residual_norm, s.iterations, tree.norm(g), p)
        else:
            p = self.solve(matvec, v, init)
        return tree.neg(mixed(p)), info

    def _linearize(self, grad_theta: GradFn, grad_lam: Optional[GradFn], theta: PyTree,
                   lam: PyTree) -> tuple[Callable, Callable, Callable]:
        """``(v -> H v, p -> (∂λ g)ᵀ p, () -> g or None)``. With reverse-over-reverse products and
        the exact mixed term, one ``vjp`` of ``g`` in (θ, λ) serves both, on the first product
        (what a hand-written autograd implementation does: no second gradient pass for the
        mixed term); the coupling check then runs once per loss."""
        if self.hvp is reverse_over_reverse and hasattr(self.mixed, "check"):
            self.mixed.check(grad_theta, theta, lam)
            cache: dict = {}

            def pull(u: PyTree) -> tuple:
                if "vjp" not in cache:
                    cache["grad"], cache["vjp"] = vjp(grad_theta, theta, lam)
                return cache["vjp"](u)
            return (lambda u: pull(u)[0]), (lambda p: pull(p)[1]), (lambda: cache.get("grad"))
        matvec = self.hvp(lambda th: grad_theta(th, lam), theta)
        return (matvec, lambda p: self.mixed(grad_theta, grad_lam, theta, lam, p),
                getattr(matvec, "gradient", lambda: None))

    def __call__(self, outer_loss: Loss, inner_loss: Loss, theta: PyTree, lam: PyTree, args: tuple,
                 init: Optional[PyTree], with_info: bool) -> tuple[PyTree, Optional[HypergradInfo]]:
        v, direct = outer_grads(self.api, outer_loss, theta, lam, args)
        g_theta = LossGrad(self.api, inner_loss, 0, args)
        g_lam = LossGrad(self.api, inner_loss, 1, args)
        back, info = self.response_vjp(g_theta, g_lam, theta, lam, v, init, with_info)
        return tree.add(direct, back), info


def implicit(solve: Optional[ls.LinearSolver] = None, mixed: Optional[Callable] = None,
             hvp: Callable = reverse_over_reverse) -> Implicit:
    r"""Implicit hypergradient :math:`\nabla_\lambda F - (\nabla^2_{\lambda\theta} L)\,p` with
    :math:`(\nabla^2_{\theta\theta} L)\, p = \nabla_\theta F`, at the inner stationary point θ*.

    ``solve`` (any :mod:`betty_func.linsolve` solver, default ``cg(maxiter=10)``) approximates
    :math:`p`; ``mixed`` (``exact_mixed()`` default, or ``finite_difference(eps)``) the mixed
    term; ``hvp`` builds Hessian-vector products (``reverse_over_reverse`` default, or
    ``forward_over_reverse``). ``init`` warm-starts the solve. Cost: one gradient of ``F`` + the
    solver's HVPs (+1 gradient pass to linearize) + one mixed term (≈ 1 HVP).

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg, linsolve
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2     # θ*(λ) = λ
        >>> F = lambda th, lam: (th ** 2).sum() / 2             # dF/dλ = θ* = λ
        >>> g = hg.grad(F, L, hg.implicit(solve=linsolve.cg(maxiter=1)))
        >>> g(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])).tolist()
        [1.0, 2.0]
    """
    return Implicit(solve if solve is not None else ls.cg(maxiter=10),
                    mixed if mixed is not None else exact_mixed(), hvp)
