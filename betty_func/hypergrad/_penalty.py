r"""A fully first-order hypergradient: the value-function penalty of F2SA (Kwon et al., ICML
2023) and BOME (Liu et al., NeurIPS 2022), from gradients of the inner loss only."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import torch

from .. import tree
from .._errors import check_positive, check_positive_int, check_type, fail
from ._method import HypergradInfo

PyTree = Any
Multiplier = Union[float, Callable[[torch.Tensor], Any]]
API = "hypergrad.penalty(steps, lr, multiplier, warm_start)"


class PenaltyState(NamedTuple):
    """What :func:`penalty` carries between calls: its two sequences and the call count."""
    y: PyTree             # the penalized sequence (argmin of v.y / nu + L)
    z: PyTree             # the inner loss's own sequence (argmin of L)
    # calls so far (int64): the multiplier schedule's argument (a field shadowing tuple.count)
    count: torch.Tensor  # type: ignore[assignment]


class Penalty:
    r"""The penalty form of the bilevel problem, :math:`\min_x F(x, y) + \nu\,(L(x, y) -
    \min_z L(x, z))`, whose gradient in :math:`x` at :math:`y_\nu = \arg\min_y F + \nu L` tends to
    the hypergradient as :math:`\nu \to \infty` (F2SA's Lemma; BOME's value-function view).
    Two sequences, :math:`z` on :math:`L` alone and :math:`y` on :math:`F/\nu + L` with :math:`F`
    linearized at θ (:math:`v = \nabla_\theta F`):

    .. math:: z \leftarrow z - \alpha\nabla_\theta L(z, x), \quad
              y \leftarrow y - \alpha\,(v / \nu + \nabla_\theta L(y, x)) \quad (K \text{ steps
              each}), \qquad \bar x = \nu\,(\nabla_x L(y, x) - \nabla_x L(z, x)).

    Both start from θ at every call; with ``warm_start`` (F2SA's Algorithm 1) they continue
    from where the previous call left them, so a few steps per call track the moving optima.
    (:math:`z` makes the estimate indifferent to θ not being stationary: without it, θ's drift
    over the :math:`K` steps would enter multiplied by :math:`\nu`.) ``multiplier`` may be a
    schedule :math:`\nu_t` of the call count (F2SA raises it, e.g. :math:`\nu_0 (t+1)^{1/3}`:
    its bias falls as it grows). The carried state (:class:`PenaltyState`) follows the carry
    protocol (``_method.py``): ``mlo`` keeps and checkpoints it. Only first derivatives of
    :math:`L`: no Hessian product, no second-order autograd (friendly to data parallel and very
    large lowers). Cost: :math:`2K + 1` gradient passes (:math:`2K + 2` warm-started). Bias:
    :math:`O(1/\nu)` from the curvature of :math:`\nabla L` in θ (none when :math:`L` is
    quadratic in θ: then, from θ, it is a :math:`K`-term Neumann series of step α computed from
    gradient differences, error :math:`(1 - \alpha\mu)^K`). Build with :func:`penalty`.
    """

    unrolls = False

    def __init__(self, steps: int, lr: float, multiplier: Multiplier, warm_start: bool):
        self.steps, self.lr, self.multiplier, self.warm_start = steps, lr, multiplier, warm_start
        self.carries = warm_start or callable(multiplier)

    def __repr__(self) -> str:
        nu = getattr(self.multiplier, "__name__", repr(self.multiplier))
        return (f"hypergrad.penalty(steps={self.steps}, lr={self.lr}, multiplier={nu}"
                + (", warm_start=True)" if self.warm_start else ")"))

    def init_carry(self, theta: PyTree) -> PenaltyState:
        """Before the first call: both sequences at θ, count 0."""
        leaf = tree.leaves(theta)[0]
        return PenaltyState(theta, theta, torch.zeros((), dtype=torch.int64, device=leaf.device))

    def pullback(self, inner: Any, theta: PyTree, x: PyTree, v: PyTree,
                 init: Optional[PenaltyState] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        """The method protocol (``_inner.py``): ``v`` on θ* pulled back to ``x``."""
        carry = self._start(theta, init)
        nu = self.multiplier
        if callable(nu):
            nu = nu(carry.count.to(tree.leaves(theta)[0].dtype))
        a, shared = self.lr, not self.warm_start  # from θ both take ∇L(θ) first: computed once
        y, z, first = carry.y, carry.z, None
        for _ in range(self.steps):
            g = inner.grad(y, x)
            first = g if first is None else first
            y = tree.axpy(-a, tree.add(tree.scale(1.0 / nu, v), g), y)
            z = tree.axpy(-a, first if shared and z is theta else inner.grad(z, x), z)
        back = tree.scale(nu, tree.sub(inner.grad_outer(y, x), inner.grad_outer(z, x)))
        info = None
        if with_info:
            norm = tree.norm(first) if shared else None  # ∇L at θ, computed only from θ
            nxt = PenaltyState(y, z, carry.count + 1) if self.carries else None
            info = HypergradInfo(None, torch.tensor(self.steps), norm, nxt)
        return back, info

    def _start(self, theta: PyTree, init: Optional[PenaltyState]) -> PenaltyState:
        if init is None:
            return self.init_carry(theta)
        if not self.carries:
            fail(API, "`init` is read only by a penalty that carries state (warm_start=True or "
                 "a multiplier schedule)", type(init).__name__,
                 "Drop init=, or build hypergrad.penalty(..., warm_start=True).")
        if not isinstance(init, PenaltyState):
            fail(API, "`init` must be the PenaltyState of the previous call (info.solution)",
                 type(init).__name__, "Pass init=info.solution from return_info=True.",
                 exc=TypeError)
        tree.check_same(API, init.y, theta, ("init.y", "inner_params"))
        tree.check_same(API, init.z, theta, ("init.z", "inner_params"))
        if not self.warm_start:  # a schedule alone: the sequences restart from θ
            return PenaltyState(theta, theta, init.count)
        return init


def penalty(steps: int = 20, lr: float = 0.1, multiplier: Multiplier = 100.0,
            warm_start: bool = False) -> Penalty:
    r"""The fully first-order penalty hypergradient (:class:`Penalty`): ``steps`` gradient steps
    of rate ``lr`` (below :math:`2 / \lambda_{\max}` of the inner Hessian) on :math:`L` and on
    :math:`v^\top y / \nu + L(y, x)`, and the penalty's gradient with :math:`\nu` =
    ``multiplier``: a number, or a schedule ``count -> ν`` of the calls so far (a tensor, so it
    compiles; e.g. ``lambda t: 10 * (t + 1) ** (1 / 3)``). ``warm_start=True``: the sequences
    continue from the previous call (in ``mlo``: kept in ``State.carries``; in
    ``hypergrad.grad``: pass ``init=info.solution``).

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2 + (th ** 2).sum() / 2  # θ* = λ/2
        >>> F = lambda th, lam: (th ** 2).sum() / 2                                 # dF/dλ = λ/4
        >>> g = hg.grad(F, L, hg.penalty(steps=30, lr=0.5))
        >>> [round(x, 6) for x in g(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 2.0])).tolist()]
        [0.25, 0.5]
    """
    check_positive_int(API, "steps", steps)
    check_positive(API, "lr", lr)
    check_type(API, "warm_start", warm_start, bool, "True or False", "Pass warm_start=True.")
    if callable(multiplier):
        first = multiplier(torch.zeros((), dtype=torch.float64))
        if not (isinstance(first, (int, float, torch.Tensor)) and float(first) > 0):
            fail(API, "a `multiplier` schedule must give a positive number at count 0",
                 repr(first), "Return e.g. 10 * (t + 1) ** (1 / 3) for the count t.")
    else:
        check_positive(API, "multiplier", multiplier)
    return Penalty(steps, lr, multiplier, warm_start)
