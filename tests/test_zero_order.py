"""hypergrad.zero_order: evolution strategies on the lower's updates. Its mean over seeds is the
unrolled hypergradient when the last iterate is affine in λ (Gaussian smoothing leaves an affine
map as it is), its error falls like 1/√samples, it runs inside mlo on the lower's window, and
compiles."""
import math

import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim

F64 = torch.float64
gen = torch.Generator().manual_seed(0)
A, B = torch.randn(6, 4, dtype=F64, generator=gen), torch.randn(6, dtype=F64, generator=gen)
W = torch.randn(4, 3, dtype=F64, generator=gen)
C, D = torch.randn(5, 4, dtype=F64, generator=gen), torch.randn(5, dtype=F64, generator=gen)
TH0, LAM = torch.zeros(4, dtype=F64), torch.randn(3, dtype=F64, generator=gen)
STEPS, LR = 3, 0.05


def L(th, lam):  # quadratic in θ, affine coupling: θ_T is affine in λ
    return 0.5 * ((A @ th - B) ** 2).sum() + 0.5 * ((th - W @ lam) ** 2).sum()


def F(th, lam):
    return 0.5 * ((C @ th - D) ** 2).sum()


def estimate(samples, seed):
    m = hg.zero_order(samples, 0.1, STEPS, optim.sgd(LR), torch.Generator().manual_seed(seed))
    return hg.grad(F, L, m)(TH0, LAM)


def test_mean_is_the_unrolled_hypergradient_and_error_falls_like_one_over_root_n():
    exact = hg.grad(F, L, hg.unrolled(STEPS, optim.sgd(LR)))(TH0, LAM)
    errors = {}
    for n in (8, 32):
        est = torch.stack([estimate(n, 1000 * n + r) for r in range(40)])
        spread = est.std(0) / math.sqrt(len(est))
        assert ((est.mean(0) - exact).abs() < 4 * spread + 1e-12).all()
        errors[n] = (est - exact).pow(2).mean().sqrt()
    ratio = float(errors[8] / errors[32])
    assert 1.5 < ratio < 2.7, ratio  # √(32 / 8) = 2


def test_in_mlo_it_perturbs_the_lowers_window():
    K = 3
    lo = mlo.Problem("lo", lambda th, b, *, hi: L(th, hi), TH0, optim.sgd(LR), unroll_steps=K,
                     hypergrad=hg.zero_order(16, 0.1, generator=torch.Generator().manual_seed(5)))
    hi = mlo.Problem("hi", lambda lam, b, *, lo: F(lo, lam), LAM, optim.sgd(1.0))
    state = mlo.init([lo, hi], {"hi": ["lo"]})
    for _ in range(K):  # the window runs at the K-th step, on K batches (None here)
        state, _ = mlo.step(state, {n: [None] * k if k > 1 else None
                                    for n, k in mlo.due(state).items()})
    ref = hg.grad(F, L, hg.zero_order(16, 0.1, K, optim.sgd(LR),
                                      torch.Generator().manual_seed(5)))(TH0, LAM)
    torch.testing.assert_close(LAM - state.params["hi"], ref, rtol=1e-12, atol=1e-14)


def test_compiles_with_the_global_rng():
    g = hg.grad(F, L, hg.zero_order(2, 0.1, 2, optim.sgd(LR)))
    torch.manual_seed(3)
    eager = g(TH0, LAM)
    torch._dynamo.reset()
    compiled = torch.compile(g, backend="aot_eager", fullgraph=True)
    torch.manual_seed(3)
    torch.testing.assert_close(compiled(TH0, LAM), eager, rtol=1e-12, atol=1e-14)


def test_refusals():
    with pytest.raises(ValueError, match="`steps` and `optimizer` are needed"):
        hg.grad(F, L, hg.zero_order())(TH0, LAM)
    with pytest.raises(TypeError, match="samples"):
        hg.zero_order(samples=2.5)
    with pytest.raises(ValueError, match="sigma"):
        hg.zero_order(sigma=0.0)
    with pytest.raises(TypeError, match="torch.Generator"):
        hg.zero_order(generator=0)


def test_vmap_with_different_randomness():
    """Under torch.vmap each program draws its own noise (randomness='different'); with one
    program per row equal to the same λ, the rows differ but average to the estimate's mean."""
    g = hg.grad(F, L, hg.zero_order(4, 0.1, STEPS, optim.sgd(LR)))
    lams = LAM.expand(64, 3)
    est = torch.vmap(lambda lam: g(TH0, lam), randomness="different")(lams)
    exact = hg.grad(F, L, hg.unrolled(STEPS, optim.sgd(LR)))(TH0, LAM)
    assert (est[0] - est[1]).abs().max() > 1e-6
    spread = est.std(0) / 8
    assert ((est.mean(0) - exact).abs() < 4 * spread + 1e-12).all()
