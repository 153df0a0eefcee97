"""One place that formats user-facing errors as ``api(args): what is wrong. Got X. How to fix.``"""
from __future__ import annotations

from typing import NoReturn


def fail(api: str, what: str, got: object | None = None, fix: str | None = None,
         exc: type[Exception] = ValueError) -> NoReturn:
    """Raise ``exc`` with the project's error layout (DESIGN.md §3)."""
    msg = f"{api}: {what}."
    if got is not None:
        msg += f" Got {got}."
    if fix:
        msg += f" {fix}"
    raise exc(msg)


def check_nonneg_int(api: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 0, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail(api, f"`{name}` must be an integer >= 0", repr(value),
             f"Pass a non-negative int, e.g. {name}=10.")
    return value


def check_positive(api: str, name: str, value: object) -> float:
    """Return ``value`` if it is a real number > 0, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        fail(api, f"`{name}` must be a number > 0", repr(value), f"Pass a positive {name}.")
    return float(value)
