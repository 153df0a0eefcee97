"""Structure of pytrees: checks with clear errors, partition/combine, and ravel to one vector."""
from __future__ import annotations

import math
from typing import Any, Callable

import optree
import torch

from .._errors import fail

PyTree = Any


def structure(tree: PyTree) -> Any:
    """The tree definition of ``tree`` (leaves removed)."""
    return optree.tree_structure(tree)


def unflatten(treedef: Any, leaves: list) -> PyTree:
    """Rebuild a tree from ``structure(tree)`` and a list of leaves."""
    return optree.tree_unflatten(treedef, leaves)


def is_float(x: Any) -> bool:
    """True for floating-point tensors (the leaves that can be differentiated)."""
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def partition(predicate: Callable[[Any], bool], tree: PyTree) -> tuple[PyTree, PyTree]:
    """Split ``tree`` into ``(kept, rest)``: same structure, ``None`` where a leaf went elsewhere.

    Example: ``trainable, frozen = partition(is_float, params)``; ``combine(trainable, frozen)``
    gives ``params`` back.
    """
    flat, treedef = optree.tree_flatten(tree)
    kept = [x if predicate(x) else None for x in flat]
    rest = [None if predicate(x) else x for x in flat]
    return optree.tree_unflatten(treedef, kept), optree.tree_unflatten(treedef, rest)


def combine(a: PyTree, b: PyTree) -> PyTree:
    """Inverse of :func:`partition`: at each leaf take the one of ``a``, ``b`` that is not None."""
    fa, treedef = optree.tree_flatten(a, none_is_leaf=True)
    fb = optree.tree_leaves(b, none_is_leaf=True)
    return optree.tree_unflatten(treedef, [x if x is not None else y for x, y in zip(fa, fb)])


def paths(tree: PyTree) -> list:
    """The path of every leaf of ``tree``, in leaf order (for messages)."""
    return optree.tree_paths(tree)


def check_same(api: str, a: PyTree, b: PyTree, names: tuple[str, str]) -> None:
    """Raise a clear error unless ``a`` and ``b`` have the same structure and leaf shapes."""
    sa, sb = structure(a), structure(b)
    if sa != sb:
        fail(api, f"`{names[0]}` and `{names[1]}` are pytrees of different structure",
             f"{sa} vs {sb}", "Pass pytrees with the same keys/nesting.")
    for i, (x, y) in enumerate(zip(optree.tree_leaves(a), optree.tree_leaves(b))):
        if tuple(x.shape) != tuple(y.shape):
            path = optree.tree_paths(a)[i]
            fail(api, f"leaf {path} of `{names[0]}` and `{names[1]}` differ in shape",
                 f"{tuple(x.shape)} vs {tuple(y.shape)}",
                 "Make the two pytrees match leaf for leaf.")


def check_float(api: str, tree: PyTree, name: str) -> None:
    """Raise a clear error unless ``tree`` is non-empty and every leaf is a float tensor."""
    flat = optree.tree_leaves(tree)
    if not flat:
        fail(api, f"`{name}` has no tensors", repr(tree), "Pass a pytree of float tensors.")
    for path, x in zip(optree.tree_paths(tree), flat):
        if not is_float(x):
            got = f"{type(x).__name__} {getattr(x, 'dtype', '')}".strip()
            fail(api, f"leaf {path} of `{name}` is not a floating-point tensor", got,
                 "Differentiable parameters must be float tensors; keep integer state elsewhere.")


def ravel(tree: PyTree) -> tuple[torch.Tensor, Callable[[torch.Tensor], PyTree]]:
    """Concatenate all leaves into one vector; return it and the function that undoes it."""
    flat, treedef = optree.tree_flatten(tree)
    shapes = [x.shape for x in flat]
    sizes = [math.prod(s) for s in shapes]
    vec = torch.cat([x.reshape(-1) for x in flat])

    def unravel(v: torch.Tensor) -> PyTree:
        parts = torch.split(v, sizes)
        return optree.tree_unflatten(treedef, [p.reshape(s) for p, s in zip(parts, shapes)])

    return vec, unravel
