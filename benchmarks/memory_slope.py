"""Resident memory over a long ``mlo.solve`` run: its slope in MB per 1000 steps.

A bilevel reweighting program (MLP classifier lower with cg, a 1-16-1 weighting net upper)
runs ``--steps`` global steps with logging every 50; every 250 steps ``validate`` (returning
nothing) samples the process's resident set from /proc. The slope is a least-squares fit over
the samples after the first fifth (allocator warm-up). A leak of one small tensor per step
(a graph kept alive, a growing list) shows as tens of MB per 1000 steps; a flat run is near 0.
``python benchmarks/memory_slope.py [--steps 5000]`` prints the samples and the slope.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, mlo, optim
from _common import mlp

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 20


def run(steps: int = 5000, every: int = 250) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cls, rw = mlp(20, 32, 4), mlp(1, 16, 1, seed=1)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(64, 20, generator=g), torch.randint(0, 4, (64,), generator=g))
            for _ in range(16)]

    def lower(p, b, *, upper):
        losses = F.cross_entropy(cls(p, b[0]), b[1], reduction="none")
        return (torch.sigmoid(rw(upper, losses.detach()[:, None])).squeeze(1) * losses).mean()

    def upper(p, b, *, lower):
        return F.cross_entropy(cls(lower, b[0]), b[1])
    lo = mlo.Problem("lower", lower, cls.params, optim.sgd(0.1), data=lambda i: data[i % 16],
                     hypergrad=hg.cg(maxiter=3))
    hi = mlo.Problem("upper", upper, rw.params, optim.adam(1e-3),
                     data=lambda i: data[(i + 5) % 16])
    samples: list = []
    step = [-every]  # the first call is solve's check before step 1

    def sample(params):
        step[0] += every
        samples.append((step[0], rss_mb()))
    mlo.solve([lo, hi], {"upper": ["lower"]}, steps=steps,
              validation=mlo.Validation(sample, every=every),
              logging=mlo.Logging(every=50, progress=False, console=False))
    samples = samples[1:]
    tail = samples[len(samples) // 5:]
    xs = torch.tensor([s for s, _ in tail], dtype=torch.float64)
    ys = torch.tensor([m for _, m in tail], dtype=torch.float64)
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    return {"samples": samples, "mb_per_1000_steps": 1000 * slope}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    args = ap.parse_args()
    out = run(args.steps)
    for s, m in out["samples"]:
        print(f"step {s:6d}  rss {m:8.1f} MB")
    print(f"slope: {out['mb_per_1000_steps']:+.3f} MB per 1000 steps")


if __name__ == "__main__":
    main()
