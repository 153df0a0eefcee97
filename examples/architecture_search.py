r"""Differentiable architecture search (DARTS, Liu et al., ICLR 2019) on the bundled MNIST digits.

Search network: a 3x3 stride-2 stem conv (1 -> C = 8 channels, 28x28 -> 14x14), two cells (the
second after a fixed 2x2 max pool, at 7x7), a 3x3 average pool and a linear head. A cell has two
nodes, n1 = e1(x) and n2 = e2(x) + e3(n1), and outputs n1 + n2 (normalized per example): three
edges per cell, six in all, each a mixed operation  Σ_o softmax(α_e)_o · o(x)  over the
candidates zero, skip, 3x3 max pool, 3x3 conv and 5x5 conv (DARTS' ReLU-conv-norm, the norm a
GroupNorm(1, C) without affine parameters, so no prediction depends on its batch). α (6 x 5
logits, DARTS' init 1e-3 N(0, 1)) is the upper problem on validation digits (Adam 3e-2, betas
(0.5, 0.999), weight decay 1e-3); the weights w are the lower on train digits (SGD, momentum
0.9, constant rate η = 0.05, weight decay 3e-4); both update at every step, 200 steps of 32.

* first-order (DARTS' ξ = 0): α's gradient is ∇α L_val(w, α) at the current w, written as ONE
  mlo problem over {w, α} with loss L_train(w, sg α) + L_val(sg w, α) (sg = detach) and
  ``optim.partition([sgd, adam])``. (The bilevel form with the upper reading the lower detached
  is refused by mlo's step-0 check, "reads its lower but does not depend on it", and
  ``hg.darts(scale=0)`` by ``linsolve.identity``.) Both gradients are taken at (w_t, α_t), where
  DARTS' loop moves α first and w's step then sees α_{t+1}: one step apart.
* second-order: ``hg.darts(eps=0.01, scale=η)`` (ξ = η; H⁻¹ ≈ ηI and the paper's finite
  difference). As in all mlo implicit methods ∇w L_val is taken at the current w, not at
  DARTS' look-ahead w − ξ∇w L_train.
* sama: ``hg.sama(eps=1.0)`` (Betty's radius), the lower's own optimizer step. For SGD + momentum
  ∂u/∂g = ηI, so it is
  ``hg.darts(eps=1.0, scale=η)`` (checked: the same hypergradient to the last bit), the
  second-order row with a finite-difference radius of 1.0 instead of 0.01.
* random: α drawn uniformly in [0, 1), i.e. a uniform non-zero op per edge; no search.

Each α is made discrete as DARTS does (argmax per edge over the candidates other than zero; with
at most two inputs per node DARTS' top-2 edges keep them all) and that network is retrained from
scratch on train ∪ validation (400 steps of 32, cosine rate from 0.05; once per distinct cell
and seed) and scored on held-out test digits. Splits, drawn per seed, disjoint: 2000 train,
2000 validation, 5000 test digits.

Measured 2026-12-01, 3 seeds, 220 s on a 2-core CPU VM (torch 2.13, one other job running);
cells per seed as "cell 1/cell 2", an edge a letter (s skip, p max pool, 3 / 5 conv 3x3 / 5x5),
and the paired difference to random's test accuracy per seed (0/1/2):

| method | cells per seed | test acc (%) | vs random (points) | params | search s | retrain s |
|---|---|---|---|---|---|---|
| first-order | s5p/ppp 55p/pp5 553/p33 | 95.61 ± 0.88 | -0.92/+2.08/-0.16 | 4578 | 9.0 | 5.2 |
| second-order | s5p/p5p 553/p53 553/553 | 95.14 ± 0.47 | -0.26/+1.04/-1.18 | 6370 | 18.5 | 5.7 |
| sama | s5p/ppp 555/3p3 533/53s | 95.21 ± 0.63 | -0.92/+1.52/-0.78 | 4962 | 25.9 | 5.0 |
| random | 533/spp s33/55p p5p/5p5 | 95.27 ± 0.76 | – | 4770 | 0.0 | 5.2 |

No search beats the random cells here: every mean lies within 0.35 points of random's, inside
the spread over seeds, and each method loses to random on two of the three seeds. Retraining a
fixed cell on seed 0's split with five seeds (init and batch order) spreads 0.24-0.54 points
(sd); there random's cell (95.68 mean) beats the pool-heavy one first-order and sama found
(94.83). The searches lean to parameter-free ops in cell 2 (DARTS' known early bias to ops that
need no training), and 200 steps leave α soft: the strongest candidate holds 25-71% of an
edge's weight. sama's radius of 1.0 measures the mixed term poorly on this network: the cosine of
its response term with the exact one (same H⁻¹ ≈ ηI, exact mixed product) is -0.45 at the
initial weights and 0.80 after 100 lower steps; darts' radius 0.01 gives 0.98 and 0.997.

Run:  python examples/architecture_search.py           (3 seeds, the four rows)
      python examples/architecture_search.py --quick   (seconds; the smoke test)
      python examples/architecture_search.py --device cuda --plot cells.png
                                                       (on a GPU; softmax(α) per edge and op)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from betty_func import hypergrad as hg, mlo, nn as bnn, optim
from betty_func.data import mnist10k
from _machine import add_machine_args, machine, save_figure

OPS = ("zero", "skip", "max_pool_3x3", "conv_3x3", "conv_5x5")
SHORT = {"skip": "skip", "max_pool_3x3": "pool", "conv_3x3": "c3", "conv_5x5": "c5"}
CODE = {"skip": "s", "max_pool_3x3": "p", "conv_3x3": "3", "conv_5x5": "5"}  # the table's cells
CELLS, EDGES_PER_CELL = 2, 3
METHODS = ["first-order", "second-order", "sama", "random"]


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def make_op(name: str, C: int) -> nn.Module:
    if name == "zero":
        return Zero()
    if name == "skip":
        return nn.Identity()
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    k = int(name[-1])
    return nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, k, padding=k // 2, bias=False),
                         nn.GroupNorm(1, C, affine=False))


class Edge(nn.Module):
    """A mixed operation over ``ops`` (weights given), or the one op of a derived network."""

    def __init__(self, C: int, ops: tuple):
        super().__init__()
        self.names, self.ops = ops, nn.ModuleList(make_op(o, C) for o in ops)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        if w is None:
            return self.ops[0](x)
        return sum(w[i] * op(x) for i, (n, op) in enumerate(zip(self.names, self.ops))
                   if n != "zero")  # zero adds nothing, but its weight takes its share


class Net(nn.Module):
    """Stem, ``CELLS`` cells of three edges (a 2x2 max pool between cells), linear head."""

    def __init__(self, C: int, edges: list):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, C, 3, stride=2, padding=1, bias=False),
                                  nn.GroupNorm(1, C, affine=False))
        self.edges = nn.ModuleList(Edge(C, ops) for ops in edges)
        self.head = nn.Linear(C * 9, 10)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(x.view(-1, 1, 28, 28))
        w = alpha.softmax(-1) if alpha is not None else [None] * len(self.edges)
        for c in range(CELLS):
            e = EDGES_PER_CELL * c
            n1 = self.edges[e](x, w[e])
            n2 = self.edges[e + 1](x, w[e + 1]) + self.edges[e + 2](n1, w[e + 2])
            x = F.group_norm(n1 + n2, 1)  # the cell's output, normalized per example
            if c < CELLS - 1:
                x = F.max_pool2d(x, 2)
        return self.head(F.adaptive_avg_pool2d(x, 3).flatten(1))


def derive(alpha: torch.Tensor) -> list:
    """DARTS' discrete architecture: the strongest candidate other than zero on each edge."""
    keep = [i for i, o in enumerate(OPS) if o != "zero"]
    return [OPS[keep[int(i)]] for i in alpha[:, keep].argmax(1)]


