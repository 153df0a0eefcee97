r"""Meta-Weight-Net (Shu et al., NeurIPS 2019) on long-tailed MNIST, as in Betty's tutorial.

Lower problem (classifier, MLP 784-200-10, SGD + momentum + MultiStepLR) minimizes the weighted
loss  Σ_i w(ℓ_i; φ) ℓ_i(θ) / Σ_i w(ℓ_i; φ)  (normalized as in Shu et al.'s code; Betty's tutorial
uses the plain mean, ``--no-normalize``), with w a 1-100-1 MLP with a sigmoid (the reweighting net).
Upper problem (the reweighting net φ, Adam) minimizes the classifier's loss on a small balanced
meta set; its hypergradient flows through the classifier's best response by ``--methods``.
The baseline trains the same classifier on the same long-tailed data without reweighting;
"class-balanced" weighs each class by 1 / its count (the counts known, nothing meta-learned), a
reference for the headroom a per-class weighting has. "<method>-size" rows feed the same 1-100-1
net log10 of the example's class size instead of its loss (CMW-Net's class-size feature).

Data: the bundled 10k MNIST digits, split into a long-tailed train set (imbalance 100: the most
common class has ~100x the examples of the rarest, class order shuffled), a balanced meta set
(10 per class) and a balanced held-out test set (200 per class).

Measured (3 seeds, 800 steps, 211 s on 2 CPU cores): test accuracy 77.17 ± 2.35 % for the baseline,
81.57 ± 1.05 % class-balanced, 77.53 / 77.80 / 77.73 % with darts / cg / neumann fed the loss
(paired per seed, cg gains +0.00 / +0.65 / +1.25 points — not the tutorial's margin), and
82.90 ± 1.06 % with darts fed the class size (+5.55 / +7.80 / +3.85: the net learns weights that
fall with the class size, beyond 1 / n_c). A loss-fed net cannot tell a rare class from a frequent
one once both are fit; the README has the learned weights and the other probes.
On full MNIST (the tutorial's data; the README says how to get it offline) Betty's recipe exactly
(``--standardize --weight-decay 0 --no-normalize --meta-lr 1e-5 --lr-drops 0.5 0.8333``) gives
91.49 % baseline, 91.46 % darts (the tutorial: 91.82 → 95.41): at Adam 1e-5 the net never leaves
its random initialization. There, at meta rate 1e-3, darts and neumann run away (w → 0 for
well-fit examples); use ``--meta-lr 1e-4``. Fed the class size (meta rate 1e-3), darts / neumann
gain +1.48 / +2.50 points there (92.34 / 93.36 % vs 90.86 %, every seed). Other probes: README.

Run:  python examples/data_reweighting.py            (3 seeds, all six rows)
      python examples/data_reweighting.py --quick    (seconds; the smoke test)
      python examples/data_reweighting.py --device cuda --plot weights.png
                                                     (on a GPU; the learned weight per class)
      python examples/data_reweighting.py --mnist-root ~/data --meta-per-class 100 --steps 3000 \
          --meta-lr 1e-4                             (the tutorial's setting, full MNIST on disk)
      torchrun --nproc_per_node=2 examples/data_reweighting.py --methods cg
                                                     (data parallel: each rank half of every batch)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from betty_func import hypergrad as hg, mlo, nn as bnn, optim
from betty_func.data import load_mnist, long_tailed_splits, mnist10k
from _machine import add_machine_args, machine, save_figure

METHODS = {"darts": lambda: hg.darts(),
           "cg": lambda: hg.cg(maxiter=3),
           "neumann": lambda: hg.neumann(steps=3, alpha=0.1)}
# "<method>-size": the same 1-100-1 net fed log10 of the example's class size in the train set
# instead of its loss (the class-size feature of CMW-Net, Shu et al., TPAMI 2023)
METHODS.update({f"{m}-size": make for m, make in list(METHODS.items())})


def net_input(method: str, losses: torch.Tensor, labels: torch.Tensor,
              counts: torch.Tensor) -> torch.Tensor:
    """What the reweighting net reads per example: its loss ℓ_i (detached), or log10 n_{y_i}."""
    if method.endswith("-size"):
        return torch.log10(counts)[labels][:, None]
    return losses.detach()[:, None]


def accuracy(f, params, data) -> float:
    X, y = data
    with torch.no_grad():
        return float((f(params, X).argmax(1) == y).float().mean())


def standardized(f, on: bool):
    """``f`` fed MNIST pixels standardized by its mean and std, as the tutorial's transform."""
    return (lambda params, X: f(params, (X - 0.1307) / 0.3081)) if on else f


