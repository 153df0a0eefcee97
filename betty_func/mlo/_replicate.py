r"""Data-parallel derivatives as autograd: replicated params in, averaged cotangents out.

Each rank evaluates its loss :math:`L_r` on its shard; the program differentiates
:math:`L = \frac1W \sum_r L_r`, the loss of the concatenated batch (equal shard sizes, mean
losses). Params enter every loss through :func:`replicate`, whose value is the params and whose
VJP is the mean over ranks of the cotangents — one bucketed all-reduce. Its VJP is itself
differentiable (the mean's VJP is :func:`replicate` again: per-rank cotangents of a replicated
value count once on each rank), so every derivative built from losses is the global one:

* a gradient :math:`\nabla L = \mathrm{mean}_r \nabla L_r` (one all-reduce),
* a Hessian-vector product :math:`H v = \mathrm{mean}_r H_r v` (one all-reduce per product —
  inside CG and Neumann, and the mixed term of the joint linearization),
* the cotangent an upper sends down, its direct term, finite-difference gradients, and the
  differentiated updates of an unrolled window.

A hypergradient is therefore that of one process on the concatenated batches, not an average of
per-rank hypergradients (which differ: the inverse of a mean is not the mean of inverses).

Under ``torch.compile`` (``solve(..., compile=True)``): Dynamo inlines an ``autograd.Function``'s
forward and drops its backward (pytorch#193279: each rank would keep its own gradient), and
``torch.func`` refuses the registered VJPs of ``torch.distributed``'s functional collectives.
So :func:`replicate` enters the graph whole (``torch._dynamo.allow_in_graph``: AOTAutograd,
not Dynamo, traces it, and runs its backward), and the all-reduce is the custom op
``betty_func::rank_mean``, which the graph calls as it is (a fake kernel gives its shapes while
tracing).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist

from .. import _dist

PyTree = Any


@torch.library.custom_op("betty_func::rank_mean", mutates_args=())
def _rank_mean(xs: list[torch.Tensor], group: str) -> list[torch.Tensor]:
    """The mean over the ranks of ``group`` (its name; "": the default group) of each tensor:
    one all-reduce per (device, dtype). New tensors, as a custom op must return."""
    resolve: Any = dist.distributed_c10d._resolve_process_group  # (takes a GroupName on 2.13)
    pg = resolve(group) if group else None
    w = dist.get_world_size(pg)
    out = [x if x.is_floating_point() else x.clone() for x in xs]  # floating ones: below
    for idx in _dist._buckets(xs).values():
        flat = _dist._packed(xs, idx, pg)
        dist.all_reduce(flat, group=pg)
        parts = torch.split(flat.div_(w), [xs[i].numel() for i in idx])
        for i, part in zip(idx, parts):  # a bucket of one owns its buffer; others copy out
            part = part.view_as(xs[i]).to(xs[i].device)
            out[i] = part if len(idx) == 1 else part.clone()
    return out


@_rank_mean.register_fake
def _(xs: list[torch.Tensor], group: str) -> list[torch.Tensor]:
    return [torch.empty_like(x) for x in xs]


def _name(group: Optional[Any]) -> str:
    return "" if group is None else group.group_name


class _Replicate(torch.autograd.Function):
    """Value: the inputs. VJP: the rank-mean of the cotangents of inputs that need one."""

    @staticmethod
    def forward(group: str, *xs: torch.Tensor) -> tuple:
        return tuple(x.view_as(x) for x in xs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.group = inputs[0]

    @staticmethod
    def backward(ctx: Any, *cots: torch.Tensor) -> tuple:
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[1:]) if need]
        out: list = [None] * len(cots)
        if wanted:
            for i, m in zip(wanted, _Mean.apply(ctx.group, *[cots[i] for i in wanted])):
                out[i] = m
        return (None, *out)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, group: Any, *xs: torch.Tensor) -> tuple:
        return _Replicate.apply(group, *xs), tuple(in_dims[1:])


class _Mean(torch.autograd.Function):
    """Value: the mean over ranks (one all-reduce per dtype). VJP: :class:`_Replicate`."""

    @staticmethod
    def forward(group: str, *xs: torch.Tensor) -> tuple:
        return tuple(torch.ops.betty_func.rank_mean(list(xs), group))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.group = inputs[0]

    @staticmethod
    def backward(ctx: Any, *cots: torch.Tensor) -> tuple:
        return (None, *_Replicate.apply(ctx.group, *cots))

    @staticmethod
    def vmap(info: Any, in_dims: tuple, group: Any, *xs: torch.Tensor) -> tuple:
        # every rank batches the same way, so the physical tensors line up across ranks
        return _Mean.apply(group, *xs), tuple(in_dims[1:])


def replicate(values: list, group: Optional[Any] = None) -> list:
    """``values`` (tensors) as they are, with the rank-mean as their VJP; non-tensors pass."""
    idx = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not idx:
        return list(values)
    out = list(values)
    for i, r in zip(idx, _replicated(_name(group), *[values[i] for i in idx])):
        out[i] = r
    return out


@torch._dynamo.allow_in_graph
def _replicated(group: str, *xs: torch.Tensor) -> tuple:
    """:class:`_Replicate` of ``xs``, written into a compiled graph as one call (not inlined)."""
    return _Replicate.apply(group, *xs)
