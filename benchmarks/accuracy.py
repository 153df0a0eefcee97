"""Accuracy per cost on ridge regression (d = 2000, κ ≈ 30), where the hypergradient is known in
closed form (``testing.ridge``): relative error vs wall time for cg, neumann, unrolled and darts;
then warm-started vs cold CG over a sequence of outer steps.
"""
from __future__ import annotations

import torch

from betty_func import hypergrad as hg, optim, testing
from _common import median_seconds, progress


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def sweep(level: str) -> list[dict]:
    """``level``: "smoke" (d = 50), "quick" (d = 500) or "full" (d = 2000)."""
    quick = level != "full"
    d = {"smoke": 50, "quick": 500, "full": 2000}[level]
    p = testing.ridge(d=d, kappa=30.0, n_train=2 * d)
    lmax = float(torch.linalg.eigvalsh(p.hessian(p.lam))[-1])
    exact, theta = p.hypergrad(p.lam), p.solution(p.lam)
    budgets = [5, 20] if quick else [5, 10, 20, 50, 100, 200]
    configs = [("darts", 0, hg.darts(scale=1.0 / lmax), theta)]
    for k in budgets:
        configs += [("cg", k, hg.cg(maxiter=k), theta),
                    ("neumann", k, hg.neumann(k, alpha=1.0 / lmax), theta),
                    ("unrolled", k, hg.unrolled(k, optim.sgd(1.0 / lmax)), theta)]
    rows = []
    for name, k, method, th in configs:
        progress(f"accuracy {name} {k}")
        g = hg.grad(p.outer_loss, p.inner_loss, method)
        t = median_seconds(lambda: g(th, p.lam), 3 if quick else 5, warmup=1)
        rows.append({"method": name, "products": k, "ms": 1e3 * t,
                     "rel_error": rel(g(th, p.lam), exact)})
    return rows


def warm_vs_cold(level: str) -> list[dict]:
    """Normalized gradient descent on λ, moving it by ``move`` (relative) per outer step; each
    step's CG runs to a relative residual of 1e-6 (at most 150 iterations; the sync-free CG
    masks the iterations after convergence, ``iterations`` counts the real ones), cold from zero
    or warm from the previous step's solution. One row per move: mean iterations over outer
    steps 3.., worst errors."""
    d, n_outer = {"smoke": (50, 4), "quick": (500, 8), "full": (2000, 20)}[level]
    p = testing.ridge(d=d, kappa=30.0, n_train=2 * d)
    g = hg.grad(p.outer_loss, p.inner_loss, hg.cg(maxiter=150, tol=1e-6), return_info=True)
    rows = []
    for move in (0.001, 0.01, 0.05)[: 1 if level == "smoke" else 3]:
        lam, prev, its = p.lam.clone(), None, []
        for step in range(n_outer):
            progress(f"warm start, move {move}, step {step}")
            theta, exact = p.solution(lam), p.hypergrad(lam)
            cold, ci = g(theta, lam)
            warm, wi = g(theta, lam, init=prev)
            its.append((int(ci.iterations), int(wi.iterations), rel(cold, exact), rel(warm, exact)))
            prev = wi.solution
            lam = lam - move * lam.norm() * warm / warm.norm()
        late = its[3:] or its
        cold_it = sum(c for c, _, _, _ in late) / len(late)
        warm_it = sum(w for _, w, _, _ in late) / len(late)
        rows.append({"move": move, "cold_iters": cold_it, "warm_iters": warm_it,
                     "ratio": warm_it / cold_it, "cold_err": max(e for *_, e, _ in its),
                     "warm_err": max(e for *_, e in its)})
    return rows


COLUMNS = [("method", "method"), ("products", "HVPs / steps"), ("ms", "time (ms)"),
           ("rel_error", "relative error")]
WARM_COLUMNS = [("move", "λ moved per outer step (rel.)"), ("cold_iters", "cold CG iterations"),
                ("warm_iters", "warm CG iterations"), ("ratio", "warm / cold"),
                ("cold_err", "worst cold error"), ("warm_err", "worst warm error")]
