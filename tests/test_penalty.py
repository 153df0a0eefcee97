"""hypergrad.penalty: the fully first-order (F2SA / BOME value-function penalty) hypergradient.
Exact on a quadratic lower whatever the multiplier, its outer iterate reaching the same bilevel
optimum as hg.cg on benchopt's quadratic, no second-order autograd anywhere (the inner loss is
only ever evaluated under one transform level), its O(1/ν) bias on a non-quadratic lower, and in
mlo equal to hg.grad."""
import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim
from betty_func.testing import quadratic_benchopt

P = quadratic_benchopt(dim_inner=30, dim_outer=5, n_samples_inner=64, n_samples_outer=64)
LAM = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64)


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("nu", [10.0, 1e4])
def test_exact_on_a_quadratic_lower_whatever_the_multiplier(nu):
    th = P.solution(LAM)
    ours = hg.grad(P.outer_loss, P.inner_loss, hg.penalty(300, 1.0 / P.L, nu))(th, LAM)
    assert rel(ours, P.hypergrad(LAM)) < 1e-8


def test_outer_iterate_reaches_the_optimum_of_cg():
    def descend(method, steps=150, lr=0.5):
        lam = torch.zeros(5, dtype=torch.float64)
        for _ in range(steps):
            lam = lam - lr * hg.grad(P.outer_loss, P.inner_loss, method)(P.solution(lam), lam)
        return lam
    ours, ref = descend(hg.penalty(100, 1.0 / P.L)), descend(hg.cg(maxiter=60))
    assert rel(ours, ref) < 1e-4 and ref.norm() > 0.1


def test_no_second_order_autograd():
    levels = []

    def L(th, lam):
        levels.append(torch._C._functorch.maybe_current_level())
        return P.inner_loss(th, lam)
    hg.grad(P.outer_loss, L, hg.penalty(5, 1.0))(P.solution(LAM), LAM)
    assert set(levels) == {1} and len(levels) == 2 * 5 + 1  # y, z (sharing θ's) and 2 of ∇λL
    levels.clear()
    warm = hg.penalty(5, 1.0, warm_start=True)
    th = P.solution(LAM)
    hg.grad(P.outer_loss, L, warm)(th, LAM, init=warm.init_carry(th))
    assert set(levels) == {1} and len(levels) == 2 * 5 + 2  # warm: z's first step its own
    levels.clear()
    hg.grad(P.outer_loss, L, hg.cg(3))(P.solution(LAM), LAM)
    assert max(levels) == 2  # (a Hessian product nests a second level: the probe can fail)


def test_bias_falls_like_one_over_the_multiplier():
    """A lower whose ∇λL is not linear in θ (L = ½‖θ − λ‖² + ¼ Σ λ θ⁴): the bias ∝ 1/ν."""
    def L(th, lam):
        return 0.5 * ((th - lam) ** 2).sum() + 0.25 * (lam * th ** 4).sum()

    def F(th, lam):
        return 0.5 * ((th - 1.0) ** 2).sum()
    lam = torch.tensor([0.3, 0.6], dtype=torch.float64)
    th = torch.zeros(2, dtype=torch.float64)
    for _ in range(200):  # θ*(λ) by gradient descent
        th = th - 0.5 * torch.func.grad(L)(th, lam)
    exact = hg.grad(F, L, hg.exact())(th, lam)
    errs = [rel(hg.grad(F, L, hg.penalty(200, 0.5, nu))(th, lam), exact) for nu in (10.0, 100.0)]
    assert 5 < errs[0] / errs[1] < 20 and errs[1] < 1e-2


def test_in_mlo_equal_to_hg_grad():
    lo = mlo.Problem("lo", lambda th, b, *, hi: P.inner_loss(th, hi), P.solution(LAM),
                     optim.sgd(0.0), hypergrad=hg.penalty(20, 1.0 / P.L))
    hi = mlo.Problem("hi", lambda lam, b, *, lo: P.outer_loss(lo, lam), LAM, optim.sgd(1.0))
    state, _ = mlo.step(mlo.init([lo, hi], {"hi": ["lo"]}), {})
    ref = hg.grad(P.outer_loss, P.inner_loss, hg.penalty(20, 1.0 / P.L))(P.solution(LAM), LAM)
    torch.testing.assert_close(LAM - state.params["hi"], ref, rtol=1e-10, atol=1e-13)


def test_refusals():
    for kw, what in (({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"multiplier": 0.0},
                                                                     "multiplier")):
        with pytest.raises(ValueError, match=what):
            hg.penalty(**kw)


def test_vmap_and_compile_equal_eager():
    g = hg.grad(P.outer_loss, P.inner_loss, hg.penalty(10, 1.0 / P.L))
    th = P.solution(LAM)
    lams = torch.stack([LAM, 2 * LAM])
    batched = torch.vmap(lambda lam: g(th, lam))(lams)
    for i in range(2):
        torch.testing.assert_close(batched[i], g(th, lams[i]), rtol=1e-12, atol=1e-14)
    torch._dynamo.reset()
    compiled = torch.compile(g, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(th, LAM), g(th, LAM), rtol=1e-12, atol=1e-14)
