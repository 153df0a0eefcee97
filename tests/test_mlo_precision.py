"""Mixed precision per problem: bfloat16 autocast for loss evaluations, float32 everywhere else."""
import pytest
import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, mlo, optim

QUIET = dict(progress=False, console=False, log_every=1)


def logreg_bilevel(precision, seen):
    """Softmax regression (20 features, 3 classes) with per-feature log decays learned on a
    validation set: well conditioned (decay >= e^-1 on every weight)."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(200, 20, generator=g), torch.randint(0, 3, (200,), generator=g)
    Xv, yv = torch.randn(100, 20, generator=g), torch.randint(0, 3, (100,), generator=g)

    def inner(W, batch, *, upper):
        logits = X @ W
        seen.append(logits.dtype)
        return F.cross_entropy(logits, y) + 0.5 * (torch.exp(upper)[:, None] * W ** 2).sum()

    def outer(lam, batch, *, lower):
        return F.cross_entropy(Xv @ lower, yv)

    lower = mlo.Problem("lower", inner, 0.1 * torch.randn(20, 3, generator=g), optim.sgd(0.0),
                        hypergrad=hg.cg(maxiter=60), precision=precision)
    upper = mlo.Problem("upper", outer, torch.full((20,), -1.0), optim.sgd(1.0),
                        precision=precision)
    return [lower, upper], {"upper": ["lower"]}


def test_bf16_losses_run_in_bf16_and_the_hypergradient_stays_close():
    seen16, seen32 = [], []
    r16 = mlo.solve(*logreg_bilevel("bf16", seen16), steps=1, **QUIET)
    r32 = mlo.solve(*logreg_bilevel(None, seen32), steps=1, **QUIET)
    assert set(seen16) == {torch.bfloat16} and set(seen32) == {torch.float32}
    assert r16.params["upper"].dtype == torch.float32  # params, updates, solves: float32
    h16, h32 = -(r16.params["upper"] + 1.0), -(r32.params["upper"] + 1.0)  # sgd(1.0): θ - g
    assert float((h16 - h32).norm() / h32.norm()) < 5e-2
    assert float((h16 - h32).norm() / h32.norm()) > 0  # bf16 did change the arithmetic
    # CG still converges on the bf16 operator: its residual is small against ‖∇θF‖ (~0.1)
    res16 = r16.history["upper/residual/lower"][-1][1]
    assert res16 < 1e-5 and r32.history["upper/residual/lower"][-1][1] < 1e-5


@pytest.mark.parametrize("bad", ["fp16", "half", torch.bfloat16])
def test_unsupported_precision_is_refused(bad):
    with pytest.raises(ValueError, match=r"`precision` must be None or 'bf16'"):
        mlo.Problem("p", lambda w, b: (w ** 2).sum(), torch.zeros(2), optim.sgd(0.1), precision=bad)
