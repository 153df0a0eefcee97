r"""Betty's quick start (Meta-Weight-Net) as a Betty user wrote it, on betty_func.

The program below is the quick start's code (``Classifier`` and ``Reweight`` as
``ImplicitProblem`` subclasses, ``Config``, ``EngineConfig``, ``Engine``) with only the imports
changed: ``from betty.X import Y`` became ``from betty_func.betty.X import Y``. What the user
supplies differs from the seed as it must on this machine: the bundled long-tailed digits instead
of long-tailed CIFAR-10, an MLP 784-200-10 instead of ResNet32, ``device=`` from ``--device``
(``"cpu"`` by default; the seed's ``"cuda"`` with ``--device cuda``: the engine moves the
modules and every batch there), no ``print`` of the reweighting loss at every evaluation; the
settings are those of ``examples/data_reweighting.py`` (SGD 0.1 + momentum 0.9 + weight decay
5e-4, MultiStepLR at 50 % and 75 % of the steps, Adam 1e-3 for the reweighting net, batches of
100), so that this prints the same table as

    python examples/data_reweighting.py --methods darts --no-normalize

for the same seeds: the same numbers, since it is the same computation (the quick start
weighs the losses by their plain mean, hence ``--no-normalize``).

Run:  python examples/betty_quickstart.py            (3 seeds, 800 steps)
      python examples/betty_quickstart.py --quick    (seconds; the smoke test)
      python examples/betty_quickstart.py --device cuda --plot w.png
                                                     (on a GPU; the learned weight function)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim
from torch.utils.data import DataLoader, TensorDataset

from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.engine import Engine
from betty_func.betty.problems import ImplicitProblem
from betty_func.data import long_tailed_splits, mnist10k
from _machine import add_machine_args, machine, save_figure


class MLP(nn.Module):
    def __init__(self, hidden_size=100):
        super(MLP, self).__init__()
        self.fc1 = nn.Linear(1, hidden_size)
        self.fc2 = nn.Linear(hidden_size, 1)

    def forward(self, x):
        x = self.fc2(F.relu(self.fc1(x)))
        weight = torch.sigmoid(x)

        return weight


class Classifier(ImplicitProblem):
    def training_step(self, batch):
        inputs, labels = batch
        outputs = self.forward(inputs)
        loss_vector = F.cross_entropy(outputs, labels.long(), reduction="none")

        # Reweight
        loss_vector_reshape = torch.reshape(loss_vector, (-1, 1))
        weight = self.reweight(loss_vector_reshape.detach())
        loss = torch.mean(weight * loss_vector_reshape)

        return loss


class Reweight(ImplicitProblem):
    def training_step(self, batch):
        inputs, labels = batch
        outputs = self.classifier(inputs)
        loss = F.cross_entropy(outputs, labels.long())

        return loss


def run(seed: int, steps: int, splits, device: str) -> tuple[float, dict]:
    """One seed of the quick start; the test accuracy of the trained classifier, and what the
    trained reweighting net gives a range of losses and each class's train examples."""
    torch.manual_seed(seed)
    classifier_module = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 10))
    reweight_module = MLP(hidden_size=100)
    classifier_optimizer = optim.SGD(classifier_module.parameters(), lr=0.1, momentum=0.9,
                                     weight_decay=5e-4)
    classifier_dataloader = DataLoader(TensorDataset(*splits.train), batch_size=100,
                                       shuffle=True)
    reweight_dataloader = DataLoader(TensorDataset(*splits.meta), batch_size=100, shuffle=True)
    classifier_scheduler = optim.lr_scheduler.MultiStepLR(
        classifier_optimizer, milestones=[round(0.5 * steps), round(0.75 * steps)], gamma=0.1)
    classifier = Classifier(name='classifier', module=classifier_module,
                            optimizer=classifier_optimizer, scheduler=classifier_scheduler,
                            train_data_loader=classifier_dataloader, config=Config(),
                            device=device)
    reweight_optimizer = optim.Adam(reweight_module.parameters(), lr=1e-3)
    reweight = Reweight(name='reweight', module=reweight_module, optimizer=reweight_optimizer,
                        train_data_loader=reweight_dataloader, config=Config(type='darts'),
                        device=device)
    u2l = {reweight: [classifier]}
    l2u = {classifier: [reweight]}
    dependencies = {'l2u': l2u, 'u2l': u2l}
    engine = Engine(config=EngineConfig(train_iters=steps), problems=[reweight, classifier],
                    dependencies=dependencies)
    engine.run()
    X, y = (t.to(device) for t in splits.test)
    with torch.no_grad():
        acc = float((classifier(X).argmax(1) == y).float().mean())
        # afterwards the modules hold the trained params: read the weight function off the net
        losses = torch.linspace(0.0, 6.0, 121, device=device)
        Xtr, ytr = (t.to(device) for t in splits.train)
        per_example = reweight_module(F.cross_entropy(classifier(Xtr), ytr, reduction="none")
                                      [:, None]).squeeze(1)
        classes = len(splits.counts)
        per_class = (torch.zeros(classes, device=device).index_add_(0, ytr, per_example)
                     / torch.bincount(ytr, minlength=classes))
        return acc, {"loss": losses.tolist(),
                     "weight": reweight_module(losses[:, None]).squeeze(1).tolist(),
                     "class_weight": per_class.tolist(), "class_counts": list(splits.counts)}


