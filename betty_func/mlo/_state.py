"""The functional API: ``state = mlo.init(problems, graph)``; ``mlo.step(state, batches)``.

A :class:`State` holds everything a multilevel program carries from one global step to the next
(params, optimizer states, buffers, each problem's latest batch) as a pytree of tensors; the
program and the step count ride along as static data. ``mlo.step`` is pure: no host sync, no
logging, nothing kept elsewhere, so ``torch.vmap`` over a leading axis of the state runs a batch
of independent programs (seeds, hyperparameter settings) in one call. ``mlo.solve`` is a loop
over the same step with data, logging, validation and checkpoints around it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.utils._pytree as torch_pytree

from .. import tree
from .._autodiff import detached
from .._errors import fail
from ._compile import join_none, split_none, stepper
from ._data import Source
from ._graph import Graph, build
from ._preflight import peek, preflight
from ._problem import Problem
from ._sweep import initial_carries

PyTree = Any
API = "mlo.step(state, batches)"


@dataclass(frozen=True, eq=False)
class State:
    """A program between two global steps: ``step`` steps done; ``params``, ``opt_states`` and
    ``states`` (buffers) by problem name; ``last_batch``, each problem's latest batch (read when
    its response is differentiated at a step where it does not update); ``carries``, what the
    hypergradient methods that keep state between steps hold (``{lower: {upper: carry}}``: a
    warm-started CG's solution, a penalty method's sequences; empty when none does). A pytree
    whose leaves are the tensors (``graph`` and ``step`` are static)."""
    graph: Graph
    step: int
    params: dict
    opt_states: dict
    states: dict
    last_batch: dict
    carries: dict


def _flatten(s: State) -> tuple[list, tuple]:
    """Children: every leaf but None (a problem with no batch yet, a state with no buffer): those
    stay in the static context with the program and the step, so ``vmap`` maps over tensors."""
    children, ctx = split_none((s.params, s.opt_states, s.states, s.last_batch, s.carries))
    return children, (s.graph, s.step, ctx)


def _unflatten(children: Any, meta: tuple) -> State:
    graph, t, ctx = meta
    return State(graph, t, *join_none(children, ctx))


torch_pytree.register_pytree_node(State, _flatten, _unflatten,
                                  serialized_type_name="betty_func.mlo.State")


def init(problems: Sequence[Problem], graph: Mapping, batches: Optional[Mapping] = None) -> State:
    """The state at step 0: the problems' params, fresh optimizer states, their buffers; checked
    as ``solve`` checks a program (graph, reads, and one evaluation of every loss at a sample
    batch: ``batches[name]``, else the first of the problem's ``data``, else None).

    Example:
        >>> import torch
        >>> from betty_func import mlo, optim
        >>> lo = mlo.Problem("lo", lambda w, b, *, hi: ((w - hi) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.5))
        >>> hi = mlo.Problem("hi", lambda w, b, *, lo: ((lo - 1.0) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.5))
        >>> state = mlo.init([lo, hi], {"hi": ["lo"]})
        >>> for _ in range(30):
        ...     state, logs = mlo.step(state, {})      # no data: every batch is None
        >>> [round(v, 3) for v in state.params["lo"].tolist()], state.step
        ([1.0, 1.0], 30)
    """
    g = build(problems, graph)
    state = fresh(g)
    given = dict(batches or {})
    with torch.random.fork_rng():
        sample = {n: given[n] if n in given else peek(Source(n, p.data), {}, n)
                  for n, p in g.problems.items()}
    preflight(g, state.params, sample)
    return state


def fresh(g: Graph, sync: Optional[Callable] = None) -> State:
    """Step 0 of the program ``g``: the problems' params and buffers as new, detached objects
    (a user's ``nn.Parameter`` keeps no graph alive, and a compiled step does not guard on
    their identity), rank 0's through ``sync`` under data parallel; fresh optimizer states."""
    params = {n: tree.map(torch.Tensor.detach, p.params) for n, p in g.problems.items()}
    states = {n: tree.map(detached, p.state) for n, p in g.problems.items()
              if p.state is not None}
    if sync is not None:  # every rank starts from rank 0's values
        params, states = sync(params), sync(states)
    opt_states = {n: p.optimizer.init(params[n]) for n, p in g.problems.items()}
    return State(g, 0, params, opt_states, states, {n: None for n in g.order},
                 initial_carries(g, params))


def due(state: State) -> dict:
    """``{name: number of batches}`` for the problems that update at the next step (bottom-up):
    ``accumulate`` batches, or ``unroll_steps`` for an unrolled window."""
    g, t = state.graph, state.step + 1
    out = {}
    for n in g.updates_at(t):
        p = g.problems[n]
        out[n] = p.unroll_steps if p.unrolled else p.accumulate
    return out


def step(state: State, batches: Mapping, compile: Any = False, batched: bool = False,
         logs: bool = True, skip_nonfinite: bool = False) -> tuple[State, dict]:
    """One global step: every problem due (``mlo.due(state)``) updates, lowers first, each by the
    total derivative of its loss with the problems below it at their responses.

    ``batches[name]`` is that problem's batch (a list of ``k`` batches where ``mlo.due`` says
    ``k > 1``); a problem with no entry gets None. Returns the new state and ``{name: {tag:
    tensor}}`` logs (losses, metrics, gradient norms, CG residuals, learning rates), read by
    nobody until you do. ``compile`` (as in ``solve``) compiles the step, one graph per pattern
    of updating problems, cached with the program. ``batched=True``: the state holds a leading
    axis of independent programs (``mlo.stack``) and so does every batch; the step is vmapped
    over it — equal to ``torch.vmap(mlo.step)``, but with ``compile`` the vmapped step is the
    one compiled graph (compile outermost, as ``torch.compile`` needs). ``logs=False``: no
    logging work in an eager step (the logs hold only ``nonfinite``). Each updating problem's
    ``logs[name]["nonfinite"]`` is a bit mask of what was NaN or inf in its update (1 loss, 2
    gradient, 4 CG residual, 8 new params; 0: all finite), read by nobody until you do;
    ``skip_nonfinite=True`` drops such updates (the params and optimizer state stay).
    """
    if not isinstance(state, State):
        fail(API, "`state` must be an mlo.State (from mlo.init)", type(state).__name__,
             "Start with state = mlo.init(problems, graph).", exc=TypeError)
    if not isinstance(batches, Mapping):
        fail(API, "`batches` must be a mapping {problem name: batch}", type(batches).__name__,
             exc=TypeError)
    need = due(state)
    unknown = sorted(set(batches) - set(state.graph.problems))
    if unknown:
        fail(API, f"`batches` names no problem: {unknown}", sorted(state.graph.problems))
    lists = {n: _as_list(n, batches.get(n), k) for n, k in need.items()}
    return advance(state, lists, stepper(state.graph, compile, batched=batched,
                                         skip_nonfinite=skip_nonfinite), logs)


def advance(state: State, batches: dict, run: Callable, logs: bool = True) -> tuple[State, dict]:
    """``state`` one step on, with ``batches[name]`` lists as the step consumes them."""
    g, t = state.graph, state.step + 1
    names = g.updates_at(t)
    starts = tuple(n for n in names if g.starts_inner_loop(n, t))
    params, opt_states, states, last, carries, out = run(
        names, starts, state.params, state.opt_states, state.states, batches, state.last_batch,
        state.carries, logs=logs)
    return State(g, t, params, opt_states, states, last, carries), out


def _as_list(name: str, batch: Any, k: int) -> list:
    if k == 1:
        return [batch]
    if not isinstance(batch, (list, tuple)) or len(batch) != k:
        fail(API, f"'{name}' consumes {k} batches at this step (accumulate / unroll_steps), so "
             f"`batches['{name}']` must be a list of {k}", type(batch).__name__,
             "Pass one batch per update, as mlo.due(state) counts them.")
    return list(batch)


def stack(states: Sequence[State]) -> State:
    """One state with a leading axis over ``states`` (same program, same step), for
    ``torch.vmap(mlo.step)``; :func:`unstack` splits it again."""
    first = states[0]
    if any(s.graph is not first.graph or s.step != first.step for s in states):
        fail("mlo.stack(states)", "states must come from one program (one mlo.init's graph "
             "structure) at the same step", [s.step for s in states],
             "Build them with mlo.init on the same problems and graph, then replace params.")
    return torch_pytree.tree_map(lambda *xs: torch.stack(xs) if isinstance(xs[0], torch.Tensor)
                                 else xs[0], *states)


def unstack(state: State) -> list[State]:
    """The states stacked by :func:`stack` (or returned by a vmapped step), one per index."""
    leaves = [x for x in torch_pytree.tree_leaves(state) if isinstance(x, torch.Tensor)]
    n = leaves[0].shape[0]
    return [torch_pytree.tree_map(lambda x: x[i] if isinstance(x, torch.Tensor) else x, state)
            for i in range(n)]


def with_params(state: State, params: Mapping) -> State:
    """``state`` with some problems' params replaced (detached) and their optimizer states
    restarted (and the carries of methods through them: a warm start from other params is no
    warm start): one program's state for another seed or setting, e.g. to :func:`stack` them."""
    api = "mlo.with_params(state, params)"
    g = state.graph
    unknown = sorted(set(params) - set(g.problems))
    if unknown:
        fail(api, f"`params` names no problem: {unknown}", sorted(g.problems))
    tree.check_float(api, dict(params), "params")
    new = {**state.params, **{n: tree.map(torch.Tensor.detach, p) for n, p in params.items()}}
    opts = {**state.opt_states, **{n: g.problems[n].optimizer.init(new[n]) for n in params}}
    fresh_carries = initial_carries(g, new)
    moved = set(params)
    carries = {d: fresh_carries[d] if d in moved or g.ancestors[d] & moved else c
               for d, c in state.carries.items()}
    return State(g, state.step, new, opts, state.states, state.last_batch, carries)
