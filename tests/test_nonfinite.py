"""A NaN or inf in a run is caught, named (problem, quantity, first step) and raised, warned or
skipped; it is read only where solve reads anyway (here: every log_every steps)."""
import dataclasses
import warnings

import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim

F64 = torch.float64
QUIET = dict(logging=mlo.Logging(progress=False, console=False))
NAN_AT_7 = lambda i: torch.tensor(float("nan") if i == 6 else 1.0, dtype=F64)  # noqa: E731


def program(lo_loss, lr=0.5, hyper=None, data=None, w0=0.0):
    lo = mlo.Problem("lo", lo_loss, torch.full((2,), w0, dtype=F64), optim.sgd(lr), data=data,
                     hypergrad=hyper)
    hi = mlo.Problem("hi", lambda w, b, *, lo: ((lo - 1.0) ** 2).sum(), torch.zeros(2, dtype=F64),
                     optim.sgd(0.5))
    return [lo, hi], {"hi": ["lo"]}


def scaled(w, b, *, hi):
    return ((w - hi * b) ** 2).sum()


def test_a_nan_batch_stops_the_run_naming_problem_quantity_and_step():
    with pytest.raises(FloatingPointError, match=r"on_nonfinite='raise'\): the loss and gradient "
                       r"and params of 'lo' are NaN or inf at step 7 \(first seen in the interval "
                       r"1-10"):
        mlo.solve(*program(scaled, data=NAN_AT_7), steps=20,
                  logging=mlo.Logging(every=10, progress=False, console=False))


def test_a_log_of_zero_mid_run():
    def lo_loss(w, b, *, hi):
        return ((w - hi) ** 2).sum() - torch.log(b)   # b = 0 at the 3rd batch: log 0 = -inf
    data = lambda i: torch.tensor(0.0 if i == 2 else 1.0, dtype=F64)  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"the loss of 'lo' is NaN or inf at step 3 "
                       r"\(first seen in the interval 1-4"):
        mlo.solve(*program(lo_loss, data=data), steps=8,
                  logging=mlo.Logging(every=4, progress=False, console=False))


def test_an_overflow_from_a_too_large_step():
    quartic = lambda w, b, *, hi: ((w - hi) ** 4).sum()  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"of '(lo|hi)' (is|are) NaN or inf at step \d+ "
                       r"\(first seen in the interval 1-25"):
        mlo.solve(*program(quartic, lr=10.0, w0=1.0), steps=25,
                  logging=mlo.Logging(every=25, progress=False, console=False))


def test_a_neumann_series_that_starts_to_diverge_mid_run_is_a_nonfinite_hypergradient():
    """At step 0 the lower's curvature is 2 (alpha = 0.9 passes the step-0 estimate); the
    upper drives it to ~900, where the 400-term series overflows."""
    def lo_loss(w, b, *, hi):
        return (1 + 50 * (hi ** 2).sum()) * ((w - hi) ** 2).sum()

    def hi_loss(w, b, *, lo):
        return ((lo - 1.0) ** 2).sum() + ((w - 3.0) ** 2).sum()
    lo = mlo.Problem("lo", lo_loss, torch.zeros(2, dtype=F64), optim.sgd(1e-4),
                     hypergrad=hg.neumann(400, alpha=0.9))
    hi = mlo.Problem("hi", hi_loss, torch.zeros(2, dtype=F64), optim.sgd(0.5))
    with pytest.raises(FloatingPointError, match=r"the hypergradient and params of 'hi' are NaN "
                       r"or inf at step [2-9]"):
        mlo.solve([lo, hi], {"hi": ["lo"]}, steps=10,
                  logging=mlo.Logging(every=10, progress=False, console=False))


def test_a_neumann_alpha_beyond_two_over_lambda_max_is_refused_at_step_0():
    stiff = lambda w, b, *, hi: 50 * ((w - hi) ** 2).sum()  # noqa: E731  (λ = 100)
    with pytest.raises(ValueError, match=r"linsolve\.neumann\(steps=400, alpha=0\.999, "
                       r"damping=0\.0\) on 'lo' "
                       r"diverges: .* below 2\.002, and power iteration finds 100 .* Use alpha <= "
                       r"0\.01"):
        mlo.solve(*program(stiff, lr=0.001, hyper=hg.neumann(400, alpha=0.999)), steps=4,
                  **QUIET)
    r = mlo.solve(*program(stiff, lr=0.001, hyper=hg.neumann(400, alpha=0.0099)), steps=4,
                  **QUIET)  # just below 1 / λ: runs
    assert all(torch.isfinite(p).all() for p in r.params.values())


def test_skip_drops_each_bad_update_and_counts_it():
    r = mlo.solve(*program(scaled, data=NAN_AT_7), steps=20,
                  logging=mlo.Logging(every=10, progress=False, console=False),
                  on_nonfinite="skip")
    assert all(torch.isfinite(p).all() for p in r.params.values())
    assert r.history["lo/skipped_nonfinite"] == [(10, 1.0), (20, 1.0)]
    # equal to the run where step 7's update of both problems never happened
    ref = mlo.init(*program(scaled, data=NAN_AT_7))
    for t in range(1, 21):
        new, _ = mlo.step(ref, {"lo": NAN_AT_7(t - 1)})
        ref = new if t != 7 else dataclasses.replace(ref, step=7, last_batch=new.last_batch)
    for n in r.params:
        assert torch.allclose(r.params[n], ref.params[n], rtol=0, atol=1e-12)


def test_warn_goes_on_and_says_so_once_per_problem():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = mlo.solve(*program(scaled, data=NAN_AT_7), steps=20,
                      logging=mlo.Logging(every=10, progress=False, console=False),
                      on_nonfinite="warn")
    msgs = [str(w.message) for w in seen if "NaN or inf" in str(w.message)]
    assert len(msgs) == 2 and "of 'lo'" in msgs[0] and "of 'hi'" in msgs[1]
    assert not torch.isfinite(r.params["lo"]).all()


def test_the_last_checkpoint_on_disk_is_finite(tmp_path):
    with pytest.raises(FloatingPointError, match="at step 7"):
        mlo.solve(*program(scaled, data=NAN_AT_7), steps=20,
                  logging=mlo.Logging(every=0, progress=False, console=False),
                  checkpoint=mlo.Checkpoint(str(tmp_path), every=5))
    saved = torch.load(tmp_path / "mlo_checkpoint.pt", weights_only=False)
    assert saved["step"] == 5 and all(torch.isfinite(p).all() for p in saved["params"].values())


def test_the_step_reports_and_skips_without_a_host_sync():
    one = lambda i: torch.tensor(1.0, dtype=F64)  # noqa: E731
    state = mlo.init(*program(scaled, data=one))
    state, logs = mlo.step(state, {"lo": torch.tensor(float("nan"), dtype=F64)}, logs=False)
    assert set(logs["lo"]) == {"nonfinite"} and int(logs["lo"]["nonfinite"]) == 1 + 2 + 8
    kept, logs = mlo.step(mlo.init(*program(scaled, data=one)), {"lo": torch.tensor(float("nan"),
                                                                         dtype=F64)},
                          skip_nonfinite=True)
    assert torch.equal(kept.params["lo"], torch.zeros(2, dtype=F64))
    assert int(logs["lo"]["nonfinite"]) != 0