def splits(seed: int, a: argparse.Namespace, device: torch.device) -> tuple:
    X, y = mnist10k()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cuts = [0, a.train, a.train + a.val, a.train + a.val + a.test]
    return tuple((X[perm[s:e]].to(device), y[perm[s:e]].to(device))
                 for s, e in zip(cuts, cuts[1:]))


def sampler(data: tuple, batch: int, seed: int):
    """``i -> batch``: batch ``i`` of a fresh seeded shuffle per epoch (a pure function of i)."""
    X, y = data
    per_epoch = len(y) // batch

    def draw(i: int) -> tuple:
        epoch, j = divmod(i, per_epoch)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 7919 * epoch))
        idx = perm[j * batch:(j + 1) * batch].to(X.device)  # drawn on the CPU, on any device
        return X[idx], y[idx]
    return draw


QUIET = dict(logging=mlo.Logging(every=50, progress=False, console=False))


def first_order(net, w0, alpha0, sgd, adam, train, val, steps: int) -> torch.Tensor:
    """DARTS with ξ = 0 as one problem over {w, α}: L_train(w, sg α) + L_val(sg w, α), so w's
    gradient is ∇w L_train and α's is ∇α L_val at the current w (sg = detach)."""
    def joint_loss(p, batch):
        w_fixed = {k: v.detach() for k, v in p["w"].items()}
        train_loss = F.cross_entropy(net(p["w"], batch[0][0], p["alpha"].detach()), batch[0][1])
        val_loss = F.cross_entropy(net(w_fixed, batch[1][0], p["alpha"]), batch[1][1])
        return train_loss + val_loss, {"train": train_loss, "val": val_loss}
    opt = optim.partition([sgd, adam], {"w": {k: 0 for k in w0}, "alpha": 1})
    problem = mlo.Problem("joint", joint_loss, {"w": w0, "alpha": alpha0}, opt,
                          data=lambda i: (train(i), val(i)))
    return mlo.solve([problem], {}, steps=steps, **QUIET).params["joint"]["alpha"]


