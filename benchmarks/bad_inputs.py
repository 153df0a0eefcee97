"""The bad-input table: what a new user gets wrong, and what betty_func must say about it.

Each case is one distinct mistake, run as a user would make it. :func:`verdict` sorts what
happened into ``clear`` (a ``TypeError`` / ``ValueError`` in the ``api(args): what. Got X. How to
fix.`` layout, raised before any update), ``late`` (such an error, but after updates ran),
``unclear`` (any other exception, or another layout) and ``silent`` (no error at all).
``python benchmarks/check_errors.py`` prints the counts; ``tests/test_bad_inputs.py`` pins every
case to its exception type and message.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from betty_func import hypergrad as hg, linsolve, mlo, nn as bnn, optim

F64 = torch.float64
LAYOUT = re.compile(r"^[\w.]+(\(.*?\))?(\[.*?\])?: \S")
UPDATES = [0]  # updates run by the counted optimizers of the programs below


@dataclass(frozen=True)
class Case:
    area: str
    what: str
    run: Callable[[Path], Any]
    exc: type = ValueError
    match: str = ""


def counted(opt: optim.Optimizer) -> optim.Optimizer:
    """``opt`` that counts its updates in ``UPDATES`` (eager only: a host-side counter)."""
    def update(g, s, p=None):
        UPDATES[0] += 1
        return opt.update(g, s, p)
    return opt._replace(update=update)


def lo_loss(w, b, *, hi):
    return ((w - hi) ** 2).sum()


def hi_loss(w, b, *, lo):
    return ((lo - 1.0) ** 2).sum()


def program(lo: dict | None = None, hi: dict | None = None, graph: dict | None = None):
    """The reference bilevel program (2 params each, SGD), with fields overridden."""
    lo = {"name": "lo", "loss": lo_loss, "params": torch.zeros(2, dtype=F64),
          "optimizer": counted(optim.sgd(0.5)), **(lo or {})}
    hi = {"name": "hi", "loss": hi_loss, "params": torch.zeros(2, dtype=F64),
          "optimizer": counted(optim.sgd(0.5)), **(hi or {})}
    return [mlo.Problem(**lo), mlo.Problem(**hi)], graph if graph is not None else {"hi": ["lo"]}


def solve(*, lo=None, hi=None, graph=None, steps=3, **kw):
    kw = {"logging": mlo.Logging(progress=False, console=False), **kw}
    return mlo.solve(*program(lo, hi, graph), steps=steps, **kw)


def one(loss=None, params=None, steps=3, **kw):
    """A one-problem program (least squares on a fixed batch)."""
    x = torch.randn(8, 2, dtype=F64)
    p = mlo.Problem("fit", loss or (lambda w, b: ((b @ w - 1.0) ** 2).mean()),
                    torch.zeros(2, dtype=F64) if params is None else params,
                    counted(optim.sgd(0.1)), data=kw.pop("data", lambda i: x))
    return mlo.solve([p], {}, steps=steps, logging=mlo.Logging(progress=False, console=False),
                     **kw)


def outer(th, lam):
    return (th ** 2).sum()


def inner(th, lam):
    return 0.5 * ((th - lam) ** 2).sum() + 0.5 * (th ** 2).sum()


def hgrad(method, th=None, lam=None):
    th = torch.ones(3, dtype=F64) if th is None else th
    return hg.grad(outer, inner, method)(th, torch.ones(3, dtype=F64) if lam is None else lam)


def _sgd_torch():
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _checkpoint(tmp: Path, **kw) -> str:
    """A checkpoint of the reference program after 2 steps, in ``tmp/ckpt``."""
    where = str(tmp / "ckpt")
    solve(steps=2, checkpoint=mlo.Checkpoint(where, every=2), **kw)
    return where


def _corrupt(tmp: Path, cut: bool) -> str:
    where = _checkpoint(tmp)
    for f in Path(where).iterdir():
        if f.is_file():
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 2] if cut else b"not a checkpoint" + data[100:])
    UPDATES[0] = 0  # the updates that wrote it are not the resumed run's
    return where


def _resume_other(tmp: Path, **prog) -> Any:
    where = _checkpoint(tmp)
    UPDATES[0] = 0
    return solve(steps=4, checkpoint=mlo.Checkpoint(where, every=2, resume=True), **prog)


def _unwritable(tmp: Path) -> Any:
    blocker = tmp / "file"
    blocker.write_text("x")
    return solve(checkpoint=mlo.Checkpoint(str(blocker / "ckpt"), every=1))


NAN, INF = math.nan, math.inf
_T = torch.zeros(2, dtype=F64)

def _betty(inner: dict | None = None, engine: dict | None = None, hook: str | None = None,
           optimizer: Any = None, scheduler: Any = None, run: bool = False) -> Any:
    """The front end's bilevel program (``betty_func.betty``) with one thing changed."""
    from betty_func.betty import Config, Engine, EngineConfig, ImplicitProblem

    class Vec(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2, dtype=F64))

        def forward(self):
            return self.w

    class Lo(ImplicitProblem):
        def training_step(self, batch):
            return ((self.module.w - self.hi()) ** 2).sum()

    class Hi(ImplicitProblem):
        def training_step(self, batch):
            return ((self.lo.module.w - 1.0) ** 2).sum()
    if hook:
        setattr(Lo, hook, lambda self: None)
    mlo_, mhi = Vec(), Vec()
    opt = optimizer(mlo_.parameters()) if optimizer else torch.optim.SGD(mlo_.parameters(),
                                                                         lr=0.5)
    kw = {"type": "cg", **(inner or {})}
    data = kw.pop("data", [(torch.zeros(1),)])
    device = kw.pop("device", None)
    lo = Lo("lo", Config(**kw), mlo_, opt, scheduler(opt) if scheduler else None,
            train_data_loader=data, device=device)
    hi = Hi("hi", Config(), mhi, torch.optim.SGD(mhi.parameters(), lr=0.5),
            train_data_loader=[(torch.zeros(1),)], device=device)
    e = Engine([hi, lo], EngineConfig(train_iters=3, **(engine or {})),
               {"u2l": {hi: [lo]}, "l2u": {lo: [hi]}})
    return e.run() if run else e

