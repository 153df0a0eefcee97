"""One place that formats user-facing errors as ``api(args): what is wrong. Got X. How to fix.``"""
from __future__ import annotations

import inspect
import math
from typing import Callable, NoReturn


def fail(api: str, what: str, got: object | None = None, fix: str | None = None,
         exc: type[Exception] = ValueError) -> NoReturn:
    """Raise ``exc`` with the project's error layout (DESIGN.md §3)."""
    msg = f"{api}: {what}."
    if got is not None:
        msg += f" Got {got}."
    if fix:
        msg += f" {fix}"
    raise exc(msg)


def check_number(api: str, name: str, value: object, low: float | None = None,
                 high: float | None = None, *, open_low: bool = False, open_high: bool = False,
                 integer: bool = False) -> float:
    """Return ``value`` if it is a finite real number (an int where ``integer``) in the interval
    from ``low`` to ``high`` (open at an end where asked); else a ``TypeError`` for another type,
    a ``ValueError`` for NaN, an infinity or a number out of range."""
    kinds = (int,) if integer else (int, float)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, kinds):
        fail(api, f"`{name}` must be {kind}", f"{type(value).__name__} {value!r}",
             f"Pass {kind}, e.g. {name}={_example(low, high, integer)}.", exc=TypeError)
    if not math.isfinite(value):
        fail(api, f"`{name}` must be finite", repr(value),
             f"Pass a finite {name}, e.g. {name}={_example(low, high, integer)}.")
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if below or above:
        lo = "" if low is None else ("(" if open_low else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if open_high else "]")
        where = (f"in {lo}, {hi}" if low is not None and high is not None else
                 f"{'>' if open_low else '>='} {low:g}" if low is not None else
                 f"{'<' if open_high else '<='} {high:g}")
        fail(api, f"`{name}` must be {kind} {where}", repr(value),
             f"Pass e.g. {name}={_example(low, high, integer)}.")
    return value


def _example(low: float | None, high: float | None, integer: bool) -> str:
    if integer:
        return str(max(1, int(low or 0) + 1))
    if low is not None and high is not None:
        return f"{(low + high) / 2:g}"
    return f"{(low or 0) + 0.1:g}" if low is not None else f"{(high or 0) - 0.1:g}"


def check_nonneg_int(api: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 0, else raise a clear error."""
    return int(check_number(api, name, value, 0, integer=True))


def check_positive_int(api: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise a clear error."""
    return int(check_number(api, name, value, 1, integer=True))


def check_positive(api: str, name: str, value: object) -> float:
    """Return ``value`` if it is a finite real number > 0, else raise a clear error."""
    return float(check_number(api, name, value, 0, open_low=True))


def check_nonneg(api: str, name: str, value: object) -> float:
    """Return ``value`` if it is a finite real number >= 0, else raise a clear error."""
    return float(check_number(api, name, value, 0))


def check_type(api: str, name: str, value: object, kinds: type | tuple, expected: str,
               fix: str) -> None:
    """A ``TypeError`` unless ``value`` is one of ``kinds``."""
    if not isinstance(value, kinds):
        fail(api, f"`{name}` must be {expected}", type(value).__name__, fix, exc=TypeError)


def check_arity(api: str, what: str, fn: Callable, n: int, call: str) -> None:
    """A ``TypeError`` unless ``fn`` can be called with ``n`` positional arguments (as
    ``call`` shows); a function whose signature cannot be read passes."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*([None] * n))
    except TypeError:
        fail(api, f"{what} must take {n} positional argument{'s' if n != 1 else ''}: it is "
             f"called as {call}", f"signature {sig}", f"Write it as {call}.", exc=TypeError)