def bilevel(net, w0, alpha0, sgd, adam, train, val, steps: int, method) -> torch.Tensor:
    """α the upper problem on validation digits, w the lower on train digits; ``method`` is how
    α's hypergradient goes through w's response."""
    def weights_loss(w, batch, *, arch):
        return F.cross_entropy(net(w, batch[0], arch), batch[1])

    def arch_loss(alpha, batch, *, weights):
        return F.cross_entropy(net(weights, batch[0], alpha), batch[1])
    problems = [mlo.Problem("weights", weights_loss, w0, sgd, data=train, hypergrad=method),
                mlo.Problem("arch", arch_loss, alpha0, adam, data=val)]
    return mlo.solve(problems, {"arch": ["weights"]}, steps=steps, **QUIET).params["arch"]


def search(method: str, seed: int, a: argparse.Namespace, data: tuple) -> tuple:
    """One search on the supernet; returns (α at the end, α at the start)."""
    torch.manual_seed(seed)  # every draw on the CPU, then moved: the same numbers on any device
    device = data[0][0].device
    net = bnn.functional(Net(a.channels, [OPS] * (CELLS * EDGES_PER_CELL)).to(device))
    alpha0 = (1e-3 * torch.randn(CELLS * EDGES_PER_CELL, len(OPS))).to(device)  # DARTS' init
    if method == "random":  # no search: uniform logits, so a uniform non-zero op per edge
        return torch.rand(alpha0.shape).to(device), alpha0
    args = (net, net.params, alpha0, optim.sgd(a.lr, momentum=0.9, weight_decay=3e-4),
            optim.adam(a.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3),
            sampler(data[0], a.batch, 10 * seed + 1), sampler(data[1], a.batch, 10 * seed + 2),
            a.steps)
    if method == "first-order":
        return first_order(*args), alpha0
    if method == "second-order":  # DARTS' ξ = η: H⁻¹ ≈ ηI, the paper's finite difference
        return bilevel(*args, hg.darts(eps=0.01, scale=a.lr)), alpha0
    return bilevel(*args, hg.sama(eps=1.0)), alpha0  # the lower's own SGD step, Betty's radius


def retrain(ops: list, seed: int, a: argparse.Namespace, data: tuple) -> tuple:
    """Train the derived network from scratch on train ∪ validation; (test accuracy, params)."""
    torch.manual_seed(seed)
    net = bnn.functional(Net(a.channels, [(o,) for o in ops]).to(data[0][0].device))
    X = torch.cat([data[0][0], data[1][0]])
    y = torch.cat([data[0][1], data[1][1]])
    sgd = optim.sgd(optim.cosine(a.lr, a.retrain_steps), momentum=0.9, weight_decay=3e-4)
    r = mlo.solve([mlo.Problem("net", lambda w, b: F.cross_entropy(net(w, b[0]), b[1]),
                               net.params, sgd, data=sampler((X, y), a.batch, 10 * seed + 3))],
                  {}, steps=a.retrain_steps, **QUIET)
    with torch.no_grad():
        Xt, yt = data[2]
        acc = float((net(r.params["net"], Xt).argmax(1) == yt).float().mean())
    return acc, sum(v.numel() for v in net.params.values())


