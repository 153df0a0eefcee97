"""``mlo.Problem``: one optimization problem of a multilevel program, as plain data."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import torch

from .. import hypergrad as hg
from .. import optim, tree
from .._errors import check_nonneg_int, fail
from ..optim._base import check_optimizer
from ..optim._hyper import state_like

PyTree = Any
Method = Any  # anything with the method protocol's `pullback` (hypergrad/_inner.py)


@dataclass(frozen=True, eq=False)
class Problem:
    """A problem: ``loss(params, batch, **reads)`` minimized over ``params`` by ``optimizer``.

    * ``loss`` reads other problems through keyword-only parameters named after them (uppers see
      their lowers' current best-response params; lowers see their uppers' params) and returns a
      scalar or ``(scalar, metrics_dict)``.
    * ``params``: a pytree of float tensors. Leaves that require grad (a module's
      ``nn.Parameter`` objects, ``dict(model.named_parameters())``) are fine: ``mlo.init`` detaches
      them (derivatives come from ``torch.func``; an autograd tape on them would keep every
      step's graph alive), and the module itself is never written.
    * ``data``: an iterable (restarted at each epoch, e.g. a ``DataLoader``), a callable
      ``step -> batch``, or None (the ``env`` of ``solve`` supplies batches, or the loss gets None).
    * ``hypergrad``: how this problem's uppers differentiate through its best response: a method
      (default ``hypergrad.cg(maxiter=10)``) or ``{upper_name: method}`` to set it per edge.
    * ``unroll_steps``: updates of this problem per update of its uppers. ``accumulate``: batches
      averaged per update. ``warmup``: global steps before this problem's first update.
    * ``project(params) -> params`` after every update (Betty's ``param_callback``);
      ``reset(params, **reads) -> params`` before the first update of each inner loop (Betty's
      ``on_inner_loop_start``, e.g. MAML starting from the meta-parameters).
    * ``precision``: None (the params' dtype), ``"bf16"`` or ``"fp16"``: every evaluation of this
      problem's loss (its own updates and the hypergradients through it) runs under
      ``torch.autocast`` in that dtype on the params' device, CPU or CUDA; the loss value comes
      back in the params' dtype (float32), and gradients, linear solves and optimizer math stay in
      it. ``"fp16"`` adds dynamic loss scaling to the problem's own updates: its optimizer is
      wrapped by ``optim.loss_scaled`` (so its optimizer state is ``(state, LossScaleState)``), a
      step with inf/NaN gradients is skipped and counted (logged as ``skipped_steps`` with
      ``loss_scale``). Not with an unrolled method (its differentiated updates are not scaled).
    * ``state``: buffers (BatchNorm running statistics). The loss then takes a keyword-only
      ``state`` and returns ``(scalar, metrics, new_state)``; the new state is kept after this
      problem's own updates only (evaluations for other problems' hypergradients discard it).

    Example:
        >>> import torch
        >>> from betty_func import mlo, optim
        >>> p = mlo.Problem("inner", lambda w, batch, *, outer: ((w - outer) ** 2).sum(),
        ...                 torch.zeros(3), optim.sgd(0.1))
        >>> p.reads
        ('outer',)
    """
    name: str
    loss: Callable[..., Any]
    params: PyTree
    optimizer: optim.Optimizer
    data: Any = None
    hypergrad: Union[Method, Mapping[str, Method], None] = None
    unroll_steps: int = 1
    accumulate: int = 1
    warmup: int = 0
    project: Optional[Callable[[PyTree], PyTree]] = None
    reset: Optional[Callable[..., PyTree]] = None
    state: Optional[PyTree] = None
    precision: Optional[str] = None
    reads: tuple = field(init=False)
    reset_reads: tuple = field(init=False)

    def __post_init__(self) -> None:
        api = f"mlo.Problem({self.name!r}, loss, params, optimizer)"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            fail(api, "`name` must be a valid Python identifier (losses read problems by keyword)",
                 repr(self.name), "Use e.g. 'classifier' or 'reweight'.")
        if self.name == "state":
            fail(api, "`name` 'state' is reserved (a loss with buffers reads them as the "
                 "keyword `state`)", repr(self.name), "Pick another name, e.g. 'model'.")
        for what, fn in (("loss", self.loss), ("project", self.project), ("reset", self.reset)):
            if fn is not None and not callable(fn):
                fail(api, f"`{what}` must be callable", type(fn).__name__)
        tree.check_float(api, self.params, "params")
        check_optimizer(api, "optimizer", self.optimizer)
        for knob in ("unroll_steps", "accumulate"):
            if check_nonneg_int(api, knob, getattr(self, knob)) == 0:
                fail(api, f"`{knob}` must be >= 1", 0)
        check_nonneg_int(api, "warmup", self.warmup)
        if self.precision not in (None, "bf16", "fp16"):
            fail(api, "`precision` must be None, 'bf16' or 'fp16'", repr(self.precision))
        self._check_methods(api)
        if self.precision is not None:
            other = sorted({str(x.dtype) for x in tree.leaves(self.params)
                            if x.dtype != torch.float32})
            if other:
                fail(api, f"precision={self.precision!r} runs a float32 problem in lower "
                     "precision; its params must be float32 (autocast leaves other dtypes as "
                     "they are, so the option would do nothing)", other,
                     "Keep float32 params, or drop `precision`.")
        if self.precision == "fp16":
            if self.unrolled:
                fail(api, "precision='fp16' does not support an unrolled method (its updates are "
                     "differentiated, and loss scaling covers only plain updates)", "unrolled",
                     "Use precision='bf16', or an implicit method.")
            if optim.loss_scale(state_like(self.optimizer, self.params)) is None:
                object.__setattr__(self, "optimizer", optim.loss_scaled(self.optimizer))
        reads = _keyword_reads(api, self.loss)
        if ("state" in reads) != (self.state is not None):
            fail(api, "a problem with `state` needs a loss with a keyword-only `state` parameter, "
                 "and only then", f"state given: {self.state is not None}, loss reads: {reads}",
                 "Pass state=... and write loss(params, batch, *, state, ...) -> "
                 "(value, metrics, new_state), or neither.")
        object.__setattr__(self, "reads", tuple(r for r in reads if r != "state"))
        object.__setattr__(self, "reset_reads", _keyword_reads(api, self.reset, positional=1)
                           if self.reset is not None else ())

    def _methods(self) -> list:
        """The configured methods: the one method, or each per-edge one."""
        h = self.hypergrad
        return list(h.values()) if isinstance(h, Mapping) else [h]

    def _check_methods(self, api: str) -> None:
        for m in self._methods():
            if m is not None and not callable(getattr(m, "pullback", None)):
                fail(api, "`hypergrad` must be a hypergradient method or {upper: method}",
                     type(m).__name__, "Pass e.g. hypergrad.cg(maxiter=10) or hypergrad.darts() "
                     "(a method of your own needs a `pullback`: see hypergrad/_inner.py).",
                     exc=TypeError)
            if getattr(m, "through_start", False) and self.reset is None:
                fail(api, f"{m!r} reaches the uppers through where this problem starts each "
                     "inner loop, and it has no `reset`: its hypergradient would be an exact "
                     "zero", None, "Pass reset=lambda theta, *, meta: meta (MAML's start from "
                     "the meta-params), or use an implicit or unrolled method.")
            if not getattr(m, "unrolls", False):
                continue
            steps, opt = getattr(m, "steps", None), getattr(m, "optimizer", None)
            if (steps is not None and steps != self.unroll_steps) or \
                    (opt is not None and opt is not self.optimizer):
                fail(api, "an unrolled method must unroll this problem's own updates: `steps`, "
                     "if given, must equal `unroll_steps` and `optimizer`, if given, must be this "
                     "problem's optimizer", f"steps={steps}, unroll_steps={self.unroll_steps}, "
                     f"same optimizer object: {opt is None or opt is self.optimizer}",
                     "Leave them out: hypergrad.unrolled() takes both from the problem.")

    def method_for(self, upper: str) -> Method:
        """The method an upper named ``upper`` uses to differentiate through this problem."""
        m = self.hypergrad.get(upper) if isinstance(self.hypergrad, Mapping) else self.hypergrad
        return m if m is not None else _DEFAULT

    @property
    def unrolled(self) -> bool:
        """True when a method differentiates through this problem's updates (a window)."""
        return any(getattr(m, "unrolls", False) for m in self._methods())


_DEFAULT = hg.cg(maxiter=10)


def _keyword_reads(api: str, fn: Callable, positional: int = 2) -> tuple:
    """Names of ``fn``'s keyword-only parameters (the problems it reads)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    pos = [p for p in sig.parameters.values()
           if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(pos) < positional and not any(p.kind == p.VAR_POSITIONAL
                                         for p in sig.parameters.values()):
        what = "`loss` must take (params, batch, *, <problem names>...)" if positional == 2 else \
            "`reset` must take (params, *, <problem names>...)"
        fail(api, what, f"signature {sig}", "Add the missing positional parameter.")
    required = [p for p in pos if p.default is p.empty]
    if len(required) > positional:
        extra = ", ".join(p.name for p in required[positional:])
        head = "loss(params, batch" if positional == 2 else "reset(params"
        fail(api, f"`{'loss' if positional == 2 else 'reset'}` takes {len(required)} positional "
             f"parameters; reads of other problems are keyword-only", f"signature {sig}",
             f"Write {head}, *, {extra}) so that each read is found by name.")
    return tuple(p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY)
