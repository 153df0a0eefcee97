r"""Finite-difference mixed term (DARTS' second-order approximation)."""
from __future__ import annotations

from typing import Any, Callable, Optional, cast

import torch
from torch.func import vmap

from .. import tree
from .._autodiff import plain
from .._errors import check_positive
from ._checks import Once, ensure_coupled, rng_kept
from ._exact_mixed import MixedTerm

PyTree = Any


def _coupled(api: str, grad_lam: Callable, lam: PyTree) -> Callable:
    """``θ -> ∇_λ L(θ, λ)``, raising inside a transform over θ unless it depends on θ (else the
    difference is a silent zero: a loss that ignores θ, or one of the form f(θ) + g(λ))."""
    def probe(th: PyTree) -> PyTree:
        out = grad_lam(th, lam)
        ensure_coupled(api, out, "outer_params", "inner_params", "the finite-difference mixed term")
        return out
    return probe


def _pair_grads(grad_lam: Callable, plus: PyTree, minus: PyTree, lam: PyTree,
                batched: bool) -> tuple[PyTree, PyTree]:
    """∇_λ L at θ+ and θ-, with the same random draws (dropout masks) for both."""
    if batched:
        pair = tree.map(lambda a, b: torch.stack([a, b]), plus, minus)
        both = vmap(lambda th: grad_lam(th, lam), randomness="same")(pair)
        return tree.map(lambda x: x[0], both), tree.map(lambda x: x[1], both)
    with rng_kept(plus):
        g_plus = grad_lam(plus, lam)
    return g_plus, grad_lam(minus, lam)


def finite_difference(eps: float = 0.01,
                      batched: Optional[bool] = None) -> MixedTerm:
    r"""Return ``mixed(grad_theta, grad_lam, θ, λ, p)``
    :math:`\approx (\nabla^2_{\lambda\theta} L)\,p` by a central difference of
    :math:`\nabla_\lambda L` (given as ``grad_lam``) along ``p``:

    .. math:: \frac{\nabla_\lambda L(\theta + \epsilon p, \lambda)
              - \nabla_\lambda L(\theta - \epsilon p, \lambda)}{2\epsilon},
              \qquad \epsilon = \text{eps} / \|p\|

    (DARTS' scaling). Error :math:`O(\epsilon^2)`; exact when ``L`` is quadratic in θ. Cost: two
    gradient passes, no second-order autograd. θ is never mutated. Both evaluations use the same
    random numbers: ``batched=True`` evaluates them as one ``vmap(randomness="same")`` pass (pure,
    compiles); ``batched=False`` runs them one after the other, replaying the RNG state (for
    losses ``vmap`` cannot batch, e.g. BatchNorm updating running statistics; eager only);
    ``batched=None`` (default) batches inside ``torch.func`` transforms and compiled code and
    runs the two passes in turn in plain eager code, where plain autograd is faster than vmap.
    The first call with a given ``grad_lam`` also checks (one extra ``vjp``, eager only) that
    :math:`\nabla_\lambda L` depends on θ at all, so a decoupled loss is an error, not a zero.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> g_lam = lambda th, lam: th ** 2 / 2            # ∇λ of (lam * th²).sum() / 2
        >>> one = torch.ones(2, dtype=torch.float64)
        >>> m = hg.finite_difference()(None, g_lam, one, one, 3 * one)
        >>> [round(v, 9) for v in m.tolist()]
        [3.0, 3.0]
    """
    api = "hypergrad.finite_difference(eps, batched)"
    check_positive(api, "eps", eps)
    once = Once()

    def mixed(grad_theta: Callable, grad_lam: Callable, theta: PyTree, lam: PyTree,
              p: PyTree) -> PyTree:
        key = getattr(grad_lam, "key", grad_lam)  # a stable identity for the loss behind grad_lam
        once.probe(key, _coupled(api, grad_lam, lam), theta, theta)
        n = tree.norm(p)
        step = eps / torch.where(n > 0, n, torch.ones_like(n))
        g_plus, g_minus = _pair_grads(grad_lam, tree.axpy(step, p, theta),
                                      tree.axpy(-step, p, theta), lam,
                                      batched if batched is not None else not plain())
        return tree.scale(1 / (2 * step), tree.sub(g_plus, g_minus))

    knobs = f"eps={eps}" + ("" if batched is None else f", batched={batched}")
    out = cast(MixedTerm, mixed)  # the function itself, given its name
    out.name = f"hypergrad.finite_difference({knobs})"
    return out
