"""Writers for scalars logged every N steps (the only place a run reads values to the host)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _fmt(scalars: dict, limit: int = 6) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in list(scalars.items())[:limit])


class Console:
    """One line per logged step: ``[step 100/3000] classifier/loss 0.31  reweight/loss 0.52``."""

    def __init__(self, total: int, stream: Optional[TextIO] = None):
        self.total, self.stream = total, stream or sys.stdout

    def write(self, step: int, scalars: dict) -> None:
        print(f"[step {step}/{self.total}] {_fmt(scalars, limit=12)}", file=self.stream, flush=True)


class Progress:
    """A single updating line on a terminal (steps/s and the latest losses); silent otherwise."""

    def __init__(self, total: int, start: int = 0, stream: Optional[TextIO] = None):
        self.total, self.start, self.stream = total, start, stream or sys.stderr
        self.t0, self.enabled = time.perf_counter(), self.stream.isatty()

    def update(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        width = 24
        done = int(width * step / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        print(f"\r[{bar}] {step}/{self.total} {rate:.1f} step/s  {_fmt(scalars, 3)}",
              end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=self.stream, flush=True)


class TensorBoard:
    """Scalars to TensorBoard event files under ``logdir`` (``problem/metric`` tags)."""

    def __init__(self, logdir: str):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(logdir)

    def write(self, step: int, scalars: dict) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
