"""Where a Betty program's metrics go: console lines, TensorBoard or Weights & Biases."""
from __future__ import annotations

import importlib.util
import time
from typing import Any, Optional

import torch

from .._errors import fail
from ..logging import Logger, TensorBoard, WandB
from ._fields import EngineFields

API = "betty.Engine(...)"


class Reporter:
    """Writes ``{tag: float}`` at a step: always a console line (Betty's format); plus
    TensorBoard event files under ``./betty_tensorboard/<time>`` or a W&B run for
    ``logger_type``, through the loggers of :mod:`betty_func.logging`."""

    def __init__(self, logger_type: str, logdir: Optional[str] = None):
        self.kind = logger_type
        self.loggers: list[Logger] = []
        if logger_type == "tensorboard":
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.loggers.append(TensorBoard(logdir or f"betty_tensorboard/{stamp}"))
        elif logger_type == "wandb":
            if importlib.util.find_spec("wandb") is None:
                fail(API, "logger_type='wandb' needs the wandb package, which is not installed",
                     None, "pip install 'betty-func[wandb]' (or pip install wandb), or use "
                     "logger_type='tensorboard'.", exc=ModuleNotFoundError)
            import wandb
            # Betty logs into the user's run; when none was started, Betty logged nothing:
            # here one is started (project "betty_func") so that the metrics go somewhere
            self.loggers.append(WandB(run=wandb.run) if wandb.run is not None
                                else WandB(project="betty_func"))

    def write(self, head: str, step: int, scalars: dict) -> None:
        text = " ".join(f"{k}: {v:.6g}" for k, v in scalars.items())
        print(f"{head} {text}", flush=True)
        for lg in self.loggers:
            lg.on_log(step, scalars)

    def flush(self) -> None:
        for lg in self.loggers:
            if isinstance(lg, TensorBoard):
                lg.flush()


def host(logs: dict) -> dict:
    """A problem's logs (tensors) as floats, read once."""
    return {k: float(v) for k, v in logs.items() if getattr(v, "numel", lambda: 1)() == 1}


def tags(name: str, scalars: dict) -> dict:
    return {f"{name}/{k}": v for k, v in scalars.items()}


class Reports(EngineFields):
    """The engine's validation and its per-problem log lines."""

    def _validate(self, best: Any, bad: int) -> tuple:
        self.eval()
        try:
            metrics = self.validation() or {}
        finally:
            self.train()
        if not isinstance(metrics, dict):
            fail(f"{type(self).__name__}.validation()", "must return a dict of metrics or None",
                 type(metrics).__name__, exc=TypeError)
        scalars = {k: scalar(f"{type(self).__name__}.validation()", k, v)
                   for k, v in metrics.items()}
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

    def _log(self, name: str, logs: dict) -> None:
        """Every ``log_step`` local steps (an unrolled window: if it crossed a multiple)."""
        c = self._problems[name].config
        every, count = c.log_step, self._counts[name]
        k = self._state.graph.problems[name].unroll_steps \
            if self._state.graph.problems[name].unrolled else 1
        if every <= 0 or count // every == (count - k) // every:
            return
        scalars = host({k: v for k, v in logs.items() if k != "nonfinite"})
        step = count if c.log_local_step else self.global_step
        self._reporter.write(f'[Problem "{name}"] [Global Step {self.global_step}] '
                             f"[Local Step {count}]", step, tags(name, scalars))


def scalar(api: str, key: str, v: Any) -> float:
    """A metric as one float: a number or a one-element tensor."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v.detach())
    got = f"a tensor of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else \
        type(v).__name__
    fail(api, f"metric {key!r} must be a number or a one-element tensor (it is logged as a "
         "scalar)", got, f"Return a float for {key!r}.", exc=TypeError)
