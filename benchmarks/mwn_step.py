"""MWN step side by side: ours (eager, compiled) vs a plain-autograd step vs Betty, alternating.

The reweighting tutorial's bilevel step (classifier MLP on ``Σ σ(r_φ(ℓ_i)) ℓ_i / n``, a 1-100-1
reweighting net on the classifier's meta-batch loss, batch 100; one SGD step of the classifier,
then one Adam step of the net through the method). Every contestant holds its own copy of the
same initial params and pre-made batches; one step of each is timed in turn, the order rotated
at every step, so machine drift hits all of them alike. Wall time (``perf_counter``) and CPU
time of this process (``process_time``) per step; medians; ratios of medians. The normal
allocator (no ``MALLOC_*`` settings: peak memory is measured in its own run, ``mwn.py``).

``plain`` is the same step hand-written with ``torch.autograd.grad`` on leaf tensors and
``torch.optim`` (the cost floor of eager PyTorch); ``compiled`` is ``mlo.step(...,
compile=True)`` (inductor, one graph), its cold compile time reported separately; ``front`` is
Betty's program for the step with its imports changed to ``betty_func.betty`` (the front end's
overhead over ``ours``, the same program written with ``mlo``).
"""
from __future__ import annotations

import contextlib
import importlib
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, mlo, optim
from _common import count, mlp, progress
from floor import _plain_cg, _plain_darts, _plain_implicit
from mwn import SIZES, _quiet, batches

LR, META_LR, EPS = 0.1, 1e-3, 0.01


def losses(cls, rw):
    def lower_loss(params, batch, *, upper):
        ls = F.cross_entropy(cls(params, batch[0]), batch[1], reduction="none")
        return (torch.sigmoid(rw(upper, ls.detach()[:, None])).squeeze(1) * ls).mean()

    def upper_loss(params, batch, *, lower):
        return F.cross_entropy(cls(lower, batch[0]), batch[1])
    return lower_loss, upper_loss


def ours(sizes: tuple, method: str, k: int, n: int, compile: bool) -> tuple[Callable, float]:
    """A one-step closure over its own state, and the seconds its first step took."""
    cls, rw = mlp(*sizes), mlp(1, 100, 1, seed=1)
    train, meta = batches(n, sizes[0]), batches(n, sizes[0], seed=1)
    lower_loss, upper_loss = losses(cls, rw)
    h = hg.darts(EPS) if method == "darts" else hg.cg(maxiter=k)
    state = mlo.init([mlo.Problem("lower", lower_loss, cls.params, optim.sgd(LR), hypergrad=h),
                      mlo.Problem("upper", upper_loss, rw.params, optim.adam(META_LR))],
                     {"upper": ["lower"]}, batches={"lower": train[0], "upper": meta[0]})
    box = {"s": state, "i": 0}

    def step() -> None:
        i = box["i"] % n
        box["s"], logs = mlo.step(box["s"], {"lower": train[i], "upper": meta[i]},
                                  compile=compile)
        float(logs["upper"]["grad_norm"])  # wait for the step's results (a sync, as users do)
        box["i"] += 1
    t = time.perf_counter()
    step()
    return step, time.perf_counter() - t


def plain(sizes: tuple, method: str, k: int, n: int) -> Callable:
    """The same step with torch.autograd on leaf tensors, torch.optim SGD and Adam."""
    cls, rw = mlp(*sizes), mlp(1, 100, 1, seed=1)
    train, meta = batches(n, sizes[0]), batches(n, sizes[0], seed=1)
    th = {a: v.clone().requires_grad_(True) for a, v in cls.params.items()}
    phi = {a: v.clone().requires_grad_(True) for a, v in rw.params.items()}
    sgd, adam = torch.optim.SGD(th.values(), LR), torch.optim.Adam(phi.values(), META_LR)
    box = {"i": 0}

    def step() -> None:
        i = box["i"] % n
        (xt, yt), (xm, ym) = train[i], meta[i]

        def inner(t, p):
            ls = F.cross_entropy(cls(t, xt), yt, reduction="none")
            return (torch.sigmoid(rw(p, ls.detach()[:, None])).squeeze(1) * ls).mean()

        def outer(t, p):
            return F.cross_entropy(cls(t, xm), ym)
        grads = torch.autograd.grad(inner(th, phi), list(th.values()))
        for t, g in zip(th.values(), grads):
            t.grad = g
        sgd.step()
        hyper = (_plain_darts(inner, outer, th, phi) if method == "darts" else
                 _plain_implicit(inner, outer, th, phi, _plain_cg(k)))
        for p, g in zip(phi.values(), hyper):
            p.grad = g
        adam.step()
        float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in hyper])))
        box["i"] += 1
    return step


