"""benchopt's simulated bilevel quadratic (testing._benchopt): its closed forms, its spectrum, and
each method against the quantity it claims to compute on it (DESIGN.md §4)."""
import math

import pytest
import torch

from betty_func import hypergrad as hg, testing
from betty_func.testing._benchopt import quadratic_benchopt

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # small LAPACK calls on a busy 2-core machine run up to 100x slower threaded
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prob():
    return quadratic_benchopt()  # benchopt's sizes: p = 100, d = 10, n = m = 1024, seed 2442


@pytest.fixture(scope="module")
def lam():
    return torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=F64)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_exact_hypergradient_equals_finite_differences_of_the_value_function(prob, lam):
    h = 1e-4  # h is quadratic: central differences are exact up to rounding
    fd = torch.stack([(prob.value(lam + h * e) - prob.value(lam - h * e)) / (2 * h)
                      for e in torch.eye(10, dtype=F64)])
    exact = prob.hypergrad(lam)
    assert rel(exact, fd) < 1e-8
    assert rel(torch.func.grad(prob.value)(lam), exact) < 1e-12  # autograd through the solve
    assert testing.check_hypergrad(hg.exact(), prob.outer_loss, prob.inner_loss, prob.solution,
                                   lam).ok
    hess = torch.func.hessian(prob.value)(lam)
    assert torch.allclose(hess, prob.value_hessian(), atol=1e-12)
    assert float(torch.linalg.eigvalsh(hess)[0]) > 0  # the draw was kept: h strongly convex


def test_spectrum_and_losses_are_benchopts(prob):
    eig = torch.linalg.eigvalsh(prob.inner.H)
    assert prob.kappa == pytest.approx(10.0, rel=1e-9) and prob.L == pytest.approx(1.0, rel=1e-9)
    assert torch.allclose(eig, torch.logspace(-1, 0, 100, dtype=F64), rtol=1e-9)
    for level in (prob.inner, prob.outer):  # cross terms: every singular value L_cross = 0.1
        assert torch.allclose(torch.linalg.svdvals(level.C), torch.full((10,), 0.1, dtype=F64))
        assert float(torch.linalg.eigvalsh(level.G)[0]) == pytest.approx(0.0, abs=1e-12)
    gen = torch.Generator().manual_seed(1)
    th, lv = torch.randn(100, generator=gen, dtype=F64), torch.randn(10, generator=gen, dtype=F64)
    every = torch.arange(1024)
    for loss in (prob.inner_loss, prob.outer_loss):  # per-sample average == full-batch form
        assert float(loss(th, lv, every)) == pytest.approx(float(loss(th, lv)), rel=1e-12)
    g = torch.func.grad(prob.inner_loss)(prob.solution(lv), lv)
    assert float(g.norm()) < 1e-12  # θ*(λ) is stationary
    raw = quadratic_benchopt(exact_spectrum=False)  # benchopt's own (unwhitened) draws
    assert 12 < raw.kappa < 20 and raw.L > 1.05
    assert quadratic_benchopt(20, 4, 64, 64, dtype=torch.float32).inner.H.dtype == torch.float32


def test_cg_with_maxiter_100_is_exact(prob, lam):
    g = hg.grad(prob.outer_loss, prob.inner_loss, hg.cg(maxiter=100))(prob.solution(lam), lam)
    assert rel(g, prob.hypergrad(lam)) < 1e-8


def test_cg_error_contracts_at_least_at_the_chebyshev_rate(prob, lam):
    """‖p_k − p*‖_H ≤ 2 ((√κ−1)/(√κ+1))^k ‖p*‖_H for CG from zero on H p = ∇θF."""
    theta = prob.solution(lam)
    o, H = prob.outer, prob.inner.H
    p_star = torch.linalg.solve(H, o.H @ theta + o.C.T @ lam + o.bm)
    h_norm = lambda e: float(torch.sqrt(e @ (H @ e)))  # noqa: E731
    rho = (math.sqrt(prob.kappa) - 1) / (math.sqrt(prob.kappa) + 1)
    assert rho == pytest.approx(0.5195, abs=1e-4)
    errs = {}
    for k in (5, 15):
        g = hg.grad(prob.outer_loss, prob.inner_loss, hg.cg(maxiter=k), return_info=True)
        _, info = g(theta, lam)
        errs[k] = h_norm(info.solution - p_star) / h_norm(p_star)
        assert errs[k] <= 2 * rho ** k
    assert errs[15] / errs[5] <= rho ** 10  # 10 more iterations: at least ρ^10 further
    assert errs[15] > 1e-2 * 2 * rho ** 15  # and the bound is near tight (log-spaced spectrum)


def test_neumann_equals_the_truncated_series_and_decays_by_1_minus_mu_over_L(prob, lam):
    theta, alpha = prob.solution(lam), 1.0 / prob.L
    i, o = prob.inner, prob.outer
    v = o.H @ theta + o.C.T @ lam + o.bm
    direct = o.G @ lam + o.C @ theta + o.cm
    exact = prob.hypergrad(lam)
    errs = {}
    for k in (30, 60):
        term, acc = v, v.clone()
        for _ in range(k):  # α Σ_{j≤k} (I − αH)^j v by hand
            term = term - alpha * (i.H @ term)
            acc = acc + term
        series = direct - i.C @ (alpha * acc)
        g = hg.grad(prob.outer_loss, prob.inner_loss, hg.neumann(k, alpha))(theta, lam)
        assert rel(g, series) < 1e-10
        errs[k] = rel(g, exact)
    rate = (errs[60] / errs[30]) ** (1 / 30)
    assert 0.88 < rate <= 0.9 + 1e-6  # 1 − αλmin = 0.9 per term, asymptotically


def test_constructor_validates():
    with pytest.raises(ValueError, match=r"`mu_inner` must be <= `L_inner`"):
        quadratic_benchopt(mu_inner=2.0)
    with pytest.raises(ValueError, match=r"at least max\(dim_inner, dim_outer\) samples"):
        quadratic_benchopt(dim_inner=100, n_samples_inner=50)
    with pytest.raises(ValueError, match=r"`L_cross` must be a number > 0"):
        quadratic_benchopt(L_cross=0.0)
