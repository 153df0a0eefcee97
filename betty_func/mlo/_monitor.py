"""What ``solve`` reports while it runs: log writers, the history, validation, early stopping."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .. import tree
from .._errors import check_positive_int, check_type, fail
from ..logging import Console, Progress, TensorBoard


@dataclass
class EarlyStopping:
    """Stop when validation ``metric`` has not improved for ``patience`` validations."""
    metric: str
    mode: str = "min"
    patience: int = 5

    def __post_init__(self) -> None:
        api = f"mlo.EarlyStopping({self.metric!r}, mode, patience)"
        check_type(api, "metric", self.metric, str, "a metric name (a str)",
                   "Name a key of the dict the validation function returns, e.g. 'loss'.")
        if self.mode not in ("min", "max"):
            fail(api, "`mode` must be 'min' or 'max'", repr(self.mode),
                 "Use 'min' for a loss, 'max' for an accuracy.")
        check_positive_int(api, "patience", self.patience)


def scalars(logs: dict) -> dict:
    return {f"{n}/{k}": float(v) for n, d in logs.items() for k, v in d.items()}


def loggers_of(log: Any) -> list:
    """The loggers of a ``mlo.Logging``: its built-ins (progress bar, console, TensorBoard under
    ``logdir``) then its ``loggers``."""
    out: list = []
    if log.progress:
        out.append(Progress())
    if log.console:
        out.append(Console())
    if log.logdir:
        out.append(TensorBoard(log.logdir))
    return out + list(log.loggers)


def emit(loggers: list, hook: str, *args: Any) -> None:
    """``logger.<hook>(*args)`` for each logger that has the hook (the protocol is duck-typed:
    a logger of your own needs only the hooks it uses)."""
    for lg in loggers:
        fn = getattr(lg, hook, None)
        if fn is not None:
            fn(*args)


def record(history: dict, loggers: list, t: int, scalars: dict) -> None:
    for k, v in scalars.items():
        history.setdefault(k, []).append((t, v))
    emit(loggers, "on_log", t, scalars)


def metrics_of(validate: Callable, params: dict) -> dict:
    """``validate(params)`` as ``{metric: float}``: None (a validate that only prints or logs)
    is ``{}``, a number is ``{"value": number}``; anything else is an error."""
    out = validate(params)
    if out is None:
        return {}
    out = out if isinstance(out, dict) else {"value": out}
    bad = {k: type(v).__name__ for k, v in out.items() if not isinstance(k, str) or not (
        isinstance(v, (int, float)) and not isinstance(v, bool)
        or isinstance(v, torch.Tensor) and v.numel() == 1)}
    if bad:
        fail("solve(..., validation)", "`validation.fn` must return None, a number or a dict "
             "{metric name: number}", bad, "Return e.g. {'accuracy': acc}.")
    return {k: float(v) for k, v in out.items()}


def judged_by(metrics: dict, early: Optional[EarlyStopping], roll_back: bool) -> Optional[str]:
    """The metric early stopping or roll-back judges by (None when neither is on); an error
    when ``validate`` does not return it."""
    if early is None and not roll_back:
        return None
    key = early.metric if early else next(iter(metrics), None)
    if key is None:
        fail("mlo.Validation(fn, every, roll_back=True)", "`fn` returned no metric to pick the "
             "best params by", metrics, "Return a dict such as {'loss': value} from `fn`.")
    if key not in metrics:
        fail("mlo.Validation(fn, every, early_stopping)", f"`fn` returned no metric {key!r}",
             sorted(metrics), "Name a metric that `fn` returns.")
    return key


def validated(metrics: dict, params: dict, t: int, history: dict, loggers: list, stop: dict,
              early: Optional[EarlyStopping], roll_back: bool) -> Optional[str]:
    """Record ``metrics`` (history ``validation/<metric>``, ``on_validation``) and judge them:
    the early-stopping message when the run must stop now, else None."""
    for k, v in metrics.items():
        history.setdefault(f"validation/{k}", []).append((t, float(v)))
    emit(loggers, "on_validation", t, {k: float(v) for k, v in metrics.items()})
    if not metrics and early is None and not roll_back:
        return None
    key = judged_by(metrics, early, roll_back) or next(iter(metrics))
    value, sign = float(metrics[key]), (-1.0 if early and early.mode == "max" else 1.0)
    if stop["best"] is None or sign * value < sign * stop["best"][key]:
        stop["best"], stop["bad"] = {k: float(v) for k, v in metrics.items()}, 0
        stop["best_step"], stop["key"] = t, key
        if roll_back:
            stop["best_params"] = tree.map(lambda x: x.detach().clone(), params)
    else:
        stop["bad"] += 1
    if early is None or stop["bad"] < early.patience:
        return None
    return (f"early stopping: validation {key} has not improved for {early.patience} "
            f"validations; best {stop['best'][key]:.4g} at step {stop.get('best_step', '?')}")


def rolled_back(stop: dict) -> str:
    """The message of a roll-back to the best params."""
    key = stop.get("key") or next(iter(stop["best"]))
    value = stop["best"][key]
    return (f"rolled back to the params of step {stop.get('best_step', '?')} (validation "
            f"{key} {value:.4g})")