def shifted(pixels: int):
    """A collate function that moves each image by up to ``pixels`` in x and y (zero fill)."""
    def collate(batch):
        X, y = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        if pixels == 0:
            return X, y
        n, side = len(X), 28
        img = F.pad(X.view(n, side, side), (pixels,) * 4)
        # the offsets drawn on the CPU (the same stream on every device), then moved to X's
        oy, ox = ((torch.randint(0, 2 * pixels + 1, (n, 1)) + torch.arange(side)).to(X.device)
                  for _ in range(2))
        rows = torch.arange(n, device=X.device)[:, None, None]
        return img[rows, oy[:, :, None], ox[:, None, :]].reshape(n, -1), y
    return collate


def to_device(splits, device: torch.device):
    """``splits`` with its train, meta and test tensors on ``device``."""
    return splits._replace(**{k: tuple(t.to(device) for t in getattr(splits, k))
                              for k in ("train", "meta", "test")})


def run(seed: int, method: str, a: argparse.Namespace, splits, device: torch.device) -> dict:
    """One seed of one row: test and meta accuracy and, where a net reweighs, the mean weight it
    gives each class's train examples at the end."""
    torch.manual_seed(seed)  # both nets initialized on the CPU (the same numbers on any device)
    net = bnn.functional(nn.Sequential(nn.Linear(784, 200), nn.ReLU(),
                                       nn.Linear(200, 10)).to(device))
    cls = standardized(net, a.standardize)
    rw = bnn.functional(nn.Sequential(nn.Linear(1, 100), nn.ReLU(), nn.Linear(100, 1),
                                      nn.Sigmoid()).to(device))
    # under torchrun every rank draws the same global batches (same seed) and keeps its slice;
    # full batches only, so that each splits evenly
    ddp = dist.is_initialized()
    train = DataLoader(TensorDataset(*splits.train), batch_size=a.batch, shuffle=True,
                       drop_last=ddp, collate_fn=shifted(a.shift))
    meta = DataLoader(TensorDataset(*splits.meta), batch_size=a.batch, shuffle=True, drop_last=ddp)
    lr = optim.multistep(a.lr, [round(f * a.steps) for f in a.lr_drops], 0.1)
    sgd = optim.sgd(lr, momentum=0.9, weight_decay=a.weight_decay)

    # "class-balanced" (a reference with the class counts known, nothing meta-learned):
    # Σ_i ℓ_i / n_{y_i}  /  Σ_i 1 / n_{y_i}  over the batch
    counts = torch.tensor(splits.counts, dtype=torch.float32, device=device)
    class_weight = 1.0 / counts if method == "class-balanced" else None

    def plain_loss(params, batch):
        return F.cross_entropy(cls(params, batch[0]), batch[1], weight=class_weight)

    def classifier_loss(params, batch, *, reweight):
        losses = F.cross_entropy(cls(params, batch[0]), batch[1], reduction="none")
        weights = rw(reweight, net_input(method, losses, batch[1], counts)).squeeze(1)
        if a.normalize:  # as in Shu et al.'s code: weights sum to one over the batch
            return (weights * losses).sum() / weights.sum(), {"mean_weight": weights.mean()}
        return (weights * losses).mean(), {"mean_weight": weights.mean()}

    def reweight_loss(params, batch, *, classifier):
        return F.cross_entropy(cls(classifier, batch[0]), batch[1])

    log = dict(logging=mlo.Logging(every=max(1, a.steps // 10), progress=False, console=False,
                                   logdir=f"{a.logdir}/{method}_seed{seed}" if a.logdir else None))
    if method in ("baseline", "class-balanced"):
        r = mlo.solve([mlo.Problem("classifier", plain_loss, net.params, sgd, data=train)], {},
                      steps=a.steps, **log)
    else:
        problems = [mlo.Problem("classifier", classifier_loss, net.params, sgd, data=train,
                                hypergrad=METHODS[method]()),
                    mlo.Problem("reweight", reweight_loss, rw.params, optim.adam(a.meta_lr),
                                data=meta)]
        r = mlo.solve(problems, {"reweight": ["classifier"]}, steps=a.steps, **log)
    theta = r.params["classifier"]
    out = {"test_acc": accuracy(cls, theta, splits.test), "meta_acc": accuracy(cls, theta,
                                                                                 splits.meta)}
    if "reweight" in r.params:  # the mean learned weight w of each class's train examples
        X, y = splits.train
        with torch.no_grad():
            losses = F.cross_entropy(cls(theta, X), y, reduction="none")
            w = rw(r.params["reweight"], net_input(method, losses, y, counts)).squeeze(1)
            per_class = torch.zeros(len(counts), device=w.device).index_add_(0, y, w) / counts
        out.update(class_weight=per_class.tolist(), class_counts=list(splits.counts))
    return out


def plot(path: str, results: dict, header: str, a: argparse.Namespace) -> None:
    """The mean weight the learned net gives each class's train examples against the class's
    size: as it is (left) and relative to the train set's mean weight (right), there with the
    references no reweighting (1) and class-balanced 1/n_c."""
    import matplotlib.pyplot as plt
    fig, (raw, rel) = plt.subplots(1, 2, figsize=(11, 4.6))
    for i, (m, rs) in enumerate((m, rs) for m, rs in results.items()
                                if rs and "class_weight" in rs[0]):
        by_count: dict = {}  # class size -> [(mean weight, relative weight)], over seeds
        for r in rs:
            n, w = r["class_counts"], r["class_weight"]
            mean_w = sum(nc * wc for nc, wc in zip(n, w)) / sum(n)
            for nc, wc in zip(n, w):
                by_count.setdefault(nc, []).append((wc, wc / mean_w))
        xs = sorted(by_count)
        for ax, k in ((raw, 0), (rel, 1)):
            ys = [statistics.mean(v[k] for v in by_count[x]) for x in xs]
            ax.plot(xs, ys, "o-", color=f"C{i}", label=f"{m} ({len(rs)} seed(s))")
            if len(rs) > 1:  # every seed's class, faintly
                ax.scatter([x for x in xs for _ in by_count[x]],
                           [v[k] for x in xs for v in by_count[x]], s=8, color=f"C{i}", alpha=0.3)
    n = results[next(m for m, rs in results.items() if rs and "class_counts" in rs[0])][0][
        "class_counts"]
    xs = sorted(n)
    rel.plot(xs, [sum(n) / (len(n) * x) for x in xs], "k--", label="class-balanced 1/n_c")
    rel.axhline(1.0, color="gray", ls=":", label="no reweighting")
    for ax in (raw, rel):
        ax.set_xscale("log")
        ax.set_xlabel("train examples of the class (long-tailed, imbalance "
                      f"{a.imbalance:g})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    raw.set_ylabel("mean learned weight w of the class's train examples (log)")
    rel.set_ylabel("class's mean weight / train set's mean weight")
    raw.set_title("learned weight per class")
    rel.set_title("per example, relative to the train set's mean weight")
    raw.legend(fontsize=8)
    rel.legend(fontsize=8)
    title = f"Meta-Weight-Net on long-tailed MNIST, {a.steps} steps, at the end of training"
    save_figure(fig, path, title, header)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+",
                    default=["baseline", "class-balanced", "darts", "cg", "neumann", "darts-size"],
                    choices=["baseline", "class-balanced", *METHODS])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.1, help="classifier SGD rate (MultiStepLR)")
    ap.add_argument("--lr-drops", type=float, nargs="+", default=[0.5, 0.75],
                    help="fractions of --steps where the rate drops 10x (tutorial: 0.5 0.8333)")
    ap.add_argument("--meta-lr", type=float, default=1e-3, help="reweighting net Adam rate")
    ap.add_argument("--weight-decay", type=float, default=5e-4, help="classifier weight decay")
    ap.add_argument("--standardize", action="store_true",
                    help="feed (x - 0.1307) / 0.3081, the tutorial's transform\n"
                         "(default: pixels in [0, 1])")
    ap.add_argument("--shift", type=int, default=0, help="augment: move train digits by up to N px")
    ap.add_argument("--imbalance", type=float, default=100.0)
    ap.add_argument("--meta-per-class", type=int, default=10, help="balanced meta set size / class")
    ap.add_argument("--mnist-root", default=None,
                    help="full MNIST on disk (torchvision layout, ROOT/MNIST/raw): train and meta\n"
                         "sets from its 60k training digits, test on its 10k test digits")
    ap.add_argument("--no-normalize", dest="normalize", action="store_false",
                    help="use mean(w * loss) (Betty's tutorial) instead of sum(w * loss) / sum(w)")
    ap.add_argument("--logdir", default="runs/data_reweighting", help="TensorBoard; '' for none")
    ap.add_argument("--json", default=None, help="write the results table here")
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    add_machine_args(ap, "the learned weight per class against the class's size",
                     device="where the params and the data live (under torchrun: a GPU per rank)",
                     threads="torch CPU threads (default: min(2, available); 1 under torchrun)")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.steps = [0], 6
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun: data parallel
    device, header = machine(ap, a, __file__, default_threads=1 if torchrun else None,
                             gpu=int(os.environ.get("LOCAL_RANK", "0")))  # under torchrun: one each
    if a.plot and not any(m not in ("baseline", "class-balanced") for m in a.methods):
        ap.error(f"data_reweighting.py(--plot): the plot shows the weights a reweighting net "
                 f"learned, and no row learns one. Got --methods {' '.join(a.methods)}. Add a "
                 f"reweighting method, e.g. --methods {' '.join(a.methods)} darts-size.")
    if torchrun:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    leader = not dist.is_initialized() or dist.get_rank() == 0
    print_ = print if leader else (lambda *args, **kw: None)
    print_(header, flush=True)
    pool = load_mnist(a.mnist_root, train=True) if a.mnist_root else mnist10k()
    # full MNIST: the tutorial's test set, MNIST's own 10k test digits; else 200 held-out per class
    test = load_mnist(a.mnist_root, train=False) if a.mnist_root else None
    results, t0 = {m: [] for m in a.methods}, time.time()
    for seed in a.seeds:
        splits = long_tailed_splits(*pool, imbalance=a.imbalance, meta_per_class=a.meta_per_class,
                                    test_per_class=0 if test is not None else 200, seed=seed)
        splits = to_device(splits._replace(test=test) if test is not None else splits, device)
        for m in a.methods:
            t = time.time()
            out = run(seed, m, a, splits, device)
            results[m].append({"seed": seed, **out, "seconds": time.time() - t})
            print_(f"seed {seed} {m:9s} test acc {100 * out['test_acc']:.2f}%  "
                   f"({time.time() - t:.0f} s)", flush=True)
    elapsed = time.time() - t0
    source = "full" if a.mnist_root else "10k digits"
    print_(f"\n{header}\nlong-tailed MNIST ({source}, imbalance {a.imbalance:g}, train "
          f"{len(splits.train[1])}), {a.steps} steps, {len(a.seeds)} seed(s), {elapsed:.0f} s"
           + (f", {dist.get_world_size()} processes" if dist.is_initialized() else "") + "\n")
    print_table(results, a.seeds, print_)
    if a.json and leader:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "machine": header, "seconds": elapsed,
                       "results": results,
                       "world_size": dist.get_world_size() if dist.is_initialized() else 1}, f,
                      indent=1)
    if a.plot and leader:
        plot(a.plot, results, header, a)
        print_(f"plot: {a.plot}")
    if dist.is_initialized():
        dist.destroy_process_group()


def paired_gain(rs: list, base: dict) -> str:
    """Per seed, test accuracy minus the baseline's on the same seed (the same splits), in
    points; then their mean ± sd over the seeds. As the README table's column."""
    gains = [100 * (r["test_acc"] - base[r["seed"]]) for r in rs if r["seed"] in base]
    if not gains:
        return "–"
    sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
    return (" / ".join(f"{g:+.2f}" for g in gains)
            + f" (mean {statistics.mean(gains):+.2f} ± {sd:.2f})")


def print_table(results: dict, seeds: list, print_=print) -> None:
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    base = {r["seed"]: r["test_acc"] for r in results.get("baseline", [])}
    print_(f"| method | test acc (%) | paired gain over baseline, seeds "
           f"{'/'.join(map(str, seeds))} (points) | s / run |")
    print_("|---|---|---|---|")
    for m, rs in results.items():
        accs = [100 * r["test_acc"] for r in rs]
        gain = paired_gain(rs, base) if m != "baseline" else "–"
        print_(f"| {m} | {statistics.mean(accs):.2f} ± {sd(accs):.2f} | {gain} | "
               f"{statistics.mean(r['seconds'] for r in rs):.1f} |")


if __name__ == "__main__":
    main()
