"""Methods that carry state between steps (the carry protocol): a warm-started CG and F2SA's
penalty method with persistent sequences and a multiplier schedule. In mlo each equals the same
loop written by hand with hg.grad and init=info.solution; the state lives in State.carries, is
checkpointed (a resumed run equals a straight one), vmapped, compiled and reset by with_params;
F2SA's outer loop reaches the exact bilevel optimum with one gradient step per call (restarted
from θ it stalls far off), and its schedule brings the O(1/ν) bias of a fixed multiplier down."""
import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from betty_func import hypergrad as hg, linsolve, mlo, optim
from betty_func.testing import quadratic_benchopt

F64 = torch.float64
P = quadratic_benchopt(dim_inner=30, dim_outer=5, n_samples_inner=64, n_samples_outer=64)
QUIET = {"logging": mlo.Logging(progress=False, console=False)}


def rel(a, b):
    return float((a - b).norm() / b.norm())


def program(method, lr_up=0.5):
    lo = mlo.Problem("lo", lambda th, b, *, hi: P.inner_loss(th, hi), torch.zeros(30, dtype=F64),
                     optim.sgd(1.0 / P.L), hypergrad=method)
    hi = mlo.Problem("hi", lambda lam, b, *, lo: P.outer_loss(lo, lam), torch.zeros(5, dtype=F64),
                     optim.sgd(lr_up))
    return [lo, hi], {"hi": ["lo"]}


def run(method, steps, **kw):
    state = mlo.init(*program(method, **kw))
    for _ in range(steps):
        state, _ = mlo.step(state, {}, logs=False)
    return state


def by_hand(method, steps, lr_up=0.5):
    """The same program as a loop: the lower's SGD step, then the upper's with hg.grad, the
    carry passed along as init."""
    g = hg.grad(P.outer_loss, P.inner_loss, method, return_info=True)
    th, lam = torch.zeros(30, dtype=F64), torch.zeros(5, dtype=F64)
    carry = method.init_carry(th)
    for _ in range(steps):
        th = th - torch.func.grad(P.inner_loss)(th, lam) / P.L
        h, info = g(th, lam, init=carry)
        lam, carry = lam - lr_up * h, info.solution
    return lam, carry


def optimum():
    lam = torch.zeros(5, dtype=F64)
    for _ in range(3000):
        lam = lam - 0.5 * P.hypergrad(lam)
    assert P.hypergrad(lam).norm() < 1e-13
    return lam


NU = lambda t: 10 * (t + 1) ** 0.5  # noqa: E731
CARRYING = {"cg": hg.cg(2, warm_start=True),
            "penalty": hg.penalty(2, 1.0 / P.L, warm_start=True),
            "penalty schedule": hg.penalty(2, 1.0 / P.L, multiplier=NU, warm_start=True),
            "schedule alone": hg.penalty(2, 1.0 / P.L, multiplier=NU)}


