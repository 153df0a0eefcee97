"""Hyperparameters live in the optimizer state and are found there by name.

An optimizer's state is a pytree of NamedTuples (``SgdState``, ``AdamState``, ``LossScaleState``,
a tuple for ``chain``, ...). Whatever the nesting, ``tree_get(state, "lr")`` finds the rate the
next update will use and ``tree_set(state, lr=...)`` changes it, so combinators (``chain``,
``sharded``, ``loss_scaled``) have no fields to forward and cannot drop one (optax's
``inject_hyperparams`` and ``tree_utils.tree_get`` are the model).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from .._errors import fail

PyTree = Any
_MISSING = object()


def _children(node: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return zip(node._fields, node)
    if isinstance(node, dict):
        return iter(node.items())
    if isinstance(node, (tuple, list)):
        return enumerate(node)
    return iter(())


def _has(node: Any, name: str) -> bool:
    """Only NamedTuple fields count: dict keys in a state are the user's param names (the
    buffers of momentum and Adam are shaped like the params), never hyperparameters."""
    return isinstance(node, tuple) and hasattr(node, "_fields") and name in node._fields


def _groups(node: Any) -> bool:
    """A state of parallel groups (``optim.partition``'s ``PartitionState``): in a lookup for
    one value its first group that has the field answers for all of them."""
    return getattr(type(node), "_lookup_first_group", False)


def occurrences(state: PyTree, name: str, path: tuple = (),
                every_group: bool = True) -> Iterator[tuple[tuple, Any]]:
    """``(path, value)`` of every NamedTuple field called ``name``, depth first in order (in a
    ``chain``, the transformations left to right). With ``every_group=False`` a partition's
    groups count as one: only the first group that has the field is searched."""
    if _has(state, name):
        yield path + (name,), getattr(state, name)
    if not every_group and _groups(state):
        for i, child in enumerate(state.states):
            found = list(occurrences(child, name, path + ("states", i), False))
            if found:
                yield from found
                return
        return
    for key, child in _children(state):
        if isinstance(child, (tuple, list, dict)):  # tensor leaves (most of a state) hold none
            yield from occurrences(child, name, path + (key,), every_group)


def tree_get(state: PyTree, name: str, default: Any = _MISSING) -> Any:
    """The one NamedTuple field called ``name`` anywhere in an optimizer state (dict keys are
    param names, not searched). In an ``optim.partition`` state the first group that has the
    field answers (e.g. the first param group's ``lr``; all of them: ``group_learning_rates``).

    Raises ``ValueError`` when there is none (unless ``default`` is given) or several (say which
    with the path: ``state[0].lr``).

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1))
        >>> optim.tree_get(opt.init(torch.zeros(2)), "lr")   # (1,): see optim._base.lr_value
        tensor([0.1000], dtype=torch.float64)
    """
    found = list(occurrences(state, name, every_group=False))
    if len(found) == 1:
        return found[0][1]
    if not found and default is not _MISSING:
        return default
    where = [_path(p) for p, _ in found]
    fail("optim.tree_get(state, name)", f"`name` must name exactly one field of the state; "
         f"{name!r} names {len(found)}", where or type(state).__name__,
         "Pick the part first (e.g. state[1]), or pass default= for an optional field.")


def tree_set(state: PyTree, **values: Any) -> PyTree:
    """``state`` with every NamedTuple field of each given name replaced (a number becomes a
    tensor of the old value's dtype, device and shape; in a ``partition``, in every group).
    Out of place; an unknown name is refused.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.adam(1e-3)
        >>> s = optim.tree_set(opt.init(torch.zeros(2)), lr=1e-4)   # from now on, 1e-4
        >>> u, s = opt.update(torch.ones(2), s, torch.zeros(2))
        >>> [round(x, 6) for x in u.tolist()]
        [-0.0001, -0.0001]
    """
    for name in values:
        if next(occurrences(state, name), None) is None:
            fail("optim.tree_set(state, **values)", f"the state has no field {name!r}",
                 type(state).__name__, "Set a field the state has (optim.tree_get finds them).")
    return _set(state, values)


def _set(node: Any, values: dict) -> Any:
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(_new(node, k, v, values) for k, v in zip(node._fields, node)))
    if isinstance(node, dict):
        return {k: _set(v, values) for k, v in node.items()}
    if isinstance(node, (tuple, list)):
        return type(node)(_set(x, values) for x in node)
    return node


def _new(node: Any, key: Any, old: Any, values: dict) -> Any:
    if key not in values:
        return _set(old, values)
    v = values[key]
    if isinstance(old, torch.Tensor):  # a number, or a tensor of another dtype or shape
        return torch.as_tensor(v, dtype=old.dtype, device=old.device).reshape(old.shape)
    return v


def _path(path: tuple) -> str:
    return "state" + "".join(f".{k}" if isinstance(k, str) else f"[{k}]" for k in path)


def learning_rate(state: PyTree) -> Optional[torch.Tensor]:
    """The rate the next update will use, a 0-d float64 tensor: the last ``lr`` in the state
    (in a ``chain``, the last transformation that has one; in a ``partition``, its first group
    that has one), or None for a state without one (``clip_by_global_norm``)."""
    found = list(occurrences(state, "lr", every_group=False))
    return found[-1][1].reshape(()) if found else None


def loss_scale(state: PyTree) -> Optional[torch.Tensor]:
    """The factor the next loss is multiplied by before differentiating (``loss_scaled``), or None
    for a state that does not scale (1)."""
    return tree_get(state, "loss_scale", None)


def state_like(opt: Any, params: PyTree) -> PyTree:
    """``opt.init`` on meta copies of ``params``: the state's structure (its fields, to look up
    by name) without allocating it; on ``params`` themselves for an init that reads values."""
    from .. import tree
    meta = tree.map(lambda x: x.to("meta"), params)
    try:
        return opt.init(meta)
    except Exception:  # noqa: BLE001 - e.g. .item() on a meta tensor: the real init decides
        return opt.init(params)
