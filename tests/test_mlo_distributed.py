"""Data parallel ``mlo.solve`` on two gloo processes equals one process on the whole batches.

One spawn runs every two-rank scenario (the processes' start-up is the cost) and saves what
each rank ended with; the tests compare those with one-process runs here.
"""
import dataclasses
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch._dynamo.utils import counters

from betty_func import hypergrad as hg, mlo, optim

from _dp_program import N_TRAIN, N_VAL, QUIET, batch, program, with_buffer

METHODS = ("darts", "cg", "unrolled")
STEPS = 10  # 5 outer steps: the outer problem updates once per 2 inner updates
AOT = {"backend": "aot_eager"}


def _gloo_threads() -> int:
    """This process's threads named by gloo (-1 without /proc); compiling starts threads of
    its own, so threads are told apart by name, not counted all together."""
    if not os.path.isdir("/proc/self/task"):
        return -1
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read())
        except OSError:  # the thread ended meanwhile
            pass
    return sum("gloo" in n for n in names)


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=world)
    up = _gloo_threads()
    try:
        out = {}
        debug = mlo.Distributed(check_every=1)
        for m in METHODS:
            r = mlo.solve(*program(m), steps=STEPS, distributed=debug, **QUIET)
            out[m] = (r.params, r.history)
        r = mlo.solve(*program("cg", zero=True), steps=STEPS, distributed=debug, **QUIET)
        out["zero"] = (r.params, r.opt_states)
        for zero in (False, True):
            noisy = lambda: program("cg", noise=True, zero=zero)  # noqa: E731
            where = f"{tmp}/ckpt{int(zero)}"
            torch.manual_seed(100 + rank)
            out[f"whole{int(zero)}"] = mlo.solve(*noisy(), steps=STEPS, **QUIET).params
            torch.manual_seed(100 + rank)
            mlo.solve(*noisy(), steps=6, checkpoint=mlo.Checkpoint(where, every=4), **QUIET)
            torch.manual_seed(999)  # the resumed run must bring each rank's own stream back
            resumed = mlo.Checkpoint(where, every=4, resume=True)
            out[f"resumed{int(zero)}"] = mlo.solve(*noisy(), steps=STEPS, checkpoint=resumed,
                                                   **QUIET).params
        out["counts"] = _count_all_reduces()
        calls = []

        def validate(params):  # rank 0 alone runs it; a rank-dependent value shows who did
            calls.append(rank)
            return {"score": float(params["outer"].sum()) + 100 * rank}
        r = mlo.solve(*program("cg"), steps=STEPS,
                      validation=mlo.Validation(validate, every=2, early_stopping=mlo.EarlyStopping(
                          "score", "max", patience=1)), **QUIET)
        out["validate"] = (calls, r.history["validation/score"], r.step)
        r = mlo.solve(*with_buffer(), steps=4, distributed=debug, **QUIET)
        out["buffer"] = (r.params, r.states)
        out["odd"] = _error(lambda: mlo.solve(*program("cg"), steps=1, **QUIET, distributed=
                                              mlo.Distributed(shard=True), env=lambda t: {
                                                  "inner": batch(t, 15, 1)}))
        torch._dynamo.reset()
        counters.clear()
        compiled = []
        for m in METHODS:  # the whole step compiled, its all-reduces inside the graph
            compiled.append(mlo.solve(*program(m), steps=STEPS, compile=AOT, distributed=debug,
                                      **QUIET))
            out[f"compiled_{m}"] = (compiled[-1].params, compiled[-1].history)
        out["compile_counters"] = (counters["stats"]["unique_graphs"],
                                   sum(len(r.history["compile/seconds"]) for r in compiled),
                                   sum(counters["graph_break"].values()))
        out["nonfinite"] = _nonfinite_scenarios(rank)
        try:  # rank 1 is launched with another schedule
            mlo.solve(*program("cg", unroll_steps=2 + rank), steps=2, **QUIET)
            out["disagree"] = None
        except ValueError as e:
            out["disagree"] = str(e)
    finally:
        dist.destroy_process_group()
    out["threads"] = (up, _gloo_threads())  # the group's gloo threads are gone with it
    torch.save(out, f"{tmp}/rank{rank}.pt")


