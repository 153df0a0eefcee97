r"""A fully first-order hypergradient: the value-function penalty of F2SA (Kwon et al., ICML
2023) and BOME (Liu et al., NeurIPS 2022), from gradients of the inner loss only."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import tree
from .._errors import check_positive, check_positive_int
from ._method import HypergradInfo

PyTree = Any


class Penalty:
    r"""The penalty form of the bilevel problem, :math:`\min_x F(x, y) + \nu\,(L(x, y) -
    \min_z L(x, z))`, whose gradient in :math:`x` at :math:`y_\nu = \arg\min_y F + \nu L` tends to
    the hypergradient as :math:`\nu \to \infty` (F2SA's Lemma; BOME's value-function view).
    F2SA's two sequences run from the lower's current θ, :math:`z` on :math:`L` alone and
    :math:`y` on :math:`F/\nu + L` with :math:`F` linearized at θ (:math:`v = \nabla_\theta F`):

    .. math:: z \leftarrow z - \alpha\nabla_\theta L(z, x), \quad
              y \leftarrow y - \alpha\,(v / \nu + \nabla_\theta L(y, x)) \quad (K \text{ steps
              each}), \qquad \bar x = \nu\,(\nabla_x L(y, x) - \nabla_x L(z, x)).

    (:math:`z` makes the estimate indifferent to θ not being stationary: without it, θ's drift
    toward the solution over the :math:`K` steps would enter multiplied by :math:`\nu`.) Only
    first derivatives of :math:`L`: no Hessian product, no second-order autograd (friendly to data
    parallel and very large lowers). Cost: :math:`2K + 1` gradient passes. Bias:
    :math:`O(1/\nu)` from the curvature of :math:`\nabla L` in θ (none when :math:`L` is
    quadratic in θ: then it is a :math:`K`-term Neumann series of step α computed from gradient
    differences, error :math:`(1 - \alpha\mu)^K`). Build with :func:`penalty`. Unlike F2SA's
    and BOME's outer loops, :math:`y` and :math:`z` restart from θ at every call (no state kept
    between steps) and :math:`\nu` is fixed.
    """

    unrolls = False

    def __init__(self, steps: int, lr: float, multiplier: float):
        self.steps, self.lr, self.multiplier = steps, lr, multiplier

    def __repr__(self) -> str:
        return (f"hypergrad.penalty(steps={self.steps}, lr={self.lr}, "
                f"multiplier={self.multiplier})")

    def pullback(self, inner: Any, theta: PyTree, x: PyTree, v: PyTree,
                 init: Optional[PyTree] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        """The method protocol (``_inner.py``): ``v`` on θ* pulled back to ``x``."""
        nu, a = self.multiplier, self.lr
        y, z, first = theta, theta, None
        for _ in range(self.steps):
            g = inner.grad(y, x)
            first = g if first is None else first
            y = tree.axpy(-a, tree.add(tree.scale(1.0 / nu, v), g), y)
            z = tree.axpy(-a, first if z is theta else inner.grad(z, x), z)
        back = tree.scale(nu, tree.sub(inner.grad_outer(y, x), inner.grad_outer(z, x)))
        info = None
        if with_info:
            info = HypergradInfo(None, torch.tensor(self.steps), tree.norm(first), None)
        return back, info


def penalty(steps: int = 20, lr: float = 0.1, multiplier: float = 100.0) -> Penalty:
    r"""The fully first-order penalty hypergradient (:class:`Penalty`): ``steps`` gradient steps
    of rate ``lr`` (below :math:`2 / \lambda_{\max}` of the inner Hessian) on :math:`L` and on
    :math:`v^\top y / \nu + L(y, x)` from θ, and the penalty's gradient with :math:`\nu` =
    ``multiplier``.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2 + (th ** 2).sum() / 2  # θ* = λ/2
        >>> F = lambda th, lam: (th ** 2).sum() / 2                                 # dF/dλ = λ/4
        >>> g = hg.grad(F, L, hg.penalty(steps=30, lr=0.5))
        >>> [round(x, 6) for x in g(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 2.0])).tolist()]
        [0.25, 0.5]
    """
    api = "hypergrad.penalty(steps, lr, multiplier)"
    check_positive_int(api, "steps", steps)
    check_positive(api, "lr", lr)
    check_positive(api, "multiplier", multiplier)
    return Penalty(steps, lr, multiplier)
