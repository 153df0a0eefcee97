"""One JSON object per line: the run as data a script can read back."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._base import Logger


class JSONLines(Logger):
    """Appends one JSON object per event to ``path``: ``{"step": 100, "kind": "log",
    "scalars": {...}}``; kinds ``start`` (total, first), ``log``, ``validation`` (metrics),
    ``checkpoint`` (path), ``message`` (text), ``stop`` (reason). Each line is flushed as it is
    written, so a killed run leaves every line before the kill.

    Example:
        >>> import json, tempfile, os
        >>> from betty_func import logging
        >>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
        >>> j = logging.JSONLines(path)
        >>> j.on_log(10, {"p/loss": 0.5})
        >>> j.close()
        >>> json.loads(open(path).read())
        {'step': 10, 'kind': 'log', 'scalars': {'p/loss': 0.5}}
    """

    def __init__(self, path: Any):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = os.fspath(path)
        self.file: Any = open(self.path, "a", encoding="utf-8")

    def _write(self, step: int, kind: str, **fields: Any) -> None:
        self.file.write(json.dumps({"step": step, "kind": kind, **fields}) + "\n")
        self.file.flush()

    def on_start(self, total: int, first: int) -> None:
        self._write(first, "start", total=total, first=first)

    def on_log(self, step: int, scalars: dict) -> None:
        self._write(step, "log", scalars=scalars)

    def on_validation(self, step: int, metrics: dict) -> None:
        self._write(step, "validation", metrics=metrics)

    def on_checkpoint(self, step: int, path: str) -> None:
        self._write(step, "checkpoint", path=path)

    def on_message(self, step: int, text: str) -> None:
        self._write(step, "message", text=text)

    def on_stop(self, step: int, reason: str) -> None:
        self._write(step, "stop", reason=reason)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
