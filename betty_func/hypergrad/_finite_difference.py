r"""Finite-difference mixed term (DARTS' second-order approximation)."""
from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch.func import grad, vjp, vmap

from .. import tree
from .._errors import check_positive
from ._checks import depends, ensure, tracks

PyTree = Any


def _devices(theta: PyTree) -> list:
    return list({x.device for x in tree.leaves(theta) if x.device.type != "cpu"})


def _check_coupling(api: str, loss: Callable, theta: PyTree, lam: PyTree, args: tuple) -> None:
    """Raise unless ∇_λ loss depends on θ (else the difference is a silent zero: a loss that
    ignores θ, or one of the form f(θ) + g(λ)). One ``vjp`` probe over θ; RNG left untouched."""
    def probe(th: PyTree) -> PyTree:
        out = grad(loss, argnums=1)(th, lam, *args)
        ensure(api, tracks(out), "the gradient of `inner_loss` in `outer_params` does not depend "
               "on `inner_params`, so the finite-difference mixed term would be a silent zero",
               "The inner loss must couple inner and outer params (check argument order).")
        return out
    with torch.random.fork_rng(devices=_devices(theta)):
        vjp(probe, theta)


def _seen(cache: weakref.WeakSet, key: Any) -> bool:
    try:
        return key in cache
    except TypeError:  # not weak-referenceable (a C builtin): check every call
        return False


def _remember(cache: weakref.WeakSet, key: Any) -> None:
    try:
        cache.add(key)
    except TypeError:
        pass


def _pair_grads(loss: Callable, plus: PyTree, minus: PyTree, lam: PyTree, args: tuple,
                batched: bool) -> tuple[PyTree, PyTree]:
    """∇_λ loss at θ+ and θ-, with the same random draws (dropout masks) for both."""
    g = grad(loss, argnums=1)
    if batched:
        pair = tree.map(lambda a, b: torch.stack([a, b]), plus, minus)
        both = vmap(lambda th: g(th, lam, *args), randomness="same")(pair)
        return tree.map(lambda x: x[0], both), tree.map(lambda x: x[1], both)
    with torch.random.fork_rng(devices=_devices(plus)):
        g_plus = g(plus, lam, *args)
    return g_plus, g(minus, lam, *args)


def finite_difference(eps: float = 0.01, batched: bool = True) -> Callable[..., PyTree]:
    r"""Return ``mixed(inner_loss, θ, λ, args, p)`` :math:`\approx (\nabla^2_{\lambda\theta} L)\,p`
    by a central difference of :math:`\nabla_\lambda L` along ``p``:

    .. math:: \frac{\nabla_\lambda L(\theta + \epsilon p, \lambda)
              - \nabla_\lambda L(\theta - \epsilon p, \lambda)}{2\epsilon},
              \qquad \epsilon = \text{eps} / \|p\|

    (DARTS' scaling). Error :math:`O(\epsilon^2)`; exact when ``L`` is quadratic in θ. Cost: two
    gradient passes, no second-order autograd. θ is never mutated. Both evaluations use the same
    random numbers: ``batched=True`` evaluates them as one ``vmap(randomness="same")`` pass (pure,
    compiles); ``batched=False`` runs them one after the other, replaying the RNG state (for
    losses ``vmap`` cannot batch, e.g. BatchNorm updating running statistics; eager only).
    The first call with a given ``inner_loss`` also checks (one extra ``vjp``, eager only) that
    :math:`\nabla_\lambda L` depends on θ at all, so a decoupled loss is an error, not a zero.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> L = lambda th, lam: (lam * th ** 2).sum() / 2
        >>> one = torch.ones(2, dtype=torch.float64)
        >>> m = hg.finite_difference()(L, one, one, (), 3 * one)
        >>> [round(v, 9) for v in m.tolist()]
        [3.0, 3.0]
    """
    api = "hypergrad.finite_difference(eps, batched)"
    check_positive(api, "eps", eps)
    checked: weakref.WeakSet = weakref.WeakSet()

    def mixed(inner_loss: Callable, theta: PyTree, lam: PyTree, args: tuple, p: PyTree) -> PyTree:
        loss = depends(api, "inner_loss", inner_loss, "outer_params")
        key = getattr(inner_loss, "__func__", inner_loss)  # bound methods: key on the function
        if not torch.compiler.is_compiling() and not _seen(checked, key):
            _check_coupling(api, loss, theta, lam, args)
            _remember(checked, key)
        n = tree.norm(p)
        step = eps / torch.where(n > 0, n, torch.ones_like(n))
        g_plus, g_minus = _pair_grads(loss, tree.axpy(step, p, theta), tree.axpy(-step, p, theta),
                                      lam, args, batched)
        return tree.scale(1 / (2 * step), tree.sub(g_plus, g_minus))

    return mixed