def _poisoned(rank: int = 0, loss_only: bool = False) -> tuple:
    """The cg program whose 4th inner batch has a NaN in one row (so in one rank's shard), or,
    with ``loss_only``, whose inner loss is inf on rank 1 alone at that batch while its
    gradient stays finite (a marker the loss clamps)."""
    (lo, hi), graph = program("cg")

    def data(i):
        X, y = batch(i, N_TRAIN, 1)
        if i == 3:
            X = X.clone()
            if loss_only:  # every row marked: rank 1 sees it whatever its shard
                X[:, 0] = 1e7
            else:
                X[1, 0] = float("nan")
        return X, y

    def marked(W, b, *, outer):
        X, y = b
        flag = (X.abs() > 1e6).any() & (rank == 1)
        value = lo.loss(W, (X.clamp(-10, 10), y), outer=outer)
        return value + torch.where(flag, float("inf"), 0.0)
    return [dataclasses.replace(lo, data=data, loss=marked if loss_only else lo.loss), hi], graph


def _nonfinite_scenarios(rank: int) -> dict:
    out = {}
    try:
        mlo.solve(*_poisoned(), steps=STEPS, **QUIET)
        out["raise"] = "no error"
    except FloatingPointError as e:
        out["raise"] = str(e)
    r = mlo.solve(*_poisoned(), steps=STEPS, on_nonfinite="skip", **QUIET)
    out["skip"] = (r.params, r.history["inner/skipped_nonfinite"])
    r = mlo.solve(*_poisoned(rank, loss_only=True), steps=STEPS, on_nonfinite="skip", **QUIET)
    out["loss_only"] = (r.params, r.history["inner/skipped_nonfinite"], r.history["inner/loss"])
    return out


def _error(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return "no error"


def _count_all_reduces() -> dict:
    """All-reduces per step of a one-level problem with three param tensors, and of the cg
    bilevel program (logging off, so only derivatives communicate)."""
    calls, real = [], dist.all_reduce
    dist.all_reduce = lambda t, *a, **k: (calls.append(t.numel()), real(t, *a, **k))[1]
    try:
        fit = lambda p, b: (  # noqa: E731
            ((b[0] @ p["w"] + p["b"] - b[1][:, None]) ** 2).mean() + p["s"] ** 2)
        one = mlo.Problem("fit", fit, {"w": torch.zeros(12, 1, dtype=torch.float64),
                                       "b": torch.zeros(1, dtype=torch.float64),
                                       "s": torch.ones((), dtype=torch.float64)},
                          optim.sgd(0.1), data=lambda i: batch(i, N_TRAIN, 1))
        mlo.solve([one], {}, steps=3, logging=mlo.Logging(every=0, progress=False, console=False))
        single = list(calls)
        calls.clear()
        mlo.solve(*program("cg"), steps=2,
                  logging=mlo.Logging(every=0, progress=False, console=False))
        eager = list(calls)
        calls.clear()
        mlo.solve(*program("cg"), steps=2, compile=AOT,
                  logging=mlo.Logging(every=0, progress=False, console=False))
        return {"one_level": single, "cg_bilevel": eager, "cg_bilevel_compiled": list(calls)}
    finally:
        dist.all_reduce = real


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dp"))
    ctx = mp.start_processes(_worker, args=(2, tmp), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 600
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two-process run did not finish in 600 s (a collective hung)")
    return tmp, [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False)
                 for r in range(2)]


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_equal_one_process_on_the_concatenated_batches(ranks, method):
    _, (r0, r1) = ranks
    single = mlo.solve(*program(method), steps=STEPS, **QUIET)
    for name in ("inner", "outer"):
        assert torch.equal(r0[method][0][name], r1[method][0][name])  # identical replicas
        ref = single.params[name]
        assert torch.allclose(r0[method][0][name], ref, rtol=0, atol=1e-6), name
        assert not torch.equal(ref, program(method)[0][0 if name == "inner" else 1].params)
    # the logged losses are the global ones (the mean over ranks of the shard losses)
    tags = [t for t in ("inner/loss", "outer/loss", "outer/grad_norm") if t in single.history]
    assert len(tags) >= 2  # an unrolled lower logs no loss of its own (its window does not)
    for tag in tags:
        got = [v for _, v in r0[method][1][tag]]
        want = [v for _, v in single.history[tag]]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), tag


