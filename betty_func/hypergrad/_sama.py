r"""SAMA (Choe et al., "Making Scalable Meta Learning Practical", NeurIPS 2023): the lower's own
optimizer step stands in for the inverse Hessian of implicit differentiation."""
from __future__ import annotations

from typing import Any, Optional

from torch.func import jvp

from .. import optim, tree
from .._autodiff import vjp
from .._errors import check_positive, fail
from ..optim._base import check_optimizer
from ._finite_difference import finite_difference
from ._method import HypergradInfo

PyTree = Any


class Sama:
    r"""The hypergradient through the lower's *next optimizer step* instead of its best
    response: with :math:`u(g; s)` the update the lower's optimizer makes from gradient
    :math:`g = \nabla_\theta L(\theta, \lambda)` at its state :math:`s`,

    .. math:: \bar\lambda = (\partial_\lambda g)^\top\, (\partial_g u)^\top\, v,

    :math:`(\partial_g u)^\top v` exact (one ``vjp`` of the update: for Adam the diagonal
    :math:`\partial(\eta\,\hat m / (\sqrt{\hat v} + \epsilon)) / \partial g` at the current moments,
    for SGD :math:`\eta I`) and the mixed product by darts' central difference. Build with
    :func:`sama`. Cost: one gradient pass, the update's ``vjp`` (elementwise), two gradient
    passes of :math:`\nabla_\lambda L`; no Hessian product. Bias: the one-step response replaces
    the best response (exact for a lower that converges in one step of its optimizer, as
    DARTS' second-order term).
    """

    unrolls = False
    reads_optimizer = True  # the method protocol's inner.optimizer / inner.optimizer_state

    def __init__(self, eps: float, optimizer: Optional[optim.Optimizer]):
        self.eps, self.optimizer = eps, optimizer
        self._mixed = finite_difference(eps)

    def __repr__(self) -> str:
        return f"hypergrad.sama(eps={self.eps})"

    def _update(self, inner: Any, theta: PyTree) -> Any:
        """``g -> u(g; s)``: the lower's optimizer update at its current state."""
        opt = self.optimizer if self.optimizer is not None else getattr(inner, "optimizer", None)
        if opt is None:
            fail(repr(self), "SAMA differentiates the lower's optimizer step, and no optimizer "
                 "is known here", None, "Pass hypergrad.sama(optimizer=optim.adam(...)) (in "
                 "mlo.solve the lower problem's own optimizer is used).", exc=TypeError)
        state = getattr(inner, "optimizer_state", None)
        state = opt.init(theta) if state is None else state
        _refuse_wrappers(repr(self), state)
        return lambda g: opt.update(g, state, theta)[0]

    def pullback(self, inner: Any, theta: PyTree, lam: PyTree, v: PyTree,
                 init: Optional[PyTree] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        """The method protocol (``_inner.py``): ``v`` on θ pulled back to λ."""
        update, g = self._update(inner, theta), inner.grad(theta, lam)
        _, pull = vjp(update, g)
        p = pull(v)[0]  # (∂u/∂g)ᵀ v
        back = self._mixed(inner.grad, inner.grad_outer, theta, lam, p)
        info = HypergradInfo(None, None, tree.norm(g), p) if with_info else None
        return back, info

    def response_jvp(self, inner: Any, theta: PyTree, lam: PyTree, dlam: PyTree) -> PyTree:
        r"""The one-step move of θ when λ moves by ``dlam``: :math:`(\partial_g u)(\partial_\lambda
        g)\,d\lambda` (forward mode)."""
        dg = jvp(lambda lv: inner.grad(theta, lv), (lam,), (dlam,))[1]
        update = self._update(inner, theta)
        return jvp(update, (inner.grad(theta, lam),), (dg,))[1]


def _refuse_wrappers(api: str, state: PyTree) -> None:
    """Accumulation and loss scaling change what one update is: their Jacobian would be zero
    between applied updates, or divided by the loss scale."""
    todo = [state]
    while todo:
        node = todo.pop()
        if isinstance(node, (optim.AccumulateState, optim.LossScaleState)):
            what = "accumulates gradients (optim.accumulate)" if isinstance(
                node, optim.AccumulateState) else "scales its loss (optim.loss_scaled / fp16)"
            fail(api, f"the lower's optimizer {what}, so one update's Jacobian is not the step "
                 "SAMA stands on", type(node).__name__, "Use SAMA on a lower whose optimizer "
                 "updates at every step without loss scaling, or another method.")
        if isinstance(node, (tuple, list)):
            todo.extend(node)
        elif isinstance(node, dict):
            todo.extend(node.values())


def sama(eps: float = 0.01, optimizer: Optional[optim.Optimizer] = None) -> Sama:
    r"""SAMA's hypergradient (:class:`Sama`): the lower's optimizer step's Jacobian in place of
    the inverse Hessian, darts' finite-difference mixed term (radius ``eps / ‖p‖``, as darts';
    Betty's ``sama_adam_alpha`` defaults to 1.0, which the Betty front end passes, but on
    ``examples/architecture_search.py``'s network that radius gives the mixed term a cosine of
    −0.45 with the exact one where 0.01 gives 0.98). With SGD (rate η) it equals
    ``hypergrad.darts(eps, scale=η)``: DARTS' second-order term as its paper states it.
    ``optimizer``: the lower's optimizer for ``hypergrad.grad`` (pass its state as
    ``optimizer_state=``); in ``mlo.solve`` the lower problem's own optimizer and current state
    are used.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg, optim
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2          # ∂λ∇θL = -I
        >>> F = lambda th, lam: (th ** 2).sum() / 2                  # θ+ = θ - 0.5 (θ - λ)
        >>> g = hg.grad(F, L, hg.sama(optimizer=optim.sgd(0.5)))
        >>> [round(x, 5) for x in g(torch.tensor([1.0, 2.0]), torch.zeros(2)).tolist()]
        [0.5, 1.0]
    """
    check_positive("hypergrad.sama(eps, optimizer)", "eps", eps)
    if optimizer is not None:
        check_optimizer("hypergrad.sama(eps, optimizer)", "optimizer", optimizer)
    return Sama(eps, optimizer)

