"""A ``torch.optim`` optimizer (and LR scheduler) as a betty_func optimizer, step for step equal."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch

from .. import tree
from .._errors import check_nonneg_int, check_positive_int, fail
from ._adam import adam, adamw
from ._base import Optimizer, chain, lr_value
from ._partition import partition
from ._sgd import sgd
from ._torch_schedules import Pair, _num, torch_schedules
from ._torch_state import API, imported, load

PyTree = Any
KINDS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def _negate() -> Optimizer:
    """``-g``: torch's ``maximize=True`` (ascent), in front of the optimizer."""
    def update(grads: PyTree, state: PyTree, params: PyTree = None) -> tuple[PyTree, PyTree]:
        return tree.neg(grads), state
    return Optimizer(lambda params: (), update)


def _labels(optimizer: torch.optim.Optimizer, params: Mapping) -> tuple[dict, list]:
    """``{name: group index, or None for a param in no group}`` and each group's names in its
    ``params`` order, by identity of the tensors."""
    names: dict[int, str] = {}
    for name, t in params.items():
        if not isinstance(t, torch.Tensor):
            fail(API, f"`params` must map names to tensors; {name!r} does not",
                 type(t).__name__, "Pass dict(module.named_parameters()).", exc=TypeError)
        if id(t) in names:
            fail(API, "`params` holds the same tensor under two names (tied weights)",
                 f"{names[id(t)]!r} and {name!r}", "Keep one name per tensor, as "
                 "dict(module.named_parameters()) does.")
        names[id(t)] = name
    labels: dict[str, Optional[int]] = dict.fromkeys(params)
    # a tensor that requires no grad gets none, and torch's step skips it: it may be left out
    missing = [(g, i, tuple(t.shape)) for g, group in enumerate(optimizer.param_groups)
               for i, t in enumerate(group["params"]) if id(t) not in names and t.requires_grad]
    if missing:
        g, i, shape = missing[0]
        fail(API, f"{len(missing)} tensor(s) in `optimizer.param_groups` are not in `params` "
             "(found by identity)", f"param_groups[{g}]['params'][{i}] of shape {shape}, ...",
             "Build both from the same module: params = dict(module.named_parameters()) and "
             "the optimizer on module.parameters() (or on those same tensors).")
    groups = [[names[id(t)] for t in group["params"] if id(t) in names]
              for group in optimizer.param_groups]
    for g, group in enumerate(groups):
        labels.update(dict.fromkeys(group, g))
    return labels, groups


def _check_start(g: int, group: dict, lr: Any, momentum: Any, count: int) -> None:
    """The schedule at our first update must give what torch holds now; else the rate was set
    by hand or by a second scheduler, which torch's recursive schedulers follow and we don't."""
    c = torch.tensor(count)
    key, now = ("momentum", group.get("momentum")) if "momentum" in group else \
        ("betas[0]", group["betas"][0])
    for name, want, ours in (("lr", group["lr"], lr), (key, now, momentum)):
        if not callable(ours):
            continue
        got, want = float(lr_value(ours, c)), _num(want)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15):
            fail(API, f"param_groups[{g}]['{name}'] is not what the scheduler's closed form "
                 "gives at its last_epoch (the value was changed by hand, or by a second "
                 "scheduler on this optimizer)", f"{want!r} vs {got!r}",
                 "Use one scheduler per optimizer (a LambdaLR for a combination) and leave "
                 "param_groups' values to it.")


def _group(optimizer: torch.optim.Optimizer, g: int, pair: Optional[Pair], e0: int,
           stride: int, offset: int, names: list[str], view: Any) -> Optimizer:
    """Our optimizer for ``param_groups[g]`` (``names``: of its params): its hyperparameters,
    its schedule at ``e0 + offset + stride * (updates since now)``, its torch state if stepped
    (``view`` arranges ``{name: buffer}`` as the params our optimizer sees)."""
    group = optimizer.param_groups[g]
    lr_fn, mom_fn = pair if pair is not None else (None, None)
    count, bufs = imported(optimizer, g, group, names)

    def at(fn: Any, shift: int = offset) -> Any:
        return lambda c: fn(e0 + shift + (c - count) * stride)

    lr = at(lr_fn) if lr_fn is not None else _num(group["lr"])
    mom = at(mom_fn) if mom_fn is not None else None
    # torch holds the rate of the schedule at e0 now, whatever the offset
    _check_start(g, group, at(lr_fn, 0) if lr_fn is not None else lr,
                 at(mom_fn, 0) if mom_fn is not None else mom, count)
    wd = _num(group["weight_decay"])
    if type(optimizer) is torch.optim.SGD:
        if mom is not None and min(_num(group["base_momentum"]),
                                   _num(group["max_momentum"])) <= 0:
            fail(API, "OneCycleLR cycles SGD's momentum down to 0, where torch's SGD stops "
                 "updating its momentum buffer (betty_func's does not)",
                 f"base_momentum={group['base_momentum']}, max_momentum="
                 f"{group['max_momentum']}", "Pass cycle_momentum=False, or momenta > 0.")
        mom = mom if mom is not None else _num(group["momentum"])
        opt = sgd(lr, mom, _num(group["dampening"]), bool(group["nesterov"]), wd)
    else:
        b1, b2 = (_num(b) for b in group["betas"])
        mom = mom if mom is not None else b1
        decoupled = type(optimizer) is torch.optim.AdamW or group.get("decoupled_weight_decay")
        opt = (adamw if decoupled else adam)(lr, (mom, b2), _num(group["eps"]), wd,
                                              bool(group["amsgrad"]))
    if group.get("maximize", False):
        opt = chain(_negate(), opt)
    if not bufs:
        return opt
    inner = opt
    return Optimizer(lambda params: load(inner.init(params), count, lr, bufs, view),
                     inner.update)


