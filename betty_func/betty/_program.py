"""Betty methods as pure functions: a problem's ``training_step`` becomes ``loss(params, batch,
*, <other problems>)`` by running it with every problem's module reparametrized
(``torch.func.functional_call`` on one module that holds them all); hooks that edit a module in
place (``param_callback``) run on the real modules outside every differentiated path."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from .._errors import fail
from ._report import scalar
from ._tensors import positional_arity


class Holder(nn.Module):
    """Every problem's module as a submodule (``p0``, ``p1``, ...), so that one
    ``functional_call`` swaps all their tensors; ``forward(fn, *args)`` runs ``fn``."""

    def __init__(self, modules: dict):
        super().__init__()
        self.keys = {}
        for i, (name, module) in enumerate(modules.items()):
            self.keys[name] = f"p{i}"
            self.add_module(f"p{i}", module)

    def forward(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)

    def call(self, values: dict, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` with problem ``n``'s module holding ``values[n]`` (a name -> tensor dict
        of its parameters and buffers); tensors not given keep the module's own."""
        flat = {f"{self.keys[n]}.{k}": v for n, tensors in values.items()
                for k, v in tensors.items()}
        return functional_call(self, flat, (fn, *args), strict=False)


def loss_for(engine: Any, name: str, reads: tuple, has_state: bool) -> Callable:
    """The ``mlo.Problem`` loss of problem ``name``: ``(params, batch, *, <reads>[, state])``."""
    problem = engine._problems[name]
    api = f"{type(problem).__name__} '{name}'.training_step(batch)"

    def loss(params: dict, batch: Any, **kw: Any) -> Any:
        state = kw.pop("state", None)
        own = {k: v.clone() for k, v in state.items()} if state is not None else None
        out = engine._holder.call(engine._values(name, params, kw, own), problem.training_step,
                                  batch)
        value, metrics = split_output(api, out)
        return (value, metrics, own) if has_state else (value, metrics)

    params = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("batch", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    kws = [inspect.Parameter(r, inspect.Parameter.KEYWORD_ONLY) for r in reads]
    if has_state:
        kws.append(inspect.Parameter("state", inspect.Parameter.KEYWORD_ONLY))
    # read by inspect.signature (mlo checks a loss's keywords); typeshed's functions lack it
    loss.__signature__ = inspect.Signature(params + kws)  # type: ignore[attr-defined]
    loss.__name__ = loss.__qualname__ = f"{name}_training_step"
    return loss


def split_output(api: str, out: Any) -> tuple:
    """``training_step``'s return as ``(loss, {metric: scalar tensor})``."""
    if isinstance(out, dict):
        if "loss" not in out:
            fail(api, "a dict returned by training_step must hold the loss under 'loss'",
                 f"keys {sorted(out)}", "Return {'loss': loss, 'acc': acc, ...}.")
        value, rest = out["loss"], {k: v for k, v in out.items() if k != "loss"}
    else:
        value, rest = out, {}
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else \
            type(value).__name__
        fail(api, "the loss must be a scalar tensor", got, "Reduce it with .mean() or .sum().",
             exc=TypeError)
    metrics = {}
    for k, v in rest.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            metrics[k] = v.detach().reshape(())
        else:  # a number (else a clear error)
            metrics[k] = torch.tensor(scalar(api, k, v), dtype=torch.float64)
    return value, metrics


def project_for(engine: Any, name: str) -> Callable:
    """``param_callback`` as ``mlo.Problem(project=...)``, after each update the optimizer
    applies (with gradient accumulation: every ``gradient_accumulation``-th; never in the
    checks before the first step): the module holds the new params, the hook edits them in
    place (``p.data.clamp_(...)``), what it holds is the result. Betty 0.1's
    ``param_callback(self, params)`` gets ``self.trainable_parameters()``."""
    problem = engine._problems[name]
    hook = problem.param_callback
    with_params = positional_arity(hook) >= 1

    def project(theta: dict) -> dict:
        if name not in engine._apply:
            return theta
        engine._hold(name, theta)
        with torch.no_grad():
            hook(problem.trainable_parameters()) if with_params else hook()
        return engine._read(name)

    return project
