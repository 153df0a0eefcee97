"""Learning-rate schedules: pure functions ``step -> lr`` evaluated on a tensor step (no host sync).

Each matches the ``torch.optim.lr_scheduler`` class of the same idea when that scheduler is stepped
once per optimizer step: the rate used by update ``k`` (0-based) is ``schedule(k)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .._errors import check_nonneg, check_nonneg_int, check_number, fail
from ._base import Schedule


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    check_nonneg("optim.constant(lr)", "lr", lr)
    return lambda step: lr + 0 * step


def multistep(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    r"""``lr * gamma ** #{m in milestones : m <= step}`` (``torch.optim.lr_scheduler.MultiStepLR``).

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> s = optim.multistep(0.1, [2, 4], gamma=0.5)
        >>> [round(float(s(torch.tensor(k))), 4) for k in range(5)]
        [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    api = "optim.multistep(lr, milestones, gamma)"
    check_nonneg(api, "lr", lr)
    check_nonneg(api, "gamma", gamma)
    ms = [check_nonneg_int(api, "milestone", m) for m in milestones]
    if list(ms) != sorted(ms):
        fail(api, "`milestones` must be increasing", ms, "Sort them, e.g. [1500, 2500].")

    def schedule(step: torch.Tensor) -> torch.Tensor:
        passed = (step >= torch.tensor(ms, dtype=step.dtype, device=step.device)).sum()
        return lr * gamma ** passed.to(step.dtype)

    return schedule


def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    r"""``min_lr + (lr - min_lr)(1 + cos(pi * min(step, T) / T)) / 2``.

    Equals ``CosineAnnealingLR(T_max=T)`` for ``step <= T``; after ``T`` it stays at ``min_lr``
    (torch's schedule is periodic and rises again).
    """
    api = "optim.cosine(lr, total_steps, min_lr)"
    check_nonneg(api, "lr", lr)
    check_nonneg(api, "min_lr", min_lr)
    if check_nonneg_int(api, "total_steps", total_steps) == 0:
        fail(api, "`total_steps` must be >= 1", total_steps)

    def schedule(step: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(step, max=total_steps) / total_steps
        return min_lr + (lr - min_lr) * (1 + torch.cos(math.pi * frac)) / 2

    return schedule


def warmup(schedule: Schedule | float, steps: int, start_factor: float = 0.0) -> Schedule:
    r"""Linear warm-up: ``schedule(step) * (f + (1 - f) * min(step, W) / W)`` with
    ``f = start_factor`` (``LinearLR(start_factor=f, total_iters=W)`` chained with ``schedule``)."""
    api = "optim.warmup(schedule, steps, start_factor)"
    check_nonneg_int(api, "steps", steps)
    check_number(api, "start_factor", start_factor, 0, 1)
    if not callable(schedule):
        check_nonneg(api, "schedule", schedule)
    base = schedule if callable(schedule) else constant(schedule)
    if steps == 0:
        return base

    def warmed(step: torch.Tensor) -> torch.Tensor:
        ramp = start_factor + (1 - start_factor) * torch.clamp(step, max=steps) / steps
        return base(step) * ramp

    return warmed
