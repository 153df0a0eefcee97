"""Truncated Neumann series for the inverse of a matrix."""
from __future__ import annotations

from typing import Any, Optional

from .. import tree
from .._errors import check_nonneg, check_nonneg_int, check_positive, fail
from ._base import LinearSolver, MatVec


def neumann(steps: int = 5, alpha: float = 1.0, damping: float = 0.0) -> LinearSolver:
    r"""Neumann series :math:`x = \alpha \sum_{k=0}^{K} (I - \alpha A)^k\, b \approx A^{-1} b`.

    Converges iff the spectral radius of :math:`I - \alpha A` is below one, i.e.
    :math:`0 < \alpha < 2/\lambda_{\max}(A)` for SPD ``A`` (Betty's default ``alpha = 1`` diverges
    once :math:`\lambda_{\max} > 2`). Error falls like :math:`(1 - \alpha\lambda_{\min})^{K+1}`.
    Cost: ``steps`` matvecs. ``init`` is ignored (the series has no iterate to warm-start).

    Example:
        >>> import torch
        >>> from betty_func import linsolve
        >>> x = linsolve.neumann(steps=50, alpha=0.5)(lambda v: 2 * v, torch.ones(2))
        >>> x.tolist()
        [0.5, 0.5]
    """
    api = "linsolve.neumann(steps, alpha, damping)"
    if check_nonneg_int(api, "steps", steps) == 0:
        fail(api, "`steps` must be >= 1 (zero terms is alpha * b, the identity "
             "approximation)", steps, "Pass steps >= 1, or use linsolve.identity(alpha).")
    check_positive(api, "alpha", alpha)
    check_nonneg(api, "damping", damping)

    def run(matvec: MatVec, b: Any, init: Optional[Any]) -> tuple:
        term = acc = b
        for _ in range(steps):
            term = tree.axpy(-alpha, matvec(term), term)
            acc = tree.add(acc, term)
        return tree.scale(alpha, acc), steps, None

    return LinearSolver(f"linsolve.neumann(steps={steps}, alpha={alpha}, damping={damping})", run,
                        damping, eig_bound=2.0 / alpha)
