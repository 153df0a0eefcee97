"""``solve``'s options in small records: what it reports, how it validates, where it checkpoints.

Each record checks its own fields when it is built, so options that only make sense together
(a checkpoint directory and how often to write it) cannot be given one without the other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from .._errors import check_arity, check_nonneg_int, check_positive_int, check_type, fail
from ..logging import Logger
from ._monitor import EarlyStopping

PathLike = Union[str, "os.PathLike[str]"]
HOOKS = tuple(h for h in vars(Logger) if h.startswith("on_"))  # the protocol's hooks


def _check_bool(api: str, name: str, value: Any) -> None:
    check_type(api, name, value, bool, "True or False", f"Pass {name}=True or {name}=False.")


@dataclass(frozen=True)
class Logging:
    """What ``solve`` reports: scalars (losses, metrics, gradient norms, CG residuals, rates) are
    read to the host every ``every`` steps (and at the last step; 0: never) into the history and
    handed to the loggers: a progress bar (``progress``: tqdm, on a terminal), console lines
    (``console``), TensorBoard under ``logdir``, then ``loggers`` of your own
    (:class:`betty_func.logging.Logger` objects: ``logging.JSONLines``, ``logging.WandB``,
    ``logging.Callback``, ...), which also hear validation, checkpoints, messages (resume,
    compile time, early stopping, roll-back) and the stop. ``mlo.Logging(progress=False,
    console=False)`` keeps the history only.

    Example:
        >>> from betty_func import mlo
        >>> mlo.Logging(every=10, progress=False)
        Logging(every=10, logdir=None, progress=False, console=True, loggers=())
    """
    every: int = 50
    logdir: Optional[PathLike] = None
    progress: bool = True
    console: bool = True
    loggers: Sequence[Any] = ()

    def __post_init__(self) -> None:
        api = "mlo.Logging(every, logdir, progress, console, loggers)"
        check_nonneg_int(api, "every", self.every)
        if self.logdir is not None and not isinstance(self.logdir, (str, os.PathLike)):
            fail(api, "`logdir` must be a path or None", type(self.logdir).__name__,
                 "Pass e.g. logdir='runs/exp1'.", exc=TypeError)
        _check_bool(api, "progress", self.progress)
        _check_bool(api, "console", self.console)
        if not isinstance(self.loggers, (list, tuple)):
            fail(api, "`loggers` must be a list of loggers", type(self.loggers).__name__,
                 "Pass e.g. loggers=[logging.JSONLines('run.jsonl')].", exc=TypeError)
        for lg in self.loggers:
            if not any(callable(getattr(lg, h, None)) for h in HOOKS):
                fail(api, "each of `loggers` must be a betty_func.logging.Logger (an object "
                     "with on_log, on_validation, ... methods)", type(lg).__name__,
                     "Subclass logging.Logger, or wrap functions in logging.Callback(on_log=...).",
                     exc=TypeError)
        object.__setattr__(self, "loggers", tuple(self.loggers))


@dataclass(frozen=True)
class Checkpoint:
    """Save the whole run (params, optimizer states, buffers, data positions, RNG streams, the
    history) atomically to ``dir`` every ``every`` steps; with ``resume=True`` a run continues
    where the checkpoint in ``dir`` stopped, bit for bit (or starts afresh if there is none).

    Example:
        >>> from betty_func import mlo
        >>> mlo.Checkpoint("ckpt", every=100, resume=True)
        Checkpoint(dir='ckpt', every=100, resume=True)
    """
    dir: Optional[PathLike] = None
    every: Optional[int] = None
    resume: bool = False

    def __post_init__(self) -> None:
        api = "mlo.Checkpoint(dir, every, resume)"
        if self.dir is None:
            fail(api, "`dir` is needed: the directory to write (and resume from)", None,
                 "Pass e.g. mlo.Checkpoint('ckpt', every=100).")
        if not isinstance(self.dir, (str, os.PathLike)):
            fail(api, "`dir` must be a path", f"{type(self.dir).__name__} {self.dir!r}",
                 "Pass e.g. mlo.Checkpoint('ckpt', every=100).", exc=TypeError)
        if self.every is None:
            fail(api, "`every` is needed: the steps between checkpoints", None,
                 "Pass e.g. every=100.")
        check_positive_int(api, "every", self.every)
        _check_bool(api, "resume", self.resume)


@dataclass(frozen=True)
class Validation:
    """Call ``fn(params) -> {metric: value}`` (or a number, or None) every ``every`` steps, and
    once before the first update (what it returns must serve its uses). ``early_stopping`` stops
    on one of its metrics; ``roll_back`` makes ``solve`` return the params of the best
    validation (by the early-stopping metric, else the only one).

    Example:
        >>> from betty_func import mlo
        >>> v = mlo.Validation(lambda params: {"loss": 0.0}, every=10,
        ...                    early_stopping=mlo.EarlyStopping("loss", patience=3))
        >>> v.every
        10
    """
    fn: Optional[Callable[[dict], Any]] = None
    every: Optional[int] = None
    early_stopping: Optional[EarlyStopping] = None
    roll_back: bool = False

    def __post_init__(self) -> None:
        api = "mlo.Validation(fn, every, early_stopping, roll_back)"
        if self.fn is None:
            what = ("early_stopping" if self.early_stopping is not None else
                    "roll_back" if self.roll_back else None)
            fail(api, "`fn` is needed: the function params -> {metric: value}"
                 + (f" that `{what}` reads its metric from" if what else ""), None,
                 "Pass e.g. mlo.Validation(evaluate, every=100).")
        if not callable(self.fn):
            fail(api, "`fn` must be a function params -> {metric: value}",
                 type(self.fn).__name__, "Pass e.g. mlo.Validation(evaluate, every=100).",
                 exc=TypeError)
        check_arity(api, "`fn`", self.fn, 1, "fn(params) -> {metric: value}")
        if self.every is None:
            fail(api, "`every` is needed: the steps between validations", None,
                 "Pass e.g. every=100.")
        check_positive_int(api, "every", self.every)
        if self.early_stopping is not None:
            check_type(api, "early_stopping", self.early_stopping, EarlyStopping,
                       "an mlo.EarlyStopping", "Pass mlo.EarlyStopping('loss', 'min', patience=5).")
        _check_bool(api, "roll_back", self.roll_back)
