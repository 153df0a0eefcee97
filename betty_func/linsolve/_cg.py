"""Conjugate gradient with a fixed iteration budget and a sync-free tolerance."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import tree
from .._errors import check_nonneg, check_nonneg_int, fail
from ._base import LinearSolver, MatVec


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / torch.where(den == 0, torch.ones_like(den), den)


def _dot(a: Any, b: Any, nb: int) -> torch.Tensor:
    """⟨a, b⟩ over all leaves; with ``nb`` leading batch dims, one inner product per batch index."""
    if nb == 0:
        return tree.vdot(a, b)
    return sum((x * y).reshape(x.shape[:nb] + (-1,)).sum(-1)  # (T,) leaves too: one per task
               for x, y in zip(tree.leaves(a), tree.leaves(b)))


def _check_batch(api: str, b: Any, nb: int) -> None:
    """With ``nb`` batch dims every leaf must have them, all of one size."""
    shapes = [tuple(x.shape) for x in tree.leaves(b)]
    heads = {s[:nb] for s in shapes if len(s) >= nb}
    if len(heads) > 1 or any(len(s) < nb for s in shapes):
        fail(api, f"with batch_dims={nb} every leaf needs the same leading batch dimension "
             "(one system per index)", shapes,
             "Give every leaf the task dimension first (a scalar per task is shape (T,)), or "
             "use batch_dims=0 for one joint system.")


def _axpy(alpha: torch.Tensor, x: Any, y: Any) -> Any:
    """``alpha * x + y`` with ``alpha`` of the batch shape (or a scalar) broadcast over each
    leaf."""
    return tree.map(
        lambda u, v: alpha.reshape(alpha.shape + (1,) * (u.dim() - alpha.dim())) * u + v, x, y)


def cg(maxiter: int = 10, tol: float = 0.0, damping: float = 0.0,
       batch_dims: int = 0) -> LinearSolver:
    r"""Conjugate gradient for :math:`(A + \delta I)\,x = b`, ``A`` symmetric positive definite.

    Runs exactly ``maxiter`` iterations (a fixed loop: no ``.item()``, no data-dependent branch, so
    it compiles with ``fullgraph=True`` and runs under ``vmap``). Once
    :math:`\|r_k\| \le \text{tol}\,\|b\|` the remaining iterations leave ``x`` unchanged (masked).
    With ``tol = 0`` it stops only at machine precision. In exact arithmetic ``maxiter = dim``
    solves exactly; the error falls like
    :math:`((\sqrt\kappa-1)/(\sqrt\kappa+1))^k`. Cost: ``maxiter`` matvecs (+1 with a warm start).
    ``damping`` :math:`\delta \ge 0` regularizes non-convex or ill-conditioned problems.
    ``batch_dims = 1``: every leaf has a leading batch dimension of independent systems (a
    block-diagonal ``A``, e.g. one inner problem per task in a vmapped meta-batch); each system
    gets its own step sizes and tolerance, as if solved alone — one joint CG over all of them
    would mix their spectra and converge far slower. The info then reports the largest
    iteration count and the norm of all residuals together.

    Example:
        >>> import torch
        >>> from betty_func import linsolve
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x = linsolve.cg(maxiter=2)(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> [round(v, 4) for v in x.tolist()]
        [0.0909, 0.6364]
    """
    api = "linsolve.cg(maxiter, tol, damping, batch_dims)"
    if check_nonneg_int(api, "maxiter", maxiter) == 0:
        fail(api, "`maxiter` must be >= 1: no iteration leaves the initial guess, an exact "
             "zero without one", maxiter, "Pass maxiter >= 1 (10 is the default).")
    check_nonneg_int(api, "batch_dims", batch_dims)
    if batch_dims not in (0, 1):
        fail(api, "`batch_dims` must be 0 or 1", batch_dims, "Use 1 for a leading task dimension.")
    nb = batch_dims
    check_nonneg(api, "tol", tol)
    check_nonneg(api, "damping", damping)

    def run(matvec: MatVec, b: Any, init: Optional[Any]) -> tuple:
        if nb:
            _check_batch(api, b, nb)
        if init is None:
            x, r = tree.zeros_like(b), b
        else:
            x, r = init, tree.sub(b, matvec(init))
        p, rs = r, _dot(r, r, nb)
        eps = torch.finfo(rs.dtype).eps  # past machine precision further steps only add noise
        threshold = max(tol, eps) ** 2 * _dot(b, b, nb)
        iters = torch.zeros_like(rs, dtype=torch.int64)
        for _ in range(maxiter):
            active = rs > threshold
            ap = matvec(p)
            alpha = torch.where(active, _safe_div(rs, _dot(p, ap, nb)), torch.zeros_like(rs))
            x = _axpy(alpha, p, x)
            r = _axpy(-alpha, ap, r)
            rs_new = _dot(r, r, nb)
            beta = torch.where(active, _safe_div(rs_new, rs), torch.zeros_like(rs))
            p = _axpy(beta, p, r)
            rs = torch.where(active, rs_new, rs)
            iters = iters + active.to(torch.int64)
        return x, iters.max(), torch.sqrt(rs.sum())

    return LinearSolver(f"linsolve.cg(maxiter={maxiter}, tol={tol}, damping={damping}"
                        + (f", batch_dims={nb})" if nb else ")"), run,
                        damping, tracks_residual=True, warm_starts=True)
