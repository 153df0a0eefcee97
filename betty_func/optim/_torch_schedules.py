"""``torch.optim.lr_scheduler`` objects as pure schedules ``epoch -> lr`` of a float64 tensor.

Each function is the scheduler's closed form in the scheduler's own epoch (``last_epoch``),
read from the scheduler's attributes and ``base_lrs``, so ``schedule(e)`` is what torch puts in
``param_groups[g]["lr"]`` after ``e`` calls of ``scheduler.step()``. Torch steps most of them
recursively (``lr * gamma`` per step); the closed forms agree to rounding (~1e-15 relative).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch.optim import lr_scheduler as ls

from .._errors import fail
from ._base import Schedule
from ._schedules import multistep

Pair = tuple[Schedule, Optional[Schedule]]  # (lr, momentum or None) of one param group


def _num(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _step_lr(s: ls.StepLR, base: float) -> Schedule:
    size, gamma = s.step_size, s.gamma
    return lambda e: base * gamma ** torch.div(e, size, rounding_mode="floor")


def _multistep_lr(s: ls.MultiStepLR, base: float) -> Schedule:
    return multistep(base, sorted(s.milestones.elements()), s.gamma)


def _exponential_lr(s: ls.ExponentialLR, base: float) -> Schedule:
    gamma = s.gamma
    return lambda e: base * gamma ** e


def _cosine_lr(s: ls.CosineAnnealingLR, base: float) -> Schedule:
    """torch's periodic form: past ``T_max`` the rate rises again (``optim.cosine`` stays)."""
    t_max, low = s.T_max, s.eta_min
    return lambda e: low + (base - low) * (1 + torch.cos(math.pi * e / t_max)) / 2


def _linear_lr(s: ls.LinearLR, base: float) -> Schedule:
    a, b, n = s.start_factor, s.end_factor, s.total_iters
    return lambda e: base * (a + (b - a) * torch.clamp(e, max=n) / n)


def _constant_lr(s: ls.ConstantLR, base: float) -> Schedule:
    factor, n = s.factor, s.total_iters
    return lambda e: base * (factor + (e >= n).to(e.dtype) * (1 - factor))


def _polynomial_lr(s: ls.PolynomialLR, base: float) -> Schedule:
    n, power = s.total_iters, s.power
    return lambda e: base * (1.0 - torch.clamp(e, max=n) / n) ** power


SIMPLE: dict[type, Callable[[Any, float], Schedule]] = {
    ls.StepLR: _step_lr, ls.MultiStepLR: _multistep_lr, ls.ExponentialLR: _exponential_lr,
    ls.CosineAnnealingLR: _cosine_lr, ls.LinearLR: _linear_lr, ls.ConstantLR: _constant_lr,
    ls.PolynomialLR: _polynomial_lr}
SUPPORTED = ", ".join(sorted(c.__name__ for c in SIMPLE) + ["LambdaLR", "OneCycleLR"])


def _one_cycle(api: str, s: ls.OneCycleLR, group: dict) -> Pair:
    """The phases of ``s`` (``_schedule_phases``: its only record of pct_start and
    three_phase) with this group's ends; the momentum of the same phases when it cycles."""
    phases = getattr(s, "_schedule_phases", None)
    kind = getattr(s, "_anneal_func_type", None)
    if phases is None or kind not in ("cos", "linear"):
        fail(api, "this OneCycleLR has no `_schedule_phases` / `_anneal_func_type` (a torch "
             "version from_torch was not written for)", type(s).__name__,
             "Express the schedule as a LambdaLR, or write it with optim.warmup/cosine.",
             exc=TypeError)
    ends = [float(p["end_step"]) for p in phases]
    starts = [0.0] + ends[:-1]

    def anneal(a: float, b: float, pct: torch.Tensor) -> torch.Tensor:
        if kind == "cos":
            return b + (a - b) / 2.0 * (torch.cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def schedule(start_key: str, end_key: str) -> Schedule:
        ab = [(_num(group[p[start_key]]), _num(group[p[end_key]])) for p in phases]

        def value(e: torch.Tensor) -> torch.Tensor:  # the first phase with e <= end, else last
            out = anneal(*ab[-1], (e - starts[-1]) / (ends[-1] - starts[-1]))
            for i in range(len(phases) - 2, -1, -1):
                here = anneal(*ab[i], (e - starts[i]) / (ends[i] - starts[i]))
                out = torch.where(e <= ends[i], here, out)
            return out
        return value

    lr = schedule("start_lr", "end_lr")
    return lr, schedule("start_momentum", "end_momentum") if s.cycle_momentum else None


def torch_schedules(api: str, scheduler: Any, optimizer: torch.optim.Optimizer) -> list[Pair]:
    """``(lr, momentum or None)`` per param group of ``optimizer`` for ``scheduler``, as pure
    functions of the scheduler's epoch (a float64 tensor); anything else refused."""
    fix = (f"Supported: {SUPPORTED}. For another one, give from_torch no scheduler and pass a "
           "schedule to the betty_func optimizer itself (optim.sgd(lr=lambda step: ...)).")
    kind = type(scheduler)
    if kind not in SIMPLE and kind not in (ls.LambdaLR, ls.OneCycleLR):
        fail(api, "`scheduler` must be one of the torch LR schedulers from_torch maps "
             "(a pure function of the step)", kind.__name__, fix, exc=TypeError)
    if scheduler.optimizer is not optimizer:
        fail(api, "`scheduler` schedules another optimizer, not `optimizer`",
             f"a {kind.__name__} of a {type(scheduler.optimizer).__name__}",
             "Build the scheduler on this optimizer: Scheduler(optimizer, ...).")
    bases = [_num(b) for b in scheduler.base_lrs]
    if kind is ls.OneCycleLR:
        return [_one_cycle(api, scheduler, g) for g in optimizer.param_groups]
    if kind is ls.LambdaLR:
        return [(_lambda(base, fn), None) for base, fn in zip(bases, scheduler.lr_lambdas)]
    return [(SIMPLE[kind](scheduler, base), None) for base in bases]


def _lambda(base: float, fn: Callable) -> Schedule:
    """``base * fn(e)`` with ``e`` a float64 0-d tensor (torch passes an int): arithmetic on it
    works everywhere; Python control flow on it (``if e < 5``) works eagerly only (a host sync,
    a graph break under ``torch.compile``)."""
    return lambda e: base * fn(e)
