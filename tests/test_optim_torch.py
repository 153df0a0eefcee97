"""optim.from_torch: torch.optim optimizers and LR schedulers, side by side with torch for 30
steps on the same random float64 gradients, params compared after every step.

Tolerance: rtol 1e-12 on the rates; rtol 1e-12 with atol 5e-14 on the params (which are
O(1): randn), for an entry that passes near 0, where a relative bound means nothing. The update
arithmetic is torch's, but torch steps most schedulers recursively (``lr * gamma`` each step)
where ours are closed forms of the step, and AdamW decays ``p * (1 - lr wd)`` before its step
where ours adds ``-lr wd p`` to it: a few ulps apart, not bitwise. The largest gap is torch's
recursive CosineAnnealingLR, whose rate drifts 1.4e-14 (relative) from the closed form over 60
steps: params then differ by up to 1.5e-14 (all others: <= 1.3e-15).
"""
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as ls

from betty_func import optim

F64 = torch.float64
STEPS = 30
SGD, Adam, AdamW = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW


def make_params():
    g = torch.Generator().manual_seed(0)
    return {k: nn.Parameter(torch.randn(*shape, generator=g, dtype=F64))
            for k, shape in (("w", (3, 4)), ("b", (4,)), ("v", (2,)))}


def gradients(params, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{k: torch.randn(v.shape, generator=g, dtype=F64) for k, v in params.items()}
            for _ in range(steps)]


def torch_step(topt, sched, params, g, stride=1):
    for k, t in params.items():
        t.grad = g[k].clone()
    topt.step()
    for _ in range(stride if sched is not None else 0):
        sched.step()


def side_by_side(build, steps=STEPS, stride=1, before=0):
    """``build(params) -> (torch optimizer, scheduler or None)``; ``before`` torch steps are
    taken first (from_torch then carries the state over)."""
    params = make_params()
    topt, sched = build(params)
    for g in gradients(params, before, seed=2):
        torch_step(topt, sched, params, g, stride)
    ours = optim.from_torch(topt, params, sched, schedule_stride=stride)
    p = {k: v.detach().clone() for k, v in params.items()}
    state = ours.init(p)
    for g in gradients(params, steps):
        want = [float(group["lr"]) for group in topt.param_groups]
        got = [float(r) for r in optim.group_learning_rates(state)]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
        assert float(optim.learning_rate(state)) == got[0]
        torch_step(topt, sched, params, g, stride)
        p, state = optim.step(ours, p, g, state)
        for k in params:
            torch.testing.assert_close(p[k], params[k].detach(), rtol=1e-12, atol=5e-14)
    assert not torch.equal(p["w"], make_params()["w"].detach())  # it moved
    return ours, state


def grouped(cls, first, second, **defaults):
    """Two param groups ("w"; "b") and "v" in none (frozen)."""
    return lambda ps: cls([{"params": [ps["w"]], **first}, {"params": [ps["b"]], **second}],
                          **defaults)


OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps.values(), lr=0.1),
    "sgd_momentum_wd": lambda ps: SGD(ps.values(), lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd_dampening": lambda ps: SGD(ps.values(), lr=0.05, momentum=0.8, dampening=0.3),
    "sgd_nesterov_tensor_lr": lambda ps: SGD(ps.values(), lr=torch.tensor(0.05), momentum=0.9,
                                             nesterov=True, weight_decay=1e-3),
    "sgd_maximize_foreach": lambda ps: SGD(ps.values(), lr=0.05, momentum=0.9, maximize=True,
                                           weight_decay=1e-2, foreach=True),
    "adam": lambda ps: Adam(ps.values(), lr=1e-2),
    "adam_amsgrad_maximize": lambda ps: Adam(ps.values(), lr=1e-2, betas=(0.8, 0.99),
                                             weight_decay=1e-2, amsgrad=True, maximize=True),
    "adam_decoupled": lambda ps: Adam(ps.values(), lr=1e-2, weight_decay=0.1,
                                      decoupled_weight_decay=True),
    "adamw": lambda ps: AdamW(ps.values(), lr=1e-2, weight_decay=0.1),
    "adamw_amsgrad_tensor_lr": lambda ps: AdamW(ps.values(), lr=torch.tensor(1e-2, dtype=F64),
                                                eps=1e-6, weight_decay=0.1, amsgrad=True,
                                                maximize=True),
    "sgd_groups_frozen": grouped(SGD, {"lr": 0.1, "momentum": 0.9},
                                 {"momentum": 0.5, "nesterov": True, "weight_decay": 0.1},
                                 lr=0.02),
    "adam_groups_frozen": grouped(Adam, {}, {"betas": (0.5, 0.9), "weight_decay": 0.1,
                                             "amsgrad": True, "lr": 0.03}, lr=0.01),
    "adamw_groups_frozen": grouped(AdamW, {"weight_decay": 0.0}, {"maximize": True},
                                   lr=0.01, weight_decay=0.2),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_match_torch_step_for_step(name):
    ours, state = side_by_side(lambda ps: (OPTIMIZERS[name](ps), None))
    is_partition = isinstance(state, optim.PartitionState)
    assert is_partition == name.endswith("groups_frozen")  # one whole group: no partition


def sgd2(ps):
    return grouped(SGD, {"momentum": 0.9}, {"lr": 0.3, "weight_decay": 0.1}, lr=0.1)(ps)


def adam2(ps):
    return grouped(Adam, {"lr": 0.05}, {"weight_decay": 0.1}, lr=0.02, amsgrad=True)(ps)


SCHEDULERS = {
    "step": (sgd2, lambda o: ls.StepLR(o, step_size=7, gamma=0.5)),
    "multistep": (sgd2, lambda o: ls.MultiStepLR(o, [5, 12, 12, 20], gamma=0.5)),
    "exponential": (adam2, lambda o: ls.ExponentialLR(o, gamma=0.9)),
    "cosine_past_t_max": (sgd2, lambda o: ls.CosineAnnealingLR(o, T_max=10, eta_min=0.01)),
    "cosine_to_zero": (adam2, lambda o: ls.CosineAnnealingLR(o, T_max=7)),
    "linear": (sgd2, lambda o: ls.LinearLR(o, start_factor=0.2, end_factor=0.9,
                                           total_iters=10)),
    "constant": (adam2, lambda o: ls.ConstantLR(o, factor=0.5, total_iters=4)),
    "polynomial": (sgd2, lambda o: ls.PolynomialLR(o, total_iters=20, power=2.0)),
    "lambda_per_group": (sgd2, lambda o: ls.LambdaLR(o, [lambda e: 0.9 ** e,
                                                         lambda e: 1 / (1 + e)])),
    "lambda_control_flow": (adam2, lambda o: ls.LambdaLR(
        o, lambda e: 1.0 if e < 5 else 0.1 * math.exp(-0.1 * e))),
    "one_cycle_cos_sgd_momentum": (sgd2, lambda o: ls.OneCycleLR(o, max_lr=[0.1, 0.05],
                                                                 total_steps=STEPS)),
    "one_cycle_linear_three_phase_adam_beta1": (adam2, lambda o: ls.OneCycleLR(
        o, max_lr=0.05, total_steps=STEPS + 3, anneal_strategy="linear", three_phase=True,
        pct_start=0.4, base_momentum=0.8, max_momentum=0.9)),
    "one_cycle_epochs_no_momentum": (sgd2, lambda o: ls.OneCycleLR(
        o, max_lr=0.2, epochs=3, steps_per_epoch=10, pct_start=0.25, div_factor=10.0,
        final_div_factor=100.0, cycle_momentum=False)),
    "one_cycle_three_phase_cos_sgd_nesterov": (lambda ps: SGD(
        ps.values(), lr=0.1, momentum=0.9, nesterov=True), lambda o: ls.OneCycleLR(
        o, max_lr=0.1, total_steps=STEPS, three_phase=True)),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_match_torch_step_for_step(name):
    make_opt, make_sched = SCHEDULERS[name]

    def build(ps):
        o = make_opt(ps)
        return o, make_sched(o)
    side_by_side(build)


@pytest.mark.parametrize("name", ["step", "one_cycle_cos_sgd_momentum", "cosine_past_t_max"])
def test_schedule_stride_two_matches_two_scheduler_steps_per_update(name):
    make_opt, make_sched = SCHEDULERS[name]
    if name.startswith("one_cycle"):
        make_sched = lambda o: ls.OneCycleLR(o, max_lr=[0.1, 0.05], total_steps=2 * STEPS)  # noqa: E731

    def build(ps):
        o = make_opt(ps)
        return o, make_sched(o)
    side_by_side(build, stride=2)


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "adam_amsgrad_maximize",
                                  "adamw_groups_frozen", "sgd_groups_frozen"])
def test_a_stepped_optimizer_and_scheduler_continue_where_they_are(name):
    """Buffers (momentum_buffer, exp_avg, exp_avg_sq, max_exp_avg_sq) and the step count of an
    optimizer stepped 4 times are carried over, and the scheduler's last_epoch (4)."""
    def build(ps):
        o = OPTIMIZERS[name](ps)
        return o, ls.ExponentialLR(o, gamma=0.95)
    side_by_side(build, steps=10, before=4)


