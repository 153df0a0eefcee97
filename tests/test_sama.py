"""SAMA (hypergrad.sama): the lower's optimizer step's Jacobian in place of the inverse Hessian.
Checked in float64 against its formula by hand (Adam), against darts(scale=lr) for SGD, inside
mlo (the lower's own optimizer and its state after this step's update), under vmap and
torch.compile, and for its refusals."""
import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim

F64 = torch.float64
torch.manual_seed(0)
A, B = torch.randn(8, 5, dtype=F64), torch.randn(8, dtype=F64)
C, D = torch.randn(6, 5, dtype=F64), torch.randn(6, dtype=F64)


def L(th, lam):
    """Ridge with one decay exp(λ_j) per weight: ∇θL = Aᵀ(Aθ - b) + e^λ θ, ∂λ∇θL = diag(e^λ θ)."""
    return 0.5 * ((A @ th - B) ** 2).sum() + 0.5 * (lam.exp() * th ** 2).sum()


def F(th, lam):
    return 0.5 * ((C @ th - D) ** 2).sum()


TH, LAM = torch.randn(5, dtype=F64), torch.randn(5, dtype=F64) * 0.1


def adam_state(opt, steps=3):
    th, s = TH.clone(), opt.init(TH)
    for _ in range(steps):
        th, s = optim.step(opt, th, torch.func.grad(L)(th, LAM), s)
    return s


def test_sgd_lower_equals_darts_with_the_rate_as_scale():
    for lr in (0.1, 0.7):
        ours = hg.grad(F, L, hg.sama(eps=0.01, optimizer=optim.sgd(lr)))(TH, LAM)
        ref = hg.grad(F, L, hg.darts(eps=0.01, scale=lr))(TH, LAM)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_adam_lower_equals_the_formula_by_hand():
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.05
    opt = optim.adam(lr, (b1, b2), eps)
    s = adam_state(opt)
    ours = hg.grad(F, L, hg.sama(eps=0.5, optimizer=opt))(TH, LAM, optimizer_state=s)
    # the next update from g: u = -lr m̂ / (√v̂ + ε), m = b1 m0 + (1-b1) g, v = b2 v0 + (1-b2) g²
    g = torch.func.grad(L)(TH, LAM)
    t = float(s.count) + 1
    m = b1 * s.mu + (1 - b1) * g
    v = b2 * s.nu + (1 - b2) * g * g
    mh, vh, c1, c2 = m / (1 - b1 ** t), v / (1 - b2 ** t), 1 / (1 - b1 ** t), 1 / (1 - b2 ** t)
    r = vh.sqrt()
    du = -lr * ((1 - b1) * c1 / (r + eps) - mh * ((1 - b2) * c2 * g / r) / (r + eps) ** 2)
    v_theta = C.T @ (C @ TH - D)                      # ∂F/∂θ
    by_hand = (LAM.exp() * TH) * (du * v_theta)       # (∂λ g)ᵀ (∂u/∂g)ᵀ v, ∂u/∂g diagonal
    torch.testing.assert_close(ours, by_hand, rtol=1e-10, atol=1e-13)
    assert by_hand.abs().min() > 1e-6


def test_in_mlo_it_reads_the_lowers_optimizer_and_state_after_its_update():
    opt = optim.adam(0.05)
    lo = mlo.Problem("lo", lambda th, b, *, hi: L(th, hi), TH, opt, hypergrad=hg.sama(eps=0.5))
    hi = mlo.Problem("hi", lambda lam, b, *, lo: F(lo, lam), LAM, optim.sgd(1.0))
    state = mlo.init([lo, hi], {"hi": ["lo"]})
    new, _ = mlo.step(state, {})
    ref = hg.grad(F, L, hg.sama(eps=0.5, optimizer=opt))(new.params["lo"], LAM,
                                                          optimizer_state=new.opt_states["lo"])
    torch.testing.assert_close(LAM - new.params["hi"], ref, rtol=1e-10, atol=1e-14)
    stale = hg.grad(F, L, hg.sama(eps=0.5, optimizer=opt))(new.params["lo"], LAM,
                                                            optimizer_state=state.opt_states["lo"])
    assert (stale - ref).abs().max() > 1e-6  # the state before the update would differ


def test_vmap_and_compile_equal_eager():
    opt = optim.adam(0.05)
    s = adam_state(opt)
    g = hg.grad(F, L, hg.sama(eps=0.5, optimizer=opt))
    lams = torch.stack([LAM, 2 * LAM, -LAM])
    batched = torch.vmap(lambda lam: g(TH, lam, optimizer_state=s))(lams)
    for i in range(3):
        torch.testing.assert_close(batched[i], g(TH, lams[i], optimizer_state=s), rtol=1e-12,
                                   atol=1e-14)
    torch._dynamo.reset()
    compiled = torch.compile(lambda th, lam: g(th, lam, optimizer_state=s), backend="aot_eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(TH, LAM), g(TH, LAM, optimizer_state=s), rtol=1e-12,
                               atol=1e-14)


def test_refusals():
    with pytest.raises(TypeError, match="no optimizer is known"):
        hg.grad(F, L, hg.sama())(TH, LAM)
    with pytest.raises(TypeError, match="not by hypergrad.implicit"):
        hg.grad(F, L, hg.cg())(TH, LAM, optimizer_state=())
    for wrapped, what in ((optim.accumulate(optim.sgd(0.1), 2), "accumulates"),
                          (optim.loss_scaled(optim.sgd(0.1)), "scales its loss")):
        with pytest.raises(ValueError, match=what):
            hg.grad(F, L, hg.sama(optimizer=wrapped))(TH, LAM)
    with pytest.raises(ValueError, match="eps"):
        hg.sama(eps=0.0)
