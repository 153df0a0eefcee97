"""MWN outer step: the reweighting tutorial's bilevel step, ours (eager, compiled) vs Betty and
TorchOpt (unrolled).

Lower: a classifier MLP on ``Σ w(ℓ_i) ℓ_i / n`` (Betty's tutorial form); upper: a 1-100-1 sigmoid
reweighting net on the classifier's loss on a meta batch; batch 100; one SGD step of the classifier
and one Adam step of the net per global step. Both libraries draw the same pre-made batches (no
DataLoader in the timing). Time per global step: median over the timed steps; peak memory: what
the timed steps add (``_common.PeakMemory``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
from typing import Any, Optional

import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, mlo, optim
from _common import PeakMemory, count, mlp, progress

SIZES = {"85k": (784, 108, 10), "1.1M": (784, 1400, 10)}
METHODS = {"darts": ("darts", 1), "neumann K=1": ("neumann", 1), "cg K=1": ("cg", 1),
           "neumann K=5": ("neumann", 5), "cg K=5": ("cg", 5), "unrolled T=1": ("unrolled", 1)}
ALPHA, LR, META_LR = 0.1, 0.1, 1e-3


def batches(n: int, dim: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(100, dim, generator=g), torch.randint(0, 10, (100,), generator=g))
            for _ in range(n)]


def ours(sizes: tuple, method: str, steps: int, warmup: int, compile: bool) -> tuple[float, Any]:
    kind, k = METHODS[method]
    cls, rw = mlp(*sizes), mlp(1, 100, 1, seed=1)
    train, meta = batches(steps + warmup, sizes[0]), batches(steps + warmup, sizes[0], seed=1)
    sgd = optim.sgd(LR)
    hyper = {"darts": lambda: hg.darts(), "neumann": lambda: hg.neumann(k, ALPHA),
             "cg": lambda: hg.cg(maxiter=k), "unrolled": lambda: hg.unrolled(k, sgd)}[kind]()

    def lower_loss(params, batch, *, upper):
        losses = F.cross_entropy(cls(params, batch[0]), batch[1], reduction="none")
        return (torch.sigmoid(rw(upper, losses.detach()[:, None])).squeeze(1) * losses).mean()

    def upper_loss(params, batch, *, lower):
        return F.cross_entropy(cls(lower, batch[0]), batch[1])

    stamps: list = []

    def env(t: int) -> dict:
        stamps.append(time.perf_counter())
        return {"lower": train[t - 1], "upper": meta[t - 1]}

    problems = [mlo.Problem("lower", lower_loss, cls.params, sgd, hypergrad=hyper),
                mlo.Problem("upper", upper_loss, rw.params, optim.adam(META_LR))]
    with PeakMemory() as mem:
        r = mlo.solve(problems, {"upper": ["lower"]}, steps=steps + warmup, env=env,
                      compile=compile,
                      logging=mlo.Logging(every=10 ** 9, progress=False, console=False))
        float(r.params["upper"]["0.weight"].sum())
        stamps.append(time.perf_counter())
    dts = sorted(b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:]))
    return dts[len(dts) // 2], mem.mib


def betty(sizes: tuple, method: str, steps: int, warmup: int) -> tuple[Optional[float], Any]:
    """Betty (``betty-ml``) on the same problem; None where it has no such method."""
    kind, k = METHODS[method]
    if kind == "unrolled":
        return None, "n/a: no unrolled ImplicitProblem"
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine
    from betty.problems import ImplicitProblem

    class Lower(ImplicitProblem):
        def training_step(self, batch):
            losses = F.cross_entropy(self.module(batch[0]), batch[1], reduction="none")
            w = torch.sigmoid(self.upper(losses.detach()[:, None])).squeeze(1)
            return (w * losses).mean()

    class Upper(ImplicitProblem):
        def training_step(self, batch):
            return F.cross_entropy(self.lower(batch[0]), batch[1])

    cls, rw = mlp(*sizes).module, mlp(1, 100, 1, seed=1).module
    cfg = Config(type=kind, darts_alpha=0.01, neumann_iterations=k, neumann_alpha=ALPHA,
                 cg_iterations=k, log_step=10 ** 9)
    lower = Lower("lower", cfg, cls, torch.optim.SGD(cls.parameters(), lr=LR),
                  train_data_loader=batches(steps + warmup, sizes[0]), device="cpu")
    upper = Upper("upper", Config(log_step=10 ** 9), rw, torch.optim.Adam(rw.parameters(), META_LR),
                  train_data_loader=batches(steps + warmup, sizes[0], seed=1), device="cpu")
    with _quiet():
        engine = Engine([lower, upper],
                        EngineConfig(train_iters=steps + warmup, valid_step=10 ** 9),
                        dependencies={"u2l": {upper: [lower]}, "l2u": {lower: [upper]}})
    dts: list = []
    step = engine.train_step

    def timed() -> None:
        t = time.perf_counter()
        step()
        dts.append(time.perf_counter() - t)
    engine.train_step = timed
    with PeakMemory() as mem, _quiet():
        engine.run()
    dts = sorted(dts[warmup:])
    return dts[len(dts) // 2], mem.mib


def torchopt_unrolled(sizes: tuple, method: str, steps: int, warmup: int) -> tuple:
    """TorchOpt's ``MetaSGD`` (differentiable SGD step) for the unrolled step; TorchOpt's implicit
    methods need its functional ``custom_root`` solver API, not written here (reported so)."""
    if METHODS[method][0] != "unrolled":
        return None, "n/a: custom_root MWN not written"
    import torchopt
    cls, rw = mlp(*sizes).module, mlp(1, 100, 1, seed=1).module
    inner = torchopt.MetaSGD(cls, lr=LR)
    meta_opt = torch.optim.Adam(rw.parameters(), META_LR)
    train, meta = batches(steps + warmup, sizes[0]), batches(steps + warmup, sizes[0], seed=1)
    dts = []
    with PeakMemory() as mem:
        for (x, y), (mx, my) in zip(train, meta):
            t = time.perf_counter()
            losses = F.cross_entropy(cls(x), y, reduction="none")
            inner.step((torch.sigmoid(rw(losses.detach()[:, None])).squeeze(1) * losses).mean())
            meta_opt.zero_grad()
            F.cross_entropy(cls(mx), my).backward()
            meta_opt.step()
            torchopt.stop_gradient(cls)
            torchopt.stop_gradient(inner)
            dts.append(time.perf_counter() - t)
    dts = sorted(dts[warmup:])
    return dts[len(dts) // 2], mem.mib


@contextlib.contextmanager
def _quiet():
    """Betty logs every problem's set-up at INFO to stdout; keep the tables readable."""
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def run(level: str) -> list[dict]:
    """``level``: "smoke" (3 steps of darts), "quick" (85k, three methods) or "full"."""
    quick = level != "full"
    steps, warmup = {"smoke": (2, 1), "quick": (6, 2), "full": (30, 5)}[level]
    sizes = ["85k"] if quick else list(SIZES)
    methods = {"smoke": ["darts"], "quick": ["darts", "cg K=1", "unrolled T=1"],
               "full": list(METHODS)}[level]
    rows = []
    # one unmeasured run of each library first: the process's one-time allocations (autograd's
    # and torch.func's start-up, ~85 MiB measured) must not land in the first row's peak
    ours(SIZES["85k"], "darts", 2, 1, False)
    try:
        betty(SIZES["85k"], "darts", 2, 1)
    except Exception:  # reported in the rows below
        pass
    for size in sizes:
        label = f"{size} ({count(mlp(*SIZES[size]).params)})"
        for m in methods:
            progress(f"mwn {size} {m}")
            row: dict = {"size": label, "method": m}
            row["ours_ms"], row["ours_mib"] = _ms(ours(SIZES[size], m, steps, warmup, False))
            if size == "85k" and not quick:  # inductor's cold compiles do not fit --quick
                try:
                    row["compiled_ms"], _ = _ms(ours(SIZES[size], m, steps, warmup, True))
                except Exception as e:  # a failure is a result too: report it
                    row["compiled_ms"] = f"failed: {type(e).__name__}"
            try:
                row["betty_ms"], row["betty_mib"] = _ms(betty(SIZES[size], m, steps, warmup))
            except Exception as e:  # a peer that fails is reported, not hidden
                row["betty_ms"], row["betty_mib"] = None, f"failed: {type(e).__name__}: {e}"[:80]
            try:
                row["torchopt_ms"], row["torchopt_mib"] = _ms(
                    torchopt_unrolled(SIZES[size], m, steps, warmup))
            except Exception as e:
                row["torchopt_ms"], row["torchopt_mib"] = (
                    None, f"failed: {type(e).__name__}: {e}"[:80])
            if row.get("betty_ms"):
                row["ours/betty"] = row["ours_ms"] / row["betty_ms"]
            if isinstance(row.get("compiled_ms"), float):
                row["eager/compiled"] = row["ours_ms"] / row["compiled_ms"]
            rows.append(row)
    return rows


def _ms(result: tuple) -> tuple:
    t, mem = result
    return (None if t is None else 1e3 * t), mem


COLUMNS = [("size", "classifier (params)"), ("method", "method"), ("ours_ms", "ours eager (ms)"),
           ("compiled_ms", "ours compiled (ms)"), ("betty_ms", "Betty (ms)"),
           ("ours/betty", "ours / Betty"), ("torchopt_ms", "TorchOpt (ms)"),
           ("eager/compiled", "eager / compiled"),
           ("ours_mib", "ours peak (MiB)"), ("betty_mib", "Betty peak (MiB)"),
           ("torchopt_mib", "TorchOpt peak (MiB)")]
