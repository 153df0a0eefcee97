"""Arithmetic on pytrees of tensors: the vector-space operations solvers and optimizers need.

Every function is pure and out of place, so all of them are differentiable and work under
``torch.func`` transforms and ``torch.compile``.
"""
from __future__ import annotations

from typing import Any, Callable

import optree
import torch

PyTree = Any


def map(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:  # noqa: A001
    """``fn`` applied leafwise: ``map(f, a, b)[k] = f(a[k], b[k])``. ``None`` is an empty node."""
    return optree.tree_map(fn, tree, *rest)


def leaves(tree: PyTree) -> list:
    """The leaves of ``tree`` in a fixed (sorted-key) order."""
    return optree.tree_leaves(tree)


def add(a: PyTree, b: PyTree) -> PyTree:
    """``a + b`` leafwise."""
    return optree.tree_map(torch.add, a, b)


def sub(a: PyTree, b: PyTree) -> PyTree:
    """``a - b`` leafwise."""
    return optree.tree_map(torch.sub, a, b)


def scale(s: float | torch.Tensor, a: PyTree) -> PyTree:
    """``s * a`` for a scalar ``s`` (a number or a 0-d tensor)."""
    return optree.tree_map(lambda x: s * x, a)


def axpy(alpha: float | torch.Tensor, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y`` leafwise (BLAS axpy)."""
    return optree.tree_map(lambda u, v: alpha * u + v, x, y)


def neg(a: PyTree) -> PyTree:
    """``-a`` leafwise."""
    return optree.tree_map(torch.neg, a)


def vdot(a: PyTree, b: PyTree) -> torch.Tensor:
    """Inner product ``sum_k <a_k, b_k>`` as a 0-d tensor (no host sync)."""
    terms = [torch.sum(x * y) for x, y in zip(leaves(a), leaves(b))]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum() if len(terms) > 1 else terms[0]


def norm(a: PyTree) -> torch.Tensor:
    """Euclidean norm over all leaves, ``sqrt(vdot(a, a))``, as a 0-d tensor."""
    return torch.sqrt(vdot(a, a))


def zeros_like(a: PyTree) -> PyTree:
    """Zeros shaped like every leaf of ``a``."""
    return optree.tree_map(torch.zeros_like, a)


def ones_like(a: PyTree) -> PyTree:
    """Ones shaped like every leaf of ``a``."""
    return optree.tree_map(torch.ones_like, a)


def where(cond: torch.Tensor, a: PyTree, b: PyTree) -> PyTree:
    """``a`` where the 0-d boolean ``cond`` holds, else ``b`` (leafwise; no host sync). Leaves
    that are not tensors (a static knob in an optimizer state) are taken from ``a``."""
    return optree.tree_map(lambda x, y: torch.where(cond, x, y) if isinstance(x, torch.Tensor)
                           else x, a, b)


def all_finite(a: PyTree) -> torch.Tensor:
    """A 0-d boolean tensor: no floating leaf of ``a`` holds a NaN or an inf. One reduction per
    leaf and no host sync: ``0 * x`` sums to NaN exactly when ``x`` has one (and never
    overflows)."""
    total = sum((x * 0).sum() for x in optree.tree_leaves(a) if x.is_floating_point())
    return torch.isfinite(torch.as_tensor(total))
