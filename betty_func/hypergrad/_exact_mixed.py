r"""The exact mixed second-derivative term of an implicit hypergradient."""
from __future__ import annotations

from typing import Any, Callable, Protocol, cast

from torch.func import vjp

from ._checks import Once, ensure_coupled

PyTree = Any
GradFn = Callable[[PyTree, PyTree], PyTree]
API = "hypergrad.exact_mixed()"


class MixedTerm(Protocol):
    r"""What ``implicit(mixed=...)`` takes: ``mixed(grad_theta, grad_lam, θ, λ, p)``
    :math:`= (\partial_\lambda g)^\top p`, with its ``name`` (shown in the method's repr)."""

    name: str

    def __call__(self, grad_theta: Callable, grad_lam: Callable, theta: PyTree, lam: PyTree,
                 p: PyTree) -> PyTree: ...


class ExactMixed(MixedTerm, Protocol):
    """:func:`exact_mixed`: also ``check(grad_theta, θ, λ)``, its coupling check alone."""

    check: Callable[[GradFn, PyTree, PyTree], None]


def exact_mixed() -> ExactMixed:
    r"""Return ``mixed(grad_theta, grad_lam, θ, λ, p)`` :math:`= (\partial_\lambda g)^\top p`
    with :math:`g(\theta, \lambda) = \nabla_\theta L` given as ``grad_theta``; for a loss this is
    :math:`\partial_\lambda \langle \nabla_\theta L(\theta, \lambda), p\rangle`.

    One ``vjp`` of :math:`\lambda \mapsto g(\theta, \lambda)`: a gradient pass plus one backward
    pass (≈ one Hessian-vector product). ``grad_lam`` is unused. A gradient in θ that ignores λ is
    an error, not a silent zero.

    ``mixed.check(grad_theta, θ, λ)`` runs that coupling check alone, once per loss (keyed by
    ``grad_theta.key``): :class:`Implicit` calls it when it takes the mixed term from the same
    linearization as its Hessian-vector products instead of calling ``mixed``.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> g_theta = lambda th, lam: lam * th          # ∇θ of (lam * th²).sum() / 2
        >>> hg.exact_mixed()(g_theta, None, torch.ones(2), torch.ones(2),
        ...                  torch.full((2,), 3.0)).tolist()
        [3.0, 3.0]
    """
    once = Once()

    def coupled(grad_theta: GradFn, theta: PyTree) -> Callable[[PyTree], PyTree]:
        def g(lv: PyTree) -> PyTree:
            out = grad_theta(theta, lv)
            ensure_coupled(API, out, "inner_params", "outer_params", "the implicit part")
            return out
        return g

    def mixed(grad_theta: GradFn, grad_lam: GradFn, theta: PyTree, lam: PyTree,
              p: PyTree) -> PyTree:
        return vjp(coupled(grad_theta, theta), lam)[1](p)[0]

    def check(grad_theta: GradFn, theta: PyTree, lam: PyTree) -> None:
        once.probe(getattr(grad_theta, "key", grad_theta), coupled(grad_theta, theta), lam, theta)

    out = cast(ExactMixed, mixed)  # the function itself, given its two attributes
    out.check = check
    out.name = "hypergrad.exact_mixed()"
    return out
