"""Data sources: iterables restarted each epoch, callables, and position state for resume."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any, Callable, Optional

import torch

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
                fail("solve(problems, graph)", f"`data` of '{name}' is neither iterable nor callable",
                     type(data).__name__, "Pass a DataLoader, a list of batches, or i -> batch.")
            if isinstance(data, Iterator):
                fail("solve(problems, graph)", f"`data` of '{name}' is a one-shot iterator",
                     type(data).__name__, "Pass a re-iterable (list, DataLoader) or i -> batch, so "
                     "epochs can restart and a resumed run can find its place.")
        self.count, self.epoch, self.index = 0, 0, 0
        self._it: Optional[Any] = None
        self._epoch_rng: Optional[torch.Tensor] = None

    def next(self) -> Any:
        self.count += 1
        if self.data is None:
            return None
        if callable(self.data):
            return self.data(self.count - 1)
        for _ in range(2):
            if self._it is None:
                self._epoch_rng = torch.get_rng_state()
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
        return {"count": self.count, "epoch": self.epoch, "index": self.index,
                "epoch_rng": self._epoch_rng if self._it is not None else None}

    def restore(self, s: dict) -> None:
        """Come back to the same place: same epoch order (the RNG at epoch start), same index."""
        self.count, self.epoch, self.index, self._it = s["count"], s["epoch"], 0, None
        if s["epoch_rng"] is None or callable(self.data) or self.data is None:
            return
        now = torch.get_rng_state()
        torch.set_rng_state(s["epoch_rng"])
        self._epoch_rng, self._it = s["epoch_rng"], iter(self.data)
        for _ in range(s["index"]):
            next(self._it)
        self.index = s["index"]
        torch.set_rng_state(now)


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
