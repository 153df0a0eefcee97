"""The engine's bridge between Betty's stateful objects and ``mlo``'s pure state: the modules
are a mirror of ``mlo.State`` (written when user code reads them, read back when user code or a
hook may have edited them), and one ``mlo.step`` is one global step."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import torch

from .. import mlo
from .._errors import fail
from ._feed import to_device
from ._hooks import implemented
from .problems.problem import Problem, buffers


class Runtime:
    """State and mirror bookkeeping of an :class:`~betty_func.betty.engine.Engine`."""

    def _init_runtime(self) -> None:
        self._state: Any = None
        self._dirty: set = set()     # modules behind the state: write them before user code
        self._touched: set = set()   # modules user code may have edited: read them back
        self._depth = 0              # > 0 while a training_step runs as a pure loss
        self._round: set = set()     # leaves stepped in the current global step
        self._counts = {n: 0 for n in self._problems}
        self._scheduled = {n: 0 for n in self._problems}  # torch scheduler steps mirrored
        self._schedule_steps = {n: 0 for n in self._problems}  # roll_back: steps it makes
        self._rates: dict = {}       # param_groups' rates as last shown to user code

    # -- the mirror ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def _mirror(self, name: str) -> None:
        """Before user code touches ``name``'s module outside a pure evaluation: bring it up to
        date, and remember to read it back (the code may edit it)."""
        if self._depth:
            return
        if name in self._dirty:
            self._write(name, self._state.params[name], self._state.states.get(name))
        self._touched.add(name)

    def _write(self, name: str, params: dict, bufs: Any = None) -> None:
        """The module of ``name`` holds ``params`` (and buffers): no older state overwrites it."""
        self._dirty.discard(name)
        module = self._problems[name]._module
        with torch.no_grad():
            for k, p in module.named_parameters():
                if k in params:
                    p.copy_(params[k])
            for k, b in module.named_buffers():
                if bufs is not None and k in bufs:
                    b.copy_(bufs[k])

    def _read(self, name: str) -> dict:
        module = self._problems[name]._module
        keys = self._keys[name]
        return {k: v.detach().clone() for k, v in module.named_parameters() if k in keys}

    def _read_back(self) -> None:
        """Modules user code touched since the last step become the state (params and
        buffers; the optimizer state is kept)."""
        self._check_rates()
        if not self._touched or self._state is None:
            self._touched.clear()
            return
        s = self._state
        params, states = dict(s.params), dict(s.states)
        for n in self._touched:
            params[n] = self._read(n)
            if n in states:
                states[n] = {k: v.detach().clone()
                             for k, v in buffers(self._problems[n]._module).items()}
        self._touched.clear()
        self._state = mlo.State(s.graph, s.step, params, s.opt_states, states, s.last_batch)

    def _current_values(self) -> dict:
        """Every problem's tensors at the start of this step (buffers copied: a forward in
        training mode updates them in place)."""
        s = self._state
        out = {}
        for n in self._problems:
            params = s.params[n] if s is not None else self._initial[n]
            bufs = (s.states.get(n) if s is not None else None) or \
                buffers(self._problems[n]._module)
            out[n] = {**params, **{k: v.clone() for k, v in bufs.items()}}
        return out

    def _mirror_rates(self, name: str) -> None:
        """``optimizer.param_groups[i]["lr"]`` as Betty has it: the torch scheduler, stepped
        once per local step (here when the optimizer is read). The functional optimizer runs
        the same schedule in closed form (``optim.from_torch``, tested equal to torch)."""
        if self._depth:
            return
        p = self._problems[name]
        if p.scheduler is not None:
            with warnings.catch_warnings():  # the torch optimizer itself is never stepped
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                # Betty steps it every local step; with roll_back, once per roll-back update
                target = self._schedule_steps[name] if name in self._rolled else \
                    self._counts[name]
                for _ in range(target - self._scheduled[name]):
                    p.scheduler.step()
            self._scheduled[name] = target
        self._rates[name] = [g["lr"] for g in p._optimizer.param_groups]

    def _check_rates(self) -> None:
        """A rate set by hand in ``param_groups`` would be ignored by the functional optimizer:
        refused."""
        for n, seen in self._rates.items():
            now = [g["lr"] for g in self._problems[n]._optimizer.param_groups]
            if now != seen:
                fail(f"{n}.optimizer.param_groups", "a learning rate set by hand is not "
                     "followed (the rates come from the optimizer and scheduler given at "
                     "Engine(...))", f"{now} after {seen}", "Express the change as a scheduler "
                     "(e.g. LambdaLR) on the optimizer before building the Engine.")
        self._rates.clear()

    def _opt_state(self, name: str) -> Any:
        return None if self._state is None else self._state.opt_states[name]

    def _load(self, name: str, opt_state: Any) -> None:
        self._touched.add(name)
        if opt_state is not None:
            if self._state is None:
                fail(f"{name}.load_state_dict(state)", "an optimizer state can be loaded once "
                     "the program has taken a step", None, "Load it after the first step.")
            s = self._state
            self._state = mlo.State(s.graph, s.step, s.params, {**s.opt_states, name: opt_state},
                                    s.states, s.last_batch)

    # -- stepping ------------------------------------------------------------------------------
    def _leaf_step(self, leaf: Problem) -> None:
        """``leaf.step()``: the first leaf stepped in a round runs the global step, the others
        of that round join it (one ``mlo.step`` updates every problem due)."""
        if leaf.name in self._round or not self._round:
            self._round = set()
            self._global_step()
        self._round.add(leaf.name)

    def _draw(self, name: str) -> Any:
        p = self._problems[name]
        if implemented(p, "get_batch", Problem):
            batch = to_device(p.get_batch(), self.device)
        else:
            batch = self._feeds[name].next()
        p.cur_batch = batch
        return batch

    def _restart(self, name: str) -> None:
        """``on_inner_loop_start``, on the real modules (every one up to date), read back."""
        for n in self._problems:
            self._mirror(n)
        with torch.no_grad():
            self._problems[name].on_inner_loop_start()
        self._read_back()
