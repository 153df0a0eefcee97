"""Log lines on the console."""
from __future__ import annotations

from typing import Optional, TextIO

from ._base import Logger, write_line


def fmt(scalars: dict, limit: int = 12) -> str:
    """``"a 0.31  b 0.52"``: the first ``limit`` scalars, 4 significant digits."""
    return "  ".join(f"{k} {v:.4g}" for k, v in list(scalars.items())[:limit])


class Console(Logger):
    """One line per log step, ``[step 100/3000] classifier/loss 0.31  reweight/loss 0.52``,
    validation metrics and messages (resume, compile time, early stopping, roll-back), printed
    through the progress bar when one is shown (so neither garbles the other).

    Example:
        >>> from betty_func import logging
        >>> c = logging.Console()
        >>> c.on_start(3000, 0)
        >>> c.on_log(100, {"classifier/loss": 0.3123})
        [step 100/3000] classifier/loss 0.3123
    """

    def __init__(self, stream: Optional[TextIO] = None, limit: int = 12):
        self.stream, self.limit, self.total = stream, limit, 0

    def on_start(self, total: int, first: int) -> None:
        self.total = total

    def on_log(self, step: int, scalars: dict) -> None:
        write_line(f"[step {step}/{self.total}] {fmt(scalars, self.limit)}", self.stream)

    def on_validation(self, step: int, metrics: dict) -> None:
        write_line(f"[step {step}/{self.total}] validation: {fmt(metrics, self.limit)}",
                   self.stream)

    def on_message(self, step: int, text: str) -> None:
        write_line(f"[step {step}/{self.total}] {text}", self.stream)
