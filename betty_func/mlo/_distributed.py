"""Data parallel ``solve``: shard batches, agree on the program, keep replicas identical."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .. import _dist, optim, tree
from .._errors import check_nonneg_int, fail
from ._replicate import replicate

API = "solve(problems, graph, distributed)"


@dataclass(frozen=True)
class Distributed:
    """How ``solve`` runs data parallel over an initialized ``torch.distributed`` process group
    (``torchrun``: gloo on CPU, nccl on CUDA). ``solve`` uses ``Distributed()`` by itself when a
    group of more than one process is up; pass ``distributed=False`` to run each rank alone.

    * ``shard=True``: every batch (from ``data`` or ``env``) is the global batch, the same on all
      ranks; each rank keeps its slice along dim 0 of every tensor with a batch dimension (sizes
      must divide evenly). ``shard=False``: ``data`` already yields this rank's batch (for
      example a ``DataLoader`` with a ``DistributedSampler``).
    * ``check_every=N``: every ``N`` steps, verify that all ranks hold identical params (debug;
      an error names the largest difference).
    * ``group``: the process group (None: the default one).

    Losses must be means over their batch and shards equal in size: then gradients and
    hypergradients equal those of one process on the concatenated batches. Import betty_func
    before ``init_process_group`` (a warning says so otherwise): ``torch._dynamo``, which it
    loads, pins a group that already exists, whose threads can then abort the process at exit.

    Run as ``torchrun --nproc_per_node=2 train.py`` after ``init_process_group()``, each rank
    in the example below fits on 2 of the 4 rows; run alone, one process fits on all 4 (asking
    for ``Distributed(...)`` with no group up is an error, not a silent single-process run).

    Example:
        >>> import torch
        >>> from betty_func import mlo, optim
        >>> p = mlo.Problem("fit", lambda w, b: ((b @ w - 1.0) ** 2).mean(), torch.zeros(3),
        ...                 optim.sgd(0.1), data=lambda i: torch.ones(4, 3))
        >>> dp = mlo.Distributed(check_every=10) if torch.distributed.is_initialized() else None
        >>> r = mlo.solve([p], {}, steps=50, distributed=dp,
        ...               logging=mlo.Logging(progress=False, console=False))
        >>> [round(v, 3) for v in r.params["fit"].tolist()]
        [0.333, 0.333, 0.333]
    """
    shard: bool = True
    check_every: int = 0
    group: Any = None


class Runtime:
    """A ``Distributed`` config bound to its group: rank, world size and the collectives."""

    def __init__(self, config: Distributed):
        check_nonneg_int(API, "check_every", config.check_every)
        self.config, self.group = config, config.group
        self.rank, self.world = _dist.rank(self.group), _dist.world_size(self.group)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list:
        return _dist.gather_objects(obj, self.group)

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank."""
        return _dist.broadcast_object(obj, 0, self.group)

    def barrier(self) -> None:
        _dist.barrier(self.group)

    def replicate(self, values: list) -> list:
        return replicate(values, self.group)

    def shard(self, batches: dict) -> dict:
        """This rank's slice of each problem's batches (``{name: [batch, ...]}``)."""
        if not self.config.shard:
            return batches
        return {n: [self._slice(n, b) for b in bs] for n, bs in batches.items()}

    def _slice(self, name: str, batch: Any) -> Any:
        def cut(x: Any) -> Any:
            if not isinstance(x, torch.Tensor) or x.dim() == 0:
                return x
            if x.shape[0] % self.world:
                fail(API, f"a batch of '{name}' does not split evenly over {self.world} ranks "
                     "(dim 0)", f"shape {tuple(x.shape)}",
                     "Use global batch sizes divisible by the world size, or shard yourself "
                     "(Distributed(shard=False) with a DistributedSampler).")
            n = x.shape[0] // self.world
            return x[self.rank * n:(self.rank + 1) * n]
        return tree.map(cut, batch) if batch is not None else None

    def agree(self, signature: Any) -> None:
        """Every rank runs the same program, or all of them stop with the first difference."""
        seen = _dist.gather_objects(signature, self.group)
        for r, s in enumerate(seen):
            if s != seen[0]:
                diff = sorted(k for k in set(s) | set(seen[0]) if s.get(k) != seen[0].get(k))
                fail(API, f"ranks disagree on the multilevel program (rank 0 vs rank {r}, in "
                     f"{', '.join(diff)})", {k: (seen[0].get(k), s.get(k)) for k in diff},
                     "Launch every rank with the same problems, graph and steps.")

    def sync(self, values: Any) -> Any:
        """Rank 0's values of a pytree of tensors, on every rank (the start of a run)."""
        leaves = tree.leaves(values)
        return tree.unflatten(tree.structure(values), _dist.broadcast(leaves, 0, self.group))

    def mean(self, values: Any) -> Any:
        """The rank-mean of a pytree's floating leaves (logged scalars, buffers)."""
        leaves = tree.leaves(values)
        return tree.unflatten(tree.structure(values), _dist.mean_(leaves, self.group))

    def check_replicas(self, params: dict, t: int) -> None:
        """Error on every rank if any rank's params differ from rank 0's."""
        mine = tree.leaves(params)
        ref = _dist.broadcast(mine, 0, self.group)
        gap = max((float((a - b).abs().max()) for a, b in zip(mine, ref) if a.numel()),
                  default=0.0)
        gaps = _dist.gather_objects(gap, self.group)
        if max(gaps) > 0:
            fail(API, f"replicas diverged by step {t}: params differ from rank 0's",
                 f"largest |difference| per rank {gaps}",
                 "Every rank must see the same program; check for rank-dependent code in a loss.")


def check_sharded(g: Any, opt_states: dict) -> None:
    """A sharded optimizer's update is not differentiable: refuse it where updates are."""
    for n, p in g.problems.items():
        if p.unrolled and optim.is_sharded(opt_states[n]):
            fail("solve(problems, graph)", f"'{n}' is unrolled, so its updates are differentiated, "
                 "but its optimizer is sharded (optim.sharded: an all-gather, not differentiable)",
                 "optim.sharded", "Give the unrolled problem its optimizer unsharded.")


def split_states(opt_states: dict) -> tuple[dict, dict]:
    """``(shared, per_rank)``: sharded optimizer states are saved per rank in a checkpoint."""
    mine = {n: s for n, s in opt_states.items() if optim.is_sharded(s)}
    return {n: s for n, s in opt_states.items() if n not in mine}, mine


def signature(g: Any, steps: int, params: dict) -> dict:
    """What every rank must agree on: problems, graph, methods, schedule knobs, param shapes."""
    out = {"steps": steps, "order": g.order, "lowers": sorted(g.lowers.items())}
    for n, p in g.problems.items():
        out[n] = (repr(p.hypergrad), p.unroll_steps, p.accumulate, p.warmup, p.precision,
                  [(tuple(x.shape), str(x.dtype)) for x in tree.leaves(params[n])])
    return out


def runtime(distributed: Any) -> Optional[Runtime]:
    """The runtime ``solve`` uses: None for one process (or ``distributed=False``)."""
    if distributed is False or distributed is None and not _dist.initialized():
        return None
    if distributed is None or distributed is True:
        distributed = Distributed()
    if not isinstance(distributed, Distributed):
        fail(API, "`distributed` must be None, False, True or mlo.Distributed(...)",
             type(distributed).__name__)
    if not _dist.initialized():
        fail(API, "data parallel needs an initialized process group", "none",
             "Launch with torchrun and call torch.distributed.init_process_group() first.")
    rt = Runtime(distributed)
    return rt if rt.world > 1 else None
