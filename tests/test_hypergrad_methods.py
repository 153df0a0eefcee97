"""Each method against the quantity it claims to compute (DESIGN.md §4), float64, κ ≈ 30."""
import numpy as np
import pytest
import torch
from torch.func import grad

from betty_func import hypergrad as hg, linsolve, optim, testing

F64 = torch.float64


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def ridge():
    p = testing.ridge(d=20, kappa=30.0)
    assert 20 < p.kappa(p.lam) < 40
    return p


def hypergrad(p, method, theta=None):
    theta = p.solution(p.lam) if theta is None else theta
    return hg.grad(p.outer_loss, p.inner_loss, method)(theta, p.lam)


def test_closed_form_itself_matches_finite_differences(ridge):
    res = testing.check_hypergrad(hg.exact(), ridge.outer_loss, ridge.inner_loss, ridge.solution,
                                  ridge.lam)
    assert res.ok and res.max_rel_error < 1e-6
    h = 1e-6  # and the closed form directly, coordinate by coordinate
    phi = lambda lv: ridge.outer_loss(ridge.solution(lv), lv)  # noqa: E731
    fd = torch.stack([(phi(ridge.lam + h * e) - phi(ridge.lam - h * e)) / (2 * h)
                      for e in torch.eye(20, dtype=F64)])
    assert rel(ridge.hypergrad(ridge.lam), fd) < 1e-7


@pytest.mark.parametrize("d", [10, 40])
def test_cg_with_dim_iterations_is_exact(d):
    p = testing.ridge(d=d, kappa=30.0, n_train=3 * d)
    assert rel(hypergrad(p, hg.cg(maxiter=d)), p.hypergrad(p.lam)) < 1e-8


def test_cg_error_falls_with_iterations(ridge):
    errs = [rel(hypergrad(ridge, hg.cg(maxiter=k)), ridge.hypergrad(ridge.lam))
            for k in (1, 4, 8, 16)]
    assert all(a > b for a, b in zip(errs, errs[1:])) and errs[-1] < 1e-3 * errs[0]


def test_dense_is_exact(ridge):
    assert rel(hypergrad(ridge, hg.exact()), ridge.hypergrad(ridge.lam)) < 1e-12


def test_quadratic_with_direct_term():
    q = testing.quadratic(d_inner=10, d_outer=4, kappa=30.0, mu=0.3)
    for method in (hg.exact(), hg.cg(maxiter=10)):
        g = hg.grad(q.outer_loss, q.inner_loss, method)(q.solution(q.lam), q.lam)
        assert rel(g, q.hypergrad(q.lam)) < 1e-9


def test_neumann_equals_truncated_series_and_error_falls(ridge):
    theta = ridge.solution(ridge.lam)
    A = ridge.hessian(ridge.lam).numpy()
    v = ridge.outer_grad_theta(theta).numpy()
    alpha = 1.0 / np.linalg.eigvalsh(A)[-1]
    exact = ridge.hypergrad(ridge.lam)
    errs = []
    for k in (1, 5, 50, 500):
        series = alpha * sum(np.linalg.matrix_power(np.eye(20) - alpha * A, j) @ v
                             for j in range(k + 1))
        target = -theta * torch.from_numpy(series)  # ridge: mixed term B^T p = θ ⊙ p
        g = hypergrad(ridge, hg.neumann(steps=k, alpha=alpha))
        assert rel(g, target) < 1e-10
        errs.append(rel(g, exact))
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-6


def test_darts_equals_identity_approximation(ridge):
    theta = ridge.solution(ridge.lam)
    v = ridge.outer_grad_theta(theta)
    for scale in (1.0, 0.05):
        # L is quadratic in θ, so the central difference is exact up to rounding
        assert rel(hypergrad(ridge, hg.darts(eps=0.01, scale=scale)), -scale * theta * v) < 1e-9


def test_finite_difference_error_is_second_order():
    """On an inner loss that is not quadratic in θ the error falls 4x when eps halves."""
    g = torch.Generator().manual_seed(3)
    theta, lam, p = (torch.randn(6, generator=g, dtype=F64) for _ in range(3))
    L = lambda th, lv: (lv * torch.cosh(th)).sum()  # noqa: E731  (∂²L/∂λ∂θ p = sinh(θ) ⊙ p)
    truth = torch.sinh(theta) * p
    g_theta, g_lam = grad(L, argnums=0), grad(L, argnums=1)
    errs = [rel(hg.finite_difference(eps)(g_theta, g_lam, theta, lam, p), truth)
            for eps in (0.08, 0.04, 0.02)]
    assert all(3.8 < a / b < 4.2 for a, b in zip(errs, errs[1:]))
    assert rel(hg.exact_mixed()(g_theta, g_lam, theta, lam, p), truth) < 1e-14


def plain_autograd_unrolled(p, theta0, lr, momentum, steps):
    """Reverse mode through a hand-written SGD-with-momentum loop on plain torch.autograd."""
    lam = p.lam.clone().requires_grad_()
    theta, buf = theta0.clone().requires_grad_(), None
    for t in range(steps):
        (g,) = torch.autograd.grad(p.inner_loss(theta, lam), theta, create_graph=True)
        buf = g if t == 0 else momentum * buf + g
        theta = theta - lr * buf
    (out,) = torch.autograd.grad(p.outer_loss(theta, lam), lam)
    return out


@pytest.mark.parametrize("checkpoint_every", [0, 1, 4, 7])
def test_unrolled_equals_plain_autograd_loop(ridge, checkpoint_every):
    theta0 = torch.zeros(20, dtype=F64)
    for lr, momentum in ((0.03, 0.0), (0.01, 0.9)):
        ours = hypergrad(ridge, hg.unrolled(15, optim.sgd(lr, momentum=momentum),
                                            checkpoint_every=checkpoint_every), theta0)
        assert rel(ours, plain_autograd_unrolled(ridge, theta0, lr, momentum, 15)) < 1e-10