def test_averaging_per_rank_hypergradients_would_differ():
    # What naive data parallel does (each rank its own implicit hypergradient, then the mean)
    # differs from the hypergradient of the whole batch: the inverse of a mean Hessian is not the
    # mean of inverses. So the comparison above can tell the two apart.
    (lo, hi), _ = program("cg")
    (Xt, yt), (Xv, yv) = batch(0, N_TRAIN, 1), batch(0, N_VAL, 2)
    inner = lambda W, lam, X, y: lo.loss(W, (X, y), outer=lam)  # noqa: E731
    outer = lambda W, lam, X, y, Xv, yv: hi.loss(lam, (Xv, yv), inner=W)  # noqa: E731
    g = hg.grad(lambda W, lam, *a: outer(W, lam, *a), lambda W, lam, X, y, *_: inner(W, lam, X, y),
                hg.cg(maxiter=50))
    whole = g(lo.params, hi.params, Xt, yt, Xv, yv)
    halves = [g(lo.params, hi.params, Xt[k::2], yt[k::2], Xv[k::2], yv[k::2]) for k in (0, 1)]
    naive = (halves[0] + halves[1]) / 2
    assert float((naive - whole).norm() / whole.norm()) > 1e-2


@pytest.mark.parametrize("zero", [0, 1])
def test_two_ranks_resume_from_a_checkpoint_of_rank_0(ranks, zero):
    tmp, (r0, r1) = ranks
    for name in ("inner", "outer"):
        assert torch.equal(r0[f"resumed{zero}"][name], r0[f"whole{zero}"][name])
        assert torch.equal(r1[f"resumed{zero}"][name], r1[f"whole{zero}"][name])
        assert torch.equal(r0[f"whole{zero}"][name], r1[f"whole{zero}"][name])
    assert sorted(os.listdir(f"{tmp}/ckpt{zero}")) == ["mlo_checkpoint.pt"]  # one writer


def test_zero1_shards_the_optimizer_state_and_changes_nothing_else(ranks):
    _, (r0, r1) = ranks
    single = mlo.solve(*program("cg"), steps=STEPS, **QUIET)  # unsharded, one process
    for name in ("inner", "outer"):
        assert torch.equal(r0["zero"][0][name], r1["zero"][0][name])
        assert torch.allclose(r0["zero"][0][name], single.params[name], rtol=0, atol=1e-6)
    # Adam's moments of the 36 inner weights: 18 per rank, and the two halves are the whole
    halves = [r["zero"][1]["inner"].inner for r in (r0, r1)]
    assert [h.mu.shape for h in halves] == [torch.Size([18])] * 2
    whole = single.opt_states["inner"]
    assert torch.allclose(torch.cat([h.mu for h in halves]), whole.mu.reshape(-1), atol=1e-9)
    assert torch.allclose(torch.cat([h.nu for h in halves]), whole.nu.reshape(-1), atol=1e-9)


def test_one_bucketed_all_reduce_per_derivative(ranks):
    _, (r0, _) = ranks
    # one level, three param tensors of 14 values: one all-reduce per update, not three
    assert r0["counts"]["one_level"] == [14, 14, 14]
    # bilevel cg (2 steps: 2 inner updates, 1 outer): each inner gradient 1 (36 weights); the
    # outer update 1 for ∇ of the outer loss (its direct term and cotangent to the lower, 12 + 36),
    # 1 for the coupling probe (first use of a loss only, under torch.func: θ alone), 1 for ∇θ
    # of the inner loss (eager autograd: λ, tracked for the products to come, shares the
    # bucket), then 5 HVPs and the mixed product, each one joint (θ, λ) product of 36 + 12
    c = r0["counts"]["cg_bilevel"]
    assert c == [36, 36, 48, 36, 48] + [48] * 6, c