@pytest.mark.parametrize("name", list(CARRYING))
def test_in_mlo_equal_to_the_loop_by_hand(name):
    method = CARRYING[name]
    state = run(method, 12)
    lam, carry = by_hand(method, 12)
    torch.testing.assert_close(state.params["hi"], lam, rtol=1e-10, atol=1e-13)
    kept = state.carries["lo"]["hi"]
    for a, b in zip(torch.utils._pytree.tree_leaves(kept), torch.utils._pytree.tree_leaves(carry)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    if name == "schedule alone":  # on a quadratic lower ν changes nothing: only the count
        assert int(kept.count) == 12
        return
    cold = run(hg.cg(2) if name == "cg" else hg.penalty(2, 1.0 / P.L), 12)  # the carry matters
    assert rel(cold.params["hi"], lam) > 1e-3


def test_no_carry_no_entry():
    assert run(hg.cg(2), 1).carries == {}
    assert set(run(CARRYING["cg"], 1).carries) == {"lo"}


def test_f2sa_reaches_the_exact_optimum_with_one_step_per_call():
    """On a quadratic lower the warm sequences' fixed point is exact whatever ν; from θ at every
    call, one step each is a one-term Neumann series, and the outer loop stalls at its bias."""
    ref = optimum()
    assert rel(run(hg.penalty(1, 1.0 / P.L, warm_start=True), 600).params["hi"], ref) < 1e-10
    assert rel(run(hg.penalty(1, 1.0 / P.L), 600).params["hi"], ref) > 0.1


def test_multiplier_schedule_brings_the_bias_down():
    """A lower whose ∇λL is not linear in θ: a fixed ν leaves the outer iterate O(1/ν) from the
    optimum (10x nearer for 10x the ν); ν_t = 10 √(t+1) keeps approaching it."""
    def L(th, lam):
        return 0.5 * ((th - lam) ** 2).sum() + 0.25 * (lam * th ** 4).sum()

    def F(th, lam):
        return 0.5 * ((th - 1.5) ** 2).sum() + 0.05 * (lam ** 2).sum()

    lam, th = torch.tensor([0.3, 0.6], dtype=F64), torch.zeros(2, dtype=F64)
    for _ in range(150):  # the exact bilevel optimum, from exact hypergradients at θ*(λ)
        for _ in range(40):  # (warm: θ*(λ) moves little per outer step)
            th = th - 0.5 * torch.func.grad(L)(th, lam)
        lam = lam - 0.5 * hg.grad(F, L, hg.exact())(th, lam)
    assert hg.grad(F, L, hg.exact())(th, lam).norm() < 1e-10

    def outer(method, *at):
        lo = mlo.Problem("lo", lambda th, b, *, hi: L(th, hi), torch.zeros(2, dtype=F64),
                         optim.sgd(0.5), hypergrad=method)
        hi = mlo.Problem("hi", lambda x, b, *, lo: F(lo, x), torch.tensor([0.3, 0.6], dtype=F64),
                         optim.sgd(0.5))
        state, errors = mlo.init([lo, hi], {"hi": ["lo"]}), []
        while len(errors) < len(at):
            state, _ = mlo.step(state, {}, logs=False)
            if state.step in at:
                errors.append(rel(state.params["hi"], lam))
        return errors
    (e10,), (e100,) = (outer(hg.penalty(2, 0.5, nu, warm_start=True), 200) for nu in (10., 100.))
    assert 8 < e10 / e100 < 12 and e100 < 3e-3
    s200, s800 = outer(hg.penalty(2, 0.5, NU, warm_start=True), 200, 800)
    assert s800 < 0.8 * s200 and s800 < e100 / 2


def test_resumed_run_equals_a_straight_one(tmp_path):
    probs, graph = program(CARRYING["penalty schedule"])
    straight = mlo.solve(probs, graph, steps=10, **QUIET)
    mlo.solve(probs, graph, steps=5, checkpoint=mlo.Checkpoint(tmp_path, every=5), **QUIET)
    resumed = mlo.solve(probs, graph, steps=10,
                        checkpoint=mlo.Checkpoint(tmp_path, every=5, resume=True), **QUIET)
    assert torch.equal(resumed.params["hi"], straight.params["hi"])
    fresh = mlo.solve(*program(CARRYING["penalty schedule"]), steps=5, **QUIET)  # restart = not
    again = mlo.solve(fresh_start(fresh), graph, steps=5, **QUIET)               # the same
    assert rel(again.params["hi"], straight.params["hi"]) > 1e-6
    with pytest.raises(ValueError, match="carried state"):
        mlo.solve(*program(hg.cg(2, warm_start=True)), steps=10,
                  checkpoint=mlo.Checkpoint(tmp_path, every=5, resume=True), **QUIET)


def fresh_start(result):
    """The program again from ``result``'s params, its carries started afresh."""
    probs, _ = program(CARRYING["penalty schedule"])
    return [dataclasses.replace(p, params=result.params[p.name]) for p in probs]


def test_vmap_and_compile_equal_eager():
    method = CARRYING["penalty schedule"]
    base = mlo.init(*program(method))
    states = [base, mlo.with_params(base, {"hi": torch.full((5,), 0.3, dtype=F64)})]
    stacked = mlo.stack(states)
    compiled = stacked
    for _ in range(3):
        stacked, _ = mlo.step(stacked, {}, batched=True)
        states = [mlo.step(s, {})[0] for s in states]
    torch._dynamo.reset()
    counters.clear()
    for _ in range(3):
        compiled, _ = mlo.step(compiled, {}, batched=True, compile={"backend": "aot_eager"})
    assert counters["stats"]["unique_graphs"] == 1  # three steps, one graph: no recompile
    for i, s in enumerate(states):
        for got in (mlo.unstack(stacked)[i], mlo.unstack(compiled)[i]):
            torch.testing.assert_close(got.params["hi"], s.params["hi"], rtol=1e-10, atol=1e-13)
            torch.testing.assert_close(got.carries["lo"]["hi"].y, s.carries["lo"]["hi"].y,
                                       rtol=1e-10, atol=1e-13)
    assert int(states[0].carries["lo"]["hi"].count) == 3


def test_with_params_restarts_the_carries():
    method = CARRYING["penalty"]
    state = run(method, 3)
    new = mlo.with_params(state, {"hi": torch.ones(5, dtype=F64)})
    assert torch.equal(new.carries["lo"]["hi"].y, state.params["lo"])
    assert int(new.carries["lo"]["hi"].count) == 0


def test_refusals():
    with pytest.raises(ValueError, match="starts from a given point"):
        hg.implicit(linsolve.neumann(5, 0.5), warm_start=True)
    with pytest.raises(TypeError, match="warm_start"):
        hg.cg(2, warm_start="yes")
    with pytest.raises(TypeError, match="warm_start"):
        hg.penalty(warm_start=1)
    with pytest.raises(ValueError, match="positive number at count 0"):
        hg.penalty(multiplier=lambda t: -t - 1)
    th, lam = P.solution(torch.zeros(5, dtype=F64)), torch.zeros(5, dtype=F64)
    g = hg.grad(P.outer_loss, P.inner_loss, hg.penalty(2, 1.0 / P.L))
    with pytest.raises(ValueError, match="carries state"):
        g(th, lam, init=hg.penalty(warm_start=True).init_carry(th))
    g = hg.grad(P.outer_loss, P.inner_loss, hg.penalty(2, 1.0 / P.L, warm_start=True))
    with pytest.raises(TypeError, match="PenaltyState"):
        g(th, lam, init=(th, th, 0))


def test_repr_holds_the_knobs():
    assert repr(hg.cg(2, warm_start=True)).endswith("warm_start=True)")
    assert "multiplier=<lambda>, warm_start=True" in repr(CARRYING["penalty schedule"])


def test_a_skipped_update_keeps_the_carry():
    """skip_nonfinite drops a NaN update of the upper: its penalty sequences stay as they were."""
    lo = mlo.Problem("lo", lambda th, b, *, hi: P.inner_loss(th, hi), torch.zeros(30, dtype=F64),
                     optim.sgd(1.0 / P.L), hypergrad=CARRYING["penalty"])
    hi = mlo.Problem("hi", lambda lam, b, *, lo: b * P.outer_loss(lo, lam),
                     torch.zeros(5, dtype=F64), optim.sgd(0.5))
    state, _ = mlo.step(mlo.init([lo, hi], {"hi": ["lo"]}, {"hi": 1.0}), {"hi": 1.0})
    bad, logs = mlo.step(state, {"hi": float("nan")}, skip_nonfinite=True)
    assert int(logs["hi"]["nonfinite"]) != 0
    assert torch.equal(bad.carries["lo"]["hi"].y, state.carries["lo"]["hi"].y)
    assert int(bad.carries["lo"]["hi"].count) == 1
    good, _ = mlo.step(state, {"hi": 1.0}, skip_nonfinite=True)
    assert int(good.carries["lo"]["hi"].count) == 2
