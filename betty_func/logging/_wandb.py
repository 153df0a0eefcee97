"""Weights & Biases (the optional extra ``pip install betty-func[wandb]``)."""
from __future__ import annotations

from typing import Any, Optional

from .._errors import fail
from ._base import Logger


class WandB(Logger):
    """Log-step scalars and validation metrics to a W&B run, messages into its summary
    (``messages``), the stop reason and last step as ``stop_reason`` / ``last_step``.
    ``run``: an existing ``wandb`` run; else one is started with ``wandb.init(**init)`` when
    there is something to log (e.g. ``project=``, ``mode="offline"`` without an account) and
    finished at :meth:`close`."""

    def __init__(self, run: Optional[Any] = None, **init: Any):
        try:
            import wandb
        except ImportError:
            fail("logging.WandB(run, **init)", "the wandb package is not installed", None,
                 "pip install 'betty-func[wandb]' (or pip install wandb).", exc=ImportError)
        self.wandb, self.run, self.init, self.own = wandb, run, init, run is None
        self.messages: list = []

    def _run(self) -> Any:
        if self.run is None:  # started at the first thing to log
            self.run = self.wandb.init(**self.init)
        return self.run

    def on_start(self, total: int, first: int) -> None:
        self._run().config.update({"total_steps": total, "first_step": first},
                                  allow_val_change=True)

    def on_log(self, step: int, scalars: dict) -> None:
        self._run().log(dict(scalars), step=step)

    def on_validation(self, step: int, metrics: dict) -> None:
        self._run().log({f"validation/{k}": v for k, v in metrics.items()}, step=step)

    def on_message(self, step: int, text: str) -> None:
        self.messages.append(f"[step {step}] {text}")
        self._run().summary["messages"] = "\n".join(self.messages)

    def on_stop(self, step: int, reason: str) -> None:
        run = self._run()
        run.summary["stop_reason"], run.summary["last_step"] = reason, step

    def close(self) -> None:
        if self.own and self.run is not None:
            self.run.finish()
            self.run = None
