"""Betty's iMAML tutorial (seed 003) with only the import changed: an ``Env`` draws each task,
a ``MAMLEngine.train_step`` steps it every ``inner_steps``, ``get_batch`` reads the env,
``on_inner_loop_start`` copies the meta-parameters with ``load_state_dict``, the upper
accumulates ``meta_batch_size`` tasks per AdamW step under CosineAnnealingLR. Its meta-gradient
is checked against ``hypergrad.cg`` (and ``darts``) on the same task batch, run by hand.

learn2learn's tasksets are a small sampler over the bundled digits with the same ``sample()``
contract (``2 * shots`` examples per class, adapt examples at the even positions); the
ConvNet is an MLP (the user supplies both). Sizes are small.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim

from betty_func import hypergrad as hg
from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.engine import Engine
from betty_func.betty.envs import Env
from betty_func.betty.problems import ImplicitProblem
from betty_func.data import mnist10k

args = SimpleNamespace(ways=3, shots=2, inner_steps=2, meta_batch_size=2, hidden_size=16,
                       reg=0.25)


class Sampler:
    def __init__(self, seed):
        self.X, self.y = mnist10k(dtype=torch.float64)
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self):
        classes = torch.randperm(10, generator=self.gen)[:args.ways]
        data, labels = [], []
        for i, c in enumerate(classes):
            idx = torch.nonzero(self.y == c).squeeze(1)
            pick = idx[torch.randperm(len(idx), generator=self.gen)[:2 * args.shots]]
            data.append(self.X[pick])
            labels.append(torch.full((2 * args.shots,), i))
        return torch.cat(data), torch.cat(labels)


def ConvNet(ways, hidden_size):
    return nn.Sequential(nn.Linear(784, hidden_size), nn.Tanh(), nn.Linear(hidden_size, ways))


def split_data(data, labels, shots, ways):
    out = {"train": None, "test": None}
    adapt_indices = np.zeros(data.size(0), dtype=bool)
    adapt_indices[np.arange(shots * ways) * 2] = True
    eval_indices = torch.from_numpy(~adapt_indices)
    adapt_indices = torch.from_numpy(adapt_indices)
    out["train"] = (data[adapt_indices], labels[adapt_indices])
    out["test"] = (data[eval_indices], labels[eval_indices])
    return out


def reg_loss(parameters, reference_parameters, reg_lambda=0.25):
    loss = 0
    for p1, p2 in zip(parameters, reference_parameters):
        loss += torch.sum(torch.pow((p1 - p2), 2))
    return reg_lambda * loss


def run_betty(kind, meta_opt):
    tasksets = SimpleNamespace(train=Sampler(seed=3))

    class MAMLEnv(Env):
        def __init__(self):
            super().__init__()
            self.tasks = tasksets
            self.batch = {"train": None, "test": None}

        def step(self):
            data, labels = self.tasks.train.sample()
            data, labels = data.to(self.device), labels.to(self.device)
            out = split_data(data, labels, args.shots, args.ways)
            self.batch["train"] = out["train"]
            self.batch["test"] = out["test"]

    env = MAMLEnv()

    class Upper(ImplicitProblem):
        def training_step(self, batch):
            inputs, labels = batch
            out = self.lower(inputs)
            loss = F.cross_entropy(out, labels)
            acc = 100.0 * (out.argmax(dim=1) == labels).float().mean().item()
            return {"loss": loss, "acc": acc}

        def get_batch(self):
            inputs, labels = self.env.batch["test"]
            return inputs, labels

    class Lower(ImplicitProblem):
        def training_step(self, batch):
            inputs, labels = batch
            out = self.module(inputs)
            loss = F.cross_entropy(out, labels)
            reg = reg_loss(self.parameters(), self.upper.parameters(), args.reg)
            return loss + reg

        def get_batch(self):
            inputs, labels = self.env.batch["train"]
            return inputs, labels

        def on_inner_loop_start(self):
            self.module.load_state_dict(self.upper.module.state_dict())

    torch.manual_seed(0)
    parent_module = ConvNet(args.ways, args.hidden_size).double()
    parent_optimizer = (optim.AdamW(parent_module.parameters(), lr=3e-4) if meta_opt == "adamw"
                        else optim.SGD(parent_module.parameters(), lr=1.0))
    parent_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        parent_optimizer, T_max=int(args.meta_batch_size * 7500))
    parent_config = Config(log_step=int(args.inner_steps * args.meta_batch_size * 10),
                           retain_graph=True, gradient_accumulation=args.meta_batch_size)
    parent = Upper(name="upper", module=parent_module, optimizer=parent_optimizer,
                   scheduler=parent_scheduler, config=parent_config)
    child_module = ConvNet(args.ways, args.hidden_size).double()
    child_optimizer = optim.SGD(child_module.parameters(), lr=1e-1)
    child_config = Config(type=kind, unroll_steps=args.inner_steps, cg_iterations=3)
    lower = Lower(name="lower", module=child_module, optimizer=child_optimizer,
                  config=child_config)

    class MAMLEngine(Engine):
        def train_step(self):
            if self.global_step % args.inner_steps == 1 or args.inner_steps == 1:
                self.env.step()
            for leaf in self.leaves:
                leaf.step(global_step=self.global_step)

    outer, inner = parent, lower
    problems = [outer, inner]
    engine_config = EngineConfig(train_iters=args.inner_steps * args.meta_batch_size)
    u2l = {outer: [inner]}
    l2u = {inner: [outer]}
    dependencies = {"u2l": u2l, "l2u": l2u}
    engine = MAMLEngine(config=engine_config, problems=problems, dependencies=dependencies,
                        env=env)
    start = {k: v.detach().clone() for k, v in parent_module.named_parameters()}
    engine.run()
    return engine, start


def meta_gradient(kind, lam):
    """The mean over the task batch of the hypergradient at the adapted params, by hand."""
    net = ConvNet(args.ways, args.hidden_size).double()
    sampler = Sampler(seed=3)

    def L(th, la, x, y):
        out = torch.func.functional_call(net, th, (x,))
        return F.cross_entropy(out, y) + args.reg * sum(((th[k] - la[k]) ** 2).sum() for k in th)

    def Fo(th, la, x, y):
        return F.cross_entropy(torch.func.functional_call(net, th, (x,)), y)

    method = hg.cg(maxiter=3) if kind == "cg" else hg.darts(eps=0.01)
    total = None
    for _ in range(args.meta_batch_size):
        out = split_data(*sampler.sample(), args.shots, args.ways)
        th = dict(lam)
        for _ in range(args.inner_steps):
            g = torch.func.grad(L)(th, lam, *out["train"])
            th = {k: th[k] - 0.1 * g[k] for k in th}
        inner = lambda t, la: L(t, la, *out["train"])  # noqa: E731
        outer = lambda t, la: Fo(t, la, *out["test"])  # noqa: E731
        h = hg.grad(outer, inner, method)(th, lam)
        total = h if total is None else {k: total[k] + h[k] for k in h}
    return {k: v / args.meta_batch_size for k, v in total.items()}


@pytest.mark.parametrize("kind", ["cg", "darts"])
def test_imaml_meta_gradient_equals_the_method_by_hand(kind):
    engine, start = run_betty(kind, "sgd")
    ref = meta_gradient(kind, start)
    for k, v in engine.upper.module.named_parameters():
        step = start[k] - v.detach()            # SGD lr 1: the mean meta-gradient
        assert ref[k].abs().max() > 1e-6
        torch.testing.assert_close(step, ref[k], rtol=1e-6, atol=1e-12)
    # Betty's counts: the upper steps once per task, the optimizer once per meta-batch
    assert engine.lower.count == 4 and engine.upper.count == 2
    assert engine.global_step == 4


def test_imaml_as_written_adamw_cosine():
    engine, start = run_betty("darts", "adamw")
    ref = meta_gradient("darts", start)
    net = ConvNet(args.ways, args.hidden_size).double()
    with torch.no_grad():
        for k, p in net.named_parameters():
            p.copy_(start[k])
    opt = optim.AdamW(net.parameters(), lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=15000)
    for k, p in net.named_parameters():
        p.grad = ref[k].clone()
    opt.step()
    for k, p in engine.upper.module.named_parameters():
        # AdamW's first step is lr * g / (|g| + 1e-8): where |g| ~ 1e-8 a 1e-10 relative
        # difference of the two meta-gradients moves it by ~1e-12; updates are ~3e-4
        moved = start[k] - p.detach()
        torch.testing.assert_close(moved, start[k] - dict(net.named_parameters())[k].detach(),
                                   rtol=1e-6, atol=1e-10)
        assert moved.abs().max() > 1e-4
    # the rate read back: the scheduler stepped once per local step (2 tasks)
    sched.step()
    sched.step()
    assert abs(engine.upper.optimizer.param_groups[0]["lr"] - opt.param_groups[0]["lr"]) < 1e-15