def test_a_scheduler_stepped_alone_starts_where_it_is(recwarn):
    def build(ps):
        o = sgd2(ps)
        s = ls.CosineAnnealingLR(o, T_max=8, eta_min=0.001)
        for _ in range(5):  # torch warns: scheduler stepped before the optimizer
            s.step()
        return o, s
    side_by_side(build, steps=10)


def test_a_fresh_torch_state_is_not_shared_with_ours():
    params = make_params()
    topt = SGD(params.values(), lr=0.1, momentum=0.9)
    torch_step(topt, None, params, gradients(params, 1)[0])
    before = topt.state[params["w"]]["momentum_buffer"].clone()
    ours = optim.from_torch(topt, params)
    p = {k: v.detach().clone() for k, v in params.items()}
    s = ours.init(p)
    optim.step(ours, p, gradients(params, 1)[0], s)
    assert torch.equal(topt.state[params["w"]]["momentum_buffer"], before)


def test_from_torch_compiles_as_one_graph_equal_to_eager():
    params = make_params()
    o = adam2(params)
    ours = optim.from_torch(o, params, ls.OneCycleLR(o, max_lr=0.05, total_steps=STEPS))
    p = {k: v.detach().clone() for k, v in params.items()}
    g = gradients(params, 1)[0]

    def f(p, s):
        return optim.step(ours, p, g, s)
    torch._dynamo.reset()
    got, want = torch.compile(f, backend="aot_eager", fullgraph=True)(p, ours.init(p)), \
        f(p, ours.init(p))
    for k in p:
        torch.testing.assert_close(got[0][k], want[0][k], rtol=1e-15, atol=0)
    torch.testing.assert_close(optim.group_learning_rates(got[1]),
                               optim.group_learning_rates(want[1]), rtol=1e-15, atol=0)


class MySGD(SGD):
    pass


def _hand_set_lr(o):
    s = ls.StepLR(o, step_size=3)
    o.param_groups[0]["lr"] = 0.7
    return s


def _stacked(o):
    ls.LinearLR(o, start_factor=0.5, total_iters=4)
    return ls.ExponentialLR(o, gamma=0.9)


def _partly_stepped(ps):
    o = SGD(ps.values(), lr=0.1, momentum=0.9)
    ps["w"].grad = torch.ones_like(ps["w"])
    o.step()
    return o


REFUSED = [
    ("rmsprop", lambda ps: (torch.optim.RMSprop(ps.values()), ps, None), TypeError,
     r"optim\.from_torch.*`optimizer` must be one of the torch\.optim optimizers from_torch "
     r"maps\. Got RMSprop\. Supported: SGD, Adam, AdamW"),
    ("subclass", lambda ps: (MySGD(ps.values(), lr=0.1), ps, None), TypeError, r"Got MySGD"),
    ("ours", lambda ps: (optim.sgd(0.1), ps, None), TypeError, r"Got Optimizer\. Supported"),
    ("params_list", lambda ps: (SGD(ps.values()), list(ps.values()), None), TypeError,
     r"`params` must be a mapping.*Got list.*named_parameters"),
    ("params_not_tensors", lambda ps: (SGD(ps.values()), {**ps, "x": 1.0}, None), TypeError,
     r"`params` must map names to tensors; 'x' does not\. Got float"),
    ("tensor_not_in_params", lambda ps: (SGD([*ps.values(), nn.Parameter(torch.zeros(5))]), ps,
                                         None), ValueError,
     r"1 tensor\(s\) in `optimizer.param_groups` are not in `params`.*param_groups\[0\]"
     r"\['params'\]\[3\] of shape \(5,\).*named_parameters"),
    ("tied", lambda ps: (SGD(ps.values()), {**ps, "w2": ps["w"]}, None), ValueError,
     r"the same tensor under two names.*'w' and 'w2'"),
    ("plateau", lambda ps: (lambda o: (o, ps, ls.ReduceLROnPlateau(o)))(SGD(ps.values())),
     TypeError, r"`scheduler` must be one of.*Got ReduceLROnPlateau\. Supported: "
     r"ConstantLR, CosineAnnealingLR, ExponentialLR, LinearLR, MultiStepLR, PolynomialLR, "
     r"StepLR, LambdaLR, OneCycleLR"),
    ("cyclic", lambda ps: (lambda o: (o, ps, ls.CyclicLR(o, 0.01, 0.1)))(
        SGD(ps.values(), momentum=0.9)), TypeError, r"Got CyclicLR"),
    ("sequential", lambda ps: (lambda o: (o, ps, ls.SequentialLR(
        o, [ls.ConstantLR(o), ls.ExponentialLR(o, 0.9)], [3])))(SGD(ps.values())),
     TypeError, r"Got SequentialLR"),
    ("chained", lambda ps: (lambda o: (o, ps, ls.ChainedScheduler([ls.ExponentialLR(o, 0.9)])))(
        SGD(ps.values())), TypeError, r"Got ChainedScheduler"),
    ("warm_restarts", lambda ps: (lambda o: (o, ps, ls.CosineAnnealingWarmRestarts(o, 5)))(
        SGD(ps.values())), TypeError, r"Got CosineAnnealingWarmRestarts"),
    ("other_optimizer", lambda ps: (SGD(ps.values()), ps, ls.StepLR(SGD(ps.values()), 3)),
     ValueError, r"`scheduler` schedules another optimizer.*Build the scheduler on this"),
    ("lr_set_by_hand", lambda ps: (lambda o: (o, ps, _hand_set_lr(o)))(SGD(ps.values(), 0.1)),
     ValueError, r"param_groups\[0\]\['lr'\] is not what the scheduler's closed form gives.*"
     r"Got 0\.7 vs 0\.1.*one scheduler per optimizer"),
    ("two_schedulers", lambda ps: (lambda o: (o, ps, _stacked(o)))(SGD(ps.values(), 0.1)),
     ValueError, r"changed by hand, or by a second scheduler.*Got 0\.05 vs 0\.1"),
    ("partly_stepped", lambda ps: (_partly_stepped(ps), ps, None), ValueError,
     r"param_groups\[0\] was stepped for some of its params only.*Got 1 of 3 params with "
     r"momentum_buffer.*fresh torch optimizer"),
    ("momentum_cycled_to_zero", lambda ps: (lambda o: (o, ps, ls.OneCycleLR(
        o, 0.1, total_steps=10, base_momentum=0.0)))(SGD(ps.values(), momentum=0.9)),
     ValueError, r"cycles SGD's momentum down to 0.*Pass cycle_momentum=False"),
]


