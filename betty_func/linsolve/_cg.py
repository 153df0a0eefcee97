"""Conjugate gradient with a fixed iteration budget and a sync-free tolerance."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import tree
from .._errors import check_nonneg_int, fail
from ._base import LinearSolver, MatVec


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / torch.where(den == 0, torch.ones_like(den), den)


def cg(maxiter: int = 10, tol: float = 0.0, damping: float = 0.0) -> LinearSolver:
    r"""Conjugate gradient for :math:`(A + \delta I)\,x = b`, ``A`` symmetric positive definite.

    Runs exactly ``maxiter`` iterations (a fixed loop: no ``.item()``, no data-dependent branch, so it
    compiles with ``fullgraph=True`` and runs under ``vmap``). Once
    :math:`\|r_k\| \le \text{tol}\,\|b\|` the remaining iterations leave ``x`` unchanged (masked).
    With ``tol = 0`` it stops only at machine precision. In exact arithmetic ``maxiter = dim``
    solves exactly; the error falls like
    :math:`((\sqrt\kappa-1)/(\sqrt\kappa+1))^k`. Cost: ``maxiter`` matvecs (+1 with a warm start).
    ``damping`` :math:`\delta \ge 0` regularizes non-convex or ill-conditioned problems.

    Example:
        >>> import torch
        >>> from betty_func import linsolve
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x = linsolve.cg(maxiter=2)(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> [round(v, 4) for v in x.tolist()]
        [0.0909, 0.6364]
    """
    api = "linsolve.cg(maxiter, tol, damping)"
    check_nonneg_int(api, "maxiter", maxiter)
    if not tol >= 0 or not damping >= 0:
        fail(api, "`tol` and `damping` must be >= 0", f"tol={tol}, damping={damping}")

    def run(matvec: MatVec, b: Any, init: Optional[Any]) -> tuple:
        if init is None:
            x, r = tree.zeros_like(b), b
        else:
            x, r = init, tree.sub(b, matvec(init))
        p, rs = r, tree.vdot(r, r)
        eps = torch.finfo(rs.dtype).eps  # past machine precision further steps only add noise
        threshold = (max(tol, eps) * tree.norm(b)) ** 2
        iters = torch.zeros((), dtype=torch.int64)
        for _ in range(maxiter):
            active = rs > threshold
            ap = matvec(p)
            alpha = torch.where(active, _safe_div(rs, tree.vdot(p, ap)), torch.zeros_like(rs))
            x = tree.axpy(alpha, p, x)
            r = tree.axpy(-alpha, ap, r)
            rs_new = tree.vdot(r, r)
            beta = torch.where(active, _safe_div(rs_new, rs), torch.zeros_like(rs))
            p = tree.axpy(beta, p, r)
            rs = torch.where(active, rs_new, rs)
            iters = iters + active.to(torch.int64)
        return x, iters, torch.sqrt(rs)

    return LinearSolver(f"linsolve.cg(maxiter={maxiter}, tol={tol}, damping={damping})", run,
                        damping, tracks_residual=True)
