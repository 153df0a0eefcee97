"""Compiling the step: one ``torch.compile(fullgraph=True)`` graph per pattern of updates."""
from __future__ import annotations

import functools
import itertools
import time
import types
from typing import Any, Callable, Optional

import torch
import torch.utils._pytree as torch_pytree

from .._errors import fail
from ._graph import Graph
from ._step import step as pure_step


def stepper(g: Graph, compile: Any, replicate: Optional[Callable] = None,
            report: Optional[Callable] = None, batched: bool = False,
            skip_nonfinite: bool = False) -> Callable:
    """The function ``(names, starts, *state) -> ...`` that runs a step: eager, or compiled whole
    (``fullgraph=True``: a graph break is an error, never a silent fallback) once per pattern of
    updating problems, cached on the program; ``report(seconds)`` hears each compile's time.
    ``run(..., logs=False)`` (eager) skips the logging work.
    ``batched``: every tensor of the state and the batches has a leading axis of independent
    programs, and the step is ``torch.vmap``-ed over it (inside the compiled graph).
    ``skip_nonfinite``: an update with a NaN or inf is dropped (see ``_step.step``)."""
    kw: dict[str, Any] = {"replicate": replicate, "skip_nonfinite": skip_nonfinite}
    if not compile:
        if not batched:
            return functools.partial(pure_step, g, **kw)
        return lambda names, starts, *state, logs=True: _vmapped(functools.partial(
            pure_step, g, names, starts, logs=logs, **kw))(*state)
    options = compile_options(compile)
    cache = g.compiled.setdefault((repr(sorted(options.items())), replicate, batched,
                                   skip_nonfinite), {})

    def run(names: tuple, starts: tuple, *state: Any, logs: bool = True) -> Any:
        """Compiled, the logs are always computed (inside the graph they cost next to nothing,
        and a second graph per pattern would double the compile time). The graph takes the
        latest batches it reads (:func:`reads_batches`) and not the others', so that a batch
        drawn later (None before) does not change its inputs."""
        if not names:  # nothing updates (inside an unrolled window): nothing to compile
            return pure_step(g, names, starts, *state, **kw)
        *front, last, carries = state
        seen = {n: last[n] for n in reads_batches(g, names)}
        key = (names, starts, tuple(n for n in sorted(seen) if seen[n] is None))
        first = key not in cache
        if first:
            cache[key] = torch.compile(_pattern(g, names, starts, kw, batched), **options)
        t0 = time.perf_counter()
        out = cache[key](*front, seen, carries)
        if first and report is not None:
            report(time.perf_counter() - t0)
        return (*out[:3], {**last, **out[3]}, *out[4:])
    return run


def reads_batches(g: Graph, names: tuple) -> frozenset:
    """The problems whose latest batches a step updating ``names`` reads: the lowers it
    evaluates without updating them (an updating problem's losses see the batches it draws)."""
    return frozenset().union(*(g.descendants[n] for n in names)) - frozenset(names)


def _pattern(g: Graph, names: tuple, starts: tuple, kw: dict, batched: bool) -> Callable:
    """The step of one pattern of updates as a function of the state alone, with a code object
    of its own: dynamo caches compiled frames per code object (``recompile_limit`` of them,
    then ``fullgraph=True`` fails), so each pattern of each program gets its own cache instead
    of sharing one across every program a process compiles (a ``functools.partial`` would:
    torch.compile wraps every partial in the same function)."""
    def pattern_step(*state: Any) -> Any:
        return pure_step(g, names, starts, *state, **kw)
    return _fresh(_vmapped(pattern_step) if batched else pattern_step)


def split_none(tree: Any) -> tuple[list, tuple]:
    """``(children, context)``: ``tree``'s leaves other than None, and what rebuilds it
    (:func:`join_none`). Registered pytree nodes flatten this way so that ``vmap`` maps over
    tensors only (a problem without data has None batches, a problem without buffers None)."""
    leaves, spec = torch_pytree.tree_flatten(tree)
    idx = tuple(i for i, x in enumerate(leaves) if x is not None)
    return [leaves[i] for i in idx], (spec, idx, len(leaves))


def join_none(children: Any, ctx: tuple) -> Any:
    spec, idx, n = ctx
    leaves: list = [None] * n
    for i, c in zip(idx, children):
        leaves[i] = c
    return torch_pytree.tree_unflatten(leaves, spec)


class _Packed:
    """A pytree whose children are its tree's leaves other than None."""

    def __init__(self, tree: Any):
        self.tree = tree


torch_pytree.register_pytree_node(_Packed, lambda p: split_none(p.tree),
                                  lambda children, ctx: _Packed(join_none(children, ctx)),
                                  serialized_type_name="betty_func.mlo._Packed")


def _vmapped(fn: Callable) -> Callable:
    """``fn(*state)`` vmapped over the leading axis of every tensor in its inputs."""
    batched = torch.vmap(lambda packed: _Packed(fn(*packed.tree)))
    return lambda *state: batched(_Packed(state)).tree


def _fresh(fn: Callable) -> Callable:
    """A copy of ``fn`` (closure included) with a code object of its own."""
    code = fn.__code__.replace(co_name=f"{fn.__name__.strip('<>')}_{next(_COUNTER)}")
    out = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                             fn.__closure__)
    out.__kwdefaults__ = fn.__kwdefaults__
    return out


_COUNTER = itertools.count()


def compile_options(compile: Any) -> dict:
    """``torch.compile`` keyword arguments for ``compile=...``: True (inductor), a mode
    (``"reduce-overhead"``: CUDA graphs, ``"max-autotune"``...) or a dict of arguments (e.g.
    ``{"backend": "aot_eager"}``); ``fullgraph`` is always True."""
    api = "solve(..., compile)"
    if compile is True:
        return {"fullgraph": True}
    if isinstance(compile, str):
        from torch._inductor import list_mode_options
        modes = list(list_mode_options())
        if compile not in modes:
            fail(api, "`compile` names no torch.compile mode", repr(compile),
                 f"Pass one of {modes}, True, or a dict of torch.compile arguments.")
        return {"fullgraph": True, "mode": compile}
    if isinstance(compile, dict):
        if compile.get("fullgraph", True) is not True:
            fail(api, "the step always compiles as one graph (fullgraph=True)", compile,
                 "Leave `fullgraph` out.")
        return {**compile, "fullgraph": True}
    fail(api, "`compile` must be False, True, a torch.compile mode or a dict of its arguments",
         repr(compile), "Pass e.g. compile=True or compile='reduce-overhead'.", exc=TypeError)
