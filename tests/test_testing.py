"""The hypergradient checker must catch wrong methods, not only bless right ones."""
import pytest
import torch

from betty_func import hypergrad as hg, testing

F64 = torch.float64


def test_check_passes_exact_and_fails_approximations():
    p = testing.ridge(d=12, kappa=30.0, n_train=36)
    assert testing.check_hypergrad(hg.cg(maxiter=12), p.outer_loss, p.inner_loss, p.solution,
                                   p.lam).ok
    for wrong in (hg.darts(), hg.cg(maxiter=2), hg.neumann(2, 0.01)):
        res = testing.check_hypergrad(wrong, p.outer_loss, p.inner_loss, p.solution, p.lam,
                                      raise_exception=False)
        assert not res.ok and res.max_rel_error > 1e-2
    with pytest.raises(AssertionError, match=r"hypergradient disagrees with finite differences "
                                             r"\(max relative error .* > rtol 1e-05"):
        testing.check_hypergrad(hg.darts(), p.outer_loss, p.inner_loss, p.solution, p.lam)


def test_check_random_directions_for_large_outer_params():
    p = testing.ridge(d=40, kappa=30.0, n_train=80)
    res = testing.check_hypergrad(hg.cg(maxiter=40), p.outer_loss, p.inner_loss, p.solution, p.lam,
                                  max_coords=16, n_random=5)
    assert res.ok and res.analytic.shape == (5,)
    bad = testing.check_hypergrad(hg.cg(maxiter=3), p.outer_loss, p.inner_loss, p.solution, p.lam,
                                  max_coords=16, n_random=5, raise_exception=False)
    assert not bad.ok


def test_float32_defaults_are_looser_but_still_discriminate():
    p = testing.ridge(d=8, kappa=10.0, n_train=24)
    p32 = testing.Ridge(*(t.float() for t in (p.X, p.y, p.X_val, p.y_val, p.lam)))
    assert testing.check_hypergrad(hg.cg(maxiter=8), p32.outer_loss, p32.inner_loss, p32.solution,
                                   p32.lam).ok
    assert not testing.check_hypergrad(hg.darts(), p32.outer_loss, p32.inner_loss, p32.solution,
                                       p32.lam, raise_exception=False).ok


def test_problem_constructors_validate():
    with pytest.raises(ValueError, match=r"testing\.ridge.*`kappa` must be a number > 0\. Got -1"):
        testing.ridge(kappa=-1)
    with pytest.raises(ValueError, match=r"`n_train` must be >= `d`"):
        testing.ridge(d=10, n_train=5)
