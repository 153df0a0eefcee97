r"""First-order hypergradients: the lower's response Jacobian taken as the identity (FOMAML)."""
from __future__ import annotations

from typing import Any, Optional

from .. import tree
from .._autodiff import vjp
from .._errors import fail
from ._inner import LossInner
from ._method import HypergradInfo, Loss, outer_grads

PyTree = Any
API = "hypergrad.first_order()"


class FirstOrder:
    r"""The lower's params after its inner loop, :math:`\theta_K`, are taken to move with the
    point they started from, :math:`\theta_0 = s(x)`, one for one
    (:math:`\partial\theta_K/\partial\theta_0 \approx I`), so a cotangent ``v`` on
    :math:`\theta_K` reaches the uppers only through that start:

    .. math:: \bar x = \Big(\frac{\partial s}{\partial x}\Big)^{\!\top} v

    First-order MAML (Finn et al., ICML 2017, §5.2; Nichol et al. 2018): in ``mlo.solve``,
    :math:`s` is the lower's ``reset`` (e.g. the meta-params expanded over a task batch, whose
    transpose sums the tasks' cotangents); in ``hypergrad.grad``, :math:`s(\lambda) = \lambda`
    (inner and outer params of one structure), so the hypergradient is
    :math:`\nabla_\lambda F + \nabla_\theta F`. Cost: one VJP of ``s`` (none for the
    identity), no Hessian product and no pass through the inner updates. Bias: every term of
    the inner loop's curvature is dropped (for K SGD steps of rate α, the exact Jacobian is
    :math:`\prod_k (I - \alpha H_k)`), and a lower's dependence on its uppers through its loss
    is ignored. Composes with ``vmap`` and ``torch.compile``.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> L = lambda th, lam: ((th - lam) ** 2).sum()       # θ starts at λ
        >>> F = lambda th, lam: (th ** 2).sum() / 2
        >>> hg.grad(F, L, hg.first_order())(torch.tensor([1.0, 2.0]), torch.zeros(2))
        tensor([1., 2.])
    """

    unrolls = False
    through_start = True  # reaches the uppers through the lower's start (mlo: its reset)

    def __repr__(self) -> str:
        return API

    def pullback(self, inner: Any, theta: PyTree, x: PyTree, v: PyTree,
                 init: Optional[PyTree] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        """``(∂s/∂x)ᵀ v`` with ``s = inner.start`` (None: this lower does not start from its
        uppers, so the first-order hypergradient would be an exact zero: refused)."""
        start = getattr(inner, "start", None)
        if start is None:
            fail(API, "the lower does not start from its uppers' params, so the first-order "
                 "hypergradient (through its start alone) would be an exact zero", None,
                 "Give the lower problem reset=lambda theta, *, meta: meta (MAML's start), "
                 "or use an implicit or unrolled method.")
        _, pull = vjp(start, x)
        info = HypergradInfo(None, None, None, None) if with_info else None
        return pull(v)[0], info

    def __call__(self, outer_loss: Loss, inner_loss: Loss, theta: PyTree, lam: PyTree,
                 args: tuple, init: Optional[PyTree], with_info: bool
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        tree.check_same(f"hypergrad.grad(outer_loss, inner_loss, {API})", theta, lam,
                        ("inner_params", "outer_params"))
        v, direct = outer_grads(API, outer_loss, theta, lam, args)
        inner = LossInner(API, inner_loss, args)
        inner.start = lambda lv: lv  # noqa: E731  (the inner params start at the outer ones)
        back, info = self.pullback(inner, theta, lam, v, init, with_info)
        return tree.add(direct, back), info


def first_order() -> FirstOrder:
    """First-order MAML's hypergradient (:class:`FirstOrder`): the cotangent on the adapted
    params pulled back through the lower's start alone. No Hessian products."""
    return FirstOrder()
