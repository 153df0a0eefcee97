"""What ``solve`` reports while it runs: log writers, the history, validation, early stopping."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

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


def writers(steps: int, start: int, logdir: Optional[str], progress: bool, console: bool) -> list:
    out: list = []
    if progress:
        out.append(Progress(steps, start))
    if console:
        out.append(Console(steps))
    if logdir:
        out.append(TensorBoard(logdir))
    return out


def record(history: dict, writers: list, t: int, scalars: dict) -> None:
    for k, v in scalars.items():
        history.setdefault(k, []).append((t, v))
    for w in writers:
        (w.update if isinstance(w, Progress) else w.write)(t, scalars)


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


def validated(metrics: dict, params: dict, t: int, history: dict, writers: list, stop: dict,
              early: Optional[EarlyStopping], roll_back: bool) -> bool:
    record(history, [w for w in writers if not isinstance(w, Progress)], t,
            {f"validation/{k}": float(v) for k, v in metrics.items()})
    if not metrics and early is None and not roll_back:
        return False
    key = judged_by(metrics, early, roll_back) or next(iter(metrics))
    value, sign = float(metrics[key]), (-1.0 if early and early.mode == "max" else 1.0)
    if stop["best"] is None or sign * value < sign * stop["best"][key]:
        stop["best"], stop["bad"] = {k: float(v) for k, v in metrics.items()}, 0
        if roll_back:
            stop["best_params"] = tree.map(lambda x: x.detach().clone(), params)
    else:
        stop["bad"] += 1
    return early is not None and stop["bad"] >= early.patience
