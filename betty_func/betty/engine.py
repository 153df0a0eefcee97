"""Betty's ``Engine``: runs a program of Betty problems, each global step one ``mlo.step``."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .. import mlo
from .._errors import fail
from . import _build
from ._feed import Feed
from ._hooks import check_engine_hooks, check_problem_hooks, implemented
from ._program import Holder, loss_for, project_for
from ._report import Reporter, Reports
from ..mlo._graph import build
from ..mlo._state import fresh
from ._roll_back import rolled
from ._runtime import Runtime
from .configs import EngineConfig
from .envs import Env
from ._tensors import buffers, trainable
from .problems.problem import Problem

__all__ = ["Engine"]

API = _build.API


class Engine(Runtime, Reports):
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
        self._mlo = self._translate()
        self._state = fresh(build(self._mlo, self._graph))  # the modules' own tensors
        self._init_runtime()
        self._rolled = rolled(self)
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
        """Each Betty problem as an ``mlo.Problem`` reading the problems directly above and
        below it."""
        _build.check_orders(self._problems, self._graph)
        _build.check_disjoint(self._problems)
        uppers = {n: [u for u, lows in self._graph.items() if n in lows] for n in self._problems}
        self._keys = {}
        out = []
        for n, p in self._problems.items():
            related = tuple(self._graph.get(n, [])) + tuple(uppers[n])
            params = trainable(p._module)  # the module's own tensors: the state aliases them
            self._keys[n] = frozenset(params)
            bufs = buffers(p._module)
            has_state = bool(bufs)
            c = p.config
            if _build.windowed(p) and (implemented(p, "param_callback", Problem) or
                                       c.gradient_accumulation > 1):
                fail(API, f"'{n}' ({type(p).__name__}, type={c.type!r}) cannot take "
                     "param_callback or gradient_accumulation: its uppers differentiate through "
                     "its updates, and an in-place edit or a skipped step would cut that path",
                     None, "Use an implicit method (ImplicitProblem, type='darts' / 'cg' / ...), "
                     "or drop them.")
            out.append(mlo.Problem(
                n, loss_for(self, n, related, has_state), params,
                _build.optimizer_for(p, {k: v for k, v in p._module.named_parameters()
                                         if v.requires_grad}),
                hypergrad=_build.method_for(p) if uppers[n] else None,
                unroll_steps=c.unroll_steps * c.gradient_accumulation,
                project=project_for(self, n) if implemented(p, "param_callback", Problem)
                else None,
                state=bufs if has_state else None,
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
            self._close_round()
        finally:
            self._reporter.flush()

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

_FIELDS = ("config", "problems", "env", "train_iters", "valid_step", "global_step",
           "dependencies", "device", "leaves")
