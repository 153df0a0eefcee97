"""Linear solvers over pytrees, one signature: ``solve(matvec, b, init=None) -> x``.

>>> import torch
>>> from betty_func import linsolve
>>> A = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
>>> x, info = linsolve.cg(maxiter=2).with_info(lambda v: A @ v, torch.ones(2))
>>> bool(info.residual_norm < 1e-5)
True
"""
from ._base import LinearSolver, SolveInfo
from ._cg import cg
from ._dense import dense
from ._identity import identity
from ._neumann import neumann

__all__ = ["LinearSolver", "SolveInfo", "cg", "neumann", "identity", "dense"]
