"""Betty's ``EngineConfig(roll_back=True)`` (a warm start, DARTS' second-order step): a lower's
``unroll_steps`` updates only serve its uppers' hypergradient; once they have stepped, the lower
is put back where its inner loop started (params, buffers, optimizer state) and takes one update
on its last batch under the uppers' new params.

    θ' = K updates from θ            (the uppers differentiate through θ')
    λ ← upper update at θ'
    θ ← one update from θ on the last batch, with the new λ

Supported on lowers with nothing below them (Betty's DARTS and reweighting programs), without
gradient accumulation, and with a scheduler only for ``unroll_steps=1`` (Betty holds the rate
through the discarded updates; the functional schedule would not).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .. import mlo, optim, tree
from .._errors import fail
from ..mlo._context import Ctx, call_loss

API = "betty.Engine(...)"


def rolled(engine: Any) -> frozenset:
    """The problems that roll back (every problem with an upper, as in Betty), checked."""
    if not engine.config.roll_back:
        return frozenset()
    out = []
    for n, p in engine._problems.items():
        if not engine._above(n):
            continue
        c = p.config
        why = ("it has problems below it" if engine._below(n) else
               "it is an IterativeProblem" if p.iterative else
               "its method (reinforce) perturbs its updates" if c.type == "reinforce" else
               "it accumulates gradients" if c.gradient_accumulation > 1 else
               "its scheduler would advance through the discarded updates"
               if p.scheduler is not None and c.unroll_steps > 1 else None)
        if why:
            fail(API, f"roll_back=True on '{n}' is not supported: {why}", None,
                 "roll_back works on a lower with nothing below it, without "
                 "gradient_accumulation (and without a scheduler when unroll_steps > 1).")
        out.append(n)
    return frozenset(out)


def cache(state: mlo.State, name: str) -> tuple:
    """Where ``name``'s inner loop starts: its params, optimizer state and buffers."""
    return state.params[name], state.opt_states[name], state.states.get(name)


def roll_back(state: mlo.State, name: str, start: tuple, batch: Any) -> mlo.State:
    """``state`` with ``name`` back at ``start`` and one update on ``batch`` taken from there,
    its uppers at their new params."""
    g = state.graph
    p = g.problems[name]
    params = {**state.params, name: start[0]}
    states = dict(state.states)
    if start[2] is not None:
        states[name] = start[2]
    ctx = Ctx(g, {**state.last_batch, name: batch}, states)
    scale = optim.loss_scale(start[1])

    def loss(theta: Any) -> tuple:
        value, _, new = call_loss(ctx, name, {**params, name: theta})
        return (value if scale is None else value * scale), (new if new is not None else {})
    grads, new_state = torch.func.grad(loss, has_aux=True)(start[0])
    theta, opt_state = optim.step(p.optimizer, start[0], grads, start[1])
    if p.project is not None:
        theta = p.project(theta)
    if not bool(tree.all_finite(theta)):
        fail(API, f"the roll-back update of '{name}' at global step {state.step} gives "
             "non-finite params; the run stops rather than train on NaN", None,
             "Lower the learning rate or check the data.", exc=FloatingPointError)
    if start[2] is not None:
        states[name] = tree.map(torch.Tensor.detach, new_state)
    return replace(state, params={**params, name: theta},
                   opt_states={**state.opt_states, name: opt_state}, states=states)
