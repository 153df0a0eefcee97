"""One method protocol: mlo.solve calls methods only through `pullback`, so a method written
once works in hypergrad.grad and in mlo.solve; every knob is in a method's repr."""
import pytest
import torch

from betty_func import hypergrad as hg, linsolve, mlo, optim, testing, tree
from betty_func.hypergrad import _unrolled

F64 = torch.float64
P = testing.ridge(d=8, kappa=30.0, n_train=24)


class HalfStep:
    """A method of a user's own: p = α v (the identity in place of H⁻¹), exact mixed term from
    the inner problem's linearization. Only `pullback`, nothing else."""

    def __init__(self, alpha):
        self.alpha = alpha

    def __repr__(self):
        return f"HalfStep({self.alpha})"

    def pullback(self, inner, theta, x, v, init=None, with_info=False):
        _, pull = inner.linearize(theta, x)
        mixed = pull(tree.scale(self.alpha, v))[1]  # (∂x g)ᵀ p
        return tree.neg(mixed), None


def bilevel(method, theta0=None):
    lower = mlo.Problem("lower", lambda th, b, *, upper: P.inner_loss(th, upper),
                        P.solution(P.lam) if theta0 is None else theta0, optim.sgd(0.0),
                        hypergrad=method)
    upper = mlo.Problem("upper", lambda lam, b, *, lower: P.outer_loss(lower, lam), P.lam,
                        optim.sgd(1.0))
    return [lower, upper], {"upper": ["lower"]}


def test_a_users_method_works_in_hg_grad_and_in_solve_alike():
    ref = hg.implicit(linsolve.identity(0.05))
    theta = P.solution(P.lam)
    mine = hg.grad(P.outer_loss, P.inner_loss, HalfStep(0.05))(theta, P.lam)
    theirs = hg.grad(P.outer_loss, P.inner_loss, ref)(theta, P.lam)
    assert torch.allclose(mine, theirs, rtol=1e-12, atol=0)
    a = mlo.solve(*bilevel(HalfStep(0.05)), steps=1,
                  logging=mlo.Logging(progress=False, console=False))
    b = mlo.solve(*bilevel(ref), steps=1, logging=mlo.Logging(progress=False, console=False))
    assert torch.allclose(a.params["upper"], b.params["upper"], rtol=1e-12, atol=0)
    assert torch.allclose(P.lam - a.params["upper"], mine, rtol=1e-12, atol=0)


def test_every_knob_of_a_method_is_in_its_repr():
    reprs = {repr(m) for m in (hg.darts(eps=0.01), hg.darts(eps=0.5), hg.darts(scale=0.1),
                               hg.cg(5), hg.cg(5, damping=1.0), hg.cg(5, batch_dims=1),
                               hg.neumann(3, 0.1), hg.neumann(3, 0.2),
                               hg.implicit(linsolve.neumann(3, 0.1, damping=0.5)),
                               hg.implicit(linsolve.cg(5), hvp=hg.forward_over_reverse),
                               hg.unrolled(3), hg.unrolled(3, checkpoint_every=1),
                               hg.first_order())}
    assert len(reprs) == 13


def test_unrolled_checkpointing_is_honoured_inside_solve(monkeypatch):
    """checkpoint_every=1 re-runs the window segment by segment (3 segments, pulled back in
    reverse), and gives the same update as the plain window."""
    calls = []
    real = _unrolled._backward
    monkeypatch.setattr(_unrolled, "_backward",
                        lambda u, x, v, cf, starts, segs: calls.append(segs) or
                        real(u, x, v, cf, starts, segs))
    opt = optim.sgd(0.01, momentum=0.5)

    def run(method):
        lower = mlo.Problem("lower", lambda th, b, *, upper: P.inner_loss(th, upper),
                            torch.zeros(8, dtype=F64), opt, hypergrad=method, unroll_steps=3)
        upper = mlo.Problem("upper", lambda lam, b, *, lower: P.outer_loss(lower, lam), P.lam,
                            optim.sgd(1.0))
        return mlo.solve([lower, upper], {"upper": ["lower"]}, steps=6,
                         logging=mlo.Logging(progress=False, console=False)).params["upper"]
    plain = run(hg.unrolled())
    assert not calls
    ckpt = run(hg.unrolled(checkpoint_every=1))
    assert calls == [[1, 1, 1], [1, 1, 1]]  # two windows, each in three segments
    assert torch.allclose(ckpt, plain, rtol=1e-12, atol=1e-15)


def test_unrolled_takes_steps_and_optimizer_from_the_problem_in_solve_only():
    with pytest.raises(ValueError, match=r"`steps` and `optimizer` are needed outside mlo.solve"):
        hg.grad(P.outer_loss, P.inner_loss, hg.unrolled())(torch.zeros(8, dtype=F64), P.lam)
    opt = optim.sgd(0.01)
    with pytest.raises(ValueError, match=r"an unrolled method must unroll this problem's own"):
        mlo.Problem("lower", lambda th, b, *, upper: P.inner_loss(th, upper),
                    torch.zeros(8, dtype=F64), opt, hypergrad=hg.unrolled(3, optim.sgd(0.01)),
                    unroll_steps=3)
