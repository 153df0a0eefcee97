"""Bad input gets a clear error in the `api(args): what. Got X. How to fix.` form, before work."""
import pytest
import torch

from betty_func import hypergrad as hg, linsolve, optim

F64 = torch.float64
THETA, LAM = torch.ones(3, dtype=F64), torch.ones(3, dtype=F64)


def inner(th, lam):
    return 0.5 * ((th - lam) ** 2).sum() + 0.5 * (th ** 2).sum()


def outer(th, lam):
    return (th ** 2).sum()


ALL = {"cg": hg.cg(3), "neumann": hg.neumann(3, 0.5), "darts": hg.darts(), "exact": hg.exact(),
       "unrolled": hg.unrolled(3, optim.sgd(0.1)),
       "unrolled_ckpt": hg.unrolled(3, optim.sgd(0.1), checkpoint_every=1)}


@pytest.mark.parametrize("name", ALL)
def test_outer_loss_ignoring_inner_params(name):
    with pytest.raises(ValueError,
                       match=r"`outer_loss` does not depend on `inner_params`, so its "
                             r"gradient would be a silent zero\. Make `outer_loss` use"):
        hg.grad(lambda th, lam: (lam ** 2).sum(), inner, ALL[name])(THETA, LAM)


@pytest.mark.parametrize("name", ALL)
def test_inner_loss_ignoring_inner_params(name):
    match = r"does not depend on `(inner|outer)_params`|does not depend on `inner_params`"
    with pytest.raises(ValueError, match=match):
        hg.grad(outer, lambda th, lam: (lam ** 2).sum() + 0 * th.sum().detach(),
                ALL[name])(THETA, LAM)


@pytest.mark.parametrize("name", ALL)
def test_inner_gradient_ignoring_outer_params(name):
    """L(θ, λ) = f(θ) + g(λ): the implicit/unrolled part would be silently zero."""
    separable = lambda th, lam: (th ** 2).sum() + (lam ** 2).sum()  # noqa: E731
    with pytest.raises(ValueError, match=r"gradient of `inner_loss` in `(inner|outer)_params` does "
                                         r"not depend on `(outer|inner)_params`.* silent zero"):
        hg.grad(outer, separable, ALL[name])(THETA, LAM)


def test_darts_unbatched_checks_too():
    separable = lambda th, lam: (th ** 2).sum() + (lam ** 2).sum()  # noqa: E731
    method = hg.implicit(linsolve.identity(), hg.finite_difference(batched=False))
    with pytest.raises(ValueError, match=r"does not depend on `inner_params`.* silent zero"):
        hg.grad(outer, separable, method)(THETA, LAM)


@pytest.mark.parametrize("name", ALL)
def test_non_scalar_loss(name):
    with pytest.raises(ValueError, match=r"`inner_loss` must return a scalar float tensor\. "
                                         r"Got a tensor of shape \(3,\)\. Reduce the loss"):
        hg.grad(outer, lambda th, lam: (th - lam) ** 2, ALL[name])(THETA, LAM)
    with pytest.raises(ValueError,
                       match=r"`outer_loss` must return a scalar float tensor\. Got float"):
        hg.grad(lambda th, lam: 1.0, inner, ALL[name])(THETA, LAM)


def test_non_float_leaves():
    g = hg.grad(outer, inner, hg.cg(3))
    with pytest.raises(ValueError,
                       match=r"hypergrad\.grad\(outer_loss, inner_loss, method\): leaf .* "
                             r"of `inner_params` is not a floating-point tensor\. "
                             r"Got Tensor torch\.int64"):
        g(torch.ones(3, dtype=torch.int64), LAM)
    with pytest.raises(ValueError,
                       match=r"leaf .* of `outer_params` is not a floating-point tensor"):
        g(THETA, {"lam": LAM, "n": 3})


def test_mismatched_pytrees():
    g = hg.grad(outer, inner, hg.cg(3))
    with pytest.raises(ValueError,
                       match=r"`init` and `inner_params` are pytrees of different structure"):
        g(THETA, LAM, init={"x": THETA})
    with pytest.raises(ValueError, match=r"differ in shape\. Got \(2,\) vs \(3,\)"):
        g(THETA, LAM, init=torch.ones(2, dtype=F64))


@pytest.mark.parametrize("make,match", [
    (lambda: hg.unrolled(-1, optim.sgd(0.1)),
     r"hypergrad\.unrolled.*`steps` must be an integer >= 0\. Got -1"),
    (lambda: hg.unrolled(0, optim.sgd(0.1)), r"`steps` must be >= 1 to differentiate"),
    (lambda: hg.unrolled(5, optim.sgd(0.1), checkpoint_every=-2),
     r"`checkpoint_every` must be an integer >= 0"),
    (lambda: hg.neumann(steps=-1), r"linsolve\.neumann.*`steps` must be an integer >= 0"),
    (lambda: hg.neumann(steps=3, alpha=-0.5), r"`alpha` must be a number > 0\. Got -0\.5"),
    (lambda: hg.cg(maxiter=-3), r"`maxiter` must be an integer >= 0\. Got -3"),
    (lambda: hg.darts(eps=0.0), r"finite_difference.*`eps` must be a number > 0"),
])
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,match", [
    (lambda: hg.unrolled(5, torch.optim.SGD([torch.ones(1)], 0.1)),
     r"`optimizer` must be a betty_func\.optim optimizer\. Got SGD\. Pass e\.g\. optim\.sgd"),
    (lambda: hg.grad(outer, "inner", hg.cg()), r"`inner_loss` must be callable\. Got str"),
    (lambda: hg.grad(outer, inner, "cg"),
     r"`method` must be a hypergradient method "
     r"\(an object with the method protocol's `pullback`\)\. Got str"),
])
def test_wrong_kind_of_object(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_linsolve_rejects_bad_right_hand_side():
    with pytest.raises(ValueError, match=r"linsolve\.neumann.*`b` has no tensors"):
        linsolve.neumann(2, 0.5)(lambda v: v, {})


def test_darts_accepts_callables_without_weakref_support():
    class Loss:
        __slots__ = ()

        def __call__(self, th, lam):
            return inner(th, lam)
    g = hg.grad(outer, Loss(), hg.darts())
    assert torch.isfinite(g(THETA, LAM)).all() and torch.isfinite(g(THETA, LAM)).all()