def betty(sizes: tuple, method: str, k: int, n: int, package: str = "betty") -> Callable:
    """Betty's program for this step; ``package="betty_func.betty"``: the same program, its
    imports changed, on our front end."""
    Config = importlib.import_module(f"{package}.configs").Config
    EngineConfig = importlib.import_module(f"{package}.configs").EngineConfig
    Engine = importlib.import_module(f"{package}.engine").Engine
    ImplicitProblem = importlib.import_module(f"{package}.problems").ImplicitProblem

    class Lower(ImplicitProblem):
        def training_step(self, batch):
            ls = F.cross_entropy(self.module(batch[0]), batch[1], reduction="none")
            return (torch.sigmoid(self.upper(ls.detach()[:, None])).squeeze(1) * ls).mean()

    class Upper(ImplicitProblem):
        def training_step(self, batch):
            return F.cross_entropy(self.lower(batch[0]), batch[1])

    cls, rw = mlp(*sizes).module, mlp(1, 100, 1, seed=1).module
    cfg = Config(type=method, darts_alpha=EPS, cg_iterations=k, log_step=10 ** 9)
    lower = Lower("lower", cfg, cls, torch.optim.SGD(cls.parameters(), lr=LR),
                  train_data_loader=batches(n, sizes[0]), device="cpu")
    upper = Upper("upper", Config(log_step=10 ** 9), rw, torch.optim.Adam(rw.parameters(), META_LR),
                  train_data_loader=batches(n, sizes[0], seed=1), device="cpu")
    with _quiet():
        engine = Engine([lower, upper], EngineConfig(train_iters=10 ** 9, valid_step=10 ** 9),
                        dependencies={"u2l": {upper: [lower]}, "l2u": {lower: [upper]}})
    engine.train()

    quiet = _quiet if package == "betty" else contextlib.nullcontext  # Betty logs every step

    def step() -> None:
        engine.global_step += 1
        with quiet():
            engine.train_step()
        float(next(engine.upper.module.parameters()).detach().sum())
    return step


def alternate(steppers: dict, steps: int, warmup: int) -> dict:
    """Median wall and CPU seconds per step of each stepper, one step of each in turn."""
    names = list(steppers)
    for _ in range(warmup):
        for f in steppers.values():
            f()
    wall: dict = {n: [] for n in names}
    cpu: dict = {n: [] for n in names}
    for i in range(steps):
        for n in names[i % len(names):] + names[:i % len(names)]:  # rotate the order
            w, c = time.perf_counter(), time.process_time()
            steppers[n]()
            cpu[n].append(time.process_time() - c)
            wall[n].append(time.perf_counter() - w)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}


def run(level: str) -> list[dict]:
    steps, warmup = {"smoke": (2, 1), "quick": (10, 3), "full": (40, 5)}[level]
    sizes = ["85k"] if level != "full" else list(SIZES)
    methods = [("darts", 1)] if level == "smoke" else [("darts", 1), ("cg", 5)]
    compile = level == "full"  # inductor's cold compiles do not fit --quick / --smoke
    rows = []
    for size in sizes:
        for method, k in methods:
            label = f"{method}" + (f" K={k}" if method == "cg" else "")
            progress(f"mwn_step {size} {label}")
            n = steps + warmup + 2
            row: dict = {"size": f"{size} ({count(mlp(*SIZES[size]).params)})", "method": label}
            st = {"ours": ours(SIZES[size], method, k, n, False)[0],
                  "plain": plain(SIZES[size], method, k, n)}
            if compile:
                st["compiled"], row["compile_s"] = ours(SIZES[size], method, k, n, True)
            st["front"] = betty(SIZES[size], method, k, n, package="betty_func.betty")
            try:
                st["betty"] = betty(SIZES[size], method, k, n)
            except Exception as e:  # a peer that fails is reported, not hidden
                row["betty"] = f"failed: {type(e).__name__}: {e}"[:80]
            for name, (w, c) in alternate(st, steps, warmup).items():
                row[f"{name}_ms"], row[f"{name}_cpu_ms"] = 1e3 * w, 1e3 * c
            row["front/ours"] = row["front_ms"] / row["ours_ms"]
            for name in ("ours", "compiled", "plain", "front"):
                if f"{name}_ms" in row and "betty_ms" in row:
                    row[f"{name}/betty"] = row[f"{name}_ms"] / row["betty_ms"]
                    row[f"{name}/betty cpu"] = row[f"{name}_cpu_ms"] / row["betty_cpu_ms"]
            if "compiled_ms" in row:
                row["compiled/ours"] = row["compiled_ms"] / row["ours_ms"]
            rows.append(row)
    return rows


COLUMNS = [("size", "classifier (params)"), ("method", "method"), ("ours_ms", "ours eager (ms)"),
           ("compiled_ms", "ours compile=True (ms)"), ("plain_ms", "plain autograd (ms)"),
           ("betty_ms", "Betty (ms)"), ("front_ms", "Betty program on betty_func.betty (ms)"),
           ("front/ours", "front end / ours eager"), ("front/betty", "front end / Betty"),
           ("ours/betty", "eager / Betty"),
           ("ours/betty cpu", "eager / Betty (CPU)"), ("compiled/betty", "compiled / Betty"),
           ("compiled/betty cpu", "compiled / Betty (CPU)"), ("plain/betty", "plain / Betty"),
           ("compiled/ours", "compiled / eager"), ("compile_s", "cold compile (s)")]


if __name__ == "__main__":  # run.py runs this suite in a child with the normal allocator
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--level", default="quick", choices=["smoke", "quick", "full"])
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with open(a.json, "w") as f:
        json.dump(run(a.level), f, default=str)
    sys.exit(0)
