"""Cost floor: each hypergradient method vs a hand-written plain ``torch.autograd`` version.

The problem is the reweighting step (classifier MLP 784-200-10, batch 100; a 1-100-1 sigmoid
reweighting net φ gives each example's weight): L(θ, φ) = Σ σ(r_φ(ℓ_i)) ℓ_i(θ) / n on a train
batch, F(θ) = CE on a meta batch. The plain versions do the same arithmetic with
``torch.autograd.grad`` on leaf tensors (``create_graph`` where a second derivative is needed)
and share the inputs; the ``match`` column is their relative difference from ours.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd import grad as agrad

from betty_func import hypergrad as hg, optim, tree
from _common import median_seconds, mlp, progress

ALPHA, LR, EPS = 0.1, 0.1, 0.01


def setup(hidden: int = 200):
    cls, rw = mlp(784, hidden, 10), mlp(1, 100, 1, seed=1)
    g = torch.Generator().manual_seed(0)
    xt, yt = torch.randn(100, 784, generator=g), torch.randint(0, 10, (100,), generator=g)
    xm, ym = torch.randn(100, 784, generator=g), torch.randint(0, 10, (100,), generator=g)

    def inner(th, phi):
        losses = F.cross_entropy(cls(th, xt), yt, reduction="none")
        return (torch.sigmoid(rw(phi, losses.detach()[:, None])).squeeze(1) * losses).mean()

    def outer(th, phi):
        return F.cross_entropy(cls(th, xm), ym)
    return inner, outer, cls.params, rw.params


def _plain_implicit(inner, outer, th, phi, solve: Callable) -> list:
    v = agrad(outer(th, phi), list(th.values()))
    g = agrad(inner(th, phi), list(th.values()), create_graph=True)
    hvp = lambda u: agrad(g, list(th.values()), u, retain_graph=True)  # noqa: E731
    p = solve(hvp, v)
    return [-m for m in agrad(g, list(phi.values()), p)]


def _plain_cg(k: int) -> Callable:
    def solve(hvp, b):
        x = [torch.zeros_like(t) for t in b]
        r, d = list(b), list(b)
        rr = sum((t * t).sum() for t in r)
        for _ in range(k):
            hd = hvp(d)
            a = rr / sum((u * w).sum() for u, w in zip(d, hd))
            x = [xi + a * di for xi, di in zip(x, d)]
            r = [ri - a * h for ri, h in zip(r, hd)]
            rr_new = sum((t * t).sum() for t in r)
            d = [ri + (rr_new / rr) * di for ri, di in zip(r, d)]
            rr = rr_new
        return x
    return solve


def _plain_neumann(k: int) -> Callable:
    def solve(hvp, b):
        term = acc = list(b)
        for _ in range(k):
            term = [t - ALPHA * h for t, h in zip(term, hvp(term))]
            acc = [a + t for a, t in zip(acc, term)]
        return [ALPHA * a for a in acc]
    return solve


def _plain_darts(inner, outer, th, phi) -> list:
    v = agrad(outer(th, phi), list(th.values()))
    step = EPS / torch.sqrt(sum((t * t).sum() for t in v))
    shift = lambda s: {k: t + s * step * d for (k, t), d in zip(th.items(), v)}  # noqa: E731
    gp = agrad(inner(shift(1.0), phi), list(phi.values()))
    gm = agrad(inner(shift(-1.0), phi), list(phi.values()))
    return [-(a - b) / (2 * step) for a, b in zip(gp, gm)]


def _plain_unrolled(inner, outer, th, phi, t_steps: int) -> list:
    cur = dict(th)
    for _ in range(t_steps):
        g = agrad(inner(cur, phi), list(cur.values()), create_graph=True)
        cur = {k: t - LR * d for (k, t), d in zip(cur.items(), g)}
    return list(agrad(outer(cur, phi), list(phi.values())))


def methods() -> dict:
    return {"darts": (hg.darts(EPS), lambda i, o, t, p: _plain_darts(i, o, t, p)),
            "neumann K=5": (hg.neumann(5, ALPHA),
                            lambda i, o, t, p: _plain_implicit(i, o, t, p, _plain_neumann(5))),
            "cg K=5": (hg.cg(maxiter=5),
                       lambda i, o, t, p: _plain_implicit(i, o, t, p, _plain_cg(5))),
            "unrolled T=10": (hg.unrolled(10, optim.sgd(LR)),
                              lambda i, o, t, p: _plain_unrolled(i, o, t, p, 10))}


def run(level: str, backend: str) -> list[dict]:
    """``level``: "smoke" (a tiny net, one repeat: the test suite's check), "quick" or "full"."""
    repeats = {"smoke": 1, "quick": 5, "full": 30}[level]
    inner, outer, th, phi = setup(8 if level == "smoke" else 200)
    leaf = lambda d: {k: v.clone().requires_grad_(True) for k, v in d.items()}  # noqa: E731
    th_l, phi_l = leaf(th), leaf(phi)
    rows = []
    for name, (method, plain) in methods().items():
        progress(f"floor {name}")
        ours = hg.grad(outer, inner, method)
        ref = plain(inner, outer, th_l, phi_l)
        mine = ours(th, phi)
        ref = dict(zip(phi, ref))
        match = float(tree.norm(tree.sub(mine, ref)) / tree.norm(ref))
        t_plain = median_seconds(lambda: plain(inner, outer, th_l, phi_l), repeats)
        t_ours = median_seconds(lambda: ours(th, phi), repeats)
        compiled = torch.compile(ours, backend=backend)
        t_comp = median_seconds(lambda: compiled(th, phi), repeats, warmup=2)
        rows.append({"method": name, "plain_ms": 1e3 * t_plain, "ours_ms": 1e3 * t_ours,
                     "ours/plain": t_ours / t_plain, "compiled_ms": 1e3 * t_comp,
                     "compiled/plain": t_comp / t_plain, "match": match})
    return rows


COLUMNS = [("method", "method"), ("plain_ms", "plain autograd (ms)"),
           ("ours_ms", "ours eager (ms)"), ("ours/plain", "eager / plain"),
           ("compiled_ms", "ours compiled (ms)"), ("compiled/plain", "compiled / plain"),
           ("match", "rel. difference")]
