"""Reverse-over-reverse vs forward-over-reverse Hessian-vector products, side by side in one run.

Usage: python benchmarks/hvp_modes.py [--repeats N] [--products K]
Times an implicit solve's HVP workload (one linearization + K products) on the tutorial's
784-200-10 MLP with a batch of 100, one thread, median of N repeats. The faster mode is the default
``hvp=`` of ``hypergrad.implicit``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import grad

from betty_func import hypergrad as hg, nn as bnn, tree


def workload(builder, grad_fn, params, v, products: int) -> float:
    t = time.perf_counter()
    matvec = builder(grad_fn, params)
    for _ in range(products):
        out = matvec(v)
    tree.leaves(out)[0].sum().item()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--products", type=int, nargs="+", default=[1, 5, 20])
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = bnn.functional(torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(),
                                             torch.nn.Linear(200, 10)))
    x, y = torch.randn(100, 784), torch.randint(0, 10, (100,))
    loss = lambda p: F.cross_entropy(net(p, x), y)  # noqa: E731
    g, v = grad(loss), tree.map(torch.randn_like, net.params)
    modes = {"reverse_over_reverse": hg.reverse_over_reverse,
             "forward_over_reverse": hg.forward_over_reverse}
    print(f"torch {torch.__version__}, 1 thread, MLP 784-200-10, batch 100, median of {a.repeats}")
    print("| products | reverse-over-reverse (ms) | forward-over-reverse (ms) | fwd / rev |")
    print("|---|---|---|---|")
    for k in a.products:
        times = {}
        for name, builder in modes.items():
            workload(builder, g, net.params, v, k)  # warm-up
            times[name] = statistics.median(workload(builder, g, net.params, v, k)
                                            for _ in range(a.repeats))
        r, f = times["reverse_over_reverse"], times["forward_over_reverse"]
        print(f"| {k} | {r * 1e3:.2f} | {f * 1e3:.2f} | {f / r:.2f} |")


if __name__ == "__main__":
    main()
