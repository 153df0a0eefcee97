"""``nn.Module`` -> pure function of explicit parameters (and buffers), via ``functional_call``.

Nothing is written into the module: parameters are a dict passed in, and buffers that a module
updates in training mode (BatchNorm running statistics) are explicit state returned as an output.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.func import functional_call

from ._errors import fail

__all__ = ["Functional", "functional", "load"]

Params = dict[str, torch.Tensor]


class Functional:
    """A module seen as pure functions. Build with :func:`functional`.

    * ``f(params, *inputs)`` -> output, with ``self.buffers`` as (unchanged) buffers.
    * ``f.stateful(params, buffers, *inputs)`` -> ``(output, new_buffers)``: buffers updated by the
      forward (BatchNorm in training mode) come back as new tensors; the inputs are not touched.
    * ``f.params`` / ``f.buffers``: detached copies of the module's trainable parameters / buffers.
    * ``f.train(mode)`` / ``f.eval()``: a new ``Functional`` whose calls run in that mode.
    """

    def __init__(self, module: nn.Module, training: bool):
        self.module, self.training = module, training
        self.params: Params = {k: v.detach().clone() for k, v in module.named_parameters()
                               if v.requires_grad}
        self.buffers: Params = {k: v.detach().clone() for k, v in module.named_buffers()}
        self._names = frozenset(k for k, _ in module.named_parameters()) | frozenset(
            k for k, _ in module.named_buffers())

    def __repr__(self) -> str:
        return f"Functional({type(self.module).__name__}, training={self.training})"

    def _call(self, tensors: Params, inputs: tuple, kwargs: dict) -> Any:
        unknown = [k for k in tensors if k not in self._names]
        if unknown:  # strict=False would drop them silently and use the module's own tensors
            fail(f"nn.functional({type(self.module).__name__})(params, *inputs)",
                 f"`params` has names the module does not have: {sorted(unknown)}",
                 f"module tensors: {sorted(self._names)[:8]}",
                 "Key params by the module's named_parameters() (e.g. 'fc.weight').")
        if self.module.training != self.training:
            self.module.train(self.training)
        return functional_call(self.module, tensors, inputs, kwargs, strict=False)

    def __call__(self, params: Params, *inputs: Any, **kwargs: Any) -> Any:
        bufs = {k: v.clone() for k, v in self.buffers.items()} if self.training else self.buffers
        return self._call({**params, **bufs}, inputs, kwargs)

    def stateful(self, params: Params, buffers: Params, *inputs: Any,
                 **kwargs: Any) -> tuple[Any, Params]:
        """Forward with explicit buffers; returns ``(output, new_buffers)`` and mutates nothing."""
        new = {k: v.clone() for k, v in buffers.items()}
        return self._call({**params, **new}, inputs, kwargs), new

    def train(self, mode: bool = True) -> "Functional":
        out = Functional.__new__(Functional)
        out.__dict__.update(self.__dict__, training=mode)
        return out

    def eval(self) -> "Functional":
        return self.train(False)


def functional(module: nn.Module, training: Optional[bool] = None) -> Functional:
    """Wrap ``module`` as pure functions of explicit parameters.

    ``training`` defaults to the module's current mode. Parameters with ``requires_grad=False`` are
    treated as constants (read from the module, not from ``params``).

    Example:
        >>> import torch
        >>> from betty_func import nn as bnn
        >>> f = bnn.functional(torch.nn.Linear(3, 2))
        >>> sorted(f.params)
        ['bias', 'weight']
        >>> f(f.params, torch.ones(4, 3)).shape
        torch.Size([4, 2])
    """
    if not isinstance(module, nn.Module):
        fail("nn.functional(module)", "`module` must be a torch.nn.Module",
             type(module).__name__, "Pass e.g. nn.Sequential(...).", exc=TypeError)
    return Functional(module, module.training if training is None else training)


def load(module: nn.Module, params: Params, buffers: Optional[Params] = None) -> nn.Module:
    """Copy ``params`` (and ``buffers``) into ``module`` in place, for saving or inference.

    Example: ``torch.save(load(net, result.params["classifier"]).state_dict(), "net.pt")``.
    """
    known = dict(module.named_parameters()) | dict(module.named_buffers())
    new = dict(params) | dict(buffers or {})
    unknown = sorted(set(new) - set(known))
    if unknown:
        fail("nn.load(module, params, buffers)", f"names {unknown} are not in the module",
             f"module has {sorted(known)}", "Pass the params of this module's `functional`.")
    with torch.no_grad():
        for k, v in new.items():
            if known[k].shape != v.shape:
                fail("nn.load(module, params, buffers)", f"shape of {k!r} differs",
                     f"{tuple(v.shape)} vs module's {tuple(known[k].shape)}")
            known[k].copy_(v)
    return module
