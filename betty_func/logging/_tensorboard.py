"""Scalars to TensorBoard event files."""
from __future__ import annotations

from typing import Any

from ._base import Logger


class TensorBoard(Logger):
    """Log-step scalars and validation metrics (``validation/metric``) as TensorBoard scalars
    under ``logdir`` (tags ``problem/metric``); messages as text (tag ``messages``)."""

    def __init__(self, logdir: Any):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(logdir))

    def on_log(self, step: int, scalars: dict) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def on_validation(self, step: int, metrics: dict) -> None:
        self.on_log(step, {f"validation/{k}": v for k, v in metrics.items()})

    def on_message(self, step: int, text: str) -> None:
        self.writer.add_text("messages", text, step)

    def flush(self) -> None:
        """Write what is buffered to the event files (the run goes on)."""
        self.writer.flush()

    def close(self) -> None:
        self.flush()
        self.writer.close()
