"""Gradient clipping by global norm, as ``torch.nn.utils.clip_grad_norm_``."""
from __future__ import annotations

from typing import Any

import torch

from .. import tree
from .._errors import check_positive
from ._base import Optimizer


def clip_by_global_norm(max_norm: float) -> Optimizer:
    r"""Scale all gradients by :math:`\min(1, c / (\|g\|_2 + 10^{-6}))` with ``c = max_norm``.

    A stateless transformation; combine with an optimizer via ``chain``. No host sync.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> clip = optim.clip_by_global_norm(1.0)
        >>> g, _ = clip.update({"w": torch.tensor([3.0, 4.0])}, clip.init(None))
        >>> [round(v, 4) for v in g["w"].tolist()]
        [0.6, 0.8]
    """
    check_positive("optim.clip_by_global_norm(max_norm)", "max_norm", max_norm)

    def init(params: Any) -> tuple:
        return ()

    def update(grads: Any, state: tuple, params: Any = None) -> tuple[Any, tuple]:
        coef = torch.clamp(max_norm / (tree.norm(grads) + 1e-6), max=1.0)
        # in each leaf's dtype: the norm of mixed leaves is float64, and would promote a 0-d leaf
        return tree.map(lambda g: coef.to(g.dtype) * g, grads), state

    return Optimizer(init, update)
