"""Hypergradients compose: vmap equals a Python loop, torch.compile equals eager, grad of grad."""
import pytest
import torch
from torch.func import jacrev

from betty_func import hypergrad as hg, optim, testing

F64 = torch.float64
P = testing.ridge(d=8, kappa=30.0, n_train=24)
THETA_STAR = P.solution(P.lam)
THETA0 = torch.zeros(8, dtype=F64)
METHODS = {
    "cg": (hg.cg(maxiter=8), THETA_STAR),
    "neumann": (hg.neumann(steps=6, alpha=0.02), THETA_STAR),
    "darts": (hg.darts(eps=0.01), THETA_STAR),
    "exact": (hg.exact(), THETA_STAR),
    "unrolled": (hg.unrolled(5, optim.sgd(0.02, momentum=0.5)), THETA0),
    "unrolled_ckpt": (hg.unrolled(6, optim.adam(0.05), checkpoint_every=2), THETA0),
}


def batch_of_lams(n=4):
    return P.lam + 0.05 * torch.rand(n, 8, generator=torch.Generator().manual_seed(1), dtype=F64)


@pytest.mark.parametrize("name", METHODS)
def test_vmap_over_outer_params_equals_loop(name):
    method, theta = METHODS[name]
    g = hg.grad(P.outer_loss, P.inner_loss, method)
    lams = batch_of_lams()
    batched = torch.vmap(g, in_dims=(None, 0))(theta, lams)
    loop = torch.stack([g(theta, lam) for lam in lams])
    assert torch.allclose(batched, loop, rtol=1e-10, atol=1e-12)


def test_vmap_over_inner_and_outer_params():
    """Per-task inner solutions (meta-learning style): both arguments batched."""
    g = hg.grad(P.outer_loss, P.inner_loss, hg.cg(maxiter=8))
    lams = batch_of_lams()
    thetas = torch.stack([P.solution(lam) for lam in lams])
    batched = torch.vmap(g)(thetas, lams)
    assert torch.allclose(batched, torch.stack([P.hypergrad(lam) for lam in lams]), rtol=1e-8)


@pytest.mark.parametrize("name", METHODS)
def test_compile_fullgraph_equals_eager(name):
    method, theta = METHODS[name]
    g = hg.grad(P.outer_loss, P.inner_loss, method)
    torch._dynamo.reset()
    compiled = torch.compile(g, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(theta, P.lam), g(theta, P.lam), rtol=1e-12, atol=1e-14)


def test_compile_inductor_cg_with_info():
    """One real inductor compile (small shapes): no graph break, same numbers, info as tensors."""
    g = hg.grad(P.outer_loss, P.inner_loss, hg.cg(maxiter=8, tol=1e-12), return_info=True)
    torch._dynamo.reset()
    compiled = torch.compile(g, fullgraph=True)
    (a, ia), (b, ib) = compiled(THETA_STAR, P.lam), g(THETA_STAR, P.lam)
    assert torch.allclose(a, b, rtol=1e-10) and int(ia.iterations) == int(ib.iterations)
    assert torch.allclose(a, P.hypergrad(P.lam), rtol=1e-8)


@pytest.mark.parametrize("method", [hg.cg(maxiter=4), hg.exact(), hg.neumann(3, 0.02), hg.darts()],
                         ids=["cg", "exact", "neumann", "darts"])
def test_jacobian_of_hypergradient_matches_finite_differences(method):
    """grad-of-hypergrad: the hypergradient is itself differentiable in the outer params.
    (Differentiating through a CG run to machine precision amplifies rounding, ~1e-7 relative.)"""
    g = hg.grad(P.outer_loss, P.inner_loss, method)
    jac = jacrev(g, argnums=1)(THETA_STAR, P.lam)
    h = 1e-6
    fd = torch.stack([(g(THETA_STAR, P.lam + h * e) - g(THETA_STAR, P.lam - h * e)) / (2 * h)
                      for e in torch.eye(8, dtype=F64)], dim=1)
    assert (jac - fd).abs().max() <= 1e-7 * fd.abs().max()
