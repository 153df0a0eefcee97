"""Shared measuring tools of the benchmark suite: medians of wall time, peak memory, progress."""
from __future__ import annotations

import re
import statistics
import sys
import time
from typing import Any, Callable

import torch
from torch import nn

from betty_func import nn as bnn, tree

T0 = time.time()


def progress(msg: str) -> None:
    """One line on stderr with the time since the suite started (the table goes to stdout)."""
    print(f"[{time.time() - T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def sync(out: Any = None) -> None:
    """Wait for the device: a CUDA synchronize, or on CPU touch one output value."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elif out is not None:
        leaves = [x for x in tree.leaves(out) if isinstance(x, torch.Tensor)]
        if leaves:
            float(leaves[0].reshape(-1)[0])


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _status_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", open("/proc/self/status").read()).group(1))


class PeakMemory:
    """Peak memory a block adds, in MiB: CUDA ``max_memory_allocated`` on a GPU; on CPU the
    resident-set high-water mark (reset through ``/proc/self/clear_refs``) minus the resident
    size at entry. ``mib`` is None where neither is available."""

    def __enter__(self) -> "PeakMemory":
        self.mib = None
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._base = _status_kb("VmRSS") * 1024
            except OSError:
                self._base = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._base is None:
            return
        peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                else _status_kb("VmHWM") * 1024)
        self.mib = (peak - self._base) / 2 ** 20


def mlp(*sizes: int, seed: int = 0) -> bnn.Functional:
    """A ReLU MLP as a pure function ``f(params, x)`` with its initial params."""
    torch.manual_seed(seed)
    layers: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return bnn.functional(nn.Sequential(*layers))


def count(params: Any) -> int:
    return sum(x.numel() for x in tree.leaves(params))


def markdown(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``(key, header)`` columns; floats to 3 significant
    digits."""
    fmt = lambda v: ("–" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)
