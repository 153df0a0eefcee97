"""Small readers of modules and hooks shared by the front end's files."""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def positional_arity(fn: Any) -> int:
    """Required positional parameters of a bound method (``param_callback(self, params)``: 1)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in sig.parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


def trainable(module: nn.Module) -> dict:
    """``{name: tensor}`` of the module's parameters that require grad (detached)."""
    return {k: v.detach() for k, v in module.named_parameters() if v.requires_grad}


def buffers(module: nn.Module) -> dict:
    return {k: v.detach() for k, v in module.named_buffers()}
