"""The modules are the state: after every step each module's parameters (and buffers) are set to
the ``mlo.State``'s tensors (``p.data = t``: no copy, the ``nn.Parameter`` objects a user or
optimizer holds stay the same), so what user code reads is current and what it edits in place
(``load_state_dict``, ``p.data.clamp_``, ``w.data.zero_()``) is the state. The rates the torch
optimizer shows follow its scheduler, stepped as Betty steps it; a rate changed behind the
front end's back is refused (the functional optimizer would not follow it)."""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import torch

from .._errors import fail
from ._fields import EngineFields
from ._tensors import buffers


class Mirror(EngineFields):
    """Module <-> state and torch optimizer <-> functional optimizer, for the Engine."""

    def _alias(self, names: Any) -> None:
        """The modules of ``names`` hold the state's tensors (their storage, not a copy)."""
        s = self._state
        with torch.no_grad():
            for n in names:
                self._hold(n, s.params[n])
                module, bufs = self._problems[n]._module, s.states.get(n)
                for k, b in module.named_buffers():
                    if bufs is not None and k in bufs:
                        b.data = bufs[k]

    def _hold(self, name: str, params: dict) -> None:
        """``name``'s module holds ``params`` (their storage)."""
        with torch.no_grad():
            for k, p in self._problems[name]._module.named_parameters():
                if k in params:
                    p.data = params[k]

    def _read(self, name: str) -> dict:
        """``name``'s trainable parameters as the module holds them (aliases: no copy)."""
        keys = self._keys[name]
        return {k: v.detach() for k, v in self._problems[name]._module.named_parameters()
                if k in keys}

    def _read_modules(self, names: Any) -> None:
        """The state takes what the modules hold (a parameter a hook replaced, not just
        edited, included)."""
        s = self._state
        params, states = dict(s.params), dict(s.states)
        for n in names:
            params[n] = self._read(n)
            if n in states:
                states[n] = buffers(self._problems[n]._module)
        self._state = replace(s, params=params, states=states)

    def _values(self, name: str, params: dict, reads: dict, state: Any) -> dict:
        """The tensors one evaluation of ``name``'s loss puts into the modules: its params and
        those of the problems it reads; every other module holds the state already (its
        tensors). Buffers are copies (a forward in training mode updates them in place): its
        own from ``state``, those of the problems it reads from the state."""
        out = {name: {**params, **(state or {})}}
        for r, tensors in reads.items():
            out[r] = tensors
            if r in self._state.states:  # a problem with buffers has them as its state
                out[r] = {**tensors, **{k: v.clone()
                                        for k, v in self._state.states[r].items()}}
        return out

    # -- the torch optimizer and scheduler -----------------------------------------------------
    def _seen(self, name: str) -> tuple:
        p = self._problems[name]
        epoch = None if p.scheduler is None else p.scheduler.last_epoch
        return [g["lr"] for g in p._optimizer.param_groups], epoch

    def _mirror_rates(self, name: str, steps: int) -> None:
        """Step ``name``'s torch scheduler ``steps`` times (Betty steps it every local step;
        the functional optimizer runs the same schedule in closed form, tested equal)."""
        p = self._problems[name]
        if p.scheduler is not None and steps:
            with warnings.catch_warnings():  # the torch optimizer itself is never stepped
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                for _ in range(steps):
                    p.scheduler.step()
        self._rates[name] = self._seen(name)

    def _check_rates(self) -> None:
        """A rate set by hand, or a scheduler stepped by user code, would not be followed."""
        for n, seen in self._rates.items():
            now = self._seen(n)
            if now != seen:
                fail(f"{n}.optimizer", "its learning rate was changed (by hand in "
                     "param_groups, or by stepping its scheduler) and the front end would not "
                     "follow it: the rates come from the optimizer and scheduler given at "
                     "Engine(...)", f"rates {now[0]} (scheduler epoch {now[1]}) after "
                     f"{seen[0]} (epoch {seen[1]})", "Express the change as a scheduler (e.g. "
                     "LambdaLR) on the optimizer before building the Engine.")

    def _opt_state(self, name: str) -> Any:
        return self._state.opt_states[name]

    def _load(self, name: str, opt_state: Any) -> None:
        """After ``load_state_dict``: the module was loaded in place (it is the state); the
        optimizer state replaced when given."""
        self._read_modules([name])
        if opt_state is not None:
            s = self._state
            self._state = replace(s, opt_states={**s.opt_states, name: opt_state})
