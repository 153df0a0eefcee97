"""Every hypergradient method on benchopt's simulated bilevel quadratic (p = 100, d = 10, κ = 10).

Usage: python benchmarks/bilevel_quadratic.py [--quick] [--outdir benchmarks/results]

Problem: ``testing._benchopt.quadratic_benchopt()`` (benchopt/benchmark_bilevel's ``simulated``
dataset, whitened to its nominal spectra), where ∇h(λ) is known from two solves.
1. At λ0 = 0 with θ = θ*(λ0) (unrolled: from θ0 = 0 through its own steps; sama (Adam): the
   state after ``ADAM_STEPS`` Adam steps from θ0): each method's relative error against the exact
   ∇h and its cost, counted with a dispatch mode: ``H·v`` is the number of matrix-vector products
   with the inner Hessian H (one ∇θL takes 2, one reverse-over-reverse HVP 2 more), ``passes``
   is the FLOPs of all matrix products with the problem's matrices divided by those of one
   ∇θL. Time: median of a few calls, one thread.
2. Gradient descent on λ, step 1/λmax(∇²h), from λ0 = 0, θ0 = 0: per outer step the inner
   problem gets ``K_INNER`` warm-started GD(1/L) steps (sama (Adam): Adam steps, its state
   carried; unrolled: its own T steps from the last iterate, whose end is the next start), then
   one hypergradient; stop when the exact ‖∇h(λ)‖² (measured, not counted) reaches the target,
   or at the floor (flat over 20 steps), or after the most steps. Cost counted on outer steps
   1-3 (step 1 with the methods' one-time checks; 2 and 3 are asserted equal), then the same per
   step (the counter slows a step ~4x). Unrolled's forward is counted once: the iterate it
   reached is recomputed, uncounted, for the warm start (``hg.grad`` returns only ∇h).
"""
from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from betty_func import hypergrad as hg, optim
from betty_func.testing._benchopt import quadratic_benchopt
from _common import markdown, median_seconds, progress

HERE = Path(__file__).resolve().parent
ADAM_LR, ADAM_STEPS, K_INNER = 0.01, 500, 10
MATMUL = {"mv", "mm", "addmv", "addmm", "bmm", "matmul"}


class Count(TorchDispatchMode):
    """Matrix products with the problem's matrices: FLOPs of all, H·v products with ``H``."""

    def __init__(self, mats: list, H: torch.Tensor):
        super().__init__()
        self.ptrs = {m.untyped_storage().data_ptr() for m in mats}
        self.h_ptr, self.flops, self.hv = H.untyped_storage().data_ptr(), 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in MATMUL:
            pair = [a for a in args if isinstance(a, torch.Tensor)][-2:]  # (A, x): A @ x
            for i, m in enumerate(pair):
                if m.dim() == 2 and m.untyped_storage().data_ptr() in self.ptrs:
                    other = pair[1 - i]
                    cols = 1 if other.dim() == 1 else other.shape[1 - i]  # vectors multiplied
                    self.flops += 2 * m.numel() * cols
                    self.hv += cols if m.untyped_storage().data_ptr() == self.h_ptr else 0
        return func(*args, **(kwargs or {}))


def counter(p) -> Count:
    return Count([*p.inner[6:9], *p.outer[6:9]], p.inner.H)


def configs(p, quick: bool) -> list[tuple]:
    """(method, knob, hypergradient method, inner optimizer) for each row."""
    sgd = optim.sgd(1.0 / p.L)
    cg_k, neu_k, unr_t = ([5, 20], [10, 50], [10, 50]) if quick else \
        ([5, 10, 20, 50], [10, 50, 200], [10, 50, 100, 200])
    rows = [("exact", None, hg.exact(), sgd)]
    rows += [("cg", k, hg.cg(maxiter=k), sgd) for k in cg_k]
    rows += [("neumann", k, hg.neumann(k, alpha=1.0 / p.L), sgd) for k in neu_k]
    rows += [("darts", None, hg.darts(scale=1.0 / p.L), sgd),
             ("sama (SGD)", None, hg.sama(optimizer=sgd), sgd),
             ("sama (Adam)", None, hg.sama(optimizer=optim.adam(ADAM_LR)), optim.adam(ADAM_LR))]
    rows += [("unrolled", t, hg.unrolled(t, sgd), sgd) for t in unr_t]
    rows += [("penalty", k, hg.penalty(k, 1.0 / p.L), sgd) for k in neu_k]  # gradients only
    return rows


