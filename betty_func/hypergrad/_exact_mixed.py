r"""The exact mixed second-derivative term of an implicit hypergradient."""
from __future__ import annotations

from typing import Any, Callable

from torch.func import grad, vjp

from ._checks import depends, ensure, tracks

PyTree = Any
Mixed = Callable[..., PyTree]


def exact_mixed() -> Mixed:
    r"""Return ``mixed(inner_loss, θ, λ, args, p)`` :math:`= \partial_\lambda
    \langle \nabla_\theta L(\theta, \lambda), p\rangle = (\nabla^2_{\lambda\theta} L)\, p`.

    Computed as the ``vjp`` of :math:`\lambda \mapsto \nabla_\theta L(\theta, \lambda)` with
    cotangent ``p``: one gradient pass plus one backward pass (≈ one Hessian-vector product).
    An inner loss whose gradient in θ ignores λ is an error, not a silent zero.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> L = lambda th, lam: (lam * th ** 2).sum() / 2          # ∇θL = lam*th -> mixed = th*p
        >>> hg.exact_mixed()(L, torch.ones(2), torch.ones(2), (), torch.full((2,), 3.0)).tolist()
        [3.0, 3.0]
    """
    api = "hypergrad.exact_mixed()"

    def mixed(inner_loss: Callable, theta: PyTree, lam: PyTree, args: tuple, p: PyTree) -> PyTree:
        loss = depends(api, "inner_loss", inner_loss, "inner_params")

        def grad_theta(l: PyTree) -> PyTree:
            g = grad(loss)(theta, l, *args)
            ensure(api, tracks(g), "the gradient of `inner_loss` in `inner_params` does not depend "
                   "on `outer_params`, so the hypergradient's implicit part would be a silent zero",
                   "Make the inner loss use the outer params (check argument order).")
            return g

        return vjp(grad_theta, lam)[1](p)[0]

    return mixed
