r"""Learn L2 weight decay for logistic regression on real MNIST by implicit hypergradients.

Inner problem (train split, n = 1000 by default): multinomial logistic regression θ = (W, b),

    L(θ, λ) = CE(train; θ) + ½ Σ_j exp(λ_j) ‖W_j‖²        (λ_j: log-decay of input pixel j)

Outer problem (a disjoint validation split): F(θ*(λ)) = CE(val; θ*(λ)).

Each outer step solves the inner problem to stationarity (warm-started full-batch L-BFGS: the
implicit function theorem needs θ* — the solve itself is not differentiated), then takes
``hypergrad.grad(F, L, hypergrad.cg(maxiter=K))``, reports the diagnostics (‖∇θL‖, CG residual),
and updates λ with Adam. Compared with the best single decay from a grid picked on validation.

Measured (3 seeds, 100 s on 2 CPU cores): test accuracy 87.44 ± 0.63 % for the grid-searched single
decay, 87.44 ± 0.63 % for the learned single decay (it finds the grid's optimum), 88.36 ± 0.62 %
for learned per-pixel decays.

Run:  python examples/hpo_logreg.py            (defaults: 3 seeds, ~100 s on 2 CPU cores)
      python examples/hpo_logreg.py --quick    (seconds; used by the test suite)
      python examples/hpo_logreg.py --device cuda --plot decay.png   (the learned decay per pixel)
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, optim
from betty_func.data import mnist10k
from _machine import add_machine_args, machine, save_figure


def splits(seed: int, n_train: int, n_val: int, device: torch.device):
    X, y = mnist10k(dtype=torch.float64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, va, te = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    return tuple((X[i].to(device), y[i].to(device)) for i in (tr, va, te))


def logits(theta, X):
    return X @ theta["W"] + theta["b"]


def inner_loss(theta, lam, train, val=None):  # both losses get the same *args: (train, val)
    X, y = train
    decay = torch.exp(lam).expand(X.shape[1])  # one value (scalar λ) or one per pixel
    return F.cross_entropy(logits(theta, X), y) + 0.5 * (decay[:, None] * theta["W"] ** 2).sum()


def outer_loss(theta, lam, train, val):
    X, y = val
    return F.cross_entropy(logits(theta, X), y)


def solve_inner(theta, lam, train, iters: int):
    """Warm-started L-BFGS to stationarity (no differentiation through it)."""
    w = torch.cat([theta["W"].reshape(-1), theta["b"]]).clone().requires_grad_()
    unflat = lambda v: {"W": v[:-10].reshape(-1, 10), "b": v[-10:]}  # noqa: E731
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iters, tolerance_grad=1e-9, tolerance_change=0,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = inner_loss(unflat(w), lam.detach(), train)
        loss.backward()
        return loss
    opt.step(closure)
    return {k: v.detach() for k, v in unflat(w.detach()).items()}


def accuracy(theta, data) -> float:
    X, y = data
    return float((logits(theta, X).argmax(1) == y).double().mean())


def fresh_theta(d: int, device: torch.device):
    return {"W": torch.zeros(d, 10, dtype=torch.float64, device=device),
            "b": torch.zeros(10, dtype=torch.float64, device=device)}


def grid_baseline(train, val, test, grid, iters):
    best, device = None, train[0].device
    for log_decay in grid:
        lam = torch.tensor(log_decay, dtype=torch.float64, device=device)
        theta = solve_inner(fresh_theta(784, device), lam, train, iters)
        val_loss = float(outer_loss(theta, lam, train, val))
        if best is None or val_loss < best[0]:
            best = (val_loss, log_decay, theta)
    val_loss, log_decay, theta = best
    return {"val_loss": val_loss, "val_acc": accuracy(theta, val),
            "test_acc": accuracy(theta, test), "decay": math.exp(log_decay)}


def learn(train, val, test, lam0, steps, cg_iters, inner_iters, lr, log):
    """Adam on the log-decays λ (from ``lam0``, on the data's device); ``(row, learned λ)``."""
    g = hg.grad(outer_loss, inner_loss, hg.cg(maxiter=cg_iters), return_info=True)
    opt, lam = optim.adam(lr), lam0
    state, theta, p = opt.init(lam), fresh_theta(784, lam0.device), None
    for k in range(steps):
        theta = solve_inner(theta, lam, train, inner_iters)
        hyper, info = g(theta, lam, train, val, init=p)  # warm-start CG from the last solution
        p = info.solution
        lam, state = optim.step(opt, lam, hyper, state)
        if log and (k % max(1, steps // 5) == 0 or k == steps - 1):
            print(f"  step {k:3d}  val CE {float(outer_loss(theta, lam, train, val)):.4f}  "
                  f"|grad_theta L| {float(info.inner_grad_norm):.1e}  "
                  f"CG residual {float(info.residual_norm):.1e}")
    theta = solve_inner(theta, lam, train, inner_iters)
    return {"val_loss": float(outer_loss(theta, lam, train, val)), "val_acc": accuracy(theta, val),
            "test_acc": accuracy(theta, test), "decay": float(torch.exp(lam).mean()),
            "decay_min": float(torch.exp(lam).min()),
            "decay_max": float(torch.exp(lam).max())}, lam.detach()


def plot(path: str, seed: int, decays: list, mean_digits: list, rows: dict, header: str) -> None:
    """The learned per-pixel decay of the first seed as a 28 x 28 image (log scale), the single
    decays on its colour bar, and the seed's mean train digit beside it."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    fig, (ax, digit) = plt.subplots(1, 2, figsize=(10, 4.6), width_ratios=[1.25, 1])
    img = ax.imshow(decays[0].reshape(28, 28).numpy(), cmap="viridis", norm=LogNorm())
    bar = fig.colorbar(img, ax=ax, label="learned decay exp(λ_j) (log scale)")
    grid, single = (rows[k][0]["decay"] for k in ("grid-searched single decay",
                                                  "learned single decay"))
    for value, color, ls in ((grid, "w", "--"), (single, "r", "-")):
        if bar.vmin <= value <= bar.vmax:
            bar.ax.axhline(value, color=color, ls=ls, lw=2)
    ax.set_title(f"learned per-pixel decay (seed {seed})\nsingle decays: grid-searched "
                 f"{grid:.1e} (white line), learned {single:.1e} (red line)", fontsize=9)
    digit.imshow(mean_digits[0].reshape(28, 28).numpy(), cmap="gray")
    digit.set_title(f"mean train digit (seed {seed})", fontsize=9)
    for a_ in (ax, digit):
        a_.set_xlabel("pixel column")
        a_.set_ylabel("pixel row")
    title = ("L2 decay per input pixel of logistic regression on MNIST, learned by implicit "
             "hypergradients")
    save_figure(fig, path, title, header)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-val", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=20, help="outer (hyperparameter) steps")
    ap.add_argument("--cg-iters", type=int, default=20)
    ap.add_argument("--inner-iters", type=int, default=60, help="L-BFGS iterations per inner solve")
    ap.add_argument("--lr", type=float, default=0.1, help="Adam step on log-decays")
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    ap.add_argument("--json", type=str, default=None, help="write the results table here")
    add_machine_args(ap, "the learned decay per pixel as an image")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.n_train, a.n_val, a.steps, a.cg_iters, a.inner_iters = [0], 200, 200, 3, 5, 15
    device, header = machine(ap, a, __file__)
    print(header, flush=True)
    grid = [math.log(v) for v in (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)]
    rows = {"grid-searched single decay": [], "learned single decay": [],
            "learned per-pixel decay": []}
    t0, decays, mean_digits = time.time(), [], []
    for seed in a.seeds:
        train, val, test = splits(seed, a.n_train, a.n_val, device)
        print(f"seed {seed}: train {len(train[1])}, val {len(val[1])}, test {len(test[1])}")
        rows["grid-searched single decay"].append(grid_baseline(train, val, test, grid,
                                                                a.inner_iters))
        lam0 = torch.tensor(math.log(1e-3), dtype=torch.float64, device=device)
        rows["learned single decay"].append(learn(train, val, test, lam0, a.steps, a.cg_iters,
                                                  a.inner_iters, a.lr, log=False)[0])
        print(" per-pixel decay:")
        row, lam = learn(train, val, test, lam0.repeat(784), a.steps, a.cg_iters, a.inner_iters,
                         a.lr, log=True)
        rows["learned per-pixel decay"].append(row)
        decays.append(torch.exp(lam).cpu())
        mean_digits.append(train[0].mean(0).cpu())
    elapsed = time.time() - t0
    fmt = lambda xs: f"{100 * statistics.mean(xs):.2f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0):.2f}"  # noqa
    print(f"\n{header}\n{len(a.seeds)} seed(s), {elapsed:.0f} s\n")
    print("| method | val CE | val acc (%) | test acc (%) | mean decay |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {statistics.mean(r['val_loss'] for r in rs):.4f} | "
              f"{fmt([r['val_acc'] for r in rs])} | {fmt([r['test_acc'] for r in rs])} | "
              f"{statistics.mean(r['decay'] for r in rs):.2e} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "machine": header, "seconds": elapsed, "results": rows}, f,
                      indent=1)
    if a.plot:
        plot(a.plot, a.seeds[0], decays, mean_digits, rows, header)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