@pytest.mark.parametrize("name,make,exc,match", REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals(name, make, exc, match):
    topt, params, sched = make(make_params())
    with pytest.raises(exc, match=match):
        optim.from_torch(topt, params, sched)


@pytest.mark.parametrize("stride,exc,match", [
    (0, ValueError, r"`schedule_stride` must be an integer >= 1\. Got 0"),
    (1.5, TypeError, r"`schedule_stride` must be an integer\. Got float 1\.5"),
])
def test_bad_schedule_stride(stride, exc, match):
    ps = make_params()
    o = SGD(ps.values(), lr=0.1)
    with pytest.raises(exc, match=match):
        optim.from_torch(o, ps, ls.StepLR(o, 3), schedule_stride=stride)


def test_a_one_cycle_of_an_unknown_torch_version_is_refused():
    ps = make_params()
    o = SGD(ps.values(), lr=0.1, momentum=0.9)
    s = ls.OneCycleLR(o, 0.1, total_steps=10)
    del s._schedule_phases
    with pytest.raises(TypeError, match=r"this OneCycleLR has no `_schedule_phases`.*LambdaLR"):
        optim.from_torch(o, ps, s)


def test_schedule_offset_shifts_every_update():
    """``schedule_offset=o``: update k uses torch's rate after o + k*s scheduler steps (Betty's
    gradient accumulation: the scheduler steps every micro step, the optimizer every s-th)."""
    net = torch.nn.Linear(2, 1)
    topt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.ExponentialLR(topt, gamma=0.5)
    opt = optim.from_torch(topt, dict(net.named_parameters()), sched, schedule_stride=3,
                           schedule_offset=2)
    p = {k: v.detach() for k, v in net.named_parameters()}
    s = opt.init(p)
    rates = []
    for _ in range(3):
        rates.append(float(optim.group_learning_rates(s)[0]))
        p, s = optim.step(opt, p, {k: torch.ones_like(v) for k, v in p.items()}, s)
    assert rates == [0.5 ** 2, 0.5 ** 5, 0.5 ** 8]
    with pytest.raises(ValueError, match="schedule_offset"):
        optim.from_torch(topt, dict(net.named_parameters()), sched, schedule_offset=-1)


def test_a_frozen_tensor_in_a_group_may_be_left_out():
    """torch's step skips a tensor without grad; leaving it out of ``params`` is the same."""
    net = nn.Linear(2, 1)
    net.bias.requires_grad_(False)
    topt = torch.optim.SGD(net.parameters(), lr=0.5)
    opt = optim.from_torch(topt, {"weight": net.weight})
    p = {"weight": net.weight.detach().clone()}
    p, _ = optim.step(opt, p, {"weight": torch.ones(1, 2)}, opt.init(p))
    torch.testing.assert_close(p["weight"], net.weight.detach() - 0.5)
    net.bias.requires_grad_(True)
    with pytest.raises(ValueError, match="are not in `params`"):
        optim.from_torch(topt, {"weight": net.weight})
