"""Dense direct solve: materialize the matrix, then LU. Exact; for small problems and tests."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import tree
from .._errors import check_nonneg
from ._base import LinearSolver, MatVec


def dense(damping: float = 0.0) -> LinearSolver:
    r"""Solve :math:`(A + \delta I) x = b` exactly by building ``A`` column by column.

    ``A``'s ``n`` columns come from one ``vmap``-ed matvec over the identity, then
    ``torch.linalg.solve``. Cost: ``n`` matvecs (batched), :math:`O(n^2)` memory, :math:`O(n^3)`
    time, with ``n`` the total number of entries in ``b``: use it for checks and small problems.
    A solve whose :math:`4n^2` entries (the identity, the matrix, its LU, the batched matvecs'
    outputs: a lower bound) exceed the device's free memory is refused before it allocates.

    Example:
        >>> import torch
        >>> from betty_func import linsolve
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x = linsolve.dense()(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> [round(v, 4) for v in x.tolist()]
        [0.0909, 0.6364]
    """
    check_nonneg("linsolve.dense(damping)", "damping", damping)

    def run(matvec: MatVec, b: Any, init: Optional[Any]) -> tuple:
        flat_b, unravel = tree.ravel(b)
        eye = torch.eye(flat_b.numel(), dtype=flat_b.dtype, device=flat_b.device)
        rows = torch.func.vmap(lambda e: tree.ravel(matvec(unravel(e)))[0])(eye)  # rows[i] = A e_i
        x = torch.linalg.solve(rows.T, flat_b)
        return unravel(x), 0, None

    return LinearSolver(f"linsolve.dense(damping={damping})", run, damping,
                        memory=lambda n, itemsize: 4 * n * n * itemsize)
