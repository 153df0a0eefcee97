"""One optimizer per group of params (torch's ``param_groups``), chosen by a label per leaf."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch

from .. import tree
from .._errors import fail
from ._base import Optimizer, check_optimizer, refuse_loss_scaled_inside
from ._hyper import _groups, learning_rate

PyTree = Any
API = "optim.partition(transforms, labels)"


class PartitionState(NamedTuple):
    """The state of :func:`partition`: one state per transform."""
    states: tuple  #: one state per transform, in order (each over its own leaves, a flat list)


# lookups of one value (tree_get, learning_rate) read the first group that has the field: a
# class attribute, not a field, so set outside the body (mypy reads a NamedTuple's body as fields)
setattr(PartitionState, "_lookup_first_group", True)


def _check_label(api: str, where: str, label: Any, n: int) -> None:
    fix = (f"Label each leaf with the index of its transform (0 to {n - 1}), or None to freeze "
           "it.")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        fail(api, f"every label must be an int or None; {where} is not",
             f"{type(label).__name__} {label!r}", fix, exc=TypeError)
    if label is not None and not 0 <= label < n:
        fail(api, f"a label must index `transforms` (0 to {n - 1}); {where} does not",
             repr(label), fix)


def _flat_labels(api: str, like: PyTree, labels: PyTree, n: int) -> list:
    """The label of each leaf of ``like`` in leaf order (None leaves of ``labels`` kept)."""
    try:
        flat = tree.structure(like).flatten_up_to(labels)
    except (ValueError, TypeError) as e:
        fail(api, "`labels` must have the structure of the params (one label per leaf)",
             f"{e}", "Build labels from the params, e.g. {name: 0 for name in params}.")
    for path, label in zip(tree.paths(like), flat):
        _check_label(api, "the label of leaf " + "".join(f"[{k!r}]" for k in path), label, n)
    return flat


def partition(transforms: Sequence[Optimizer], labels: PyTree) -> Optimizer:
    r"""Apply ``transforms[i]`` to the leaves labelled ``i``; a leaf labelled None is frozen.

    ``labels`` has the params' structure with an int or None at each leaf. Transform ``i`` sees
    its leaves as a flat list (in the params' leaf order), so ``sgd``, ``adam``, ``chain``,
    ``clip_by_global_norm`` (whose norm is then the group's) work as they are:

    .. math::
        u_j = \text{transforms}[\ell_j](\{g_k : \ell_k = \ell_j\})_j,\qquad
        u_j = 0 \text{ where } \ell_j = \text{None}

    The state is ``PartitionState(states)``, one per transform; a frozen leaf has none.
    ``optim.learning_rate`` / ``tree_get(state, "lr")`` read the first group's rate,
    ``optim.group_learning_rates`` every group's; ``tree_set(state, lr=...)`` sets them all.
    Cost: each transform's own, plus one flatten of the params per update.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.partition([optim.sgd(0.1), optim.adam(0.01)],
        ...                       {"w": 0, "b": 1, "frozen": None})
        >>> p = {"w": torch.ones(2), "b": torch.zeros(()), "frozen": torch.ones(1)}
        >>> p, s = optim.step(opt, p, {k: torch.ones_like(v) for k, v in p.items()},
        ...                   opt.init(p))
        >>> [round(x, 4) for x in p["w"].tolist()], round(float(p["b"]), 4), p["frozen"].tolist()
        ([0.9, 0.9], -0.01, [1.0])
        >>> [round(float(r), 4) for r in optim.group_learning_rates(s)]
        [0.1, 0.01]
    """
    if isinstance(transforms, Optimizer) or not isinstance(transforms, (list, tuple)):
        fail(API, "`transforms` must be a list of optimizers, one per label",
             type(transforms).__name__, "Pass e.g. [optim.sgd(0.1), optim.adam(1e-3)].",
             exc=TypeError)
    if not transforms:
        fail(API, "`transforms` must not be empty", "[]",
             "Pass one optimizer per label, e.g. [optim.sgd(0.1)].")
    for i, t in enumerate(transforms):
        check_optimizer(API, f"transforms[{i}]", t)
    n = len(transforms)
    for label in tree.leaves(labels):  # None leaves are empty nodes here; init checks them
        _check_label(API, "one of `labels`", label, n)

    def split(xs: list, flat: list, i: int) -> list:
        return [x for x, label in zip(xs, flat) if label == i]

    def init(params: PyTree) -> PartitionState:
        flat, leaves = _flat_labels(API, params, labels, n), tree.leaves(params)
        states = tuple(t.init(split(leaves, flat, i)) for i, t in enumerate(transforms))
        for i, s in enumerate(states):
            refuse_loss_scaled_inside(API, f"transforms[{i}]", s)
        return PartitionState(states)

    def update(grads: PyTree, state: PartitionState, params: PyTree = None
               ) -> tuple[PyTree, PartitionState]:
        flat = _flat_labels("optim.partition(...).update(grads, state, params)", grads,
                            labels, n)
        g = tree.leaves(grads)
        p = None if params is None else tree.leaves(params)
        out = [torch.zeros_like(x) if label is None else None for x, label in zip(g, flat)]
        new = []
        for i, (t, s) in enumerate(zip(transforms, state.states)):
            where = [j for j, label in enumerate(flat) if label == i]
            u, s = t.update(split(g, flat, i), s, None if p is None else split(p, flat, i))
            for j, x in zip(where, u):
                out[j] = x
            new.append(s)
        return tree.unflatten(tree.structure(grads), out), PartitionState(tuple(new))

    return Optimizer(init, update)


def _find_groups(state: PyTree) -> Optional[PartitionState]:
    if _groups(state):
        return state
    children = state.values() if isinstance(state, dict) else \
        state if isinstance(state, (tuple, list)) else ()
    for child in children:
        found = _find_groups(child)
        if found is not None:
            return found
    return None


def group_learning_rates(state: PyTree) -> list[torch.Tensor]:
    """The rate of the next update of each group, 0-d float64 tensors: for a ``partition``
    state (the first one found, e.g. inside ``accumulate`` or ``loss_scaled``) one per
    transform, in order; for any other state a list of one (``optim.learning_rate``).
    A group (or state) without a rate is refused.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.adam(1e-3)
        >>> optim.group_learning_rates(opt.init(torch.zeros(2)))
        [tensor(0.0010, dtype=torch.float64)]
    """
    part = _find_groups(state)
    groups = part.states if part is not None else (state,)
    rates = []
    for i, s in enumerate(groups):
        rate = learning_rate(s)
        if rate is None:
            where = f"group {i} of the partition" if part is not None else "the state"
            fail("optim.group_learning_rates(state)", f"{where} has no learning rate (no `lr` "
                 "field: a transformation such as clip_by_global_norm alone)",
                 type(s).__name__, "Give every group an optimizer with a rate, e.g. "
                 "optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1)).")
        rates.append(rate)
    return rates
