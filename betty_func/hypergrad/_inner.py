r"""What a method pulls a cotangent back through: the inner problem, seen from above.

Every method has one entry, ``method.pullback(inner, θ, x, v, init, with_info) -> (x̄, info)``:
the cotangent ``v`` on the inner solution θ pulled back to the outer variables ``x``. ``inner``
gives the method what it may use, all pure functions of explicit inputs:

* ``inner.grad(θ, x)``: the optimality map :math:`g(\theta, x) = \nabla_\theta L` (``.key`` is a
  stable identity of the loss, for once-per-loss checks);
* ``inner.linearize(θ, x) -> (g, pull)`` with ``pull(u) = ((∂θ g)ᵀu, (∂x g)ᵀu)``: Hessian-vector
  products and the mixed term from one linearization;
* ``inner.grad_outer(θ, x)``: :math:`\nabla_x L` at θ (finite-difference mixed terms);
* ``inner.updates``: for unrolled methods, the updates to differentiate through
  (:class:`Updates`), or None;
* ``inner.start``: ``x -> θ₀``, where the inner problem starts from its outer variables (mlo: a
  lower's ``reset``; first-order methods), or None / absent;
* ``inner.optimizer`` / ``inner.optimizer_state``: the inner problem's optimizer and its state
  at θ (mlo: the lower's own, after its update; ``hypergrad.grad``: ``optimizer_state=``), or
  None / absent (SAMA reads them).

:func:`hypergrad.grad` builds it from ``inner_loss(θ, λ, *args)`` (:class:`LossInner`);
``mlo.solve`` builds one per lower problem, whose ``grad`` is that problem's total gradient
with its own lower problems at their responses. A method written against this protocol works in
both.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from torch.func import grad

from .._autodiff import vjp
from ._checks import depends

PyTree = Any
Loss = Callable[..., Any]


class Keyed:
    """A function with a stable ``key`` (the user's loss) for per-loss caches."""

    def __init__(self, fn: Callable, key: Any):
        self.fn, self.key = fn, key

    def __call__(self, *a: Any) -> Any:
        return self.fn(*a)


class Updates(NamedTuple):
    """``steps`` updates ``(θ, state) -> step(θ, state, x, i)`` from ``(theta0, state0)``;
    ``cached``: a pullback of the same updates already taken at this point (or None); ``rng``:
    the RNG state they started from (replayed when they are recomputed; None: as it is)."""
    theta0: PyTree
    state0: PyTree
    steps: int
    step: Callable[[PyTree, PyTree, PyTree, int], tuple]
    cached: Optional[Callable[[PyTree], PyTree]] = None
    rng: Optional[tuple] = None


class LossGrad:
    """``(θ, λ) -> ∇ loss(θ, λ, *args)`` in θ (``argnum=0``) or λ (``argnum=1``), with the loss
    checked for scalar output and for depending on the differentiated argument. ``key`` is the
    user's loss, a stable identity for per-loss caches (bound methods: their function)."""

    def __init__(self, api: str, loss: Loss, argnum: int, args: tuple):
        name = ("inner_params", "outer_params")[argnum]
        self._fn = grad(depends(api, "inner_loss", loss, name), argnums=argnum)
        self.key, self._args = getattr(loss, "__func__", loss), args

    def __call__(self, theta: PyTree, lam: PyTree) -> PyTree:
        return self._fn(theta, lam, *self._args)


class LossInner:
    """The inner problem of :func:`hypergrad.grad`: ``inner_loss(θ, λ, *args)``;
    ``optimizer_state``: the inner optimizer's state at θ, for methods that read it (SAMA)."""

    # ``x -> θ₀``: set (by first_order) where the inner params start from the outer ones, else
    # absent (an annotation only: methods look it up with getattr(inner, "start", None))
    start: Callable[[PyTree], PyTree]

    def __init__(self, api: str, inner_loss: Loss, args: tuple,
                 updates: Optional[Updates] = None, optimizer_state: Any = None):
        self.grad = LossGrad(api, inner_loss, 0, args)
        self.grad_outer = LossGrad(api, inner_loss, 1, args)
        self.key, self.updates = self.grad.key, updates
        self.optimizer_state = optimizer_state

    def linearize(self, theta: PyTree, lam: PyTree) -> tuple[PyTree, Callable]:
        return vjp(self.grad, theta, lam)