@pytest.mark.parametrize("method", METHODS)
def test_the_compiled_data_parallel_step_equals_the_eager_one(ranks, method):
    """compile=True with distributed: the rank-means are calls of the custom op inside the one
    graph (fullgraph=True), so the compiled step is the eager data-parallel step, and therefore
    one process on the concatenated batches."""
    _, (r0, r1) = ranks
    params, history = r0[f"compiled_{method}"]
    assert len(history["compile/seconds"]) >= 1  # it did compile
    for name in ("inner", "outer"):
        assert torch.equal(params[name], r1[f"compiled_{method}"][0][name])  # replicas agree
        assert torch.allclose(params[name], r0[method][0][name], rtol=0, atol=1e-12), name
    single = mlo.solve(*program(method), steps=STEPS, **QUIET)
    for name in ("inner", "outer"):
        assert torch.allclose(params[name], single.params[name], rtol=0, atol=1e-6), name


def test_the_compiled_data_parallel_steps_are_one_graph_per_pattern_never_recompiled(ranks):
    from test_mlo_compile import patterns
    _, (r0, r1) = ranks
    want = sum(len(patterns(*program(m), STEPS)) for m in METHODS)
    for r in (r0, r1):
        graphs, reported, breaks = r["compile_counters"]  # a recompile is one more graph
        assert (graphs, reported, breaks) == (want, want, 0)


def _inductor_worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=world)
    try:
        out = {}
        for compile in (False, True):
            out[compile] = mlo.solve(*program("cg"), steps=STEPS, compile=compile,
                                     distributed=mlo.Distributed(check_every=1), **QUIET).params
    finally:
        dist.destroy_process_group()
    torch.save(out, f"{tmp}/inductor{rank}.pt")


@pytest.mark.slow
def test_the_inductor_compiled_data_parallel_step_equals_the_eager_one(tmp_path):
    """compile=True (inductor): the custom all-reduce op is called from inductor's code."""
    mp.start_processes(_inductor_worker, args=(2, str(tmp_path)), nprocs=2,
                       start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"inductor{r}.pt") for r in range(2))
    for name in ("inner", "outer"):
        assert torch.equal(r0[True][name], r1[True][name])
        assert torch.allclose(r0[True][name], r0[False][name], rtol=0, atol=1e-12), name


def test_the_compiled_step_all_reduces_once_per_derivative_it_uses(ranks):
    """Compiled, the same bucketed all-reduces as eager (above) less two: the coupling probe (36)
    is a check that never runs while compiling, and the value of ∇θ of the inner loss at which
    the HVPs are linearized (48) reaches nothing the graph returns, so its all-reduce is dropped
    with the other unused ops."""
    _, (r0, _) = ranks
    c = r0["counts"]["cg_bilevel_compiled"]
    assert c == [36, 36, 48] + [48] * 6, c


def test_resuming_on_another_world_size_is_refused(ranks):
    tmp, _ = ranks
    with pytest.raises(ValueError,
                       match=r"different number of processes.*world size 2 in .* 1 now"):
        mlo.solve(*program("cg", noise=True), steps=STEPS,
                  checkpoint=mlo.Checkpoint(f"{tmp}/ckpt0", every=4, resume=True), **QUIET)


def test_ranks_that_disagree_on_the_program_all_stop_with_the_difference(ranks):
    _, (r0, r1) = ranks
    for r in (r0, r1):
        assert r["disagree"] is not None
        assert ("ranks disagree on the multilevel program (rank 0 vs rank 1, in inner)"
                in r["disagree"])


def test_rank_0_validates_and_every_rank_stops_alike(ranks):
    _, (r0, r1) = ranks
    assert r0["validate"][0] and not r1["validate"][0]  # validate ran on rank 0 only
    assert r0["validate"][1] == r1["validate"][1]  # its metrics were shared with rank 1
    assert all(v < 50 for _, v in r1["validate"][1])  # rank 0's values (rank 1's: +100)
    assert r0["validate"][2] == r1["validate"][2] < STEPS  # early stopping fired on both