def test_unrolled_tends_to_exact_as_steps_grow(ridge):
    theta0 = torch.zeros(20, dtype=F64)
    lr = 1.0 / float(torch.linalg.eigvalsh(ridge.hessian(ridge.lam))[-1])
    errs = [rel(hypergrad(ridge, hg.unrolled(T, optim.sgd(lr)), theta0), ridge.hypergrad(ridge.lam))
            for T in (10, 100, 1000)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-8


def test_checkpointed_unrolled_replays_randomness(ridge):
    """A stochastic inner loss: recomputed segments must see the same noise as the first pass."""
    def noisy_inner(theta, lam):
        return ridge.inner_loss(theta, lam) + 0.1 * (torch.randn(20, dtype=F64) * theta ** 2).sum()
    theta0 = torch.zeros(20, dtype=F64)
    out = []
    for every in (0, 3):
        torch.manual_seed(7)
        out.append(hg.grad(ridge.outer_loss, noisy_inner,
                           hg.unrolled(9, optim.sgd(0.02), checkpoint_every=every))(theta0,
                                                                                     ridge.lam))
    assert rel(out[1], out[0]) < 1e-12


def test_adam_unrolled_matches_finite_differences(ridge):
    theta0 = torch.zeros(20, dtype=F64)
    opt = optim.adam(0.05)

    def theta_T(lam):
        theta, state = theta0, opt.init(theta0)
        for _ in range(8):
            theta, state = optim.step(opt, theta, grad(ridge.inner_loss)(theta, lam), state)
        return theta
    res = testing.check_hypergrad(hg.unrolled(8, opt, checkpoint_every=3), ridge.outer_loss,
                                  ridge.inner_loss, theta_T, ridge.lam, inner_params=theta0)
    assert res.ok, res.max_rel_error


@pytest.mark.parametrize("batched", [True, False])
def test_finite_difference_shares_randomness(batched):
    """∇λL under a dropout mask m: (m(θ+εp))² - (m(θ-εp))² over 4ε is m²θp only if both signs
    see the same mask; with p = 1 every coordinate must be 0 or 4θ."""
    theta, lam = torch.linspace(1, 2, 200, dtype=F64), torch.ones(200, dtype=F64)
    L = lambda th, lv: 0.5 * (lv * torch.nn.functional.dropout(th, 0.5) ** 2).sum()  # noqa: E731
    m = hg.finite_difference(eps=0.01, batched=batched)(None, grad(L, argnums=1), theta, lam,
                                                        torch.ones(200, dtype=F64))
    zero, full = m.abs() < 1e-9, (m - 4 * theta).abs() < 1e-7
    assert bool((zero | full).all()) and 20 < int(zero.sum()) < 180


def test_info_diagnostics_and_warm_start(ridge):
    theta = ridge.solution(ridge.lam)
    g = hg.grad(ridge.outer_loss, ridge.inner_loss, hg.cg(maxiter=4), return_info=True)
    _, cold = g(theta, ridge.lam)
    assert cold.inner_grad_norm < 1e-10 and int(cold.iterations) == 4 and cold.residual_norm > 0
    _, warm = g(theta, ridge.lam, init=cold.solution)
    assert warm.residual_norm < 0.5 * cold.residual_norm
    hv = hg.grad(ridge.outer_loss, ridge.inner_loss, hg.neumann(3, 0.01), return_info=True)
    _, info = hv(theta, ridge.lam)
    A = ridge.hessian(ridge.lam)
    assert torch.isclose(info.residual_norm,
                         (A @ info.solution - ridge.outer_grad_theta(theta)).norm())
    _, uinfo = hg.grad(ridge.outer_loss, ridge.inner_loss, hg.unrolled(5, optim.sgd(0.01)),
                       return_info=True)(theta, ridge.lam)
    assert int(uinfo.iterations) == 5 and uinfo.residual_norm is None


def test_forward_over_reverse_equals_reverse_over_reverse(ridge):
    theta = ridge.solution(ridge.lam)
    a = hg.grad(ridge.outer_loss, ridge.inner_loss,
                hg.implicit(linsolve.cg(maxiter=20), hvp=hg.forward_over_reverse))(theta, ridge.lam)
    b = hypergrad(ridge, hg.cg(maxiter=20))
    assert rel(a, b) < 1e-12


def test_pytrees_and_extra_args():
    """Dict-valued params on both levels and a batch passed through *args."""
    q = testing.quadratic(d_inner=10, d_outer=4, kappa=30.0, mu=0.2)
    split = lambda th: torch.cat([th["a"].reshape(-1), th["b"]])  # noqa: E731
    inner = lambda th, lam, s: q.inner_loss(split(th), s * torch.cat([lam["x"], lam["y"]]))  # noqa
    outer = lambda th, lam, s: q.outer_loss(split(th), torch.cat([lam["x"], lam["y"]]))  # noqa
    sol = q.solution(2.0 * q.lam)
    theta = {"a": sol[:6].reshape(2, 3), "b": sol[6:]}
    lam = {"x": q.lam[:1], "y": q.lam[1:]}
    g = hg.grad(outer, inner, hg.cg(maxiter=10))(theta, lam, 2.0)
    truth = (2.0 * q.B.T @ torch.linalg.solve(q.H, sol - q.c)) + q.mu * q.lam
    assert rel(torch.cat([g["x"], g["y"]]), truth) < 1e-9
