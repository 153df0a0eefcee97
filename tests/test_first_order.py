"""First-order MAML as a method (hypergrad.first_order): the cotangent on the adapted params
pulled back through the lower's start alone, against a hand-written first-order MAML loop."""
import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim, testing

F64 = torch.float64
T, D, K, ALPHA = 3, 4, 3, 0.1
QUIET = dict(logging=mlo.Logging(every=1, progress=False, console=False))


def tasks():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(T, D, D, generator=g, dtype=F64))[0]
    A = q @ torch.diag_embed(torch.linspace(0.5, 3.0, D, dtype=F64).expand(T, D)) @ q.mT
    a, b = torch.randn(T, D, generator=g, dtype=F64), torch.randn(T, D, generator=g, dtype=F64)
    return A, a, b


def maml(method, phi0):
    """MAML on T quadratic tasks: support 1/2 (θ-a)ᵀA(θ-a), query 1/2 |θ-b|², K SGD steps."""
    A, a, b = tasks()

    def adapt_loss(theta, batch):  # summed over tasks: each task its own gradient
        r = theta - a
        return 0.5 * torch.einsum("ti,tij,tj->", r, A, r)

    def meta_loss(phi, batch, *, adapt):
        return 0.5 * ((adapt - b) ** 2).sum(-1).mean()

    adapt = mlo.Problem("adapt", adapt_loss, phi0.expand(T, D).clone(), optim.sgd(ALPHA),
                        hypergrad=method, unroll_steps=K,
                        reset=lambda theta, *, meta: meta.expand(T, D).clone())
    meta = mlo.Problem("meta", meta_loss, phi0, optim.sgd(1.0))
    return [adapt, meta], {"meta": ["adapt"]}


def by_hand(phi, second_order):
    """One meta-gradient by plain autograd: K SGD steps from φ per task (the gradients detached
    for first order), the query loss's gradient in φ."""
    A, a, b = tasks()
    phi = phi.clone().requires_grad_()
    theta = phi.expand(T, D)
    for _ in range(K):
        g = torch.einsum("tij,tj->ti", A, theta - a)
        theta = theta - ALPHA * (g if second_order else g.detach())
    (0.5 * ((theta - b) ** 2).sum(-1).mean()).backward()
    return phi.grad


def test_first_order_maml_equals_the_hand_written_loop_and_differs_from_maml():
    phi0 = torch.linspace(-1.0, 1.0, D, dtype=F64)
    first = mlo.solve(*maml(hg.first_order(), phi0), steps=K, **QUIET)
    assert torch.allclose(phi0 - first.params["meta"], by_hand(phi0, False), rtol=1e-12, atol=0)
    full = mlo.solve(*maml(hg.unrolled(), phi0), steps=K, **QUIET)
    assert torch.allclose(phi0 - full.params["meta"], by_hand(phi0, True), rtol=1e-12, atol=0)
    gap = (first.params["meta"] - full.params["meta"]).norm() / by_hand(phi0, True).norm()
    assert gap > 0.05  # the curvature terms it drops are not small here


def test_first_order_in_hg_grad_is_the_direct_plus_the_inner_cotangent():
    p = testing.ridge(d=5, kappa=10.0)
    lam = torch.linspace(0.1, 0.5, 5, dtype=F64)
    theta = p.solution(lam)
    got = hg.grad(p.outer_loss, p.inner_loss, hg.first_order())(theta, lam)
    v = torch.func.grad(p.outer_loss, argnums=(0, 1))(theta, lam)
    assert torch.allclose(got, v[0] + v[1], rtol=1e-14, atol=0)
    g = hg.grad(p.outer_loss, p.inner_loss, hg.first_order())
    lams = torch.stack([lam, 2 * lam])
    batched = torch.vmap(g, in_dims=(None, 0))(theta, lams)
    assert torch.allclose(batched[1], g(theta, 2 * lam), rtol=1e-14, atol=0)
    compiled = torch.compile(g, backend="aot_eager", fullgraph=True)(theta, lam)
    assert torch.allclose(compiled, got, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match=r"hypergrad\.grad\(outer_loss, inner_loss, "
                       r"hypergrad\.first_order\(\)\): "
                       r"`inner_params` and `outer_params` are pytrees of different structure"):
        hg.grad(p.outer_loss, lambda th, lv: p.inner_loss(th, lv["x"]),
                hg.first_order())(theta, {"x": lam})


def test_first_order_without_a_reset_is_refused():
    phi0 = torch.zeros(D, dtype=F64)
    (adapt, meta), graph = maml(hg.first_order(), phi0)
    with pytest.raises(ValueError, match=r"mlo\.Problem\('adapt'.*first_order\(\) reaches the "
                       r"uppers through where this problem starts.*no `reset`"):
        mlo.Problem("adapt", adapt.loss, adapt.params, adapt.optimizer,
                    hypergrad=hg.first_order(), unroll_steps=K)


def test_first_order_compiles_as_one_graph_equal_to_eager():
    from torch._dynamo.utils import counters
    phi0 = torch.linspace(-1.0, 1.0, D, dtype=F64)
    eager = mlo.solve(*maml(hg.first_order(), phi0), steps=2 * K, **QUIET)
    torch._dynamo.reset()
    counters.clear()
    compiled = mlo.solve(*maml(hg.first_order(), phi0), steps=2 * K, **QUIET,
                         compile={"backend": "aot_eager"})
    # one graph per pattern of updates, each compiled once (and its compile time logged)
    from test_mlo_compile import patterns
    want = len(patterns(*maml(hg.first_order(), phi0), 2 * K))
    assert counters["stats"]["unique_graphs"] == want == len(compiled.history["compile/seconds"])
    for n in eager.params:
        assert torch.allclose(compiled.params[n], eager.params[n], rtol=1e-12, atol=1e-14)
