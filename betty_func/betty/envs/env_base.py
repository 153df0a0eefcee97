"""``Env``: data or state shared by several problems (MAML's task batches, an RL environment)."""
from __future__ import annotations

from typing import Any

__all__ = ["Env"]


class Env:
    """Subclass it, set what problems share (``self.batch = {...}``) in ``__init__`` and refresh it
    in ``step()``; call ``self.env.step()`` from your ``Engine.train_step``. The engine sets
    ``self.device`` and every problem by name (``self.<name>``) before the first step, and each
    problem sees the env as ``self.env``.

    Example:
        >>> from betty_func.betty.envs import Env
        >>> class Tasks(Env):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.batch = {"train": None}
        ...     def step(self):
        ...         self.batch["train"] = 1
        >>> env = Tasks(); env.step(); env.batch
        {'train': 1}
    """

    def __init__(self) -> None:
        self.device: Any = None

    def step(self) -> None:
        """Refresh the shared data (your subclass defines it)."""
        raise NotImplementedError(
            f"{type(self).__name__}.step(): an Env subclass defines step() (e.g. draw the next "
            "task batch into self.batch); the engine does not call it for you: call "
            "self.env.step() from your Engine.train_step().")

    def reset(self) -> None:
        """Betty 0.1's no-op reset."""
