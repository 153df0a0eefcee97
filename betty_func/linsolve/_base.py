"""The solver protocol shared by every linear solver: ``solve(matvec, b) -> x`` over pytrees."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch

from .. import tree
from .._errors import fail
from .._memory import free_bytes, gib

PyTree = Any
MatVec = Callable[[PyTree], PyTree]
# run(matvec, b, init) -> (x, iterations, residual_norm or None when the solver does not track it)
Run = Callable[[MatVec, PyTree, Optional[PyTree]], tuple]


class SolveInfo(NamedTuple):
    """Diagnostics as tensors (reading them is the caller's choice; no host sync here)."""
    residual_norm: torch.Tensor  #: ||A x - b||_2
    iterations: torch.Tensor     #: int64, matrix-vector products spent on iterations


class LinearSolver:
    """A configured solver. ``solver(matvec, b, init=None) -> x``;
    ``solver.with_info(matvec, b, init=None) -> (x, SolveInfo)``.

    ``matvec`` maps a pytree shaped like ``b`` to another such pytree (a symmetric positive
    definite operator for ``cg``); ``init`` is an optional warm start shaped like ``b``.
    """

    def __init__(self, name: str, run: Run, damping: float = 0.0, tracks_residual: bool = False,
                 eig_bound: Optional[float] = None,
                 memory: Optional[Callable[[int, int], int]] = None, warm_starts: bool = False):
        self.name, self._run, self.damping = name, run, damping
        self.tracks_residual = tracks_residual  # with_info costs no extra matvec
        self.warm_starts = warm_starts  # `init` is read (cg); others ignore it
        # the solver converges only while every |eigenvalue| of A + damping I stays below this
        # (Neumann: 2 / alpha); None: no such bound (cg, dense, identity)
        self.eig_bound = eig_bound
        # memory(n, itemsize): a lower bound on the bytes a solve of n unknowns allocates, for
        # solvers whose memory grows faster than the problem (dense: O(n²)); None: O(n)
        self.memory = memory

    def __repr__(self) -> str:
        return self.name

    def _damped(self, matvec: MatVec) -> MatVec:
        if not self.damping:
            return matvec
        return lambda v: tree.axpy(self.damping, v, matvec(v))

    def _check(self, b: PyTree, init: Optional[PyTree]) -> None:
        api = f"{self.name}(matvec, b, init)"
        tree.check_float(api, b, "b")
        if init is not None:
            tree.check_same(api, init, b, ("init", "b"))
        if not torch.compiler.is_compiling():  # compiled, the eager first call checked it
            self.check_memory(b)

    def check_memory(self, b: PyTree, where: str = "") -> None:
        """Refuse a solve whose memory (``self.memory``, a lower bound) exceeds what is free on
        ``b``'s device, before anything is allocated."""
        leaves = tree.leaves(b)
        if self.memory is None or not leaves:
            return
        n = sum(x.numel() for x in leaves)
        need = self.memory(n, max(x.element_size() for x in leaves))
        free = free_bytes(leaves[0].device)
        if free is not None and need > free:
            fail(f"{self.name}(matvec, b, init)", f"a solve of n={n:,} unknowns{where} needs at "
                 f"least {gib(need)}, and {leaves[0].device} has {gib(free)} free", None,
                 "Use an iterative solver (hypergrad.cg, linsolve.cg: O(n) memory).")

    def __call__(self, matvec: MatVec, b: PyTree, init: Optional[PyTree] = None) -> PyTree:
        self._check(b, init)
        return self._run(self._damped(matvec), b, init)[0]

    def with_info(self, matvec: MatVec, b: PyTree,
                  init: Optional[PyTree] = None) -> tuple[PyTree, SolveInfo]:
        self._check(b, init)
        mv = self._damped(matvec)
        x, iters, res = self._run(mv, b, init)
        if res is None:  # one extra matvec for solvers that do not track their residual
            res = tree.norm(tree.sub(mv(x), b))
        return x, SolveInfo(res, torch.as_tensor(iters, dtype=torch.int64))
