"""One global step of a Betty program: the hooks and batches of every problem taking a local
step, one ``mlo.step``, counts, logs, Betty's roll-back. Each problem's loss is checked
(``mlo``'s preflight) at its first real batch, so that no batch is drawn twice."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import mlo
from .._errors import fail
from ..mlo._preflight import preflight
from ..mlo._program_checks import _moves
from ._feed import to_device
from ._hooks import defined
from ._mirror import Mirror
from ._roll_back import cache, roll_back
from .problems.problem import Problem

API = "betty.Engine.train_step()"


class Runtime(Mirror):
    """Stepping state of an :class:`~betty_func.betty.engine.Engine`."""

    def _init_runtime(self) -> None:
        self._round: set = set()       # leaves stepped in the current global step
        self._round_at: Optional[int] = None  # the global step of that round
        self._counts = {n: 0 for n in self._problems}
        self._checked: set = set()     # problems whose loss was checked at a first batch
        self._pending: dict = {}       # an unrolled problem's batches until its window closes
        self._apply: set = set()       # problems whose optimizer applies an update this step
        self._starts: dict = {}        # roll_back: where each lower's inner loop started
        self._rates = {n: self._seen(n) for n in self._problems}
        # what each problem's class defines (hooks are found by definition, once)
        self._hooks = {n: frozenset(defined(p, Problem)) for n, p in self._problems.items()}

    def _leaf_step(self, leaf: Problem) -> None:
        """``leaf.step()``: the first leaf stepped in a global step runs it (one ``mlo.step``
        updates every problem due); the other leaves join it. Stepping only some leaves in a
        global step cannot be expressed here, and is refused."""
        if leaf.name in self._round or self._round_at != self.global_step or not self._round:
            self._close_round()
            self._round, self._round_at = set(), self.global_step
            self._global_step()
        self._round.add(leaf.name)

    def _close_round(self) -> None:
        missing = [p.name for p in self.leaves if p.name not in self._round]
        if self._round and missing:
            fail(API, f"a global step stepped the leaves {sorted(self._round)} but not "
                 f"{missing}; one global step updates every problem due", None,
                 "Step every leaf in each train_step (the default train_step does).")

    def _locals(self, t: int) -> list:
        """Problems taking a local step at global step ``t``, bottom-up (an unrolled one
        takes one every period, its window running when the last of them is taken)."""
        g = self._state.graph
        return [n for n in g.order if t % g.period[n] == 0]

    def _global_step(self) -> None:
        self._check_rates()
        self._read_modules(self._problems)
        g, t = self._state.graph, self._state.step + 1
        names, local = g.updates_at(t), self._locals(t)
        for n in local:  # Betty's order: on_inner_loop_start, count, get_batch, ...
            start = not self._pending.get(n) if g.problems[n].unrolled else \
                g.starts_inner_loop(n, t)
            if start and "on_inner_loop_start" in self._hooks[n]:
                with torch.no_grad():
                    self._problems[n].on_inner_loop_start()
                self._read_modules([n])
            if n in self._rolled and start:
                self._starts[n] = cache(self._state, n)
        batches = self._draw_all(local, names)
        self._apply = set()  # the checks call param_callback's project: it must not act
        self._first_checks(names, batches)
        self._apply = {n for n in names
                       if self._counts[n] % self._problems[n].config.gradient_accumulation == 0}
        self._state, logs = mlo.step(self._state, batches)
        self._alias(names)
        self._check_finite(names, logs, t)
        for n in names:
            self._log(n, logs[n])
        self._roll_backs(names)
        for n in local:
            if n not in self._rolled:
                self._mirror_rates(n, 1)

    def _draw_all(self, local: list, names: tuple) -> dict:
        """Count and draw the local steps' batches; an unrolled window gets its list."""
        g = self._state.graph
        out = {}
        for n in local:
            self._counts[n] += 1
            batch = self._draw(n)
            if g.problems[n].unrolled:
                self._pending.setdefault(n, []).append(batch)
            else:
                out[n] = batch
        for n in names:
            if g.problems[n].unrolled:
                out[n] = self._pending.pop(n)
        return out

    def _draw(self, name: str) -> Any:
        p = self._problems[name]
        if "get_batch" in self._hooks[name]:
            batch = to_device(p.get_batch(), self.device)
        else:
            batch = self._feeds[name].next()
        p.cur_batch = batch
        return batch

    def _first_checks(self, names: tuple, batches: dict) -> None:
        """``mlo``'s checks of each problem's loss at its first batch; an unrolled lower whose
        loss's gradient ignores an upper is refused (its hypergradient would be an exact zero:
        the start a hook copies is a constant)."""
        new = [n for n in names if n not in self._checked]
        if not new:
            return
        s = self._state
        first = {n: b[0] if s.graph.problems[n].unrolled else b for n, b in batches.items()}
        preflight(s.graph, s.params, first, names=new)
        self._checked.update(new)
        for n in new:
            p = s.graph.problems[n]
            for up in (s.graph.uppers[n] if p.unrolled else ()):
                if not _moves(lambda x, n=n, up=up: self._inner_grad(n, up, x, first[n]),
                              s.params[up]):
                    fail(API, f"the gradient of the loss of '{n}' (differentiated through its "
                         f"updates) does not "
                         f"depend on its upper '{up}', so '{up}''s hypergradient through it "
                         "would be an exact zero (a start copied by on_inner_loop_start is a "
                         "constant)", None, f"Couple the loss of '{n}' to '{up}' (iMAML's "
                         "proximal term), or write MAML with mlo (reset + hypergrad.unrolled).")

    def _inner_grad(self, name: str, upper: str, x: Any, batch: Any) -> Any:
        s = self._state
        loss = s.graph.problems[name].loss
        reads = {r: (x if r == upper else s.params[r]) for r in s.graph.problems[name].reads}
        return torch.func.grad(lambda th: _value(loss(th, batch, **reads)))(s.params[name])

    def _roll_backs(self, names: tuple) -> None:
        for n in sorted(self._rolled):  # its uppers stepped: back to the start, one update
            if any(u.name in names for u in self._above(n)):
                self._apply.add(n)
                self._state = roll_back(self._state, n, self._starts[n],
                                        self._problems[n].cur_batch)
                self._alias([n])
                self._mirror_rates(n, 1)  # Betty: the scheduler steps with the real update

    def _check_finite(self, names: tuple, logs: dict, t: int) -> None:
        codes = [int(logs[n]["nonfinite"]) for n in names]
        for n, code in zip(names, codes):
            if code:
                parts = [w for bit, w in ((1, "loss"), (2, "gradient"), (4, "CG residual"),
                                          (8, "new parameters")) if code & bit]
                fail(API, f"the update of '{n}' at global step {t} has non-finite values in: "
                     f"{', '.join(parts)}; the run stops rather than train on NaN", None,
                     "Lower the learning rate, clip gradients (Config(gradient_clipping=...)),"
                     " or check the data.", exc=FloatingPointError)


def _value(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out
