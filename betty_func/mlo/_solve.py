"""``mlo.solve``: run a multilevel program, log it, validate it, checkpoint it."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from .._errors import check_nonneg_int, fail
from ..hypergrad._checks import depends
from . import _checkpoint as ckpt
from . import _monitor as mon
from ._context import Ctx, call_loss
from ._data import Source, draw
from ._distributed import (Distributed, Runtime, check_sharded, runtime, signature,
                           split_states)
from ._graph import API, Graph, build
from ._monitor import EarlyStopping
from ._problem import Problem
from ._step import step as pure_step


@dataclass
class Result:
    """What ``solve`` returns: final params and optimizer states by problem name, the number of
    global steps done, and the logged history ``{tag: [(step, value), ...]}``."""
    params: dict
    opt_states: dict
    step: int
    history: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)  # buffers of problems that have state
    best: Optional[dict] = None  # validation metrics of the kept params, with roll_back


def _preflight(g: Graph, params: dict, sources: dict, env: Optional[Callable],
               rt: Optional[Runtime]) -> None:
    """Before any update: every loss returns a scalar (or (scalar, metrics)) and depends on its
    own params or on a problem below it — else its update would be a silent zero. Batches are
    peeked (this rank's shard) without moving any data position or RNG."""
    states = {n: q.state for n, q in g.problems.items()}
    with torch.random.fork_rng():
        from_env = env(1) if env is not None else {}
        for name, p in g.problems.items():
            batch = _peek(sources[name], from_env, name)
            batch = batch if rt is None else rt.shard({name: [batch]})[name][0]
            ctx = Ctx(g, {name: batch}, states)
            own = [name] + [r for r in p.reads if r in g.descendants[name]]

            def loss(sub: dict, name: str = name, ctx: Ctx = ctx) -> torch.Tensor:
                return call_loss(ctx, name, {**params, **sub})[0]
            what = "its params" + (" or any problem below it" if len(own) > 1 else "")
            torch.func.grad(depends(API, f"the loss of '{name}'", loss, what))(
                {n: params[n] for n in own})


def _peek(src: Source, from_env: dict, name: str) -> Any:
    if name in from_env:
        return from_env[name]
    if src.data is None:
        return None
    return src.data(0) if callable(src.data) else next(iter(src.data))


def solve(problems: Sequence[Problem], graph: Mapping, *, steps: int,
          env: Optional[Callable[[int], dict]] = None,
          validate: Optional[Callable[[dict], Any]] = None, validate_every: int = 0,
          log_every: int = 50, logdir: Optional[str] = None, progress: bool = True,
          console: bool = True, checkpoint_dir: Optional[str] = None, checkpoint_every: int = 0,
          resume: bool = False, compile: Any = False, seed: Optional[int] = None,
          early_stopping: Optional[EarlyStopping] = None, roll_back: bool = False,
          distributed: Union[None, bool, Distributed] = None) -> Result:
    """Run ``steps`` global steps of the multilevel program ``graph = {upper: [lowers]}``.

    At global step ``t`` (1-based) each problem due (``mlo.schedule`` prints the plan) updates,
    lowers first: its gradient is the total derivative of its loss with every problem below it at
    its current (best-response) params, differentiated by each lower's ``hypergrad`` method.
    ``env(t) -> {name: batch}`` supplies coupled data (one batch reused for that step's updates).
    ``validate(params) -> {metric: value}`` (or None) runs every ``validate_every`` steps. Scalars
    (losses, metrics, gradient norms, CG residuals) are read to the host every ``log_every``
    steps only, printed, shown on a progress line and written to TensorBoard under ``logdir``.
    ``checkpoint_dir`` with ``checkpoint_every`` saves the whole state atomically; with
    ``resume=True`` a run continues where the checkpoint stopped, bit for bit. ``compile=True``
    compiles the whole step (every update and every hypergradient through the lowers) with
    ``torch.compile(fullgraph=True)``, once per pattern of updating problems, its time logged
    as ``compile/seconds``; ``compile="reduce-overhead"`` (CUDA graphs) or another mode, or a
    dict of ``torch.compile`` arguments, picks how. ``early_stopping`` stops on a validation
    metric; ``roll_back`` returns the params of the best validation.

    Data parallel: under an initialized ``torch.distributed`` group of more than one process
    (``torchrun``), each rank takes its shard of every batch, every gradient and hypergradient is
    that of the concatenated batches (``mlo.Distributed``), params stay identical on all ranks,
    and rank 0 alone logs, validates (its metrics are shared) and writes checkpoints.

    Example:
        >>> import torch
        >>> from betty_func import mlo, optim
        >>> lo = mlo.Problem("lo", lambda w, b, *, hi: ((w - hi) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.5))
        >>> hi = mlo.Problem("hi", lambda w, b, *, lo: ((lo - 1.0) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.5))
        >>> r = mlo.solve([lo, hi], {"hi": ["lo"]}, steps=30, progress=False, console=False)
        >>> [round(v, 3) for v in r.params["lo"].tolist()]
        [1.0, 1.0]
    """
    check_nonneg_int("solve(problems, graph, steps)", "steps", steps)
    g = build(problems, graph)
    rt = runtime(distributed)
    sources = {n: Source(n, p.data) for n, p in g.problems.items()}
    if rt is not None:
        rt.agree(signature(g, steps, {n: p.params for n, p in g.problems.items()}))
    if seed is not None:
        torch.manual_seed(seed)
    start, params, opt_states, states, history, last_batch, stop = _start(
        g, rt, sources, env, checkpoint_dir if resume else None)
    writers = mon.writers(steps, start, logdir, progress, console) if rt is None or rt.leader \
        else []
    compiled_at: list = []
    run = _stepper(g, compile, None if rt is None else rt.replicate, compiled_at.append)
    t = start
    for t in range(start + 1, steps + 1):
        names = g.updates_at(t)
        starts = tuple(n for n in names if g.starts_inner_loop(n, t))
        batches = draw(sources, g, names, env, t)
        if rt is not None:
            batches = rt.shard(batches)
        params, opt_states, states, last_batch, logs = run(names, starts, params, opt_states,
                                                           states, batches, last_batch)
        if rt is not None and states:  # buffers (BatchNorm statistics): the mean over ranks
            states = {n: rt.mean(s) if n in names else s for n, s in states.items()}
        if compiled_at:  # a new pattern of updating problems was compiled in this step
            mon.record(history, writers, t, {"compile/seconds": compiled_at.pop()})
        if log_every and (t % log_every == 0 or t == steps):
            mon.record(history, writers, t, mon.scalars(logs if rt is None else rt.mean(logs)))
        if validate is not None and validate_every and t % validate_every == 0:
            metrics = mon.metrics_of(validate, params) if rt is None or rt.leader else None
            metrics = metrics if rt is None else rt.share(metrics)
            if mon.validated(metrics, params, t, history, writers, stop, early_stopping, roll_back):
                break
        if rt is not None and rt.config.check_every and t % rt.config.check_every == 0:
            rt.check_replicas(params, t)
        if checkpoint_dir and checkpoint_every and t % checkpoint_every == 0:
            shared, own = split_states(opt_states)
            ckpt.snapshot(checkpoint_dir, {"step": t, "params": params, "opt_states": shared,
                                           "states": states, "history": history,
                                           "last_batch": last_batch, "stop": stop},
                          {"rng": ckpt.rng_state(), "opt_states": own,
                           "sources": {n: s.state() for n, s in sources.items()}}, rt)
    for w in writers:
        getattr(w, "close", lambda: None)()
    if roll_back and stop["best_params"] is not None:
        return Result(stop["best_params"], opt_states, t, history, states, stop["best"])
    return Result(params, opt_states, t, history, states)


def _start(g: Graph, rt: Optional[Runtime], sources: dict, env: Optional[Callable],
           resume_from: Optional[str]) -> tuple:
    """``(step, params, opt_states, states, history, last_batch, stop)`` to start from: a
    checkpoint's (this rank's data positions, RNG and optimizer shards) or the problems' own
    (rank 0's under data parallel), checked by the preflight."""
    saved = ckpt.restore(resume_from, rt) if resume_from else None
    if saved is not None:
        shared, local = saved
        for n, s in local["sources"].items():
            sources[n].restore(s)
        ckpt.set_rng_state(local["rng"])
        opt_states = {**shared["opt_states"], **local["opt_states"]}
        check_sharded(g, opt_states)
        return (shared["step"], shared["params"], opt_states, shared["states"], shared["history"],
                shared["last_batch"], shared["stop"])
    params = {n: p.params for n, p in g.problems.items()}
    states = {n: p.state for n, p in g.problems.items() if p.state is not None}
    if rt is not None:  # every rank starts from rank 0's values
        params, states = rt.sync(params), rt.sync(states)
    opt_states = {n: p.optimizer.init(params[n]) for n, p in g.problems.items()}
    check_sharded(g, opt_states)
    _preflight(g, params, sources, env, rt)
    last_batch = {n: None for n in g.order}  # one structure from step 1 on: no recompile
    return 0, params, opt_states, states, {}, last_batch, {"best": None, "best_params": None,
                                                           "bad": 0}


def _stepper(g: Graph, compile: Any, replicate: Optional[Callable], report: Callable) -> Callable:
    """The step function ``solve`` runs: eager, or compiled whole (``fullgraph=True``: a graph
    break is an error, never a silent fallback) once per pattern of updating problems, the
    compile time reported once per pattern."""
    if not compile:
        return functools.partial(pure_step, g, replicate=replicate)
    options = compile_options(compile)
    cache: dict = {}

    def run(names: tuple, starts: tuple, *state: Any) -> Any:
        key = (names, starts)
        if not names:  # nothing updates (inside an unrolled window): nothing to compile
            return pure_step(g, names, starts, *state, replicate=replicate)
        if key in cache:
            return cache[key](*state)
        cache[key] = torch.compile(functools.partial(pure_step, g, names, starts,
                                                     replicate=replicate), **options)
        t0 = time.perf_counter()
        out = cache[key](*state)
        report(time.perf_counter() - t0)
        return out
    return run


def compile_options(compile: Any) -> dict:
    """``torch.compile`` keyword arguments for ``solve(compile=...)``: True (inductor), a mode
    (``"reduce-overhead"``: CUDA graphs, ``"max-autotune"``...) or a dict of arguments (e.g.
    ``{"backend": "aot_eager"}``); ``fullgraph`` is always True."""
    api = "solve(..., compile)"
    if compile is True:
        return {"fullgraph": True}
    if isinstance(compile, str):
        return {"fullgraph": True, "mode": compile}
    if isinstance(compile, dict):
        if compile.get("fullgraph", True) is not True:
            fail(api, "the step always compiles as one graph (fullgraph=True)", compile,
                 "Leave `fullgraph` out.")
        return {**compile, "fullgraph": True}
    fail(api, "`compile` must be False, True, a torch.compile mode or a dict of its arguments",
         repr(compile), "Pass e.g. compile=True or compile='reduce-overhead'.", exc=TypeError)
