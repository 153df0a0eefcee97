"""Checks before any update: every loss is a scalar that depends on what its update moves."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch

from .._errors import fail
from ..hypergrad._checks import depends
from ._context import Ctx, call_loss
from ._data import Source, generators
from ._graph import API, Graph
from ._program_checks import (check_callbacks, check_couplings, check_finite_loss,
                              check_finite_params, check_solvers)


def preflight(g: Graph, params: dict, batches: dict, names: Optional[Iterable] = None) -> None:
    """Each loss, at ``batches[name]``, returns a scalar (or (scalar, metrics)) and depends on
    its own params or on a problem below it — else its update would be a silent zero. An error
    raised inside a user's loss is re-raised naming the problem and this phase. Then the checks
    of ``_program_checks`` (finite values, callbacks, couplings). The RNG is left as it was (a
    loss with dropout draws nothing from the user's stream). ``names``: check only those
    problems (a front end checks each at its first real batch)."""
    names = list(g.problems) if names is None else list(names)
    check_finite_params({n: params[n] for n in names})
    states = {n: q.state for n, q in g.problems.items()}
    with torch.random.fork_rng():
        check_callbacks(g, params, names)
        for name in names:
            p = g.problems[name]
            ctx = Ctx(g, {name: batches.get(name)}, states)
            own = [name] + [r for r in p.reads if r in g.descendants[name]]

            def loss(sub: dict, name: str = name, ctx: Ctx = ctx) -> torch.Tensor:
                return call_loss(ctx, name, {**params, **sub})[0]
            what = "its params" + (" or any problem below it" if len(own) > 1 else "")
            checked = depends(API, f"the loss of '{name}'", loss, what)
            try:
                value = torch.func.grad_and_value(checked)({n: params[n] for n in own})[1]
            except ValueError as e:
                if str(e).startswith(API):  # our own check: already says what is wrong
                    raise
                _reraise(name, e)
            except Exception as e:  # noqa: BLE001 - any error of the user's loss
                _reraise(name, e)
            check_finite_loss(name, value)
            check_couplings(g, name, loss, params)
            check_solvers(g, name, loss, params)


def _reraise(name: str, e: Exception) -> None:
    try:
        fail(API, f"the loss of '{name}' raised {type(e).__name__} in the preflight of "
             f"'{name}' (one evaluation at its first batch, before any update): {e}", None,
             "Fix the loss; its batch here is the problem's first batch (None without data "
             "or env).", exc=type(e) if type(e) in (ValueError, TypeError) else RuntimeError)
    except Exception as wrapped:
        raise wrapped from e


def peek(src: Source, from_env: dict, name: str) -> Any:
    """The first batch ``name`` will see, without moving its data position: torch's RNG is the
    caller's to fork, the generators a ``DataLoader`` shuffles with are restored here."""
    if name in from_env:
        return from_env[name]
    if src.data is None:
        return None
    if callable(src.data):
        return src.data(0)
    kept = [(gen, gen.get_state()) for gen in generators(src.data)]
    try:
        return next(iter(src.data))
    except StopIteration:
        fail(API, f"`data` of '{name}' yields no batch", type(src.data).__name__,
             "Pass a non-empty iterable, or None for no batches.")
    finally:
        for gen, state in kept:
            gen.set_state(state)
