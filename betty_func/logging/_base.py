"""The one protocol every logger and callback of a run follows."""
from __future__ import annotations

import sys
from typing import Optional, TextIO


class Logger:
    """What ``mlo.solve`` tells the objects in ``mlo.Logging(loggers=[...])``; every hook is
    optional (these defaults do nothing), so a callback overrides only what it needs.

    Order within a run: :meth:`on_start` once; per global step :meth:`on_step` (the step number
    only: no value is read to the host for it); on log steps :meth:`on_log` with the scalars
    (``problem/metric``: losses, metrics, gradient norms, CG residuals, rates), on validation
    steps :meth:`on_validation`, after a checkpoint is written :meth:`on_checkpoint`;
    :meth:`on_message` for what a person should read (resume, compile time, early stopping,
    roll-back); :meth:`on_stop` once with why the run ended; :meth:`close` last, also when the
    run raises.

    Example:
        >>> from betty_func import logging, mlo
        >>> class Count(logging.Logger):
        ...     def __init__(self):
        ...         self.logged = []
        ...     def on_log(self, step, scalars):
        ...         self.logged.append(step)
        >>> import torch
        >>> from betty_func import optim
        >>> p = mlo.Problem("p", lambda w, b: ((w - 1.0) ** 2).sum(), torch.zeros(2),
        ...                 optim.sgd(0.1))
        >>> c = Count()
        >>> _ = mlo.solve([p], {}, steps=30, logging=mlo.Logging(every=10, progress=False,
        ...               console=False, loggers=[c]))
        >>> c.logged
        [10, 20, 30]
    """

    def on_start(self, total: int, first: int) -> None:
        """The run will end at step ``total``; it starts after step ``first`` (0, or where a
        checkpoint left it)."""

    def on_step(self, step: int) -> None:
        """Global step ``step`` is done (no values: reading them would sync the device)."""

    def on_log(self, step: int, scalars: dict) -> None:
        """The scalars of log step ``step``, ``{"problem/metric": float}``."""

    def on_validation(self, step: int, metrics: dict) -> None:
        """The validation function's ``{metric: float}`` at ``step``."""

    def on_checkpoint(self, step: int, path: str) -> None:
        """A checkpoint of step ``step`` was written to ``path``."""

    def on_message(self, step: int, text: str) -> None:
        """A line for a person: resume, compile time, early stopping, roll-back."""

    def on_stop(self, step: int, reason: str) -> None:
        """The run ended after ``step``: ``"finished"`` or ``"early_stopping"``."""

    def close(self) -> None:
        """Release files and handles."""


def write_line(text: str, stream: Optional[TextIO] = None) -> None:
    """Print ``text`` on its own line, clearing and redrawing any progress bar around it (a
    log line never lands in the middle of a bar)."""
    from tqdm import tqdm
    tqdm.write(text, file=stream or sys.stdout)
    (stream or sys.stdout).flush()
