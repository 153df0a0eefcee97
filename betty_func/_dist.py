"""``torch.distributed`` collectives over pytrees, bucketed: one flat buffer per call.

Every helper takes a process group (None: the default group) and is a no-op at world size 1.
Leaves are packed per (device, dtype) into one buffer each, so a gradient pytree of any number
of tensors costs one collective per dtype, not one per tensor.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist

PyTree = Any


def initialized() -> bool:
    """Whether a default process group is up (``torchrun`` + ``init_process_group``)."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: Optional[Any] = None) -> int:
    return dist.get_world_size(group) if initialized() else 1


def rank(group: Optional[Any] = None) -> int:
    return dist.get_rank(group) if initialized() else 0


def _buckets(tensors: list, floating: bool = True) -> dict:
    """``{(device, dtype): [indices]}`` of the (floating) tensors: one buffer per bucket."""
    out: dict = {}
    for i, t in enumerate(tensors):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or not floating):
            out.setdefault((t.device, t.dtype), []).append(i)
    return out


def _packed(tensors: list, idx: list, group: Optional[Any]) -> torch.Tensor:
    """One flat buffer of ``tensors[idx]``, on the current CUDA device when the backend is nccl
    (which cannot reduce CPU tensors: step counters and logged scalars may live there)."""
    flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
    if dist.get_backend(group) == "nccl" and flat.device.type == "cpu":
        flat = flat.to(torch.device("cuda", torch.cuda.current_device()))
    return flat.contiguous()


def _unpacked(flat: torch.Tensor, tensors: list, idx: list, out: list) -> None:
    for i, part in zip(idx, torch.split(flat, [tensors[i].numel() for i in idx])):
        out[i] = part.view_as(tensors[i]).to(tensors[i].device)


def mean_(tensors: list, group: Optional[Any] = None) -> list:
    """The mean over ranks of each floating tensor (others returned as they are); one
    all-reduce per (device, dtype). Not differentiable (see ``mlo._replicate`` for the autograd
    form)."""
    w = world_size(group)
    out = list(tensors)
    if w == 1:
        return out
    for idx in _buckets(tensors).values():
        flat = _packed(tensors, idx, group)
        dist.all_reduce(flat, group=group)
        _unpacked(flat.div_(w), tensors, idx, out)
    return out


def broadcast(tensors: list, src: int = 0, group: Optional[Any] = None) -> list:
    """Rank ``src``'s values of every tensor (floating or not), one broadcast per dtype."""
    if world_size(group) == 1:
        return list(tensors)
    out = list(tensors)
    for idx in _buckets(tensors, floating=False).values():
        flat = _packed(tensors, idx, group)
        dist.broadcast(flat, src=src, group=group)
        _unpacked(flat, tensors, idx, out)
    return out


def gather_objects(obj: Any, group: Optional[Any] = None) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if world_size(group) == 1:
        return [obj]
    out: list = [None] * world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def broadcast_object(obj: Any, src: int = 0, group: Optional[Any] = None) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size(group) == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def barrier(group: Optional[Any] = None) -> None:
    if world_size(group) > 1:
        dist.barrier(group=group)