def plot(path: str, results: dict, a: argparse.Namespace, header: str) -> None:
    """The searched cells of the first seed: per method a heat map of softmax(α), the edges
    (rows) against the candidate ops (columns), the derived op of each edge boxed."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    methods = [m for m, rs in results.items() if rs]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods) + 1.2, 4.2),
                             squeeze=False)
    edges = [f"cell {c + 1}: " + name for c in range(CELLS)
             for name in ("x → n1", "x → n2", "n1 → n2")]
    weights = {m: torch.tensor(results[m][0]["alpha"]).softmax(-1) for m in methods}
    top = max(0.5, max(float(w.max()) for w in weights.values()))  # one colour scale for all
    for ax, m in zip(axes[0], methods):
        r, w = results[m][0], weights[m]
        img = ax.imshow(w.numpy(), cmap="Blues", vmin=0.0, vmax=top)
        for e in range(w.shape[0]):
            for o in range(w.shape[1]):
                ax.text(o, e, f"{float(w[e, o]):.2f}", ha="center", va="center", fontsize=7,
                        color="white" if w[e, o] > 0.6 * img.norm.vmax else "black")
            chosen = OPS.index(r["ops"][e])
            ax.add_patch(Rectangle((chosen - 0.5, e - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_xticks(range(len(OPS)), OPS, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(edges)), edges if ax is axes[0][0] else [""] * len(edges),
                      fontsize=8)
        ax.set_xlabel("candidate op")
        ax.set_title(f"{m}" + (" (no search)" if m == "random" else "") +
                     f"\ntest acc {100 * r['test_acc']:.2f}% (seed {r['seed']})", fontsize=9)
    axes[0][0].set_ylabel("edge")
    fig.colorbar(img, ax=list(axes[0]), label="softmax(α) of the edge (red box: derived op)",
                 shrink=0.85)
    title = f"DARTS on MNIST digits: the searched cells after {a.steps} steps"
    save_figure(fig, path, title, header, tight=False)


def print_table(results: dict) -> None:
    """The markdown table: derived cells per seed, test accuracy, paired gain over random."""
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    base = {r["seed"]: r["test_acc"] for r in results.get("random", [])}
    print("| method | cells per seed | test acc (%) | vs random (points) | params | "
          "search s | retrain s |")
    print("|---|---|---|---|---|---|---|")
    for m, rs in results.items():
        accs = [100 * r["test_acc"] for r in rs]
        ops = " ".join("".join(CODE[o] for o in r["ops"][:EDGES_PER_CELL]) + "/" +
                        "".join(CODE[o] for o in r["ops"][EDGES_PER_CELL:]) for r in rs)
        gain = "/".join(f"{100 * (r['test_acc'] - base[r['seed']]):+.2f}" for r in rs
                          if r["seed"] in base) if m != "random" and base else "–"
        print(f"| {m} | {ops} | {statistics.mean(accs):.2f} ± {sd(accs):.2f} | {gain} | "
              f"{statistics.mean(r['params'] for r in rs):.0f} | "
              f"{statistics.mean(r['search_seconds'] for r in rs):.1f} | "
              f"{statistics.mean(r['retrain_seconds'] for r in rs):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200, help="search steps")
    ap.add_argument("--retrain-steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=0.05, help="weights' SGD rate η (DARTS' ξ = η)")
    ap.add_argument("--arch-lr", type=float, default=3e-2, help="α's Adam rate")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    add_machine_args(ap, "softmax(α) per edge and op as heat maps")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.steps, a.retrain_steps, a.test = [0], 10, 20, 1000
    device, header = machine(ap, a, __file__)
    print(header, flush=True)
    results, t0 = {m: [] for m in a.methods}, time.time()
    for seed in a.seeds:
        data, scored = splits(seed, a, device), {}
        for m in a.methods:
            t = time.time()
            alpha, alpha0 = search(m, seed, a, data)
            searched, ops = time.time() - t, derive(alpha)
            if tuple(ops) not in scored:  # one retraining per distinct architecture and seed
                t = time.time()
                scored[tuple(ops)] = (*retrain(ops, seed, a, data), time.time() - t)
            acc, n_params, retrained = scored[tuple(ops)]
            results[m].append({"seed": seed, "ops": ops, "test_acc": acc, "params": n_params,
                               "alpha": alpha.tolist(), "alpha_change":
                               float((alpha - alpha0).abs().max()), "search_seconds": searched,
                               "retrain_seconds": retrained})
            print(f"seed {seed} {m:12s} {' '.join(SHORT[o] for o in ops):24s} test acc "
                  f"{100 * acc:.2f}%  (search {searched:.0f} s, retrain {retrained:.0f} s)",
                  flush=True)
    elapsed = time.time() - t0
    print(f"\n{header}\nDARTS on MNIST digits ({a.train} train / {a.val} val / {a.test} test), C = "
          f"{a.channels}, {a.steps} search + {a.retrain_steps} retrain steps, "
          f"{len(a.seeds)} seed(s), {elapsed:.0f} s\n")
    print_table(results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "machine": header, "seconds": elapsed,
                       "results": results}, f, indent=1)
    if a.plot:
        plot(a.plot, results, a, header)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
