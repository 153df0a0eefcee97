"""ZeRO-1: each data-parallel rank keeps the optimizer state of a slice of the params."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
import torch.distributed as dist

from .. import _dist, tree
from .._errors import fail
from ._base import Optimizer, check_optimizer, refuse_loss_scaled_inside

PyTree = Any
API = "optim.sharded(opt, group)"


class ShardedState(NamedTuple):
    """The state of :func:`sharded` (ZeRO-1) on one rank."""
    inner: PyTree  #: ``opt``'s state over this rank's slice of the flattened params


def _ravel(xs: PyTree) -> tuple[torch.Tensor, Any]:
    """``tree.ravel`` of one dtype (a mixed pytree would be promoted silently)."""
    dtypes = {x.dtype for x in tree.leaves(xs)}
    if len(dtypes) > 1:
        fail(API, "ZeRO-1 flattens the params into one vector, so they must share a dtype",
             sorted(str(d) for d in dtypes), "Cast them to one dtype, or shard per group.")
    return tree.ravel(xs)


def sharded(opt: Optimizer, group: Optional[Any] = None) -> Optimizer:
    r"""``opt`` with its state sharded over the ranks of ``group`` (ZeRO stage 1).

    The params are flattened into one vector of length :math:`N`, padded to :math:`W\lceil N/W
    \rceil`; rank :math:`r` keeps ``opt``'s state for slice :math:`r` only and computes the updates
    of that slice from the (already averaged) gradients, then one all-gather assembles the full
    update on every rank. Memory of ``opt``'s state: :math:`1/W` (Adam: :math:`2N/W` floats
    instead of :math:`2N`); cost: one all-gather of :math:`N` values per update. The result equals
    ``opt`` unsharded exactly when ``opt`` works elementwise (``sgd``, ``adam``, ``adamw``,
    schedules); clip first and shard after: ``chain(clip_by_global_norm(c), sharded(adam(lr)))``.
    Not differentiable (unrolled methods need ``opt`` itself). At world size 1 it is ``opt``.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> opt = optim.sharded(optim.adam(0.1))      # one process: the whole state here
        >>> s = opt.init({"w": torch.zeros(2), "b": torch.zeros(())})
        >>> u, s = opt.update({"w": torch.ones(2), "b": -torch.ones(())}, s, None)
        >>> [round(v, 4) for v in u["w"].tolist()], round(float(u["b"]), 4)
        ([-0.1, -0.1], 0.1)
    """
    check_optimizer(API, "opt", opt)

    def bounds(n: int) -> tuple[int, int, int]:
        w = _dist.world_size(group)
        per = -(-n // w)
        return per, _dist.rank(group) * per, w

    def mine(flat: torch.Tensor) -> torch.Tensor:
        per, lo, w = bounds(flat.numel())
        return torch.nn.functional.pad(flat, (0, per * w - flat.numel()))[lo:lo + per]

    def init(params: PyTree) -> ShardedState:
        inner = opt.init(mine(_ravel(params)[0]))
        refuse_loss_scaled_inside(API, "opt", inner)
        return ShardedState(inner)

    def update(grads: PyTree, state: ShardedState, params: PyTree = None
               ) -> tuple[PyTree, ShardedState]:
        flat, unravel = _ravel(grads)
        p = None if params is None else mine(_ravel(params)[0].detach())
        u, inner = opt.update(mine(flat), state.inner, p)
        w = _dist.world_size(group)
        if w > 1:
            parts = [torch.empty_like(u) for _ in range(w)]
            dist.all_gather(parts, u.contiguous(), group=group)
            u = torch.cat(parts)
        return unravel(u[:flat.numel()]), ShardedState(inner)

    return Optimizer(init, update)


def is_sharded(state: PyTree) -> bool:
    """Whether an optimizer state holds a ``sharded`` (per-rank) part."""
    if isinstance(state, ShardedState):
        return True
    if isinstance(state, (tuple, list)):
        return any(is_sharded(x) for x in state)
    return isinstance(state, dict) and any(is_sharded(x) for x in state.values())
