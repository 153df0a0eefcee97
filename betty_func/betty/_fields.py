"""What the parts of an :class:`~betty_func.betty.engine.Engine` (``Mirror``, ``Runtime``,
``Reports`` and the engine itself) read of each other: the attributes ``Engine.__init__`` sets
and the methods one part calls on another, declared for the type checker. Annotations only:
nothing here exists at runtime (no class attribute, no method), so the engine's attributes and
its hooks are what they were."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .. import mlo
    from ._feed import Feed
    from ._report import Reporter
    from .configs import EngineConfig
    from .problems.problem import Problem


class EngineFields:
    """The engine's shared state (set in ``Engine.__init__`` and ``Runtime._init_runtime``)."""

    config: EngineConfig
    global_step: int
    device: torch.device
    leaves: list[Problem]
    _problems: dict[str, Problem]   # by name
    _state: mlo.State               # the program's state; the modules alias its tensors
    _keys: dict[str, frozenset[str]]  # each problem's trainable parameter names
    _feeds: dict[str, Feed]         # the batches of the problems with a train_data_loader
    _rolled: frozenset[str]         # the problems that roll back (EngineConfig(roll_back=True))
    _reporter: Reporter
    _counts: dict[str, int]         # local steps taken, by problem
    _rates: dict[str, tuple]        # the rates (and scheduler epoch) each optimizer last showed

    if TYPE_CHECKING:  # defined by the Engine, by another part, or (validation) by the user
        def train(self) -> None: ...

        def eval(self) -> None: ...

        def validation(self) -> Any: ...

        def _above(self, name: str) -> list[Problem]: ...

        def _log(self, name: str, logs: dict) -> None: ...