CASES: list[Case] = [
    # optim: constructors
    Case("optim", "sgd lr nan", lambda t: optim.sgd(NAN), match=r"`lr` must be"),
    Case("optim", "sgd lr inf", lambda t: optim.sgd(INF), match=r"`lr` must be"),
    Case("optim", "sgd lr negative", lambda t: optim.sgd(-0.1), match=r"`lr` must be"),
    Case("optim", "sgd lr a string", lambda t: optim.sgd("0.1"), TypeError, r"`lr` must be"),
    Case("optim", "sgd momentum 1.5", lambda t: optim.sgd(0.1, momentum=1.5), match="momentum"),
    Case("optim", "sgd weight decay nan", lambda t: optim.sgd(0.1, weight_decay=NAN),
         match="weight_decay"),
    Case("optim", "sgd weight decay inf", lambda t: optim.sgd(0.1, weight_decay=INF),
         match="weight_decay"),
    Case("optim", "sgd nesterov without momentum", lambda t: optim.sgd(0.1, nesterov=True),
         match="nesterov"),
    Case("optim", "adam betas of length 1", lambda t: optim.adam(betas=(0.9,)), match="betas"),
    Case("optim", "adam beta nan", lambda t: optim.adam(betas=(0.9, NAN)), match="betas"),
    Case("optim", "adam betas a float", lambda t: optim.adam(betas=0.9), TypeError, "betas"),
    Case("optim", "adam eps nan", lambda t: optim.adam(eps=NAN), match="eps"),
    Case("optim", "adam eps negative", lambda t: optim.adam(eps=-1e-8), match="eps"),
    Case("optim", "adam weight decay inf", lambda t: optim.adam(weight_decay=INF),
         match="weight_decay"),
    Case("optim", "adamw lr inf", lambda t: optim.adamw(INF), match="lr"),
    Case("optim", "clip max_norm nan", lambda t: optim.clip_by_global_norm(NAN), match="max_norm"),
    Case("optim", "clip max_norm inf", lambda t: optim.clip_by_global_norm(INF), match="max_norm"),
    Case("optim", "loss scale inf", lambda t: optim.loss_scaled(optim.sgd(0.1), init_scale=INF),
         match="init_scale"),
    Case("optim", "loss_scaled of a torch optimizer", lambda t: optim.loss_scaled(_sgd_torch()),
         TypeError, "betty_func.optim"),
    Case("optim", "chain of a torch optimizer", lambda t: optim.chain(_sgd_torch()), TypeError,
         "betty_func.optim"),
    Case("optim", "chain of nothing", lambda t: optim.chain(), match="at least one"),
    Case("optim", "sharded of a torch optimizer", lambda t: optim.sharded(_sgd_torch()),
         TypeError, "betty_func.optim"),
    Case("optim", "loss_scaled inside chain (the scale was dropped: updates 65536x too small)",
         lambda t: solve(lo={"optimizer": optim.chain(optim.clip_by_global_norm(1.0),
                                                      optim.loss_scaled(optim.sgd(0.1)))}),
         match="must wrap the whole optimizer"),
    Case("optim", "loss_scaled inside sharded (each rank would skip alone)",
         lambda t: solve(lo={"optimizer": optim.sharded(optim.loss_scaled(optim.adam(0.1)))}),
         match="must wrap the whole optimizer"),
    Case("optim", "tree_get of a name two parts have",
         lambda t: optim.tree_get(optim.chain(optim.sgd(0.1), optim.sgd(0.2)).init(_T), "lr"),
         match=r"'lr' names 2"),
    Case("optim", "tree_set of a field the state lacks",
         lambda t: optim.tree_set(optim.sgd(0.1).init(_T), learning_rate=0.2), match="no field"),
    Case("optim", "multistep milestones unsorted", lambda t: optim.multistep(0.1, [5, 2]),
         match="milestones"),
    Case("optim", "multistep gamma nan", lambda t: optim.multistep(0.1, [5], gamma=NAN),
         match="gamma"),
    Case("optim", "cosine 0 steps", lambda t: optim.cosine(0.1, 0), match="total_steps"),
    Case("optim", "cosine lr nan", lambda t: optim.cosine(NAN, 10), match="lr"),
    Case("optim", "warmup steps negative", lambda t: optim.warmup(0.1, -1), match="steps"),
    # hypergrad: constructors
    Case("hypergrad", "cg maxiter 0", lambda t: hg.cg(maxiter=0), match="maxiter"),
    Case("hypergrad", "cg maxiter negative", lambda t: hg.cg(maxiter=-1), match="maxiter"),
    Case("hypergrad", "cg maxiter a float", lambda t: hg.cg(maxiter=2.5), TypeError, "maxiter"),
    Case("hypergrad", "cg tol nan", lambda t: hg.cg(tol=NAN), match="tol"),
    Case("hypergrad", "cg damping negative", lambda t: hg.cg(damping=-1.0), match="damping"),
    Case("hypergrad", "cg damping nan", lambda t: hg.cg(damping=NAN), match="damping"),
    Case("hypergrad", "cg batch_dims negative", lambda t: hg.cg(batch_dims=-1),
         match="batch_dims"),
    Case("hypergrad", "neumann steps 0", lambda t: hg.neumann(steps=0), match="steps"),
    Case("hypergrad", "neumann alpha 0", lambda t: hg.neumann(alpha=0.0), match="alpha"),
    Case("hypergrad", "neumann alpha nan", lambda t: hg.neumann(alpha=NAN), match="alpha"),
    Case("hypergrad", "darts eps 0", lambda t: hg.darts(eps=0.0), match="eps"),
    Case("hypergrad", "darts eps nan", lambda t: hg.darts(eps=NAN), match="eps"),
    Case("hypergrad", "darts scale inf", lambda t: hg.darts(scale=INF), match="scale"),
    Case("hypergrad", "exact damping nan", lambda t: hg.exact(damping=NAN), match="damping"),
    Case("hypergrad", "unrolled 0 steps", lambda t: hg.unrolled(0), match="steps"),
    Case("hypergrad", "unrolled checkpoint_every negative",
         lambda t: hg.unrolled(2, checkpoint_every=-1), match="checkpoint_every"),
    Case("hypergrad", "unrolled with a torch optimizer", lambda t: hg.unrolled(2, _sgd_torch()),
         TypeError, "optimizer"),
    Case("hypergrad", "implicit given a method as its solver",
         lambda t: hg.implicit(hg.cg(3)), TypeError, "linear solver"),
    Case("hypergrad", "implicit mixed not callable", lambda t: hg.implicit(mixed="fd"),
         TypeError, "mixed"),
    Case("hypergrad", "implicit hvp a string", lambda t: hg.implicit(hvp="reverse"), TypeError,
         "hvp"),
    Case("hypergrad", "finite_difference eps nan", lambda t: hg.finite_difference(eps=NAN),
         match="eps"),
    Case("hypergrad", "cg warm_start a string", lambda t: hg.cg(3, warm_start="yes"), TypeError,
         "warm_start"),
    Case("hypergrad", "implicit warm_start with a solver that ignores a start",
         lambda t: hg.implicit(linsolve.neumann(5, 0.5), warm_start=True),
         match="starts from a given point"),
    Case("hypergrad", "penalty multiplier schedule negative",
         lambda t: hg.penalty(multiplier=lambda c: -1.0 - c), match="positive number"),
    Case("hypergrad", "penalty warm_start 1", lambda t: hg.penalty(warm_start=1), TypeError,
         "warm_start"),
    Case("linsolve", "cg maxiter 0", lambda t: linsolve.cg(maxiter=0), match="maxiter"),
    Case("linsolve", "neumann alpha nan", lambda t: linsolve.neumann(alpha=NAN), match="alpha"),
    Case("linsolve", "dense damping negative", lambda t: linsolve.dense(damping=-1.0),
         match="damping"),
    Case("linsolve", "cg batch_dims=1 with a leaf lacking the task dimension",
         lambda t: linsolve.cg(3, batch_dims=1)(lambda v: v, {"s": torch.ones(()),
                                                              "w": torch.ones(4, 3)}),
         match="same leading batch dimension"),
    Case("linsolve", "dense solve far beyond free memory",
         lambda t: linsolve.dense()(lambda v: v, torch.zeros(10 ** 7)), match="GiB free"),
    Case("hypergrad", "exact on a lower whose Hessian cannot fit in memory",
         lambda t: solve(lo={"params": torch.zeros(10 ** 7, dtype=F64), "hypergrad": hg.exact(),
                             "loss": lambda w, b, *, hi: ((w[:2] - hi) ** 2).sum()
                             + (w ** 2).sum()}),
         match=r"\(the params of 'lo'\) needs at least"),
    Case("linsolve", "identity scale nan", lambda t: linsolve.identity(NAN), match="scale"),
    # hypergrad.grad
    Case("hypergrad.grad", "a linear solver as the method", lambda t: hgrad(linsolve.cg(3)),
         TypeError, "method"),
    Case("hypergrad.grad", "a string as the method", lambda t: hgrad("cg"), TypeError, "method"),
    Case("hypergrad.grad", "init to a penalty that carries nothing",
         lambda t: hg.grad(outer, inner, hg.penalty(2))(torch.ones(3, dtype=F64), torch.ones(
             3, dtype=F64), init=hg.penalty(warm_start=True).init_carry(torch.ones(3))),
         match="carries state"),
    Case("hypergrad.grad", "outer_loss not callable",
         lambda t: hg.grad("f", inner, hg.cg(3)), TypeError, "outer_loss"),
    Case("hypergrad.grad", "int inner params", lambda t: hgrad(hg.cg(3), th=torch.ones(3).long()),
         match="floating-point"),
    Case("hypergrad.grad", "non-scalar inner loss",
         lambda t: hg.grad(outer, lambda th, lam: th - lam, hg.cg(3))(_T, _T), match="scalar"),
    # mlo.Problem
    Case("Problem", "name not an identifier", lambda t: program(lo={"name": "1lo"}),
         match="identifier"),
    Case("Problem", "name 'state' is reserved", lambda t: program(lo={"name": "state"}),
         match="reserved"),
    Case("Problem", "loss not callable", lambda t: program(lo={"loss": 3}), match="callable"),
    Case("Problem", "int params", lambda t: program(lo={"params": torch.zeros(2).long()}),
         match="floating-point"),
    Case("Problem", "a float as params", lambda t: program(lo={"params": 1.0}),
         match="floating-point"),
    Case("Problem", "no params at all", lambda t: program(lo={"params": {}}), match="params"),
    Case("Problem", "a torch optimizer", lambda t: program(lo={"optimizer": _sgd_torch()}),
         TypeError, "optimizer"),
    Case("Problem", "unroll_steps 0", lambda t: program(lo={"unroll_steps": 0}),
         match="unroll_steps"),
    Case("Problem", "accumulate negative", lambda t: program(lo={"accumulate": -1}),
         match="accumulate"),
    Case("Problem", "warmup a float", lambda t: program(lo={"warmup": 1.5}), TypeError, "warmup"),
    Case("Problem", "precision 'fp32'", lambda t: program(lo={"precision": "fp32"}),
         match="precision"),
    Case("Problem", "hypergrad a linear solver", lambda t: program(lo={"hypergrad": linsolve.cg()}),
         TypeError, "hypergrad"),
    Case("Problem", "hypergrad {upper: string}", lambda t: program(lo={"hypergrad": {"hi": "cg"}}),
         TypeError, "hypergrad"),
    Case("Problem", "a read taken positionally",
         lambda t: program(lo={"loss": lambda w, b, hi: ((w - hi) ** 2).sum()}),
         match="keyword-only"),
    Case("Problem", "a loss of one argument", lambda t: program(lo={"loss": lambda w: w.sum()}),
         match="params, batch"),
    Case("Problem", "project not callable", lambda t: program(lo={"project": "clip"}),
         match="project"),
    Case("Problem", "state without a state parameter", lambda t: program(lo={"state": _T}),
         match="state"),
    Case("Problem", "fp16 with an unrolled method",
         lambda t: program(lo={"precision": "fp16", "hypergrad": hg.unrolled()}), match="fp16"),
    # the program, checked at step 0
    Case("program", "graph names an unknown problem", lambda t: solve(graph={"hi": ["nope"]}),
         match="nope"),
    Case("program", "graph with a cycle", lambda t: solve(graph={"hi": ["lo"], "lo": ["hi"]}),
         match="cycle"),
    Case("program", "graph lowers a number", lambda t: solve(graph={"hi": 3}), TypeError,
         "list of problem names"),
    Case("program", "two problems of one name", lambda t: solve(hi={"name": "lo",
                                                                    "loss": lo_loss}),
         match="lo"),
    Case("program", "problems not a list", lambda t: mlo.solve(program()[0][0], {}, steps=1),
         TypeError, "problems"),
    Case("program", "a read of an unrelated problem",
         lambda t: solve(graph={}), match="no edge"),
    Case("program", "hypergrad for an upper that does not exist",
         lambda t: solve(lo={"hypergrad": {"nope": hg.cg(3)}}), match="nope"),
    Case("program", "hypergrad on a problem with no uppers",
         lambda t: solve(hi={"hypergrad": hg.cg(3)}), match="hypergrad"),
    Case("program", "an upper ignoring its lower",
         lambda t: solve(hi={"loss": lambda w, b, *, lo: (w ** 2).sum() + 0 * lo.detach().sum()}),
         match="silent zero|does not depend"),
    Case("program", "a lower whose gradient ignores its upper",
         lambda t: solve(lo={"loss": lambda w, b, *, hi: (w ** 2).sum() + (hi ** 2).sum()}),
         match="'lo'"),
    Case("program", "project changes the structure",
         lambda t: solve(lo={"project": lambda w: {"w": w}}), match="project"),
    Case("program", "first_order on a lower without a reset (an exact zero)",
         lambda t: solve(lo={"hypergrad": hg.first_order()}), match="no `reset`"),
    Case("program", "darts on a MAML lower (starts from its upper, loss ignores it)",
         lambda t: solve(lo={"loss": lambda w, b, *, hi: (w ** 2).sum(), "hypergrad": hg.darts(),
                             "reset": lambda w, *, hi: hi}), match=r"first_order\(\)"),
    Case("program", "cg on a lower that reads its upper only through reset",
         lambda t: solve(lo={"loss": lambda w, b: (w ** 2).sum(), "hypergrad": hg.cg(3),
                             "reset": lambda w, *, hi: hi}),
         match=r"starts from its upper 'hi' \(reset\) but its loss does not read.*first_order"),
    Case("hypergrad.grad", "first_order with inner and outer params of other shapes",
         lambda t: hgrad(hg.first_order(), lam=torch.ones(4, dtype=F64)), match="shape"),
    Case("program", "reset changes the structure",
         lambda t: solve(lo={"reset": lambda w, *, hi: (w, w)}), match="reset"),
    Case("program", "env returns a list", lambda t: solve(env=lambda i: [1]), TypeError, "env"),
    Case("program", "env names an unknown problem", lambda t: solve(env=lambda i: {"nope": 1}),
         match="nope"),
    Case("program", "env takes no argument", lambda t: solve(env=lambda: {}), TypeError, "env"),
    Case("program", "data an empty list", lambda t: solve(lo={"data": []}), match="empty"),
    Case("program", "data a callable of no argument", lambda t: solve(lo={"data": lambda: 1}),
         TypeError, "data"),
    Case("program", "a loss that raises", lambda t: solve(lo={"loss": lambda w, b, *, hi: b[0]}),
         TypeError, "preflight of 'lo'"),
    Case("program", "a loss returning None", lambda t: solve(lo={"loss": lambda w, b, *, hi: None}),
         match="scalar"),
    Case("program", "a vector loss", lambda t: solve(lo={"loss": lambda w, b, *, hi: w - hi}),
         match="scalar"),
    Case("program", "nan initial params",
         lambda t: solve(lo={"params": torch.tensor([NAN, 0.0], dtype=F64)}), match="finite"),
    Case("program", "a loss of inf at the start",
         lambda t: one(loss=lambda w, b: torch.log(w * 0).sum() + w.sum()),
         match="is -inf at its first batch"),
    Case("program", "neumann alpha beyond 2 / lambda_max",
         lambda t: solve(lo={"loss": lambda w, b, *, hi: 10 * ((w - hi) ** 2).sum(),
                             "hypergrad": hg.neumann(5, alpha=1.0)}), match="alpha"),
    Case("program", "fp16 precision on float64 params",
         lambda t: solve(lo={"precision": "fp16"}), match="precision"),
    # solve options
    Case("solve", "steps negative", lambda t: solve(steps=-1), match="steps"),
    Case("solve", "steps a float", lambda t: solve(steps=2.5), TypeError, "steps"),
    Case("solve", "a Checkpoint without its directory",
         lambda t: solve(checkpoint=mlo.Checkpoint(every=2)), match="`dir` is needed"),
    Case("solve", "a Checkpoint without every",
         lambda t: solve(checkpoint=mlo.Checkpoint(str(t / "c"))), match="`every` is needed"),
    Case("solve", "resume without a directory",
         lambda t: solve(checkpoint=mlo.Checkpoint(resume=True)), match="`dir` is needed"),
    Case("solve", "a Checkpoint every 0 steps",
         lambda t: solve(checkpoint=mlo.Checkpoint(str(t / "c"), every=0)), match="`every`"),
    Case("solve", "a Validation without every",
         lambda t: solve(validation=mlo.Validation(lambda p: {"x": 1.0})),
         match="`every` is needed"),
    Case("solve", "a Validation without its function",
         lambda t: solve(validation=mlo.Validation(every=2)), match="`fn` is needed"),
    Case("solve", "early_stopping without a validation function",
         lambda t: solve(validation=mlo.Validation(early_stopping=mlo.EarlyStopping("x"))),
         match="`fn` is needed.*early_stopping"),
    Case("solve", "roll_back without a validation function",
         lambda t: solve(validation=mlo.Validation(roll_back=True)),
         match="`fn` is needed.*roll_back"),
    Case("solve", "log every -1 steps", lambda t: solve(logging=mlo.Logging(every=-1)),
         match="`every` must be"),
    Case("solve", "a Logging progress of 'no'",
         lambda t: solve(logging=mlo.Logging(progress="no")), TypeError, "progress"),
    Case("solve", "a dict as the checkpoint option",
         lambda t: solve(checkpoint={"dir": "c", "every": 1}), TypeError, "mlo.Checkpoint"),
    Case("solve", "a flat option of earlier versions (checkpoint_dir=)",
         lambda t: solve(checkpoint_dir=str(t / "c"), checkpoint_every=1), TypeError,
         r"checkpoint=mlo\.Checkpoint"),
    Case("solve", "an unknown option",
         lambda t: solve(log_evry=10), TypeError, "unknown option"),
    Case("solve", "an unwritable checkpoint directory", _unwritable, match="cannot be written"),
    Case("solve", "seed a string", lambda t: solve(seed="0"), TypeError, "seed"),
    Case("solve", "a validation function that is a dict",
         lambda t: solve(validation=mlo.Validation({"x": 1}, every=1)), TypeError,
         "`fn` must be a function"),
    Case("solve", "a validation function returning a string",
         lambda t: solve(validation=mlo.Validation(lambda p: "good", every=2)),
         match="`validation.fn` must return"),
    Case("solve", "early stopping on a metric the validation lacks",
         lambda t: solve(validation=mlo.Validation(lambda p: {"acc": 1.0}, every=2,
                                                   early_stopping=mlo.EarlyStopping("loss"))),
         match="loss"),
    Case("solve", "compile mode unknown", lambda t: solve(compile="fast"), match="compile"),
    Case("solve", "compile a number", lambda t: solve(compile=3), TypeError, "compile"),
    Case("solve", "on_nonfinite unknown", lambda t: solve(on_nonfinite="ignore"),
         match="on_nonfinite"),
    Case("solve", "distributed with no process group",
         lambda t: solve(distributed=mlo.Distributed()), match="process group"),
    Case("solve", "EarlyStopping mode 'maximize'", lambda t: mlo.EarlyStopping("x", "maximize"),
         match="mode"),
    Case("solve", "EarlyStopping patience 0", lambda t: mlo.EarlyStopping("x", patience=0),
         match="patience"),
    # checkpoints
    Case("checkpoint", "resume from a corrupt file",
         lambda t: solve(checkpoint=mlo.Checkpoint(_corrupt(t, cut=False), every=2, resume=True),
                         steps=4), match="checkpoint"),
    Case("checkpoint", "resume from a truncated file",
         lambda t: solve(checkpoint=mlo.Checkpoint(_corrupt(t, cut=True), every=2, resume=True),
                         steps=4), match="checkpoint"),
    Case("checkpoint", "resume another program's (names)",
         lambda t: _resume_other(t, lo={"name": "low", "loss": lo_loss}, hi={
             "loss": lambda w, b, *, low: ((low - 1.0) ** 2).sum()}, graph={"hi": ["low"]}),
         match="low"),
    Case("checkpoint", "resume with other param shapes",
         lambda t: _resume_other(t, lo={"params": torch.zeros(3, dtype=F64)},
                                 hi={"params": torch.zeros(3, dtype=F64)}), match="shape"),
    Case("checkpoint", "resume with other param dtypes",
         lambda t: _resume_other(t, lo={"params": torch.zeros(2)}), match="dtype"),
    Case("checkpoint", "resume with another optimizer",
         lambda t: _resume_other(t, lo={"optimizer": counted(optim.adam(0.1))}),
         match="optimizer"),
    Case("checkpoint", "resume with a method that carries state added",
         lambda t: _resume_other(t, lo={"hypergrad": hg.cg(3, warm_start=True)}),
         match="carried state"),
    # the functional API
    Case("step", "a dict as the state", lambda t: mlo.step({}, {}), TypeError, "mlo.State"),
    Case("step", "batches a list", lambda t: mlo.step(mlo.init(*program()), [1]), TypeError,
         "mapping"),
    Case("step", "batches name an unknown problem",
         lambda t: mlo.step(mlo.init(*program()), {"nope": 1}), match="nope"),
    Case("step", "with_params of an unknown problem",
         lambda t: mlo.with_params(mlo.init(*program()), {"nope": _T}), match="nope"),
    # nn
    Case("nn", "functional of a non-module", lambda t: bnn.functional("net"), TypeError,
         "nn.Module"),
    Case("nn", "params a module does not have",
         lambda t: bnn.functional(torch.nn.Linear(2, 1))({"weight": torch.zeros(1, 2),
                                                          "bias": torch.zeros(1),
                                                          "scale": torch.ones(1)}, _T.float()),
         match="scale"),
    # the Betty front end (betty_func.betty)
    Case("betty", "a misspelt hook", lambda t: _betty(hook="param_callbak"), match="Did you mean"),
    Case("betty", "a Betty hook the front end does not call",
         lambda t: _betty(hook="grad_callback"), match="grad_callback"),
    Case("betty", "SAMA on a lower that accumulates gradients",
         lambda t: _betty({"type": "sama", "gradient_accumulation": 2}, run=True),
         match="accumulates gradients"),
    Case("betty", "a misspelt method", lambda t: _betty({"type": "dart"}), match="`type`"),
    Case("betty", "a distributed strategy",
         lambda t: _betty(engine={"strategy": "fsdp"}), match="mlo.Distributed"),
    Case("betty", "an optimizer from_torch does not map",
         lambda t: _betty(optimizer=lambda ps: torch.optim.RMSprop(ps)), TypeError, "RMSprop"),
    Case("betty", "a scheduler from_torch does not map",
         lambda t: _betty(scheduler=lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o)),
         TypeError, "ReduceLROnPlateau"),
    Case("betty", "a non-iterable loader", lambda t: _betty({"data": 5}), TypeError,
         "not iterable"),
    Case("betty", "an empty loader", lambda t: _betty({"data": []}, run=True),
         match="yields no batch"),
    Case("betty", "Neumann's default step that diverges",
         lambda t: _betty({"type": "neumann"}, run=True), match="diverges"),
    Case("betty", "the old step= and unroll_steps= disagree",
         lambda t: _betty({"step": 2, "unroll_steps": 3}), match="old name"),
]


def verdict(case: Case, tmp: Path) -> tuple[str, str]:
    """``(clear | late | unclear | silent, message)`` for one case run in ``tmp``."""
    UPDATES[0] = 0
    try:
        case.run(tmp)
    except Exception as e:  # noqa: BLE001 - every outcome is sorted, none escapes
        msg = f"{type(e).__name__}: {e}"
        if not isinstance(e, (TypeError, ValueError)) or not LAYOUT.match(str(e)):
            return "unclear", msg
        return ("late" if UPDATES[0] else "clear"), msg
    return "silent", "no error"