def from_torch(optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor],
               scheduler: Any = None, *, schedule_stride: int = 1,
               schedule_offset: int = 0) -> Optimizer:
    r"""A ``torch.optim`` optimizer (and LR scheduler) as a betty_func optimizer over ``params``.

    ``params`` is the named dict the functional problem optimizes (``dict(module.named_
    parameters())``); ``optimizer.param_groups`` hold those same tensors, matched by identity.
    Each group becomes ``sgd`` / ``adam`` / ``adamw`` with its hyperparameters (``maximize``:
    the gradient negated in front); several groups, or params in no group (frozen), give
    ``partition(one per group, {name: group index or None})``. The torch objects are only read.
    Torch steps ``scheduler.step()`` once after each ``optimizer.step()``; here update
    :math:`k` (0-based) uses

    .. math:: \eta^{(g)}_k = \texttt{param\_groups[g]["lr"]}
        \text{ after } e_0 + o + k\,s \text{ scheduler steps}

    with :math:`e_0` the scheduler's ``last_epoch`` now, :math:`s` = ``schedule_stride`` and
    :math:`o` = ``schedule_offset`` (a front end that steps the scheduler every micro step but
    the optimizer every :math:`s`-th, Betty's gradient accumulation: :math:`o = s - 1`).
    Schedulers are pure float64 closed forms (``_torch_schedules``): StepLR, MultiStepLR,
    ExponentialLR, CosineAnnealingLR (periodic past T_max), LinearLR, ConstantLR, PolynomialLR,
    LambdaLR (``lr_lambda`` called on a float64 tensor step: Python control flow on it works
    eagerly only) and OneCycleLR (also its momentum / beta1 when ``cycle_momentum``; past
    ``total_steps``, where torch raises, its last phase's formula goes on). A stepped optimizer's
    state (momentum_buffer, exp_avg, exp_avg_sq, max_exp_avg_sq, step) is carried over. A tensor
    ``lr`` is read as its float value (torch does some arithmetic in its dtype: a float32 one
    gives AdamW's ``1 - lr wd`` in float32, 1e-8 from this; a float64 one matches). Flags that
    only change speed (foreach, fused, capturable, differentiable) are accepted.
    Refused: other optimizers and schedulers, a tensor of a group not in ``params``, a group rate
    the scheduler's closed form does not give. Cost: that of the betty_func optimizers.

    Example:
        >>> import torch
        >>> from betty_func import optim
        >>> net = torch.nn.Linear(2, 1)
        >>> topt = torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias], "lr": 0.5}],
        ...                        lr=0.1, momentum=0.9)
        >>> sched = torch.optim.lr_scheduler.StepLR(topt, step_size=1, gamma=0.5)
        >>> opt = optim.from_torch(topt, dict(net.named_parameters()), sched)
        >>> p = {k: v.detach() for k, v in net.named_parameters()}
        >>> s = opt.init(p)
        >>> p, s = optim.step(opt, p, {k: torch.ones_like(v) for k, v in p.items()}, s)
        >>> [float(r) for r in optim.group_learning_rates(s)]   # after one scheduler step
        [0.05, 0.25]
    """
    if not isinstance(optimizer, torch.optim.Optimizer) or type(optimizer) not in KINDS:
        fail(API, "`optimizer` must be one of the torch.optim optimizers from_torch maps",
             type(optimizer).__name__, "Supported: SGD, Adam, AdamW. For another, write it with "
             "betty_func.optim (optim.chain, optim.sgd, optim.adam, ...).", exc=TypeError)
    if not isinstance(params, Mapping):
        fail(API, "`params` must be a mapping of names to the optimizer's tensors",
             type(params).__name__, "Pass dict(module.named_parameters()).", exc=TypeError)
    stride = check_positive_int(API, "schedule_stride", schedule_stride)
    offset = check_nonneg_int(API, "schedule_offset", schedule_offset)
    labels, groups = _labels(optimizer, params)
    pairs = [None] * len(groups) if scheduler is None else \
        torch_schedules(API, scheduler, optimizer)
    e0 = 0 if scheduler is None else scheduler.last_epoch
    order = tree.leaves({n: n for n in params})  # the names in the params' leaf order
    whole = len(groups) == 1 and all(label == 0 for label in labels.values())
    transforms = []
    for g, names in enumerate(groups):
        seen = [n for n in order if labels[n] == g]  # as partition hands them to group g
        view = dict if whole else (lambda b, seen=seen: [b[n] for n in seen])
        transforms.append(_group(optimizer, g, pairs[g], e0, stride, offset, names, view))
    return transforms[0] if whole else partition(transforms, labels)
