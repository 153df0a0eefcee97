"""A progress bar (tqdm): steps, steps/s, ETA and the latest losses."""
from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from ._base import Logger
from ._console import fmt


class Progress(Logger):
    """A ``tqdm`` bar over the run's global steps with its rate, ETA and the latest logged
    scalars (the first ``show`` of them). Off when ``stream`` (stderr) is not a terminal,
    unless ``force=True``; console lines and messages print above it (``tqdm.write``). The bar
    moves every step without reading any value: the losses shown are those of the last log
    step. Cost: one Python call per step; tqdm redraws at most every ``mininterval`` seconds.

    Example:
        >>> import io
        >>> from betty_func import logging
        >>> bar = logging.Progress(stream=io.StringIO(), force=True)
        >>> bar.on_start(10, 0)
        >>> for t in range(1, 11):
        ...     bar.on_step(t)
        >>> bar.close()
        >>> bar.steps_done
        10
    """

    def __init__(self, stream: Optional[TextIO] = None, force: bool = False, show: int = 3,
                 mininterval: float = 0.2):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled, self.show, self.mininterval = force or isatty, show, mininterval
        self.bar: Any = None
        self.steps_done = 0

    def on_start(self, total: int, first: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=first, file=self.stream, unit="step",
                        dynamic_ncols=True, mininterval=self.mininterval, leave=True)

    def on_step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.steps_done = self.bar.n

    def on_log(self, step: int, scalars: dict) -> None:
        if self.bar is not None and scalars:
            self.bar.set_postfix_str(fmt(scalars, self.show), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