def inner_steps(p, opt, theta, state, lam, k):
    grad = torch.func.grad(p.inner_loss)
    for _ in range(k):
        theta, state = optim.step(opt, theta, grad(theta, lam), state)
    return theta, state


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def at_fixed_lambda(p, quick: bool) -> list[dict]:
    lam, out = p.lam0, []
    theta_star, exact = p.solution(lam), p.hypergrad(lam)
    adam = optim.adam(ADAM_LR)
    _, adam_state = inner_steps(p, adam, p.theta0, adam.init(p.theta0), lam,
                                ADAM_STEPS // (5 if quick else 1))
    with counter(p) as c:
        torch.func.grad(p.inner_loss)(theta_star, lam)
    unit = c.flops  # one ∇θL
    for name, knob, method, _ in configs(p, quick):
        progress(f"fixed λ: {name} {knob or ''}")
        g = hg.grad(p.outer_loss, p.inner_loss, method)
        kw = {"optimizer_state": adam_state} if name == "sama (Adam)" else {}
        theta = p.theta0 if name == "unrolled" else theta_star
        call = lambda: g(theta, lam, **kw)  # noqa: E731
        call()  # one-time checks (coupling probes) out of the count
        with counter(p) as c:
            value = call()
        ms = 1e3 * median_seconds(call, 1 if quick else 5, warmup=1)
        out.append({"method": name, "knob": knob, "hv": c.hv, "passes": c.flops / unit,
                    "ms": ms, "rel_error": rel(value, exact)})
    return out


def outer_loop(p, quick: bool) -> tuple[list[dict], dict]:
    target, n_max = (1e-4, 20) if quick else (1e-10, 300)
    beta = 1.0 / float(torch.linalg.eigvalsh(p.value_hessian())[-1])
    with counter(p) as c:
        torch.func.grad(p.inner_loss)(p.theta0, p.lam0)
    unit, rows, curves = c.flops, [], {}
    keep = ({"cg": (20,), "neumann": (10,), "unrolled": (10,), "penalty": (10,)} if quick else
            {"cg": (5, 10, 20, 50), "neumann": (10, 50), "unrolled": (10, 50),
             "penalty": (10, 50)})
    picks = [r for r in configs(p, quick) if r[0] not in keep or r[1] in keep[r[0]]]
    picks.insert(1, ("cg, warm start", 5, hg.cg(maxiter=5, warm_start=True), picks[0][3]))
    picks.append(("penalty, warm start", 5, hg.penalty(5, 1.0 / p.L, warm_start=True),
                  picks[0][3]))
    for name, knob, method, opt in picks:
        progress(f"outer loop: {name} {knob or ''}")
        warm = getattr(method, "carries", False)  # info (its carry) only where it is used
        g = hg.grad(p.outer_loss, p.inner_loss, method, return_info=warm)  # costs darts 2 HVPs
        lam, theta, state, init = p.lam0, p.theta0, opt.init(p.theta0), None
        norms, costs, step_cost = [float(p.hypergrad(lam).norm() ** 2)], [(0.0, 0)], []
        while norms[-1] > target and len(norms) <= n_max and norms[-1] < 1e6 * norms[0]:
            if len(norms) > 50 and norms[-1] > 0.99 * norms[-21]:
                break  # flat for 20 steps: the floor
            with counter(p) if len(step_cost) < 3 else contextlib.nullcontext() as c:
                if name != "unrolled":
                    theta, state = inner_steps(p, opt, theta, state, lam, K_INNER)
                kw = {"optimizer_state": state} if name == "sama (Adam)" else {}
                kw = {"init": init} if warm else kw
                ghat, info = g(theta, lam, **kw) if warm else (g(theta, lam, **kw), None)
            if c is not None:  # counted: steps 1-3 (1: with one-time checks); then constant
                step_cost.append((c.flops / unit, c.hv))
            if len(step_cost) == 3:
                assert step_cost[1] == step_cost[2], (name, step_cost)
            if name == "unrolled":  # the iterate its forward reached: the next warm start
                theta, state = inner_steps(p, opt, theta, opt.init(theta), lam, knob)
            init = info.solution if info is not None else None
            lam = lam - beta * ghat
            norms.append(float(p.hypergrad(lam).norm() ** 2))
            last = step_cost[min(len(norms) - 2, 2)]
            costs.append((costs[-1][0] + last[0], costs[-1][1] + last[1]))
        reached = norms[-1] <= target
        status = ("reached" if reached else "diverged" if not norms[-1] < 1e6 * norms[0]
                  else "stalled (floor)" if len(norms) <= n_max else f"not in {n_max} steps")
        rows.append({"method": name, "knob": knob, "steps": len(norms) - 1 if reached else None,
                     "passes": costs[-1][0] if reached else None,
                     "hv": costs[-1][1] if reached else None, "floor": min(norms),
                     "per_step": step_cost[-1][0], "status": status})
        curves[f"{name} {knob or ''}".strip()] = ([c for c, _ in costs], norms)
    return rows, {"target": target, "n_max": n_max, "beta": beta, "curves": curves}


def plot(fixed: list[dict], curves: dict, target: float, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not importable"
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    warm = ["cg, warm start", "penalty, warm start"]
    families = list(dict.fromkeys(r["method"] for r in fixed)) + warm
    color = {m: plt.cm.tab10(i) for i, m in enumerate(families)}
    for m in families[:-len(warm)]:
        pts = sorted((r["passes"], max(r["rel_error"], 1e-17)) for r in fixed if r["method"] == m)
        a.loglog(*zip(*pts), marker="o", color=color[m], label=m,
                 ls="--" if m == "sama (SGD)" else "-")  # sama (SGD) = darts(scale=η)
    a.set(xlabel="cost (∇θL-pass equivalents, counted)", ylabel="relative error of ∇h",
          title="one hypergradient at λ0, θ = θ*(λ0)")
    a.legend(fontsize=7)
    seen: dict = {}
    for name, (costs, norms) in curves.items():
        fam = next(m for m in sorted(families, key=len, reverse=True) if name.startswith(m))
        seen[fam] = seen.get(fam, -1) + 1
        b.semilogy([max(c, 1e-1) for c in costs], norms, color=color[fam], label=name,
                   ls=["-", "--", ":", "-."][seen[fam] % 4])
    b.axhline(target, color="k", ls=":", lw=1)
    b.set(xlabel="cumulative cost (∇θL-pass equivalents, counted)", ylabel="exact ‖∇h(λ_t)‖²",
          xscale="log", title=f"gradient descent on λ, {K_INNER} warm inner steps per outer step")
    b.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


FIXED_COLUMNS = [("method", "method"), ("knob", "maxiter / steps"), ("hv", "H·v (counted)"),
                 ("passes", "∇θL-pass eq. (counted)"), ("ms", "time (ms)"),
                 ("rel_error", "relative error")]
OUTER_COLUMNS = [("method", "method"), ("knob", "maxiter / steps"),
                 ("per_step", "∇θL-pass eq. per outer step"), ("steps", "outer steps"),
                 ("passes", "total ∇θL-pass eq."), ("hv", "total H·v"),
                 ("floor", "lowest ‖∇h‖²"), ("status", "target")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer settings and steps (< 15 s)")
    ap.add_argument("--outdir", default=str(HERE / "results"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    p = quadratic_benchopt()
    print(f"# benchopt's simulated bilevel quadratic (p = 100, d = 10, n = m = 1024, κ = "
          f"{p.kappa:.3g}, L = {p.L:.3g}), torch {torch.__version__}, 1 thread, load average "
          f"{os.getloadavg()[0]:.1f} at start\n")
    fixed = at_fixed_lambda(p, a.quick)
    print("## One hypergradient at λ0 = 0, θ = θ*(λ0) (unrolled: from θ0 = 0)\n")
    print(markdown(fixed, FIXED_COLUMNS) + "\n")
    rows, run = outer_loop(p, a.quick)
    print(f"## Gradient descent on λ (step 1/λmax(∇²h) = {run['beta']:.3g}) to ‖∇h‖² <= "
          f"{run['target']:g}, {K_INNER} warm-started inner steps per outer step "
          f"(unrolled: its own T), at most {run['n_max']} outer steps\n")
    print(markdown(rows, OUTER_COLUMNS) + "\n")
    outdir = Path(a.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    print(plot(fixed, run["curves"], run["target"], outdir / "bilevel_quadratic.png"))


if __name__ == "__main__":
    main()
