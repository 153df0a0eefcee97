"""Unrolled reverse mode: peak memory and time vs unroll length T, plain vs checkpointed.

Per-parameter weight decay λ on an MLP 784-256-10 (batch 500): L = CE(train) + ½ Σ λ θ²,
F = CE(val), ``hypergrad.unrolled(T, sgd)`` plain and with ``checkpoint_every = round(√T)``. Peak
memory is what one hypergradient adds (``_common.PeakMemory``), measured in a fresh process per
configuration (in a long-lived one, memory freed by earlier runs hides part of the next peak).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, optim, tree
from _common import PeakMemory, median_seconds, mlp, progress


def setup():
    net = mlp(784, 256, 10)
    g = torch.Generator().manual_seed(0)
    xt, yt = torch.randn(500, 784, generator=g), torch.randint(0, 10, (500,), generator=g)
    xv, yv = torch.randn(500, 784, generator=g), torch.randint(0, 10, (500,), generator=g)
    inner = lambda th, lam: F.cross_entropy(net(th, xt), yt) + 0.5 * sum(  # noqa: E731
        (lv * t ** 2).sum() for lv, t in zip(tree.leaves(lam), tree.leaves(th)))
    outer = lambda th, lam: F.cross_entropy(net(th, xv), yv)  # noqa: E731
    return inner, outer, net.params, tree.map(lambda t: torch.full_like(t, 1e-3), net.params)


def peak(T: int, every: int) -> float:
    """Peak MiB one hypergradient adds, in this process (call it in a fresh one)."""
    torch.set_num_threads(1)
    inner, outer, th, lam = setup()
    g = hg.grad(outer, inner, hg.unrolled(T, optim.sgd(0.1), checkpoint_every=every))
    with PeakMemory() as mem:
        float(tree.leaves(g(th, lam))[0].sum())
    return mem.mib


def _peak_in_fresh_process(T: int, every: int) -> float:
    here = Path(__file__).resolve().parent
    code = f"import json, unrolled_memory as u; print(json.dumps(u.peak({T}, {every})))"
    env = {**os.environ, "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(level: str) -> list[dict]:
    """``level``: "smoke" (T = 4), "quick" (T = 10, 50) or "full" (T = 10 ... 200)."""
    quick = level != "full"
    lengths = {"smoke": [4], "quick": [10, 50], "full": [10, 50, 100, 200]}[level]
    inner, outer, th, lam = setup()
    rows = []
    for T in lengths:
        k = max(1, round(math.sqrt(T)))
        row: dict = {"T": T, "k": k}
        for mode, every in (("plain", 0), ("ckpt", k)):
            progress(f"unrolled T={T} {mode}")
            g = hg.grad(outer, inner, hg.unrolled(T, optim.sgd(0.1), checkpoint_every=every))
            row[f"{mode}_ms"] = 1e3 * median_seconds(lambda: g(th, lam), 1 if quick else 3,
                                                     warmup=1)
            row[f"{mode}_mib"] = _peak_in_fresh_process(T, every)
        if row["plain_mib"] and row["ckpt_mib"] is not None:
            row["mem ratio"] = row["ckpt_mib"] / row["plain_mib"]
        row["time ratio"] = row["ckpt_ms"] / row["plain_ms"]
        rows.append(row)
    return rows


COLUMNS = [("T", "T"), ("k", "checkpoint every"), ("plain_ms", "plain (ms)"),
           ("ckpt_ms", "checkpointed (ms)"), ("time ratio", "time ckpt / plain"),
           ("plain_mib", "plain peak (MiB)"), ("ckpt_mib", "checkpointed peak (MiB)"),
           ("mem ratio", "memory ckpt / plain")]
