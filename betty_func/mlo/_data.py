"""Data sources: iterables restarted each epoch, callables, and position state for resume."""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from .._errors import check_arity, fail


class Source:
    """The batches of one problem. ``data`` is an iterable (restarted at each epoch), a callable
    ``i -> batch`` (``i`` counts this problem's draws), or None (batches are None)."""

    def __init__(self, name: str, data: Any):
        self.name, self.data = name, data
        api = "solve(problems, graph)"
        if callable(data) and not isinstance(data, Iterable):
            check_arity(api, f"`data` of '{name}'", data, 1, "data(i) -> batch")
        if isinstance(data, Sized) and not callable(data) and len(data) == 0:
            fail(api, f"`data` of '{name}' is empty", f"{type(data).__name__} of length 0",
                 "Pass a non-empty list or DataLoader, or None for no batches.")
        if data is not None and not callable(data):  # no iter() here: a DataLoader would draw RNG
            if not isinstance(data, Iterable):
                fail("solve(problems, graph)",
                     f"`data` of '{name}' is neither iterable nor callable", type(data).__name__,
                     "Pass a DataLoader, a list of batches, or i -> batch.")
            if isinstance(data, Iterator):
                fail("solve(problems, graph)", f"`data` of '{name}' is a one-shot iterator",
                     type(data).__name__, "Pass a re-iterable (list, DataLoader) or i -> batch, so "
                     "epochs can restart and a resumed run can find its place.")
        self.count, self.epoch, self.index = 0, 0, 0
        self._it: Optional[Any] = None
        self._epoch_rng: Optional[torch.Tensor] = None
        self._gens = generators(data) if data is not None and not callable(data) else []
        self._epoch_gens: list = []

    def next(self) -> Any:
        self.count += 1
        if self.data is None:
            return None
        if callable(self.data):
            return self.data(self.count - 1)
        for _ in range(2):
            if self._it is None:
                self._epoch_rng = torch.get_rng_state()
                self._epoch_gens = [g.get_state() for g in self._gens]
                self._it = iter(self.data)
            try:
                batch = next(self._it)
                self.index += 1
                return batch
            except StopIteration:
                self._it, self.epoch, self.index = None, self.epoch + 1, 0
        fail("solve(problems, graph)", f"`data` of '{self.name}' yields no batch", None,
             "Pass a non-empty iterable.")

    def state(self) -> dict:
        """The position, with torch's RNG and the loader's own generators as they were at the
        start of this epoch (to replay its order) and as they are now (for the next epochs)."""
        mid = self._it is not None
        return {"count": self.count, "epoch": self.epoch, "index": self.index,
                "epoch_rng": self._epoch_rng if mid else None,
                "epoch_gens": self._epoch_gens if mid else None,
                "gens": [g.get_state() for g in self._gens]}

    def restore(self, s: dict) -> None:
        """Come back to the same place: same epoch order (the RNGs at epoch start), same index,
        and the loader's generators where they were."""
        self.count, self.epoch, self.index, self._it = s["count"], s["epoch"], 0, None
        if callable(self.data) or self.data is None:
            return
        saved = s.get("gens")
        if saved is not None and len(saved) != len(self._gens):
            fail("solve(..., resume=True)", f"`data` of '{self.name}' draws its order from "
                 f"{len(self._gens)} generators, the checkpoint's from {len(saved)}", None,
                 "Resume with the same kind of loader (generator= given or not, alike).")
        if s["epoch_rng"] is not None:
            if not self._gens and not isinstance(self.data, (Sequence, DataLoader, Dataset)):
                warnings.warn(f"solve(..., resume=True): `data` of '{self.name}' is an iterable "
                              f"of type {type(self.data).__name__}; its place in the epoch is "
                              "found by replaying it, which repeats its order only if that "
                              "depends on torch's global RNG alone.", RuntimeWarning,
                              stacklevel=4)
            now = torch.get_rng_state()
            torch.set_rng_state(s["epoch_rng"])
            for g, st in zip(self._gens, s.get("epoch_gens") or []):
                g.set_state(st)
            self._epoch_rng, self._epoch_gens = s["epoch_rng"], s.get("epoch_gens") or []
            self._it = iter(self.data)
            for _ in range(s["index"]):
                next(self._it)
            self.index = s["index"]
            torch.set_rng_state(now)
        for g, st in zip(self._gens, saved or []):
            g.set_state(st)


def generators(data: Any) -> list:
    """The ``torch.Generator`` objects a loader draws its order from (its own, its sampler's,
    its batch sampler's sampler's), each once."""
    found: list = []
    for obj in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None),
                getattr(getattr(data, "batch_sampler", None), "sampler", None)):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def env_batches(env: Optional[Callable], graph: Any, t: int) -> dict:
    """``env(t)``, checked: a dict keyed by problem names (``{}`` without an env)."""
    if env is None:
        return {}
    out = env(t)
    api = "solve(problems, graph, env)"
    if not isinstance(out, dict):
        fail(api, "`env(step)` must return a dict {problem name: batch}", type(out).__name__,
             "Return e.g. {'inner': batch, 'outer': batch}.", exc=TypeError)
    unknown = sorted(set(out) - set(graph.problems))
    if unknown:
        fail(api, f"`env({t})` names no problem: {unknown}", f"problems: {sorted(graph.problems)}",
             "Key its dict by problem names.")
    return out


def draw(sources: dict, graph: Any, names: tuple, env: Optional[Callable], t: int) -> dict:
    """The batches each problem in ``names`` consumes at step ``t`` (env first, then its data)."""
    from_env = env_batches(env, graph, t)
    out = {}
    for n in names:
        p = graph.problems[n]
        k = p.unroll_steps if p.unrolled else p.accumulate
        out[n] = [from_env[n]] * k if n in from_env else [sources[n].next() for _ in range(k)]
    return out
