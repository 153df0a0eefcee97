"""Problem knobs (warmup, project, reset, accumulate, env), stopping, and middle-level methods."""
import sys
from pathlib import Path

import pytest
import torch

from betty_func import hypergrad as hg, linsolve, mlo, optim

sys.path.insert(0, str(Path(__file__).parent))
from test_mlo_levels import Nested, rel  # noqa: E402

F64 = torch.float64
QUIET = dict(logging=mlo.Logging(progress=False, console=False))


def pair(**lo_kw):
    lo = mlo.Problem("lo", lambda p, b, *, hi: ((p - hi) ** 2).sum(), torch.ones(2, dtype=F64),
                     optim.sgd(0.25), **lo_kw)
    hi = mlo.Problem("hi", lambda p, b, *, lo: ((lo - 2.0) ** 2).sum() + (p ** 2).sum(),
                     torch.zeros(2, dtype=F64), optim.sgd(0.1))
    return [lo, hi], {"hi": ["lo"]}


def test_warmup_delays_the_upper():
    lo, hi = pair()[0]
    hi = mlo.Problem("hi", hi.loss, hi.params, hi.optimizer, warmup=3)
    r3 = mlo.solve([lo, hi], {"hi": ["lo"]}, steps=3, **QUIET)
    r4 = mlo.solve([lo, hi], {"hi": ["lo"]}, steps=4, **QUIET)
    assert torch.equal(r3.params["hi"], hi.params) and not torch.equal(r4.params["hi"], hi.params)
    assert not torch.equal(r3.params["lo"], lo.params)


def test_project_runs_after_every_update():
    seen = []

    def clamp(p):
        out = p.clamp(min=0.3)
        seen.append(out.clone())
        return out
    problems, graph = pair(project=clamp)
    r = mlo.solve(problems, graph, steps=5, **QUIET)
    assert len(seen) == 6  # once on the initial params (the step-0 check), then each update
    assert all((s >= 0.3).all() for s in seen)
    assert torch.equal(r.params["lo"], seen[-1])


def test_reset_at_the_start_of_each_inner_loop():
    calls = []

    def reset(p, *, hi):
        calls.append(p.clone())
        return hi + 10.0
    problems, graph = pair(reset=reset, unroll_steps=3)
    r = mlo.solve(problems, graph, steps=7, **QUIET)
    assert len(calls) == 4  # the step-0 check, then steps 1, 4, 7 start inner loops
    # step 7 reset lo to hi + 10, then took one SGD step (lr 0.25) on (p - hi)^2
    hi = r.params["hi"]
    assert torch.allclose(r.params["lo"], hi + 10.0 - 0.25 * 2 * 10.0)


def test_accumulate_equals_one_step_on_the_concatenated_batch():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 2, generator=g, dtype=F64) for _ in range(4)]
    loss = lambda p, b: ((b @ p - 1.0) ** 2).mean()  # noqa: E731
    acc = mlo.Problem("x", loss, torch.ones(2, dtype=F64), optim.sgd(0.1, momentum=0.9),
                      data=batches, accumulate=2)
    cat = mlo.Problem("x", loss, torch.ones(2, dtype=F64), optim.sgd(0.1, momentum=0.9),
                      data=[torch.cat(batches[:2]), torch.cat(batches[2:])])
    a = mlo.solve([acc], {}, steps=2, **QUIET).params["x"]
    b = mlo.solve([cat], {}, steps=2, **QUIET).params["x"]
    assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_env_supplies_coupled_batches():
    seen = {"lo": [], "hi": []}

    def lo_loss(p, b, *, hi):
        seen["lo"].append(float(b))
        return ((p - hi * b) ** 2).sum()

    def hi_loss(p, b, *, lo):
        seen["hi"].append(float(b))
        return ((lo - b) ** 2).sum()
    lo = mlo.Problem("lo", lo_loss, torch.zeros(2, dtype=F64), optim.sgd(0.25))
    hi = mlo.Problem("hi", hi_loss, torch.zeros(2, dtype=F64), optim.sgd(0.1))
    mlo.solve([lo, hi], {"hi": ["lo"]}, steps=3, env=lambda t: {"lo": t + 0.5, "hi": t + 0.5},
              **QUIET)
    # first entries are the step-0 checks at env(1) (the preflight, with the value, and the
    # coupling to the lower); then each step's update (and the upper's nested evaluation of the
    # lower) sees that step's batch
    assert seen["hi"] == [1.5, 1.5, 1.5, 2.5, 3.5]
    assert set(seen["lo"][1:4]) == {1.5} and seen["lo"][-1] == 3.5