def plot(path: str, seeds: list, traces: list, steps: int, header: str) -> None:
    """Per seed, the trained reweighting net's weight as a function of the loss (left), and the
    mean weight it gives each class's train examples against the class's size (right)."""
    import matplotlib.pyplot as plt
    fig, (curve, classes) = plt.subplots(1, 2, figsize=(11, 4.4))
    for i, (seed, tr) in enumerate(zip(seeds, traces)):
        curve.plot(tr["loss"], tr["weight"], color=f"C{i}", label=f"seed {seed}")
        order = sorted(range(len(tr["class_counts"])), key=tr["class_counts"].__getitem__)
        classes.plot([tr["class_counts"][c] for c in order],
                     [tr["class_weight"][c] for c in order], "o-", color=f"C{i}",
                     label=f"seed {seed}")
    curve.set_xlabel("an example's training loss ℓ")
    curve.set_ylabel("weight w(ℓ) the trained reweighting net gives it")
    curve.set_title("the learned weight function (Meta-Weight-Net)", fontsize=9)
    classes.set_xscale("log")
    classes.set_xlabel("train examples of the class (long-tailed, imbalance 100)")
    classes.set_ylabel("mean weight of the class's train examples")
    classes.set_title("learned weight per class, at the end of training", fontsize=9)
    for ax in (curve, classes):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    save_figure(fig, path, f"Betty's quick start on betty_func (darts, {steps} steps)", header)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--json", default=None, help="write the results table here")
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    add_machine_args(ap, "the learned weight function and the weight per class")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.steps = [0], 6
    device, header = machine(ap, a, __file__)
    print(header, flush=True)
    pool, accs, seconds, traces, t0 = mnist10k(), [], [], [], time.time()
    for seed in a.seeds:
        splits = long_tailed_splits(*pool, imbalance=100.0, meta_per_class=10,
                                    test_per_class=200, seed=seed)
        t = time.time()
        acc, trace = run(seed, a.steps, splits, str(device))
        accs.append(100 * acc)
        traces.append(trace)
        seconds.append(time.time() - t)
        print(f"seed {seed} darts     test acc {accs[-1]:.2f}%  ({seconds[-1]:.0f} s)", flush=True)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\n{header}\nlong-tailed MNIST (10k digits, imbalance 100, train "
          f"{len(splits.train[1])}), "
          f"{a.steps} steps, {len(a.seeds)} seed(s), {time.time() - t0:.0f} s\n")
    print("| method | test acc (%) | s / run |")
    print("|---|---|---|")
    print(f"| darts | {statistics.mean(accs):.2f} ± {sd:.2f} | {statistics.mean(seconds):.1f} |")
    if a.json:
        rows = [{"seed": s, "test_acc": acc / 100, "seconds": t}
                for s, acc, t in zip(a.seeds, accs, seconds)]
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "machine": header, "results": {"darts": rows}}, f,
                      indent=1)
    if a.plot:
        plot(a.plot, a.seeds, traces, a.steps, header)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
