"""``Config``: the per-problem configuration of a Betty program, in both of Betty's dialects.

Betty 0.1.1 and Betty HEAD (0.2.x) disagree on some names (``fp16=True`` / ``precision="fp16"``;
the pre-0.1 ``step=`` / ``steps=`` for ``unroll_steps``); programs copied from either run here.
Every field is honoured, or accepted and documented as meaningless here, or refused — see the
table in :class:`Config`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..._errors import check_nonneg, check_nonneg_int, check_positive, check_positive_int, fail

__all__ = ["Config"]

TYPES = ("darts", "neumann", "cg", "sama", "reinforce")
API = "betty.configs.Config(...)"


@dataclass
class Config:
    """Per-problem configuration (Betty's fields; the method is read from the *lower* problem).

    ========================== =====================================================================
    field                      here
    ========================== =====================================================================
    ``type``                   hypergradient method through this problem (when it is a lower):
                               ``"darts"`` = ``hypergrad.darts(eps=darts_alpha)``, ``"neumann"`` =
                               ``hypergrad.neumann(neumann_iterations, neumann_alpha)`` (refused at
                               step 0 when α diverges), ``"cg"`` = ``hypergrad.cg(cg_iterations)``
                               (the correct algorithm), ``"sama"`` =
                               ``hypergrad.sama(eps=sama_adam_alpha)`` (the lower's own optimizer
                               step: Adam's at its current moments); ``"reinforce"`` (a stub in
                               Betty) = ``hypergrad.zero_order()``: evolution strategies on the
                               result of the lower's ``unroll_steps`` updates, run as a window. An
                               ``IterativeProblem`` lower is differentiated by
                               ``hypergrad.unrolled()`` whatever ``type`` says.
    ``unroll_steps``           lower steps per upper step (``step`` / ``steps``: old names)
    ``gradient_accumulation``  batches averaged per optimizer step (``optim.accumulate``); the
                               scheduler steps every local step, as in Betty
    ``gradient_clipping``      global-norm clip before the optimizer (0: none)
    ``precision`` / ``fp16``   ``"fp32"``; ``"bf16"`` (autocast, on CPU too); ``"fp16"`` (autocast
                               + dynamic loss scaling from ``initial_dynamic_scale``, growing by
                               ``scale_factor``)
    ``log_step``               log ``training_step``'s loss and metrics every n local steps
    ``log_local_step``         log against the local step instead of the global step
    ``first_order``            on an upper: ``False`` asks for iterative differentiation, so its
                               lowers must be ``IterativeProblem`` (Betty computed no
                               hypergradient at all for an implicit lower: refused here)
    ``retain_graph``,          accepted, without meaning: derivatives come from ``torch.func``,
    ``allow_unused``           which keeps no graph between calls and never fails on unused inputs
    ``darts_alpha``            darts' radius: ε = α / ‖∂F/∂θ‖
    ``darts_multitask``        accepted, without meaning: θ is never moved, so there is nothing
                               to restore
    ``neumann_*``, ``cg_*``    as above; ``cg_alpha`` does not change correct CG's iterates (CG is
                               invariant to scaling the system), so it is accepted for any value > 0
    ``warmup_steps``           refused when > 0 (not supported yet)
    ``sama_multitask``         accepted, without meaning (θ is never moved: nothing to restore)
    ========================== =====================================================================

    Example:
        >>> from betty_func.betty.configs import Config
        >>> Config(type="cg", cg_iterations=5, step=2).unroll_steps
        2
    """
    type: str = "darts"
    unroll_steps: int = 1
    first_order: bool = True
    retain_graph: bool = False
    allow_unused: bool = True
    gradient_accumulation: int = 1
    gradient_clipping: float = 0.0
    precision: Optional[str] = None
    fp16: Optional[bool] = None
    initial_dynamic_scale: float = 4096.0
    scale_factor: float = 2.0
    warmup_steps: int = 0
    log_step: int = -1
    log_local_step: bool = False
    darts_alpha: float = 0.01
    darts_multitask: bool = False
    sama_adam_alpha: float = 1.0
    sama_multitask: bool = False
    neumann_iterations: int = 1
    neumann_alpha: float = 1.0
    cg_iterations: int = 1
    cg_alpha: float = 1.0
    step: Optional[int] = None
    steps: Optional[int] = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            fail(API, "`type` must be one of " + ", ".join(repr(t) for t in TYPES),
                 repr(self.type), "Use 'darts' (Betty's default), 'neumann' or 'cg'.")
        self._aliases()
        self._precision()
        check_positive_int(API, "unroll_steps", self.unroll_steps)
        check_positive_int(API, "gradient_accumulation", self.gradient_accumulation)
        check_nonneg(API, "gradient_clipping", self.gradient_clipping)
        check_positive(API, "initial_dynamic_scale", self.initial_dynamic_scale)
        check_number_above_one(self.scale_factor)
        if check_nonneg_int(API, "warmup_steps", self.warmup_steps) > 0:
            fail(API, "`warmup_steps` > 0 is not supported yet", self.warmup_steps,
                 "Leave it at 0 (a Betty program that needs a warm-up of the upper can run the "
                 "lower alone first).")
        if not isinstance(self.log_step, int) or isinstance(self.log_step, bool):
            fail(API, "`log_step` must be an int (<= 0: never log)", repr(self.log_step),
                 exc=TypeError)
        check_positive(API, "darts_alpha", self.darts_alpha)
        check_positive_int(API, "neumann_iterations", self.neumann_iterations)
        check_positive(API, "neumann_alpha", self.neumann_alpha)
        check_positive_int(API, "cg_iterations", self.cg_iterations)
        check_positive(API, "cg_alpha", self.cg_alpha)
        for flag in ("first_order", "retain_graph", "allow_unused", "log_local_step",
                     "darts_multitask", "sama_multitask"):
            if not isinstance(getattr(self, flag), bool):
                fail(API, f"`{flag}` must be True or False", repr(getattr(self, flag)),
                     exc=TypeError)

    def _aliases(self) -> None:
        """``step=`` / ``steps=`` (Betty before 0.1) are ``unroll_steps``."""
        for old in ("step", "steps"):
            value = getattr(self, old)
            if value is None:
                continue
            if self.unroll_steps not in (1, value):
                fail(API, f"`{old}` is the old name of `unroll_steps`, and both are given with "
                     "different values", f"{old}={value}, unroll_steps={self.unroll_steps}",
                     "Pass only unroll_steps.")
            self.unroll_steps = value
            setattr(self, old, None)

    def _precision(self) -> None:
        """``fp16=True`` (Betty 0.1.1) is ``precision="fp16"`` (Betty HEAD); None is fp32."""
        if self.fp16 is not None and not isinstance(self.fp16, bool):
            fail(API, "`fp16` must be True or False", repr(self.fp16), exc=TypeError)
        if self.precision not in (None, "fp32", "fp16", "bf16"):
            fail(API, "`precision` must be 'fp32', 'fp16' or 'bf16'", repr(self.precision))
        if self.fp16 and self.precision not in (None, "fp16"):
            fail(API, "`fp16=True` and `precision` disagree", f"precision={self.precision!r}",
                 "Pass one of them: precision='fp16' (Betty HEAD) or fp16=True (Betty 0.1).")
        self.precision = "fp16" if self.fp16 else (self.precision or "fp32")
        self.fp16 = self.precision == "fp16"

    @property
    def autocast(self) -> Optional[str]:
        """The ``mlo.Problem(precision=...)`` value: None, ``"bf16"`` or ``"fp16"``."""
        return None if self.precision == "fp32" else self.precision


def check_number_above_one(value: float) -> None:
    if check_positive(API, "scale_factor", value) <= 1.0:
        fail(API, "`scale_factor` must be > 1 (the loss scale grows by it)", value,
             "Use e.g. scale_factor=2.0.")
