"""Checked loss wrappers: a non-scalar loss, or one that ignores the variable being differentiated,
is a clear error instead of a silent zero hypergradient.

Dependence is read from ``requires_grad`` *inside* a ``torch.func`` transform, which reflects only
that transform's level, so the check costs nothing (no extra pass) and works under vmap/compile.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch.func import vjp

from .. import tree
from .._errors import fail

Loss = Callable[..., torch.Tensor]


def scalar(api: str, name: str, out: Any) -> torch.Tensor:
    """Return ``out`` if it is a 0-d float tensor, else raise."""
    if not isinstance(out, torch.Tensor) or out.dim() != 0 or not out.is_floating_point():
        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else \
            type(out).__name__
        fail(api, f"`{name}` must return a scalar float tensor", got,
             "Reduce the loss to a scalar (e.g. `.mean()`).")
    return out


def tracks(x: Any) -> bool:
    """True if any leaf of ``x`` is tracked by the innermost active transform."""
    return any(leaf.requires_grad for leaf in tree.leaves(x))


def ensure(api: str, ok: bool, what: str, fix: str) -> None:
    """Raise ``api: what. How to fix.`` unless ``ok``."""
    if not ok:
        fail(api, what, None, fix)


def ensure_coupled(api: str, grad: Any, taken_in: str, depends_on: str, part: str) -> None:
    """Raise unless ``grad`` (the inner loss's gradient in ``taken_in``) is tracked by the
    transform over ``depends_on``: otherwise ``part`` of the hypergradient is a silent zero."""
    ensure(api, tracks(grad), f"the gradient of `inner_loss` in `{taken_in}` does not depend on "
           f"`{depends_on}`, so {part} would be a silent zero",
           "The inner loss must couple inner and outer params (check argument order).")


def rng_kept(x: Any) -> Any:
    """A context that restores the RNG states (CPU and the devices ``x`` lives on) on exit, so a
    probe that evaluates a random loss (dropout) does not shift the user's random stream."""
    devices = list({t.device for t in tree.leaves(x) if t.device.type != "cpu"})
    return torch.random.fork_rng(devices=devices)


class Once:
    """Remembers which losses passed a probe (weakly, keyed by the loss function), so a check
    that costs a pass runs once per loss, and never while ``torch.compile`` traces."""

    def probe(self, key: Any, fn: Callable, x: Any, rng_of: Any) -> None:
        """Once per ``key``: evaluate ``fn`` inside ``vjp`` over ``x`` (so ``fn``'s dependence
        checks see that transform; the pullback is never built), RNG states of ``rng_of``'s
        devices kept."""
        if self.due(key):
            with rng_kept(rng_of):
                vjp(fn, x)
            self.done(key)

    def __init__(self) -> None:
        self._seen: weakref.WeakSet = weakref.WeakSet()

    def due(self, key: Any) -> bool:
        if torch.compiler.is_compiling():
            return False
        try:
            return key not in self._seen
        except TypeError:  # not weak-referenceable (a C builtin): check every call
            return True

    def done(self, key: Any) -> None:
        try:
            self._seen.add(key)
        except TypeError:
            pass


def _quote(s: str) -> str:
    return s if " " in s else f"`{s}`"


def depends(api: str, name: str, loss: Loss, argname: str) -> Loss:
    """Wrap ``loss`` so that, inside a transform over ``argname``, independence raises an error."""
    def wrapped(*a: Any) -> torch.Tensor:
        out = scalar(api, name, loss(*a))
        ensure(api, out.requires_grad,
               f"{_quote(name)} does not depend on {_quote(argname)}, so its "
               "gradient would be a silent zero",
               f"Make {_quote(name)} use {_quote(argname)} (check "
               "the argument order).")
        return out
    return wrapped


def value_depending(api: str, name: str, loss: Loss, x: Any, *rest: Any) -> torch.Tensor:
    """``loss(x, *rest)``, evaluated inside a ``vjp`` over ``x`` alone so that a loss ignoring
    ``x`` raises even when outer transforms track ``rest``. The pullback is never built."""
    return vjp(lambda t: depends(api, name, loss, "inner_params")(t, *rest), x)[0]

