"""Functional optimizers vs torch.optim trajectories (float64), and differentiability."""
import math

import pytest
import torch
from torch.func import grad

from betty_func import optim

F64 = torch.float64
STEPS = 50


def loss_fn(params, x, y):
    h = torch.tanh(x @ params["w1"] + params["b1"])
    return ((h @ params["w2"] - y) ** 2).mean()


def setup():
    g = torch.Generator().manual_seed(1)
    params = {"w1": torch.randn(5, 7, generator=g, dtype=F64), "b1": torch.zeros(7, dtype=F64),
              "w2": torch.randn(7, 2, generator=g, dtype=F64)}
    data = [(torch.randn(16, 5, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64))
            for _ in range(STEPS)]
    return params, data


def run_ours(opt, params, data):
    state = opt.init(params)
    for x, y in data:
        params, state = optim.step(opt, params, grad(loss_fn)(params, x, y), state)
    return params


def run_torch(make_opt, params, data, make_sched=None):
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    opt = make_opt(list(p.values()))
    sched = make_sched(opt) if make_sched else None
    for x, y in data:
        opt.zero_grad()
        loss_fn(p, x, y).backward()
        opt.step()
        if sched:
            sched.step()
    return {k: v.detach() for k, v in p.items()}


CASES = [
    ("sgd", lambda: optim.sgd(0.1), lambda ps: torch.optim.SGD(ps, 0.1)),
    ("sgd_momentum_wd", lambda: optim.sgd(0.05, momentum=0.9, weight_decay=1e-2),
     lambda ps: torch.optim.SGD(ps, 0.05, momentum=0.9, weight_decay=1e-2)),
    ("sgd_dampening", lambda: optim.sgd(0.05, momentum=0.8, dampening=0.3),
     lambda ps: torch.optim.SGD(ps, 0.05, momentum=0.8, dampening=0.3)),
    ("sgd_nesterov", lambda: optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda ps: torch.optim.SGD(ps, 0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", lambda: optim.adam(1e-2), lambda ps: torch.optim.Adam(ps, 1e-2)),
    ("adam_wd_amsgrad",
     lambda: optim.adam(1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True),
     lambda ps: torch.optim.Adam(ps, 1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("adamw", lambda: optim.adamw(1e-2, weight_decay=0.1),
     lambda ps: torch.optim.AdamW(ps, 1e-2, weight_decay=0.1)),
    ("adamw_amsgrad", lambda: optim.adamw(1e-2, weight_decay=0.1, amsgrad=True),
     lambda ps: torch.optim.AdamW(ps, 1e-2, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_optim_trajectory(name, ours, theirs):
    params, data = setup()
    a, b = run_ours(ours(), params, data), run_torch(theirs, params, data)
    for k in params:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12), (k, (a[k] - b[k]).abs().max())
    assert not torch.equal(a["w1"], params["w1"])  # the trajectory moved


SCHEDULES = [
    ("multistep", lambda: optim.multistep(0.1, [10, 30], gamma=0.5),
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 30], gamma=0.5)),
    ("cosine", lambda: optim.cosine(0.1, STEPS, min_lr=0.01),  # torch's rises again past T_max
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, STEPS, eta_min=0.01)),
    ("warmup", lambda: optim.warmup(0.1, 10, start_factor=0.1),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=10)),
]


@pytest.mark.parametrize("name,ours,theirs", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedules_match_torch_schedulers(name, ours, theirs):
    params, data = setup()
    a = run_ours(optim.sgd(ours(), momentum=0.9), params, data)
    b = run_torch(lambda ps: torch.optim.SGD(ps, 0.1, momentum=0.9), params, data, theirs)
    for k in params:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12)


def test_schedule_values():
    s = optim.warmup(optim.cosine(1.0, 100), 10)
    vals = [float(s(torch.tensor(k, dtype=F64))) for k in (0, 5, 10, 100, 200)]
    assert vals[0] == 0.0 and vals[1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.05)) / 2)
    assert vals[3] == pytest.approx(0.0, abs=1e-15) and vals[4] == pytest.approx(0.0, abs=1e-15)
    assert float(optim.constant(0.3)(torch.tensor(7.0))) == pytest.approx(0.3)


