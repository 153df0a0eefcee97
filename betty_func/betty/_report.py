"""Where a Betty program's metrics go: console lines, TensorBoard or Weights & Biases."""
from __future__ import annotations

import importlib.util
import time
from typing import Optional

from .._errors import fail

API = "betty.Engine(...)"


class Reporter:
    """Writes ``{tag: float}`` at a step: always a console line; plus TensorBoard event files
    under ``./betty_tensorboard/<time>`` or ``wandb.log`` for ``logger_type``."""

    def __init__(self, logger_type: str, logdir: Optional[str] = None):
        self.kind, self.writer, self.wandb = logger_type, None, None
        if logger_type == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.writer = SummaryWriter(logdir or f"betty_tensorboard/{stamp}")
        elif logger_type == "wandb":
            if importlib.util.find_spec("wandb") is None:
                fail(API, "logger_type='wandb' needs the wandb package, which is not installed",
                     None, "pip install wandb, or use logger_type='tensorboard'.",
                     exc=ModuleNotFoundError)
            import wandb
            if wandb.run is None:  # Betty never started a run, so nothing was logged
                wandb.init(project="betty_func")
            self.wandb = wandb

    def write(self, head: str, step: int, scalars: dict) -> None:
        text = " ".join(f"{k}: {v:.6g}" for k, v in scalars.items())
        print(f"{head} {text}", flush=True)
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def host(logs: dict) -> dict:
    """A problem's logs (tensors) as floats, read once."""
    return {k: float(v) for k, v in logs.items() if getattr(v, "numel", lambda: 1)() == 1}


def tags(name: str, scalars: dict) -> dict:
    return {f"{name}/{k}": v for k, v in scalars.items()}
