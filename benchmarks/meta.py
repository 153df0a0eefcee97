"""Meta-learning throughput: tasks per second of a MAML / iMAML meta-gradient over a meta-batch,
ours with ``torch.vmap`` over tasks vs ours in a per-task Python loop vs ``higher`` (MAML).

5-way 5-shot tasks of 784-d inputs (15 queries), MLP 784-64-5, 5 inner SGD steps (lr 0.5).
MAML: ``hypergrad.unrolled`` on the offset δ = θ - φ (so the init's dependence on φ is included);
iMAML: 5 inner steps on the support loss + ½|θ - φ|², then ``hypergrad.cg(maxiter=5)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from betty_func import hypergrad as hg, optim, tree
from _common import median_seconds, mlp, progress

STEPS, LR, LAM = 5, 0.5, 1.0
NET = mlp(784, 64, 5)


def tasks(n: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 25, 784, generator=g), torch.randint(0, 5, (n, 25), generator=g),
            torch.randn(n, 75, 784, generator=g), torch.randint(0, 5, (n, 75), generator=g))


def ce(params, x, y):
    return F.cross_entropy(NET(params, x), y)


def maml_grad():
    inner = lambda d, phi, sx, sy, qx, qy: ce(tree.add(phi, d), sx, sy)  # noqa: E731
    outer = lambda d, phi, sx, sy, qx, qy: ce(tree.add(phi, d), qx, qy)  # noqa: E731
    g = hg.grad(outer, inner, hg.unrolled(STEPS, optim.sgd(LR)))
    return lambda phi, *task: g(tree.map(torch.zeros_like, phi), phi, *task)


def imaml_grad():
    inner = lambda th, phi, sx, sy, qx, qy: ce(th, sx, sy) + 0.5 * LAM * tree.vdot(  # noqa: E731
        tree.sub(th, phi), tree.sub(th, phi))
    outer = lambda th, phi, sx, sy, qx, qy: ce(th, qx, qy)  # noqa: E731
    g = hg.grad(outer, inner, hg.cg(maxiter=5))
    gi = grad(inner)

    def meta(phi, *task):
        th = phi
        for _ in range(STEPS):
            th = tree.axpy(-LR, gi(th, phi, *task), th)
        return g(tree.map(lambda t: t.detach(), th), phi, *task)
    return meta


def higher_maml(batch: tuple):
    import higher
    net = NET.module
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def step():
        net.zero_grad()
        for sx, sy, qx, qy in zip(*batch):
            with higher.innerloop_ctx(net, opt, copy_initial_weights=False) as (f, diffopt):
                for _ in range(STEPS):
                    diffopt.step(F.cross_entropy(f(sx), sy))
                F.cross_entropy(f(qx), qy).backward()
        return next(net.parameters()).grad
    return step


def run(level: str) -> list[dict]:
    """``level``: "smoke" (meta-batch 2, one repeat), "quick" or "full"."""
    sizes = {"smoke": [2], "quick": [1, 4, 16], "full": [1, 4, 16, 32]}[level]
    repeats = {"smoke": 1, "quick": 3, "full": 10}[level]
    phi = NET.params
    rows = []
    for name, make in (("MAML", maml_grad), ("iMAML", imaml_grad)):
        meta = make()
        batched = vmap(meta, in_dims=(None, 0, 0, 0, 0))
        for n in sizes:
            progress(f"meta {name} meta-batch {n}")
            batch = tasks(n)
            loop = lambda: [meta(phi, *(t[i] for t in batch)) for i in range(n)]  # noqa: E731
            t_vmap = median_seconds(lambda: batched(phi, *batch), repeats)
            t_loop = median_seconds(loop, repeats)
            row = {"method": name, "tasks": n, "vmap_tps": n / t_vmap, "loop_tps": n / t_loop,
                   "vmap/loop": t_loop / t_vmap}
            if name == "MAML":
                try:
                    row["higher_tps"] = n / median_seconds(higher_maml(batch), repeats)
                except Exception as e:  # reported, not hidden
                    row["higher_tps"] = f"failed: {type(e).__name__}"
            rows.append(row)
    return rows


COLUMNS = [("method", "method"), ("tasks", "meta-batch"), ("vmap_tps", "ours vmap (tasks/s)"),
           ("loop_tps", "ours loop (tasks/s)"), ("vmap/loop", "vmap / loop"),
           ("higher_tps", "higher (tasks/s)")]
