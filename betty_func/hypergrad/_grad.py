"""``hypergrad.grad``: the one entry point that turns two losses and a method into a function."""
from __future__ import annotations

import functools
from typing import Any, Callable

from .. import tree
from .._errors import fail
from ._inner import LossInner
from ._method import Loss, Method, outer_grads

PyTree = Any
API = "hypergrad.grad(outer_loss, inner_loss, method)"


def grad(outer_loss: Loss, inner_loss: Loss, method: Method,
         return_info: bool = False) -> Callable[..., Any]:
    r"""The hypergradient :math:`\frac{d}{d\lambda} F(\theta^*(\lambda), \lambda)` as a pure
    function.

    Both losses are ``loss(inner_params, outer_params, *args) -> scalar``. The returned
    ``g(inner_params, outer_params, *args, init=None)`` gives a pytree shaped like
    ``outer_params``, direct term :math:`\nabla_\lambda F` included. For implicit methods
    ``inner_params`` is the (approximate) inner solution; for ``unrolled`` it is θ0. ``init``
    warm-starts an implicit method's linear solve; ``optimizer_state`` is the inner optimizer's
    state at ``inner_params`` for :func:`sama`. With ``return_info=True``, ``g`` returns
    ``(hypergrad, HypergradInfo)``. ``g`` composes with ``torch.vmap`` and ``torch.compile``.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2 + (th ** 2).sum() / 2  # θ* = λ/2
        >>> F = lambda th, lam: (th ** 2).sum() / 2                                 # dF/dλ = λ/4
        >>> g = hg.grad(F, L, hg.cg(maxiter=2))
        >>> g(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 2.0])).tolist()
        [0.25, 0.5]
    """
    for name, fn in (("outer_loss", outer_loss), ("inner_loss", inner_loss)):
        if not callable(fn):
            fail(API, f"`{name}` must be callable", type(fn).__name__,
                 f"Pass {name}(inner_params, outer_params, *args) -> scalar.", exc=TypeError)
    if not callable(getattr(method, "pullback", None)):
        fail(API, "`method` must be a hypergradient method (an object with the method "
             "protocol's `pullback`)", type(method).__name__,
             "Pass e.g. hypergrad.cg(maxiter=10) or hypergrad.unrolled(10, optim.sgd(0.1)); a "
             "linear solver goes inside one: hypergrad.implicit(linsolve.cg(10)).", exc=TypeError)
    # a method that only has the protocol's `pullback` (one written for mlo.solve) works here
    # too: inner_params is then the inner solution, and the direct term is added here
    run = method if callable(method) else functools.partial(_by_pullback, method)

    def g(inner_params: PyTree, outer_params: PyTree, *args: Any, init: PyTree = None,
          optimizer_state: Any = None) -> Any:
        tree.check_float(API, inner_params, "inner_params")
        tree.check_float(API, outer_params, "outer_params")
        if optimizer_state is not None:
            if not getattr(method, "reads_optimizer", False):
                fail(API, f"`optimizer_state` is read by methods of the inner optimizer's step "
                     f"(hypergrad.sama), not by {method!r}", None, "Drop optimizer_state=.",
                     exc=TypeError)
            hyper, info = _by_pullback(method, outer_loss, inner_loss, inner_params,
                                       outer_params, args, init, return_info, optimizer_state)
        else:
            hyper, info = run(outer_loss, inner_loss, inner_params, outer_params, args, init,
                              return_info)
        return (hyper, info) if return_info else hyper

    return g


def _by_pullback(method: Any, outer_loss: Loss, inner_loss: Loss, theta: PyTree, lam: PyTree,
                 args: tuple, init: PyTree, with_info: bool,
                 optimizer_state: Any = None) -> tuple:
    v, direct = outer_grads(API, outer_loss, theta, lam, args)
    inner = LossInner(API, inner_loss, args, optimizer_state=optimizer_state)
    back, info = method.pullback(inner, theta, lam, v, init, with_info)
    return tree.add(direct, back), info