def test_early_stopping_and_roll_back():
    scores = iter([9.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # 9.0: the check before step 1
    problems, graph = pair()
    r = mlo.solve(problems, graph, steps=20,
                  validation=mlo.Validation(lambda params: {"score": next(scores)}, every=1,
                                            early_stopping=mlo.EarlyStopping("score", "min",
                                                                             patience=2),
                                            roll_back=True), **QUIET)
    assert r.step == 5 and r.best == {"score": 1.0}
    at3 = mlo.solve(problems, graph, steps=3, **QUIET)
    assert (torch.equal(r.params["hi"], at3.params["hi"])
            and torch.equal(r.params["lo"], at3.params["lo"]))
    assert [v for _, v in r.history["validation/score"]] == [3.0, 2.0, 1.0, 2.0, 3.0]


def test_validate_may_return_nothing_unless_a_metric_is_needed():
    problems, graph = pair()
    seen = []
    for out in ({}, None):  # a validate that only prints or logs
        r = mlo.solve(problems, graph, steps=4,
                      validation=mlo.Validation(lambda params: seen.append(1) or out, every=2),
                      **QUIET)
        assert r.step == 4 and not any(k.startswith("validation/") for k in r.history)
    assert len(seen) == 6  # 2 validations each, and the check before any update
    with pytest.raises(ValueError, match=r"roll_back=True\): `fn` returned no metric"):
        mlo.solve(problems, graph, steps=2,
                  validation=mlo.Validation(lambda params: {}, every=1, roll_back=True), **QUIET)


def test_darts_on_the_middle_level_equals_its_exact_mixed_counterpart():
    """Finite differences of the middle level's *total* gradients (through the bottom's response)
    against the exact mixed term with the same identity solve: equal for quadratics."""
    nz = Nested(1.0)
    graph = {"top": ["middle", "bottom"], "middle": ["bottom"]}
    run = lambda m: mlo.solve(nz.problems(hg.cg(maxiter=5), m), graph, steps=1,  # noqa: E731
                              **QUIET).params["top"]
    darts = run(hg.darts(eps=0.01, scale=0.05))
    exact_mixed = run(hg.implicit(linsolve.identity(0.05), hg.exact_mixed()))
    assert rel(darts - nz.tT, exact_mixed - nz.tT) < 1e-8
    assert rel(darts - nz.tT, -nz.fd_hypergrad()) > 1e-3  # and it is an approximation


def test_unrolled_on_the_middle_level_matches_closed_form():
    """Middle unrolled (1 SGD step, lr η) with the bottom implicit: the top's hypergradient is
    μθ_T + (ηR)ᵀ[(θ_M - c) + Aᵀ(θ_B - f)] with A = H_B⁻¹P (chain: the bottom does not read the
    top)."""
    nz = Nested(0.0)
    eta = 0.05
    opt = optim.sgd(eta)
    probs = nz.problems(hg.cg(maxiter=5), None)
    middle = mlo.Problem("middle", nz.lm, probs[1].params, opt, hypergrad=hg.unrolled(1, opt))
    r = mlo.solve([probs[0], middle, probs[2]], {"top": ["middle"], "middle": ["bottom"]}, steps=1,
                  **QUIET)
    A = torch.linalg.solve(nz.HB, nz.P)
    m0, b0 = probs[1].params, probs[0].params
    expected = nz.mu * nz.tT + (eta * nz.R).T @ ((m0 - nz.c) + A.T @ (b0 - nz.f))
    assert rel(r.params["top"] - nz.tT, -expected) < 1e-9
