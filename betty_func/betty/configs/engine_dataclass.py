"""``EngineConfig``: the engine's configuration, in both of Betty's dialects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..._errors import check_nonneg_int, check_positive_int, fail

__all__ = ["EngineConfig"]

API = "betty.configs.EngineConfig(...)"
STRATEGIES = ("default", "cpu", "gpu", "cuda")
REFUSED = ("distributed", "zero", "fsdp", "accelerate")
LOGGERS = ("none", "tensorboard", "wandb")


@dataclass
class EngineConfig:
    """Engine configuration.

    ======================== ======================================================================
    field                    here
    ======================== ======================================================================
    ``train_iters``          global steps of ``run()``
    ``valid_step``           ``validation()`` every n global steps, when the engine defines it
    ``logger_type``          ``"none"`` (console lines only), ``"tensorboard"`` (under
                             ``./betty_tensorboard``), ``"wandb"`` (needs wandb installed; a run is
                             started with ``wandb.init`` if none is active)
    ``strategy``             ``"default"`` (CUDA if available, else CPU), ``"cpu"``, ``"gpu"`` /
                             ``"cuda"`` (refused without CUDA); ``"distributed"``, ``"zero"``,
                             ``"fsdp"``, ``"accelerate"``: refused (use ``mlo.solve(...,
                             distributed=...)``)
    ``backend``              only with a distributed strategy (refused)
    ``distributed``          Betty 0.1's ``DataParallel`` switch: ``True`` refused as above
    ``early_stopping*``      stop ``run()`` when ``early_stopping_metric`` of ``validation()`` has
                             not improved (mode ``"min"``/``"max"``) for ``tolerance`` validations
    ``roll_back``            ``True``: every lower's unrolled updates only serve its uppers'
                             hypergradient; then it is put back where the inner loop started and
                             takes one update on its last batch (see ``_roll_back.py`` for where
                             it is supported)
    ======================== ======================================================================

    Example:
        >>> from betty_func.betty.configs import EngineConfig
        >>> EngineConfig(train_iters=100, valid_step=10).train_iters
        100
    """
    train_iters: int = 50000
    valid_step: int = 500
    logger_type: str = "none"
    roll_back: bool = False
    strategy: str = "default"
    backend: str = "nccl"
    distributed: Optional[bool] = None
    early_stopping: bool = False
    early_stopping_mode: str = "min"
    early_stopping_tolerance: int = 5
    early_stopping_metric: str = "loss"

    def __post_init__(self) -> None:
        check_nonneg_int(API, "train_iters", self.train_iters)
        check_nonneg_int(API, "valid_step", self.valid_step)
        if self.logger_type not in LOGGERS:
            fail(API, "`logger_type` must be one of " + ", ".join(map(repr, LOGGERS)),
                 repr(self.logger_type))
        if self.strategy in REFUSED or self.distributed:
            what = f"strategy={self.strategy!r}" if self.strategy in REFUSED else \
                "distributed=True"
            fail(API, f"{what} is not supported by the Betty front end", what,
                 "Run single-process (strategy='default'), or write the program with "
                 "betty_func.mlo and pass mlo.solve(..., distributed=mlo.Distributed()) "
                 "under torchrun.")
        if self.strategy not in STRATEGIES:
            fail(API, "`strategy` must be one of " + ", ".join(map(repr, STRATEGIES + REFUSED)),
                 repr(self.strategy))
        if self.backend != "nccl":
            fail(API, "`backend` sets the process group of a distributed strategy, which the "
                 "front end does not run", repr(self.backend), "Drop backend=.")
        if not isinstance(self.roll_back, bool):
            fail(API, "`roll_back` must be True or False", repr(self.roll_back), exc=TypeError)
        if self.early_stopping_mode not in ("min", "max"):
            fail(API, "`early_stopping_mode` must be 'min' or 'max'",
                 repr(self.early_stopping_mode))
        check_positive_int(API, "early_stopping_tolerance", self.early_stopping_tolerance)
        if not isinstance(self.early_stopping, bool):
            fail(API, "`early_stopping` must be True or False", repr(self.early_stopping),
                 exc=TypeError)
