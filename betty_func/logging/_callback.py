"""A logger from plain functions: user code at log, validation, checkpoint and stop."""
from __future__ import annotations

from typing import Callable, Optional

from .._errors import fail
from ._base import Logger

Hook = Optional[Callable[..., None]]


class Callback(Logger):
    """Calls ``on_log(step, scalars)``, ``on_validation(step, metrics)``,
    ``on_checkpoint(step, path)``, ``on_message(step, text)`` and ``on_stop(step, reason)``
    where given (each optional), at the moments :class:`Logger` describes.

    Example:
        >>> from betty_func import logging
        >>> seen = []
        >>> cb = logging.Callback(on_log=lambda step, scalars: seen.append(step))
        >>> cb.on_log(50, {"p/loss": 0.1}); cb.on_stop(50, "finished")
        >>> seen
        [50]
    """

    def __init__(self, on_log: Hook = None, on_validation: Hook = None,
                 on_checkpoint: Hook = None, on_message: Hook = None, on_stop: Hook = None):
        hooks = {"on_log": on_log, "on_validation": on_validation,
                 "on_checkpoint": on_checkpoint, "on_message": on_message, "on_stop": on_stop}
        for name, fn in hooks.items():
            if fn is not None and not callable(fn):
                fail("logging.Callback(on_log, on_validation, on_checkpoint, on_message, "
                     "on_stop)", f"`{name}` must be a function", type(fn).__name__,
                     f"Pass {name}=lambda step, value: ...", exc=TypeError)
        self.hooks = {k: v for k, v in hooks.items() if v is not None}

    def on_log(self, step: int, scalars: dict) -> None:
        self._call("on_log", step, scalars)

    def on_validation(self, step: int, metrics: dict) -> None:
        self._call("on_validation", step, metrics)

    def on_checkpoint(self, step: int, path: str) -> None:
        self._call("on_checkpoint", step, path)

    def on_message(self, step: int, text: str) -> None:
        self._call("on_message", step, text)

    def on_stop(self, step: int, reason: str) -> None:
        self._call("on_stop", step, reason)

    def _call(self, name: str, *args: object) -> None:
        if name in self.hooks:
            self.hooks[name](*args)