def test_buffers_are_averaged_over_ranks(ranks):
    _, (r0, r1) = ranks
    single = mlo.solve(*with_buffer(), steps=4, **QUIET)
    for r in (r0, r1):
        assert torch.allclose(r["buffer"][1]["fit"], single.states["fit"], rtol=0, atol=1e-12)
        assert torch.allclose(r["buffer"][0]["fit"], single.params["fit"], rtol=0, atol=1e-9)


def test_a_batch_that_does_not_split_evenly_is_refused(ranks):
    _, (r0, r1) = ranks
    for r in (r0, r1):
        assert "a batch of 'inner' does not split evenly over 2 ranks (dim 0). Got shape (15, 12)" \
            in r["odd"]


def test_the_process_group_is_freed_by_destroy_process_group(ranks):
    """torch._dynamo imported after init_process_group pins the group (its gloo threads then
    abort the interpreter at exit, now and then); betty_func loads it first."""
    _, (r0, r1) = ranks
    for r in (r0, r1):
        up, after = r["threads"]
        if up < 0:
            pytest.skip("no /proc/self/task to count threads")
        assert up > 0 and after == 0


def test_importing_betty_func_after_init_process_group_warns(tmp_path):
    code = ("import warnings, torch.distributed as d\n"
            f"d.init_process_group('gloo', init_method='file://{tmp_path}/s', rank=0, "
            "world_size=1)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import betty_func\n"
            "print([str(x.message) for x in w if 'init_process_group' in str(x.message)])\n"
            "d.destroy_process_group()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Import betty_func (or torch._dynamo) before init_process_group" in out.stdout


def test_data_parallel_without_a_process_group_is_refused():
    with pytest.raises(ValueError, match="data parallel needs an initialized process group"):
        mlo.solve(*program("cg"), steps=1, distributed=True, **QUIET)


def test_a_sharded_optimizer_on_an_unrolled_problem_is_refused():
    (lo, hi), graph = program("unrolled")
    opt = optim.sharded(lo.optimizer)
    lo = mlo.Problem("inner", lo.loss, lo.params, opt, data=lo.data,
                     hypergrad=hg.unrolled(2, opt), unroll_steps=2)
    with pytest.raises(ValueError, match="'inner' is unrolled, so its updates are differentiated"):
        mlo.solve([lo, hi], graph, steps=2, **QUIET)


def test_a_nan_in_one_ranks_shard_stops_or_skips_every_rank_alike(ranks):
    """A NaN in one row of the 4th inner batch (in one rank's shard): both ranks raise the same
    message (as one process on the whole batch does), or with skip drop the same update and end
    equal to one process that skips it."""
    _, (r0, r1) = ranks
    with pytest.raises(FloatingPointError) as single:
        mlo.solve(*_poisoned(), steps=STEPS, **QUIET)
    assert r0["nonfinite"]["raise"] == r1["nonfinite"]["raise"] == str(single.value)
    assert "of 'inner'" in str(single.value) and "at step 4" in str(single.value)
    one = mlo.solve(*_poisoned(), steps=STEPS, on_nonfinite="skip", **QUIET)
    assert one.history["inner/skipped_nonfinite"][-1][1] == 1.0
    for r in (r0, r1):
        params, skipped = r["nonfinite"]["skip"]
        assert skipped == one.history["inner/skipped_nonfinite"]
        for name in ("inner", "outer"):
            assert torch.equal(params[name], r0["nonfinite"]["skip"][0][name])
            assert torch.allclose(params[name], one.params[name], rtol=0, atol=1e-6)


def test_a_loss_non_finite_on_one_rank_alone_does_not_split_the_replicas(ranks):
    """Rank 1's own inner loss is inf at one step while the averaged gradient is finite: no rank
    skips (rank 1 skipping alone would leave the replicas apart); the mean loss shows the inf."""
    _, (r0, r1) = ranks
    (p0, s0, l0), (p1, s1, _) = r0["nonfinite"]["loss_only"], r1["nonfinite"]["loss_only"]
    for name in ("inner", "outer"):
        assert torch.equal(p0[name], p1[name])
    assert s0[-1][1] == s1[-1][1] == 0.0
    assert any(v == float("inf") for _, v in l0)