def test_learning_rate_reports_the_rate_of_the_next_update():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(optim.multistep(0.1, [2], 0.5)))
    p = {"w": torch.ones(2, dtype=F64)}
    s, rates = opt.init(p), []
    for _ in range(4):
        rates.append(float(optim.learning_rate(s)))
        p, s = optim.step(opt, p, {"w": torch.ones(2, dtype=F64)}, s)
    assert rates == [0.1, 0.1, 0.05, 0.05]  # float64 params: the schedule in float64
    assert optim.learning_rate(optim.clip_by_global_norm(1.0).init(p)) is None
    assert float(optim.learning_rate(optim.adamw(3e-4).init(p))) == 3e-4


def test_clip_by_global_norm_matches_torch():
    params, data = setup()
    opt = optim.chain(optim.clip_by_global_norm(0.05), optim.sgd(0.1, momentum=0.9))
    a = run_ours(opt, params, data)
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    topt = torch.optim.SGD(list(p.values()), 0.1, momentum=0.9)
    for x, y in data:
        topt.zero_grad()
        loss_fn(p, x, y).backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), 0.05)
        topt.step()
    for k in params:
        assert torch.allclose(a[k], p[k].detach(), rtol=0, atol=1e-12)


def test_gradient_through_five_adam_steps_matches_finite_differences():
    """d/dc of the loss after 5 Adam steps on c * inner loss; checked by central differences."""
    params, data = setup()
    opt = optim.adam(0.05, weight_decay=1e-3)

    def unrolled(c):
        p, s = params, opt.init(params)
        for x, y in data[:5]:
            p, s = optim.step(opt, p, grad(lambda q: c * loss_fn(q, x, y))(p), s)
        return loss_fn(p, *data[5])

    c = torch.tensor(0.7, dtype=F64)
    g = grad(unrolled)(c)
    h = 1e-6
    fd = (unrolled(c + h) - unrolled(c - h)) / (2 * h)
    assert torch.isfinite(g) and abs(g - fd) <= 1e-6 * abs(fd)


def test_zero_gradient_gives_finite_derivatives():
    """Adam's sqrt(v) at v = 0 must not turn into NaN in reverse mode (higher #125, TorchOpt
    #26)."""
    opt = optim.adam(0.1)
    w = torch.zeros(3, dtype=F64)

    def after_steps(lam):
        p, s = {"w": w}, opt.init({"w": w})
        for _ in range(3):  # the gradient lam * w is exactly zero at w = 0 on the first step
            p, s = optim.step(opt, p, {"w": lam * p["w"] + (lam - 1.0)}, s)
        return (p["w"] ** 2).sum()

    g = grad(after_steps)(torch.tensor(1.0, dtype=F64))
    assert torch.isfinite(g)


@pytest.mark.parametrize("make,match", [
    (lambda: optim.sgd(-0.1),
     r"optim\.sgd.*`lr` must be a finite number >= 0 or a schedule.*Got -0\.1"),
    (lambda: optim.sgd(0.1, momentum=1.5), r"`momentum` must be a number in \[0, 1\)\. Got 1\.5"),
    (lambda: optim.sgd(0.1, nesterov=True), r"Nesterov momentum needs momentum > 0"),
    (lambda: optim.adam(1e-3, betas=(0.9, 1.0)),
     r"optim\.adam.*`betas\[1\]` must be a number in \[0, 1\)"),
    (lambda: optim.adamw(1e-3, weight_decay=-1), r"`weight_decay` must be a number >= 0\. Got -1"),
    (lambda: optim.multistep(0.1, [5, 2]), r"`milestones` must be increasing"),
    (lambda: optim.cosine(0.1, 0), r"`total_steps` must be >= 1"),
    (lambda: optim.warmup(0.1, -3), r"`steps` must be an integer >= 0\. Got -3"),
    (lambda: optim.clip_by_global_norm(0.0), r"`max_norm` must be a number > 0"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
