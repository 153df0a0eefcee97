"""Named compositions of :func:`implicit`. Each is one line; new methods are new compositions."""
from __future__ import annotations

from .. import linsolve
from ._exact_mixed import exact_mixed
from ._finite_difference import finite_difference
from ._implicit import Implicit, implicit


def cg(maxiter: int = 10, tol: float = 0.0, damping: float = 0.0, batch_dims: int = 0,
       warm_start: bool = False) -> Implicit:
    """Implicit hypergradient with ``maxiter`` conjugate-gradient steps (:func:`linsolve.cg`).

    Exact once ``maxiter`` reaches the inner dimension (SPD Hessian); use ``damping`` for
    non-convex inner problems, ``batch_dims=1`` for a leading dimension of independent inner
    problems (a task batch: one CG per task). ``warm_start=True``: in ``mlo`` each solve starts
    from the previous step's solution (see :func:`implicit`), so a few iterations per step
    track the solution as the levels move. Cost ≈ ``maxiter + 2`` HVPs (+1 warm-started).
    """
    return implicit(linsolve.cg(maxiter, tol, damping, batch_dims), exact_mixed(),
                    warm_start=warm_start)


def neumann(steps: int = 5, alpha: float = 1.0) -> Implicit:
    """Implicit hypergradient with a ``steps``-term Neumann series (:func:`linsolve.neumann`).

    Converges only for ``0 < alpha < 2 / λmax(H)``. Cost ≈ ``steps + 2`` HVPs.
    """
    return implicit(linsolve.neumann(steps, alpha), exact_mixed())


def darts(eps: float = 0.01, scale: float = 1.0) -> Implicit:
    """DARTS' approximation (Liu et al., ICLR 2019): ``H⁻¹ ≈ scale·I`` and a finite-difference mixed
    term with step ``eps / ||∇θF||``. Betty's default method. Cost: 3 gradient passes, no HVP.
    """
    return implicit(linsolve.identity(scale), finite_difference(eps))


def exact(damping: float = 0.0) -> Implicit:
    """Exact implicit hypergradient by a dense solve (:func:`linsolve.dense`). Small problems only:
    ``n`` HVPs (batched) and ``O(n²)`` memory for ``n`` inner parameters."""
    return implicit(linsolve.dense(damping), exact_mixed())
