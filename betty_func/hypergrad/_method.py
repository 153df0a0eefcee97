"""What every hypergradient method is: a callable with one signature, plus its diagnostics."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol

import torch
from torch.func import grad, grad_and_value

from ._checks import depends

PyTree = Any
Loss = Callable[..., torch.Tensor]


class HypergradInfo(NamedTuple):
    """Diagnostics as tensors (no host sync). ``None`` where a method has no such quantity."""
    residual_norm: Optional[torch.Tensor]    #: ||H p - v|| of an implicit method's solve
    iterations: Optional[torch.Tensor]       #: solver iterations (implicit), steps (unrolled)
    inner_grad_norm: Optional[torch.Tensor]  #: ||∇θ L|| where the method linearizes (stationarity)
    solution: Optional[PyTree]               #: the next call's `init` (p ≈ H⁻¹ ∇θF; a carry)


class Method(Protocol):
    """``method(outer_loss, inner_loss, inner_params, outer_params, args, init, with_info)``
    returns ``(d outer_loss / d outer_params, HypergradInfo or None)``.

    The carry protocol (optional): a method with ``carries = True`` keeps state from one call to
    the next, passed in as ``init`` and returned as ``HypergradInfo.solution`` (a warm-started
    solve's :math:`p`, a penalty method's sequences and step count); ``init_carry(inner_params)``
    gives the state before the first call, of the structure every later one has. ``mlo`` keeps
    it in ``State.carries`` (checkpointed, ``vmap``-ed, compiled like the params); in
    ``hypergrad.grad`` the caller passes it along."""

    def __call__(self, outer_loss: Loss, inner_loss: Loss, inner: PyTree, outer: PyTree,
                 args: tuple, init: Optional[PyTree], with_info: bool
                 ) -> tuple[PyTree, Optional[HypergradInfo]]: ...


def outer_grads(api: str, outer_loss: Loss, theta: PyTree, lam: PyTree,
                args: tuple) -> tuple[PyTree, PyTree]:
    r""":math:`(\nabla_\theta F, \nabla_\lambda F)` at ``(θ, λ)`` in one forward pass.

    The θ-gradient is taken inside the λ-transform, so independence of θ is detected (an error)
    while the direct term may legitimately be zero (most outer losses do not read λ).
    """
    loss = depends(api, "outer_loss", outer_loss, "inner_params")

    def value_with_v(lv: PyTree) -> tuple[torch.Tensor, PyTree]:
        v, value = grad_and_value(loss)(theta, lv, *args)
        return value, v

    direct, v = grad(value_with_v, has_aux=True)(lam)
    return v, direct

