r"""Implicit differentiation: the hypergradient at an inner optimum, from a linear solve."""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.func import grad

from .. import linsolve as ls
from .. import tree
from ._checks import depends
from ._exact_mixed import exact_mixed
from ._hvp import reverse_over_reverse
from ._method import HypergradInfo, Loss, Method, outer_grads

PyTree = Any


def implicit(solve: Optional[ls.LinearSolver] = None, mixed: Optional[Callable] = None,
             hvp: Callable = reverse_over_reverse) -> Method:
    r"""Hypergradient by the implicit function theorem at a stationary point θ* of ``inner_loss``:

    .. math:: \frac{dF}{d\lambda} = \nabla_\lambda F - (\nabla^2_{\lambda\theta} L)\, p,
              \qquad (\nabla^2_{\theta\theta} L)\, p = \nabla_\theta F

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
    solve = solve if solve is not None else ls.cg(maxiter=10)
    mixed = mixed if mixed is not None else exact_mixed()
    api = f"hypergrad.implicit(solve={solve!r})"

    def method(outer_loss: Loss, inner_loss: Loss, theta: PyTree, lam: PyTree, args: tuple,
               init: Optional[PyTree], with_info: bool) -> tuple[PyTree, Optional[HypergradInfo]]:
        v, direct = outer_grads(api, outer_loss, theta, lam, args)
        loss = depends(api, "inner_loss", inner_loss, "inner_params")
        grad_theta = lambda th: grad(loss)(th, lam, *args)  # noqa: E731
        matvec = hvp(grad_theta, theta)
        if init is not None:
            tree.check_same(api, init, theta, ("init", "inner_params"))
        info = None
        if with_info:
            p, s = solve.with_info(matvec, v, init)
            info = HypergradInfo(s.residual_norm, s.iterations, tree.norm(grad_theta(theta)), p)
        else:
            p = solve(matvec, v, init)
        return tree.sub(direct, mixed(inner_loss, theta, lam, args, p)), info

    return method
