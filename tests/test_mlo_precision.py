"""Mixed precision per problem: bfloat16 autocast for loss evaluations, float32 everywhere else."""
import pytest
import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, mlo, optim

QUIET = dict(logging=mlo.Logging(every=1, progress=False, console=False))


def logreg_bilevel(precision, seen, maxiter=60):
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
                        hypergrad=hg.cg(maxiter=maxiter), precision=precision)
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


def test_fp16_losses_run_in_fp16_with_loss_scaling_and_the_hypergradient_stays_close():
    seen16, seen32 = [], []
    r16 = mlo.solve(*logreg_bilevel("fp16", seen16), steps=1, **QUIET)
    r32 = mlo.solve(*logreg_bilevel(None, seen32), steps=1, **QUIET)
    assert set(seen16) == {torch.float16}
    h16, h32 = -(r16.params["upper"] + 1.0), -(r32.params["upper"] + 1.0)
    assert 0 < float((h16 - h32).norm() / h32.norm()) < 5e-2
    assert r16.history["upper/loss_scale"] == [(1, 2.0 ** 16)]  # the loss was scaled, then unscaled
    assert r16.history["upper/skipped_steps"] == [(1, 0)]
    g16, g32 = r16.history["upper/grad_norm"][0][1], r32.history["upper/grad_norm"][0][1]
    assert abs(g16 - g32) < 5e-2 * g32  # logged unscaled


def overflowing(bad_draw):
    """Least squares whose loss is multiplied by the batch: inf on draw ``bad_draw``."""
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(30, 4, generator=g), torch.randn(30, generator=g)
    return mlo.Problem("p", lambda w, b: ((X @ w - y) ** 2).mean() * b, torch.zeros(4),
                       optim.sgd(0.1, momentum=0.9), precision="fp16",
                       data=lambda i: torch.tensor(float("inf") if i == bad_draw else 1.0))


def test_fp16_skips_a_step_whose_gradients_overflow_and_recovers():
    runs = {n: mlo.solve([overflowing(bad_draw=2)], {}, steps=n, **QUIET) for n in (2, 3, 5)}
    clean = mlo.solve([overflowing(bad_draw=-1)], {}, steps=4, **QUIET)
    # the third step (draw 2) saw inf gradients: params and momentum stay, the scale halves
    assert torch.equal(runs[3].params["p"], runs[2].params["p"])
    assert torch.equal(runs[3].opt_states["p"][0].momentum, runs[2].opt_states["p"][0].momentum)
    h = runs[5].history
    assert [v for _, v in h["p/skipped_steps"]] == [0, 0, 1, 1, 1]
    assert [v for _, v in h["p/loss_scale"]] == [2.0 ** 16] * 3 + [2.0 ** 15] * 2
    # then it recovers: the two steps after the skip are the clean run's steps 3 and 4
    assert torch.isfinite(runs[5].params["p"]).all()
    assert torch.allclose(runs[5].params["p"], clean.params["p"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("bad", ["half", torch.bfloat16])
def test_unsupported_precision_is_refused(bad):
    with pytest.raises(ValueError, match=r"`precision` must be None, 'bf16' or 'fp16'"):
        mlo.Problem("p", lambda w, b: (w ** 2).sum(), torch.zeros(2), optim.sgd(0.1), precision=bad)


def test_fp16_with_an_unrolled_method_is_refused():
    opt = optim.sgd(0.1)
    with pytest.raises(ValueError, match="precision='fp16' does not support an unrolled method"):
        mlo.Problem("p", lambda w, b, *, q: (w * q).sum(), torch.zeros(2), opt,
                    hypergrad=hg.unrolled(1, opt), precision="fp16")


def test_fp16_loss_scale_state_resumes_bit_for_bit(tmp_path):
    straight = mlo.solve([overflowing(bad_draw=1)], {}, steps=5, **QUIET)
    mlo.solve([overflowing(bad_draw=1)], {}, steps=3, checkpoint=mlo.Checkpoint(tmp_path, every=3),
              **QUIET)
    resumed = mlo.solve([overflowing(bad_draw=1)], {}, steps=5,
                        checkpoint=mlo.Checkpoint(tmp_path, every=3, resume=True), **QUIET)
    assert torch.equal(resumed.params["p"], straight.params["p"])
    assert resumed.opt_states["p"][1] == straight.opt_states["p"][1]  # scale, good, skipped
    assert int(resumed.opt_states["p"][1].skipped) == 1
