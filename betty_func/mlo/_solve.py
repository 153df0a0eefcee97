"""``mlo.solve``: run a multilevel program, log it, validate it, checkpoint it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from ..optim._hyper import state_like
from . import _checkpoint as ckpt
from . import _monitor as mon
from ._compile import stepper
from ._data import Source, draw, env_batches
from ._distributed import (Distributed, Runtime, check_sharded, runtime, signature,
                           split_states)
from ._graph import Graph, build
from ._nonfinite import Tracker
from ._options import check_options, probe_writable, records
from ._preflight import peek, preflight
from ._problem import Problem
from ._records import Checkpoint, Logging, Validation
from ._state import State, advance, fresh
from ._sweep import initial_carries


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


def solve(problems: Sequence[Problem], graph: Mapping, *, steps: int,
          env: Optional[Callable[[int], dict]] = None, logging: Optional[Logging] = None,
          validation: Optional[Validation] = None, checkpoint: Optional[Checkpoint] = None,
          compile: Any = False, seed: Optional[int] = None,
          distributed: Union[None, bool, Distributed] = None, on_nonfinite: str = "raise",
          **earlier: Any) -> Result:
    """Run ``steps`` global steps of the multilevel program ``graph = {upper: [lowers]}``.

    At global step ``t`` (1-based) each problem due (``mlo.schedule`` prints the plan) updates,
    lowers first: its gradient is the total derivative of its loss with every problem below it at
    its current (best-response) params, differentiated by each lower's ``hypergrad`` method.
    ``env(t) -> {name: batch}`` supplies coupled data (one batch reused for that step's updates).
    Three records group the rest (each checks its own fields):
    ``logging=mlo.Logging(every, logdir, progress, console)`` reads scalars (losses, metrics,
    gradient norms, CG residuals, rates) to the host every ``every`` steps only, into the
    history, a console line, a progress line and TensorBoard; ``validation=mlo.Validation(fn,
    every, early_stopping, roll_back)`` calls ``fn(params) -> {metric: value}``, may stop early
    and return the best params; ``checkpoint=mlo.Checkpoint(dir, every, resume)`` saves the
    whole state atomically, and with ``resume=True`` a run continues where it stopped, bit for
    bit. ``compile=True`` compiles the whole step (every update and every hypergradient through
    the lowers) with ``torch.compile(fullgraph=True)``, once per pattern of updating problems,
    its time logged as ``compile/seconds``; ``compile="reduce-overhead"`` (CUDA graphs) or
    another mode, or a dict of ``torch.compile`` arguments, picks how.
    ``on_nonfinite``: a NaN or inf in a loss, gradient, CG residual or new params is tracked on
    the device every step and read where the run reads anyway (log, validation and checkpoint
    steps, the end); ``"raise"`` (default) stops with the problem, the quantity and the first
    step (before a checkpoint is written, so the last one on disk is finite), ``"warn"`` goes
    on after a warning per problem, ``"skip"`` drops each such update (params and optimizer
    state kept, by ``torch.where``) and logs ``{name}/skipped_nonfinite``.

    Data parallel: under an initialized ``torch.distributed`` group of more than one process
    (``torchrun``), each rank takes its shard of every batch, every gradient and hypergradient is
    that of the concatenated batches (``mlo.Distributed``), params stay identical on all ranks,
    and rank 0 alone logs, validates (its metrics are shared) and writes checkpoints; with
    ``compile`` the step compiles with its all-reduces inside the graph.

    Example:
        >>> import torch
        >>> from betty_func import mlo, optim
        >>> lo = mlo.Problem("lo", lambda w, b, *, hi: ((w - hi) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.5))
        >>> hi = mlo.Problem("hi", lambda w, b, *, lo: ((lo - 1.0) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.5))
        >>> r = mlo.solve([lo, hi], {"hi": ["lo"]}, steps=30,
        ...               logging=mlo.Logging(progress=False, console=False))
        >>> [round(v, 3) for v in r.params["lo"].tolist()]
        [1.0, 1.0]
    """
    log, val, ck = records(logging, validation, checkpoint, earlier)  # earlier: refused
    check_options(steps, env, compile, seed, on_nonfinite)
    g = build(problems, graph)
    rt = runtime(distributed)
    if ck is not None:
        probe_writable(ck.dir)
    sources = {n: Source(n, p.data) for n, p in g.problems.items()}
    if rt is not None:
        rt.agree(signature(g, steps, {n: p.params for n, p in g.problems.items()}))
    if seed is not None:
        torch.manual_seed(seed)
    compiled_at: list = []
    run = stepper(g, compile, None if rt is None else rt.replicate, compiled_at.append,
                  skip_nonfinite=on_nonfinite == "skip")
    health = Tracker(on_nonfinite, g.lowers, g.order)
    state, history, stop = _start(g, rt, sources, env, ck.dir if ck and ck.resume else None)
    start = t = state.step
    leader = rt is None or rt.leader
    if val is not None:  # once before any update: what it returns must serve its uses
        first = mon.metrics_of(val.fn, state.params) if leader else {}  # rank 0's is shared
        mon.judged_by(first if rt is None else rt.share(first), val.early_stopping, val.roll_back)
    loggers = mon.loggers_of(log) if leader else []
    try:
        mon.emit(loggers, "on_start", steps, start)
        if start:
            mon.emit(loggers, "on_message", start, f"resumed from step {start} (checkpoint in "
                     f"{ck.dir})")
        reason = "finished"
        for t in range(start + 1, steps + 1):
            names = g.updates_at(t)
            batches = draw(sources, g, names, env, t)
            log_now = bool(log.every) and (t % log.every == 0 or t == steps)
            state, logs = advance(state, batches if rt is None else rt.shard(batches), run,
                                  log_now)
            health.add(t, logs)
            validate_now = val is not None and t % val.every == 0
            save_now = ck is not None and t % ck.every == 0
            if log_now or validate_now or save_now or t == steps:  # host reads happen here
                skipped = health.check(t, rt)
                if skipped and log_now:
                    mon.record(history, loggers, t, skipped)
            if rt is not None and state.states:  # buffers (BatchNorm statistics): rank mean
                state = replace(state, states={n: rt.mean(s) if n in names else s
                                               for n, s in state.states.items()})
            params = state.params
            mon.emit(loggers, "on_step", t)
            if compiled_at:  # a new pattern of updating problems was compiled in this step
                seconds = compiled_at.pop()
                history.setdefault("compile/seconds", []).append((t, seconds))
                mon.emit(loggers, "on_message", t, f"compiled the step of {', '.join(names)} "
                         f"in {seconds:.1f} s")
            if log_now:
                mon.record(history, loggers, t, mon.scalars(logs if rt is None else
                                                            rt.mean(logs)))
            if validate_now:
                metrics = mon.metrics_of(val.fn, params) if leader else {}
                metrics = metrics if rt is None else rt.share(metrics)
                stopping = mon.validated(metrics, params, t, history, loggers, stop,
                                         val.early_stopping, val.roll_back)
                if stopping:
                    mon.emit(loggers, "on_message", t, stopping)
                    reason = "early_stopping"
                    break
            if rt is not None and rt.config.check_every and t % rt.config.check_every == 0:
                rt.check_replicas(params, t)
            if save_now:
                path = _save(ck.dir, t, state, history, stop, sources, rt)
                mon.emit(loggers, "on_checkpoint", t, str(path))
        rolled = val is not None and val.roll_back and stop["best_params"] is not None
        if rolled:
            mon.emit(loggers, "on_message", t, mon.rolled_back(stop))
        mon.emit(loggers, "on_stop", t, reason)
    finally:
        mon.emit(loggers, "close")
    if rolled:
        return Result(stop["best_params"], state.opt_states, t, history, state.states,
                      stop["best"])
    return Result(state.params, state.opt_states, t, history, state.states)


def _save(directory: Any, t: int, state: State, history: dict, stop: dict, sources: dict,
          rt: Optional[Runtime]) -> Any:
    shared, own = split_states(state.opt_states)
    run = {"step": t, "params": state.params, "opt_states": shared, "states": state.states,
           "history": history, "last_batch": state.last_batch, "carries": state.carries,
           "stop": stop}
    local = {"rng": ckpt.rng_state(), "opt_states": own,
             "sources": {n: s.state() for n, s in sources.items()}}
    return ckpt.snapshot(directory, run, local, rt)


def _start(g: Graph, rt: Optional[Runtime], sources: dict, env: Optional[Callable],
           resume_from: Optional[str]) -> tuple[State, dict, dict]:
    """``(state, history, stop)`` to start from: a checkpoint's (this rank's data positions, RNG
    and optimizer shards) or the problems' own (rank 0's under data parallel), checked by the
    preflight."""
    saved = ckpt.restore(resume_from, rt) if resume_from else None
    if saved is not None and resume_from is not None:
        shared, local = saved
        problems = g.problems.values()  # the optimizer states' shapes only: inits on meta
        ckpt.check_matches(shared, {p.name: p.params for p in problems},
                           {p.name: state_like(p.optimizer, p.params) for p in problems},
                           resume_from)
        for n, s in local["sources"].items():
            sources[n].restore(s)
        ckpt.set_rng_state(local["rng"])
        opt_states = {**shared["opt_states"], **local["opt_states"]}
        check_sharded(g, opt_states)
        last = {**{n: None for n in g.order}, **shared["last_batch"]}
        carries = ckpt.carries_of(shared, initial_carries(g, shared["params"]), resume_from)
        return (State(g, shared["step"], shared["params"], opt_states, shared["states"], last,
                      carries), shared["history"], shared["stop"])
    state = fresh(g, None if rt is None else rt.sync)
    check_sharded(g, state.opt_states)
    with torch.random.fork_rng():  # peeking draws no data position and no random number
        from_env = env_batches(env, g, 1)
        peeked = {n: peek(sources[n], from_env, n) for n in g.order}
    preflight(g, state.params, peeked if rt is None else
              {n: rt.shard({n: [b]})[n][0] for n, b in peeked.items()})
    return state, {}, {"best": None, "best_params": None, "bad": 0}
