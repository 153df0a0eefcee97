r"""Hessian-vector products :math:`v \mapsto \nabla^2 f(x)\,v` in two modes.

* ``reverse_over_reverse``: linearize :math:`\nabla f` once with ``vjp`` (one gradient pass, graph
  kept), then each product is one extra backward pass over that graph. ``H`` is symmetric, so the
  vector-Jacobian product is the Hessian-vector product.
* ``forward_over_reverse``: each product is a ``jvp`` of :math:`\nabla f` (a forward-mode pass
  through the gradient computation); nothing is kept between products.

Default: ``reverse_over_reverse``, measured faster here (``benchmarks/hvp_modes.py``: see the
README) and on par or better in memory for the few products an implicit solve needs.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, cast

from torch.func import jvp, vjp

PyTree = Any
GradFn = Callable[[PyTree], PyTree]
MatVec = Callable[[PyTree], PyTree]


class LinearizedMatVec(Protocol):
    r"""``v -> H v`` that also gives ``gradient()``: :math:`\nabla f(x)` once linearized (else
    None)."""

    gradient: Callable[[], Optional[PyTree]]

    def __call__(self, v: PyTree) -> PyTree: ...


def reverse_over_reverse(grad_fn: GradFn, x: PyTree) -> LinearizedMatVec:
    """``v -> H v`` with ``H`` the Jacobian of ``grad_fn`` at ``x``, via one cached ``vjp``.

    The linearization happens on the first product only, so a solver that never multiplies
    (``linsolve.identity``) pays nothing.

    Example:
        >>> import torch
        >>> from torch.func import grad
        >>> from betty_func import hypergrad as hg
        >>> hvp = hg.reverse_over_reverse(grad(lambda x: (x ** 3).sum()), torch.ones(2))
        >>> hvp(torch.ones(2)).tolist()
        [6.0, 6.0]
    """
    cache: dict[str, Any] = {}

    def matvec(v: PyTree) -> PyTree:
        if "vjp" not in cache:
            cache["grad"], cache["vjp"] = vjp(grad_fn, x)[:2]  # (value, pullback)
        return cache["vjp"](v)[0]

    out = cast(LinearizedMatVec, matvec)  # the function itself, given its gradient
    out.gradient = lambda: cache.get("grad")  # ∇f(x), free once linearized (else None)
    return out


def forward_over_reverse(grad_fn: GradFn, x: PyTree) -> MatVec:
    """``v -> H v`` via ``jvp(grad_fn, (x,), (v,))``: one forward-over-reverse pass per product.

    Example:
        >>> import torch
        >>> from torch.func import grad
        >>> from betty_func import hypergrad as hg
        >>> hvp = hg.forward_over_reverse(grad(lambda x: (x ** 3).sum()), torch.ones(2))
        >>> hvp(torch.ones(2)).tolist()
        [6.0, 6.0]
    """
    return lambda v: jvp(grad_fn, (x,), (v,))[1]
