"""The identity 'solver': :math:`A^{-1} \\approx c I` (DARTS' approximation)."""
from __future__ import annotations

from typing import Any, Optional

from .. import tree
from .._errors import check_positive
from ._base import LinearSolver, MatVec


def identity(scale: float = 1.0) -> LinearSolver:
    r"""Return :math:`x = c\, b`, ignoring ``A``: the approximation :math:`A^{-1} \approx c I`.

    Free (no matvec). Exact only when ``A = I / c``; DARTS uses ``c`` = the inner learning rate.

    Example:
        >>> import torch
        >>> from betty_func import linsolve
        >>> linsolve.identity(0.5)(lambda v: v, torch.ones(2)).tolist()
        [0.5, 0.5]
    """
    check_positive("linsolve.identity(scale)", "scale", scale)

    def run(matvec: MatVec, b: Any, init: Optional[Any]) -> tuple:
        return tree.scale(scale, b), 0, None

    return LinearSolver(f"linsolve.identity(scale={scale})", run)
