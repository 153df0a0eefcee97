"""A stepped ``torch.optim`` optimizer's state (step count, buffers) in our optimizer state."""
from __future__ import annotations

from typing import Any

import torch

from .. import tree
from .._errors import fail
from ._adam import AdamState
from ._base import lr_value
from ._sgd import SgdState
from ._torch_schedules import _num

PyTree = Any
API = "optim.from_torch(optimizer, params, scheduler, schedule_stride)"


def imported(optimizer: torch.optim.Optimizer, g: int, group: dict,
             names: list[str]) -> tuple[int, dict]:
    """``(count, {buffer: {name: tensor}})`` of a group's torch state (``names``: of its
    params, in order): its step count and the buffers our state holds (SGD keeps no count: a
    momentum buffer means >= 1 step)."""
    sgd_kind = type(optimizer) is torch.optim.SGD
    states = [optimizer.state.get(t, {}) for t in group["params"]]
    if not any(v is not None for st in states for v in st.values()):
        return 0, {}  # never stepped
    want = ([] if not group["momentum"] else ["momentum_buffer"]) if sgd_kind else \
        ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
    whole = [all(st.get(b) is not None for b in want) for st in states]
    counts = sorted({int(_num(st["step"])) for st in states if "step" in st})
    if not all(whole) or len(counts) > 1 or (not sgd_kind and len(states) != sum(
            "step" in st for st in states)):
        fail(API, f"param_groups[{g}] was stepped for some of its params only (or by differing "
             "numbers of steps, or before a flag such as amsgrad changed), so its state is not "
             "one optimizer state", f"{sum(whole)} of {len(whole)} params with "
             f"{'/'.join(want) or 'no buffer'}, steps {counts}",
             "Start from a fresh torch optimizer, or step all params of a group together.")
    if not want:
        return 0, {}  # SGD without momentum: nothing to carry
    bufs = {b: {n: st[b] for n, st in zip(names, states)} for b in want}
    return (counts[0] if counts else 1), bufs


def load(state: PyTree, count: int, lr: Any, bufs: dict, view: Any) -> PyTree:
    """Our fresh state with torch's count and buffers (copied: torch updates its own in place)."""
    def put(zeros: PyTree, key: str) -> PyTree:
        return tree.map(lambda z, b: b.detach().to(z, copy=True), zeros, view(bufs[key]))

    if isinstance(state, tuple) and not hasattr(state, "_fields"):  # chain(negate, opt)
        return tuple(load(s, count, lr, bufs, view) for s in state)
    c = torch.tensor(count, dtype=torch.int64)
    if isinstance(state, SgdState):
        return state._replace(count=c, lr=lr_value(lr, c), momentum=put(state.momentum,
                                                                         "momentum_buffer"))
    if isinstance(state, AdamState):
        nu_max = None if state.nu_max is None else put(state.nu_max, "max_exp_avg_sq")
        return state._replace(count=c, lr=lr_value(lr, c), mu=put(state.mu, "exp_avg"),
                              nu=put(state.nu, "exp_avg_sq"), nu_max=nu_max)
    return state
