"""Betty's ``Engine``: runs a program of Betty problems, each global step one ``mlo.step``."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .. import mlo
from .._errors import fail
from . import _build
from ._feed import Feed
from ._hooks import check_engine_hooks, check_problem_hooks, implemented
from ._program import Holder, loss_for, project_for
from ._report import Reporter, host, tags
from ._roll_back import cache, roll_back, rolled
from ._runtime import Runtime
from .configs import EngineConfig
from .envs import Env
from .problems.problem import Problem, buffers, trainable

__all__ = ["Engine"]

API = _build.API


class Engine(Runtime):
    """``Engine(problems, config, dependencies={"u2l": {upper: [lowers]}, "l2u": {lower:
    [uppers]}}, env)``: ``run()`` does ``config.train_iters`` global steps, each
    ``train_step()`` (by default: every leaf problem's ``step()``), and calls your
    ``validation()`` every ``valid_step`` steps with every problem in eval mode.

    One global step is one ``mlo.step`` of the translated program: every problem due updates,
    lowers first; an upper steps after ``unroll_steps`` (× ``gradient_accumulation``) steps of
    its lowers, by the hypergradient its lowers' ``Config.type`` names. Every problem is an
    attribute by name (``engine.classifier``), of the engine, of every other problem and of the
    env; ``global_step``, ``device``, ``leaves``, ``env`` as in Betty.
    """

    _front_end = True

    def __init__(self, problems: Sequence[Problem], config: Optional[EngineConfig] = None,
                 dependencies: Any = None, env: Optional[Env] = None):
        config = EngineConfig() if config is None else config
        self._check_args(problems, config, env)
        self.config, self.problems, self.env = config, list(problems), env
        self.train_iters, self.valid_step = config.train_iters, config.valid_step
        self.global_step = 0
        self._problems = {p.name: p for p in problems}
        self.dependencies = dependencies
        self._graph = _build.graph_of(dependencies, self.problems) if dependencies else {}
        self.device = _build.resolve_device(config.strategy, self.problems)
        check_engine_hooks(self, Engine)
        for p in self.problems:
            check_problem_hooks(p, Problem)
            _build.configure(p, Problem, self.device)
        self._connect()
        self.leaves = [p for p in self.problems if not self._graph.get(p.name)]
        self._holder = Holder({n: p._module for n, p in self._problems.items()})
        self._feeds = {n: Feed(n, p.train_data_loader, self.device)
                       for n, p in self._problems.items() if p.train_data_loader is not None}
        self._init_runtime()
        self._mlo = self._translate()
        self._rolled = rolled(self)
        self._starts: dict = {}  # where each rolling-back lower's inner loop started
        self._reporter = Reporter(config.logger_type)

    def _check_args(self, problems: Any, config: Any, env: Any) -> None:
        if isinstance(problems, Problem) or not isinstance(problems, (list, tuple)) or \
                not all(isinstance(p, Problem) for p in problems) or not problems:
            fail(API, "`problems` must be a non-empty list of betty problems",
                 type(problems).__name__, "Pass e.g. problems=[reweight, classifier].",
                 exc=TypeError)
        names = [p.name for p in problems]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            fail(API, f"problem names must be unique; repeated: {dupes}", None, "Rename one.")
        clash = sorted(n for n in names if n in dir(type(self)) or n in _FIELDS)
        if clash:
            fail(API, f"problem names {clash} are attributes of the engine, so "
                 f"engine.{clash[0]} could not reach the problem", None, "Rename them.")
        if not isinstance(config, EngineConfig):
            fail(API, "`config` must be a betty.configs.EngineConfig", type(config).__name__,
                 exc=TypeError)
        if env is not None and not isinstance(env, Env):
            fail(API, "`env` must be a betty.envs.Env", type(env).__name__, exc=TypeError)
        if any(p._engine is not None for p in problems):
            fail(API, "a problem already belongs to another Engine", None,
                 "Build new problem objects for each engine.")

    def _connect(self) -> None:
        """Problems, engine and env see each other by name; every problem gets the device."""
        if self.env is not None:
            self.env.device = self.device
        for p in self.problems:
            p._engine, p.device, p.env = self, self.device, self.env
            setattr(self, p.name, p)
            if self.env is not None:
                setattr(self.env, p.name, p)
            for q in self.problems:
                if q is not p:
                    p.__dict__[q.name] = q

    def _translate(self) -> list:
        """Each Betty problem as an ``mlo.Problem`` reading every problem above and below it."""
        _build.check_orders(self._problems, self._graph)
        uppers = {n: [u for u, lows in self._graph.items() if n in lows] for n in self._problems}
        self._keys, self._initial = {}, {}
        out = []
        for n, p in self._problems.items():
            related = _related(n, self._graph, uppers)
            params = {k: v.clone() for k, v in trainable(p._module).items()}
            self._keys[n], self._initial[n] = frozenset(params), params
            bufs = buffers(p._module)
            has_state = bool(bufs)
            c = p.config
            if p.iterative and (implemented(p, "param_callback", Problem) or
                                c.gradient_accumulation > 1):
                fail(API, f"IterativeProblem '{n}' cannot take param_callback or "
                     "gradient_accumulation: its updates are differentiated, and an in-place "
                     "edit or a skipped step would cut that path", None,
                     "Use ImplicitProblem for it, or drop them.")
            out.append(mlo.Problem(
                n, loss_for(self, n, related, has_state), params,
                _build.optimizer_for(p, dict(p._module.named_parameters())),
                hypergrad=_build.method_for(p) if uppers[n] else None,
                unroll_steps=c.unroll_steps * c.gradient_accumulation,
                project=project_for(self, n) if implemented(p, "param_callback", Problem)
                else None,
                state={k: v.clone() for k, v in bufs.items()} if has_state else None,
                precision=c.autocast))
        return out

    def _below(self, name: str) -> list:
        return [self._problems[n] for n in self._graph.get(name, [])]

    def _above(self, name: str) -> list:
        return [self._problems[u] for u, lows in self._graph.items() if name in lows]

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """``train_iters`` global steps, validating every ``valid_step``; afterwards every
        ``problem.module`` holds its trained parameters."""
        self.train()
        validate = callable(getattr(self, "validation", None))
        best, bad = None, 0
        try:
            for _ in range(self.train_iters):
                self.global_step += 1
                self.train_step()
                if validate and self.valid_step and self.global_step % self.valid_step == 0:
                    best, bad, stop = self._validate(best, bad)
                    if stop:
                        break
        finally:
            for n in self._problems:
                self._mirror(n)
                self._mirror_rates(n)
            self._reporter.close()

    def train_step(self) -> None:
        """One global step: every leaf's ``step()`` (override it to refresh an env first)."""
        for leaf in self.leaves:
            leaf.step(global_step=self.global_step)

    def train(self) -> None:
        for p in self.problems:
            p.train()

    def eval(self) -> None:
        for p in self.problems:
            p.eval()

    def _validate(self, best: Any, bad: int) -> tuple:
        self.eval()
        try:
            metrics = self.validation() or {}
        finally:
            self.train()
        if not isinstance(metrics, dict):
            fail(f"{type(self).__name__}.validation()", "must return a dict of metrics or None",
                 type(metrics).__name__, exc=TypeError)
        scalars = {k: float(v) for k, v in metrics.items()}
        self._reporter.write(f"[Validation] [Global Step {self.global_step}]", self.global_step,
                             tags("validation", scalars))
        c = self.config
        if not c.early_stopping:
            return best, bad, False
        if c.early_stopping_metric not in scalars:
            fail(f"{type(self).__name__}.validation()", "early stopping reads the metric "
                 f"{c.early_stopping_metric!r}, which validation() does not return",
                 sorted(scalars), "Set EngineConfig(early_stopping_metric=...) to one of them.")
        value = scalars[c.early_stopping_metric]
        better = best is None or (value < best if c.early_stopping_mode == "min" else value > best)
        best, bad = (value, 0) if better else (best, bad + 1)
        return best, bad, bad >= c.early_stopping_tolerance

    def _global_step(self) -> None:
        """One ``mlo.step``: inner-loop starts (``on_inner_loop_start``), the batches of every
        problem due (bottom-up, as Betty draws them), the step, counts and logs."""
        self._read_back()
        if self._state is None:
            self._state = mlo.init(self._mlo, self._graph, self._samples())
            self._dirty = set(self._problems)  # the preflight ran hooks on the real modules
            self._touched.clear()
        g, t = self._state.graph, self._state.step + 1
        names = g.updates_at(t)
        for n in names:
            if g.starts_inner_loop(n, t) and implemented(self._problems[n],
                                                         "on_inner_loop_start", Problem):
                self._restart(n)
        for n in self._rolled & set(names):
            if g.starts_inner_loop(n, t):
                self._starts[n] = cache(self._state, n)
        need = mlo.due(self._state)
        batches = {}
        for n in names:
            drawn = [self._draw(n) for _ in range(need[n])]
            batches[n] = drawn if need[n] > 1 else drawn[0]
        self._state, logs = mlo.step(self._state, batches)
        self._dirty |= set(names)
        self._check_finite(names, logs, t)
        for n in names:
            before = self._counts[n]
            self._counts[n] += need[n]
            self._log(n, before, logs[n])
        for n in sorted(self._rolled):  # its uppers stepped: back to the start, one update
            if any(u.name in names for u in self._above(n)):
                self._state = roll_back(self._state, n, self._starts[n],
                                        self._problems[n].cur_batch)
                self._schedule_steps[n] += 1

    def _samples(self) -> dict:
        """The first batch of every problem, for the checks of ``mlo.init`` (nothing drawn)."""
        out = {}
        for n, p in self._problems.items():
            if implemented(p, "get_batch", Problem):
                from ._feed import to_device
                out[n] = to_device(p.get_batch(), self.device)
            else:
                out[n] = self._feeds[n].peek()
        return out

    def _check_finite(self, names: tuple, logs: dict, t: int) -> None:
        codes = [int(logs[n]["nonfinite"]) for n in names]
        for n, code in zip(names, codes):
            if code:
                parts = [w for bit, w in ((1, "loss"), (2, "gradient"), (4, "CG residual"),
                                          (8, "new parameters")) if code & bit]
                fail(f"{type(self).__name__}.run()", f"the update of '{n}' at global step {t} "
                     f"has non-finite values in: {', '.join(parts)}; the run stops rather than "
                     "train on NaN", None, "Lower the learning rate, clip gradients "
                     "(Config(gradient_clipping=...)), or check the data.", exc=FloatingPointError)

    def _log(self, name: str, before: int, logs: dict) -> None:
        c = self._problems[name].config
        every, count = c.log_step, self._counts[name]
        if every <= 0 or count // every == before // every:
            return
        scalars = host({k: v for k, v in logs.items() if k != "nonfinite"})
        step = count if c.log_local_step else self.global_step
        self._reporter.write(f'[Problem "{name}"] [Global Step {self.global_step}] '
                             f"[Local Step {count}]", step, tags(name, scalars))


_FIELDS = ("config", "problems", "env", "train_iters", "valid_step", "global_step",
           "dependencies", "device", "leaves")


def _related(name: str, graph: dict, uppers: dict) -> tuple:
    """Every problem above or below ``name`` (what its training_step may read by name)."""
    seen, out = set(), []
    for nxt in (lambda n: graph.get(n, []), lambda n: uppers[n]):
        todo = list(nxt(name))
        while todo:
            n = todo.pop(0)
            if n not in seen and n != name:
                seen.add(n)
                out.append(n)
                todo.extend(nxt(n))
    return tuple(out)
