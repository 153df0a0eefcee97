"""Data parallel ``mlo.solve``: steps/s of the reweighting bilevel step at 1 and 2 processes.

The MWN step of ``mwn.py`` (classifier MLP lower, 1-100-1 reweighting net upper) with a fixed
global batch (each of 2 ranks takes half; a small one, where communication and per-call overhead
dominate, and a large one, where the halved arithmetic does), gloo on CPU (one thread per
process) or nccl on GPU (one device per process, where there are two). Each configuration runs
in fresh spawned processes; rank 0 times the ``steps`` global steps that follow ``warmup``
ones inside one run (a logger's clock at the end of each step, so that the start-up —
agreement, broadcast, preflight — and compiling, which the warm-up steps do, are not counted).
The ZeRO-1 rows shard the Adam state of both problems (``optim.sharded``); the state column is
what one rank holds. ``smoke`` runs two rows (the test suite's check that the script runs);
the compiled row (not in ``smoke``: inductor takes a minute per process here) runs
``compile=True``; its compile column is the seconds spent compiling, once per pattern of
updates.
"""
from __future__ import annotations

import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from betty_func import hypergrad as hg, logging, mlo, optim, tree
from _common import count, mlp, progress

METHODS = ("darts", "cg K=3", "unrolled T=1", "cg K=3 + ZeRO-1")
COMPILED = "cg K=3, compiled"
LEVELS = {"smoke": dict(sizes=(784, 16, 10), batches=(32,), steps=2, warmup=2,  # (the tests)
                        methods=("cg K=3", "cg K=3 + ZeRO-1")),
          "quick": dict(sizes=(784, 108, 10), batches=(256, 4096), steps=6, warmup=2,
                        methods=(*METHODS, COMPILED)),
          "full": dict(sizes=(784, 108, 10), batches=(256, 4096), steps=20, warmup=3,
                       methods=(*METHODS, COMPILED))}
COLUMNS = [("method", "method"), ("params", "params"), ("batch", "global batch"),
           ("sps_1", "steps/s, 1 proc"), ("sps_2", "steps/s, 2 procs"), ("speedup", "2 / 1"),
           ("state_1", "opt state MiB/rank, 1"), ("state_2", "opt state MiB/rank, 2"),
           ("compile_2", "compile s, 2 procs")]


class _Clock(logging.Logger):
    """The time at the end of each global step (after the device finished it)."""

    def __init__(self, device: str):
        self.device, self.at = device, {}

    def on_step(self, step: int) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.at[step] = time.perf_counter()


def _program(method: str, sizes: tuple, batch: int, device: str) -> tuple:
    cls, rw = mlp(*sizes), mlp(1, 100, 1, seed=1)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, sizes[0], generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(8)]
    data = [(x.to(device), y.to(device)) for x, y in data]
    zero = method.endswith("ZeRO-1")
    lo_opt = optim.adam(1e-3) if zero else optim.sgd(0.1)
    hi_opt = optim.adam(1e-3)
    if zero:
        lo_opt, hi_opt = optim.sharded(lo_opt), optim.sharded(hi_opt)
    hyper = {"darts": hg.darts(), "cg K=3": hg.cg(maxiter=3), "cg K=3 + ZeRO-1": hg.cg(maxiter=3),
             COMPILED: hg.cg(maxiter=3), "unrolled T=1": hg.unrolled(1, lo_opt)}[method]

    def lower(params, b, *, upper):
        losses = F.cross_entropy(cls(params, b[0]), b[1], reduction="none")
        return (torch.sigmoid(rw(upper, losses.detach()[:, None])).squeeze(1) * losses).mean()

    def upper(params, b, *, lower):
        return F.cross_entropy(cls(lower, b[0]), b[1])

    on = lambda p: {k: v.to(device) for k, v in p.items()}  # noqa: E731
    lo = mlo.Problem("lower", lower, on(cls.params), lo_opt, data=lambda i: data[i % 8],
                     hypergrad=hyper)
    hi = mlo.Problem("upper", upper, on(rw.params), hi_opt, data=lambda i: data[(i + 3) % 8])
    return [lo, hi], {"upper": ["lower"]}, count(cls.params)


def _worker(rank: int, world: int, tmp: str, method: str, cfg: dict, device: str) -> None:
    torch.set_num_threads(1)
    dev = f"cuda:{rank}" if device == "cuda" else "cpu"
    if device == "cuda":
        torch.cuda.set_device(rank)
    if world > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo",
                                init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    clock = _Clock(device)
    quiet = dict(logging=mlo.Logging(every=0, progress=False, console=False, loggers=[clock]))
    problems, graph, n = _program(method, cfg["sizes"], cfg["batch"], dev)
    end = cfg["warmup"] + cfg["steps"]
    r = mlo.solve(problems, graph, steps=end, compile=method == COMPILED, **quiet)
    compiled = r.history.get("compile/seconds", [])
    if any(t > cfg["warmup"] for t, _ in compiled):
        raise RuntimeError(f"{method}: a pattern compiled after the warm-up steps {compiled}")
    state = sum(x.numel() * x.element_size() for x in tree.leaves(r.opt_states)
                if isinstance(x, torch.Tensor)) / 2 ** 20
    if rank == 0:  # (only rank 0 logs: the clock runs there)
        seconds = clock.at[end] - clock.at[cfg["warmup"]]
        torch.save({"sps": cfg["steps"] / seconds, "params": n, "state": state,
                    "compile": sum(c for _, c in compiled) if compiled else None},
                   f"{tmp}/out.pt")
    if world > 1:
        dist.destroy_process_group()


def _measure(method: str, world: int, cfg: dict, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(world, tmp, method, cfg, device), nprocs=world,
                           start_method="spawn")
        return torch.load(os.path.join(tmp, "out.pt"))


def run(level: str) -> list[dict]:
    level_cfg = LEVELS[level]
    device = "cuda" if torch.cuda.device_count() >= 2 else "cpu"
    rows = []
    for batch in level_cfg["batches"]:
        cfg = {**level_cfg, "batch": batch}
        for method in level_cfg["methods"]:
            progress(f"data parallel {method}, batch {batch}: 1 and 2 processes ({device})")
            one, two = _measure(method, 1, cfg, device), _measure(method, 2, cfg, device)
            rows.append({"method": method, "params": one["params"], "batch": batch,
                         "sps_1": one["sps"], "sps_2": two["sps"],
                         "speedup": two["sps"] / one["sps"] if one["sps"] and two["sps"] else None,
                         "state_1": one["state"],
                         "state_2": two["state"], "compile_2": two["compile"],
                         "device": device})
    return rows
