"""The problem graph ``{upper: [lowers]}``: validation, relations, execution order, periods."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .._errors import fail
from ._problem import Problem

API = "solve(problems, graph)"


@dataclass(frozen=True, eq=False)
class Graph:
    """A checked program, as :func:`build` returns it: its problems and their relations, the
    bottom-up order and each problem's update period."""
    problems: dict            #: name -> Problem
    lowers: dict              #: name -> tuple of direct lower names
    uppers: dict              #: name -> tuple of direct upper names
    ancestors: dict           #: name -> frozenset
    descendants: dict         #: name -> frozenset
    order: tuple              #: every problem after all its lowers (bottom-up)
    period: dict              #: name -> global steps between two updates (a window for unrolled)
    compiled: dict = field(default_factory=dict, repr=False)  # compiled steps, by options

    def ancestors_in_order(self, name: str) -> tuple:
        """``name``'s ancestors, bottom-up (the order a response's inputs are flattened in)."""
        return tuple(a for a in self.order if a in self.ancestors[name])

    def every(self, name: str) -> int:
        """Global steps between two updates; an unrolled problem runs its ``unroll_steps``
        updates together, as one differentiable window, every ``period * unroll_steps`` steps."""
        p = self.problems[name]
        return self.period[name] * (p.unroll_steps if p.unrolled else 1)

    def updates_at(self, step: int) -> tuple:
        """Problems that update at global step ``step`` (1-based), bottom-up."""
        return tuple(n for n in self.order
                     if step > self.problems[n].warmup and step % self.every(n) == 0)

    def starts_inner_loop(self, name: str, step: int) -> bool:
        """True for the first update of ``name`` after its uppers' last update."""
        p = self.problems[name]
        return p.unrolled or (step // self.period[name] - 1) % p.unroll_steps == 0


def _name(x: Any, names: Sequence[str], where: str) -> str:
    n = x.name if isinstance(x, Problem) else x
    if not isinstance(n, str) or n not in names:
        fail(API, f"{where} {n!r} names no problem", f"have: {sorted(names)}",
             "Use the names (or Problem objects) of the problems you pass.")
    return n


def _closure(start: str, nxt: dict) -> frozenset:
    seen, todo = set(), list(nxt[start])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(nxt[n])
    return frozenset(seen)


def _topological(names: list, lowers: dict) -> tuple:
    """Bottom-up order; raise on a cycle, naming it."""
    state: dict[str, str] = {}
    out: list[str] = []

    def visit(n: str, path: list) -> None:
        if state.get(n) == "done":
            return
        if state.get(n) == "active":
            cycle = path[path.index(n):] + [n]
            fail(API, f"the graph has a cycle: {' -> '.join(cycle)}", None,
                 "Multilevel programs must be acyclic: remove one of these edges.")
        state[n] = "active"
        for low in lowers[n]:
            visit(low, path + [n])
        state[n] = "done"
        out.append(n)

    for n in names:
        visit(n, [])
    return tuple(out)


def build(problems: Sequence[Problem], graph: Mapping) -> Graph:
    """Validate ``problems`` and ``graph`` and derive relations, order and periods."""
    if isinstance(problems, Problem) or not all(isinstance(p, Problem) for p in problems):
        fail(API, "`problems` must be a list of mlo.Problem", type(problems).__name__,
             "Pass e.g. [inner, outer].", exc=TypeError)
    names = [p.name for p in problems]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        fail(API, f"problem names must be unique; repeated: {dupes}", None, "Rename one of them.")
    if not isinstance(graph, Mapping):
        fail(API, "`graph` must be a mapping {upper: [lowers]}", type(graph).__name__)
    lowers: dict[str, list[str]] = {n: [] for n in names}
    for up, lows in graph.items():
        u = _name(up, names, "edge source")
        if not isinstance(lows, (str, Problem, list, tuple)):
            fail(API, f"the lowers of '{u}' must be a list of problem names",
                 f"{type(lows).__name__} {lows!r}", f"Write {{'{u}': ['lower', ...]}}.",
                 exc=TypeError)
        for low in ([lows] if isinstance(lows, (str, Problem)) else lows):
            l_ = _name(low, names, f"edge '{u}' ->")
            if l_ == u:
                fail(API, f"problem '{u}' is its own lower (a self-edge)", None, "Remove the edge.")
            if l_ not in lowers[u]:
                lowers[u].append(l_)
    uppers = {n: tuple(u for u in names if n in lowers[u]) for n in names}
    if len(names) > 1:
        loose = [n for n in names if not lowers[n] and not uppers[n]]
        if loose:
            fail(API, f"problems {loose} appear in no edge of the graph", f"graph {dict(graph)}",
                 "Connect every problem, or solve it separately.")
    order = _topological(names, lowers)
    desc = {n: _closure(n, lowers) for n in names}
    anc = {n: _closure(n, uppers) for n in names}
    by_name = {p.name: p for p in problems}
    for p in problems:
        _check_reads(p, names, anc[p.name] | desc[p.name])
        if p.unrolled and not uppers[p.name]:
            fail(API,
                 f"problem '{p.name}' is unrolled but has no upper to differentiate through it",
                 None, "Use `unrolled` on a lower problem only.")
        _check_hypergrad(p, uppers[p.name])
        if p.unrolled and p.accumulate != 1:
            fail(API, f"problem '{p.name}': `accumulate` must be 1 with an unrolled method",
                 p.accumulate,
                 "Each unrolled update takes one batch; raise the batch size instead.")
    period: dict[str, int] = {}
    for n in order:
        period[n] = max([period[low] * by_name[low].unroll_steps for low in lowers[n]], default=1)
    return Graph(by_name, {n: tuple(v) for n, v in lowers.items()}, uppers, anc, desc, order,
                 period)


def _check_hypergrad(p: Problem, uppers: tuple) -> None:
    """``hypergrad=`` only on a problem some upper differentiates through, keyed by its uppers."""
    if p.hypergrad is None:
        return
    if not uppers:
        fail(API, f"problem '{p.name}' has `hypergrad=` but no upper differentiates through it "
             "(it would never be used)", repr(p.hypergrad),
             f"Drop hypergrad=, or make '{p.name}' a lower: {{upper: ['{p.name}']}}.")
    if isinstance(p.hypergrad, Mapping):
        unknown = sorted(set(p.hypergrad) - set(uppers))
        if unknown:
            fail(API, f"`hypergrad` of '{p.name}' names {unknown}, which are not its uppers",
                 f"uppers of '{p.name}': {list(uppers)}", "Key it by the problems directly "
                 f"above '{p.name}' in the graph.")


def _check_reads(p: Problem, names: list, related: frozenset) -> None:
    for r in p.reads + p.reset_reads:
        if r not in names:
            fail(API, f"the loss of '{p.name}' has keyword `{r}`, which names no problem",
                 f"have: {sorted(names)}",
                 "Keyword-only parameters of a loss must be problem names.")
        if r == p.name:
            fail(API, f"the loss of '{p.name}' reads itself by keyword", None,
                 "A loss gets its own params as the first argument.")
        if r not in related:
            fail(API, f"the loss of '{p.name}' reads '{r}', which is neither above nor below it",
                 f"related to '{p.name}': {sorted(related)}", "Add an edge, or stop reading it.")


def schedule(problems: Sequence[Problem], graph: Mapping, steps: int = 0,
             show: bool = True) -> list[str]:
    """The execution plan of ``solve``: per problem its lowers, period and role; with ``steps``,
    which problems update at each of the first ``steps`` global steps. Printed unless ``show``
    is False; returned as lines.

    Example:
        >>> import torch
        >>> from betty_func import mlo, optim
        >>> lo = mlo.Problem("lo", lambda w, b, *, hi: ((w - hi) ** 2).sum(), torch.zeros(2),
        ...                  optim.sgd(0.1), unroll_steps=2)
        >>> hi = mlo.Problem("hi", lambda w, b, *, lo: (lo ** 2).sum(), torch.ones(2),
        ...                  optim.sgd(0.1))
        >>> lines = mlo.schedule([lo, hi], {"hi": ["lo"]}, steps=4)
        order (bottom-up): lo, hi
          lo: lowers [] every 1 step(s)  reads ['hi']  method for uppers: hypergrad.implicit(solve=linsolve.cg(maxiter=10, tol=0.0, damping=0.0))
          hi: lowers ['lo'] every 2 step(s)  reads ['lo']
        step 1: lo
        step 2: lo, hi
        step 3: lo
        step 4: lo, hi
    """  # noqa: E501  (a doctest output line: the schedule line of ``lo`` as printed)
    g = build(problems, graph)
    lines = [f"order (bottom-up): {', '.join(g.order)}"]
    for n in g.order:
        p = g.problems[n]
        kind = (f"unrolled window of {p.unroll_steps} updates every {g.every(n)} step(s)"
                if p.unrolled else f"every {g.period[n]} step(s)")
        line = f"  {n}: lowers {list(g.lowers[n])} {kind}  reads {list(p.reads)}"
        if g.uppers[n]:
            line += "  method for uppers: " + ", ".join(
                sorted({repr(p.method_for(u)) for u in g.uppers[n]}))
        lines.append(line)
    lines += [f"step {t}: {', '.join(g.updates_at(t)) or '-'}" for t in range(1, steps + 1)]
    if show:
        print("\n".join(lines))
    return lines
