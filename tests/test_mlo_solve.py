"""mlo.solve as a training loop: equivalence with hand-written loops, resume, logs, knobs."""
import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from betty_func import hypergrad as hg, mlo, nn as bnn, optim, testing, tree
from betty_func.data import mnist10k

F64 = torch.float64
sys.path.insert(0, str(Path(__file__).parent))
QUIET = dict(logging=mlo.Logging(progress=False, console=False))


def digits(n=240, seed=0, dtype=F64):
    X, y = mnist10k(dtype=dtype)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return X[idx], y[idx]


def test_single_problem_equals_hand_written_loop():
    """Shuffled DataLoader over several epochs, BatchNorm buffers, SGD with momentum + decay."""
    X, y = digits(96)
    loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.Linear(16, 10)).double()
    ref = copy.deepcopy(net)
    f = bnn.functional(net)

    def loss(params, batch, *, state):
        out, new_state = f.stateful(params, state, batch[0])
        return F.cross_entropy(out, batch[1]), {}, new_state

    prob = mlo.Problem("net", loss, f.params, optim.sgd(0.1, momentum=0.9, weight_decay=1e-3),
                       data=loader, state=f.buffers)
    torch.manual_seed(1)
    r = mlo.solve([prob], {}, steps=10, **QUIET)
    torch.manual_seed(1)
    opt = torch.optim.SGD(ref.parameters(), 0.1, momentum=0.9, weight_decay=1e-3)
    it, done = iter(loader), 0
    while done < 10:
        for xb, yb in it:
            opt.zero_grad()
            F.cross_entropy(ref(xb), yb).backward()
            opt.step()
            done += 1
            if done == 10:
                break
        it = iter(loader)
    for k, v in ref.named_parameters():
        assert torch.allclose(r.params["net"][k], v.detach(), rtol=0, atol=1e-12), k
    for k, v in ref.named_buffers():
        assert torch.allclose(r.states["net"][k].to(v.dtype), v, rtol=0, atol=1e-12), k


def bilevel(method=None, data=None, dropout=0.0, **lower_kw):
    p = testing.ridge(d=6, kappa=30.0, n_train=18)

    def inner(th, batch, *, upper):
        noise = F.dropout(torch.ones_like(th), dropout) if dropout else 1.0
        scale = 1.0 if batch is None else batch.mean()
        return p.inner_loss(th * noise, upper) * scale

    opt = optim.sgd(0.01, momentum=0.5)
    method = hg.unrolled(1, opt) if method == "unrolled" else method
    lower = mlo.Problem("lower", inner, torch.zeros(6, dtype=F64), opt,
                        hypergrad=method or hg.cg(maxiter=6), data=data, **lower_kw)
    upper = mlo.Problem("upper", lambda lam, b, *, lower: p.outer_loss(lower, lam), p.lam,
                        optim.adam(0.01))
    return [lower, upper], {"upper": ["lower"]}


def state_equal(a, b):
    la, lb = tree.leaves(a), tree.leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb))


@pytest.mark.parametrize("method", [hg.cg(maxiter=4), hg.darts()], ids=["cg", "darts"])
def test_resume_is_bit_for_bit(tmp_path, method):
    """20 steps straight == 10 steps + checkpoint + resume + 10 steps: params, optimizer states,
    RNG, and the position in a shuffled DataLoader (7 batches an epoch, so epochs wrap)."""
    data = DataLoader(torch.rand(28, dtype=F64) + 0.5, batch_size=4, shuffle=True)
    probs, graph = bilevel(method, data=data, dropout=0.2)
    straight = mlo.solve(probs, graph, steps=20, seed=3,
                         checkpoint=mlo.Checkpoint(tmp_path / "a", every=10), **QUIET)
    rng_straight = torch.get_rng_state()
    mlo.solve(probs, graph, steps=10, seed=3, checkpoint=mlo.Checkpoint(tmp_path / "b", every=10),
              **QUIET)
    torch.manual_seed(12345)  # whatever happens in between must not matter
    resumed = mlo.solve(probs, graph, steps=20, seed=3,
                        checkpoint=mlo.Checkpoint(tmp_path / "b", every=10, resume=True), **QUIET)
    assert resumed.step == 20
    assert state_equal(straight.params, resumed.params)
    assert state_equal(straight.opt_states, resumed.opt_states)
    assert torch.equal(torch.get_rng_state(), rng_straight)
    assert not torch.equal(straight.params["upper"], probs[1].params)  # it did move


@pytest.mark.parametrize("stop", [10, 14], ids=["epoch-end", "mid-epoch"])
def test_resume_is_bit_for_bit_with_a_loader_of_its_own_generator(tmp_path, stop):
    """A DataLoader shuffling with its own ``generator=``: the resumed process builds a fresh
    one (seeded as at the start), and the checkpoint brings it back to where it was."""
    def loader():
        return DataLoader(torch.rand(28, generator=torch.Generator().manual_seed(1),
                                     dtype=F64) + 0.5, batch_size=4, shuffle=True,
                          generator=torch.Generator().manual_seed(7))
    run = lambda data, steps, where, resume=False: mlo.solve(  # noqa: E731
        *bilevel(hg.cg(maxiter=4), data=data), steps=steps, seed=3,
        checkpoint=mlo.Checkpoint(tmp_path / where, every=stop, resume=resume), **QUIET)
    straight = run(loader(), 24, "a")
    run(loader(), stop, "b")
    resumed = run(loader(), 24, "b", resume=True)
    assert state_equal(straight.params, resumed.params)
    assert state_equal(straight.opt_states, resumed.opt_states)


def test_tensorboard_event_files_have_the_expected_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    probs, graph = bilevel()
    mlo.solve(probs, graph, steps=4,
              logging=mlo.Logging(every=2, logdir=str(tmp_path), progress=False, console=False),
              validation=mlo.Validation(lambda params: {"val": params["upper"].sum()}, every=2))
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"lower/loss", "lower/grad_norm", "lower/lr", "upper/loss", "upper/grad_norm",
            "upper/lr", "upper/residual/lower", "validation/val"} <= tags
    assert [e.value for e in acc.Scalars("upper/lr")] == pytest.approx([0.01, 0.01])
    assert [e.step for e in acc.Scalars("upper/loss")] == [2, 4]


def test_console_lines(capsys):
    probs, graph = bilevel()
    mlo.solve(probs, graph, steps=2, logging=mlo.Logging(every=1, progress=False))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[step 1/2] lower/loss ") and "upper/residual/lower" in out[1]


def test_mwn_reweighting_on_real_digits():
    """Meta-Weight-Net in miniature: the reweighting net's hypergradient is nonzero and finite
    and its params move; the classifier's loss reads the weights, the meta loss the classifier."""
    X, y = digits(300, dtype=torch.float32)
    train = [(X[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)]
    meta = [(X[200:300], y[200:300])]
    torch.manual_seed(0)
    cls = bnn.functional(nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)))
    rw = bnn.functional(nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid()))

    def classifier_loss(params, batch, *, reweight):
        losses = F.cross_entropy(cls(params, batch[0]), batch[1], reduction="none")
        weights = rw(reweight, losses.detach()[:, None]).squeeze(1)
        return (weights * losses).mean()

    def reweight_loss(params, batch, *, classifier):
        return F.cross_entropy(cls(classifier, batch[0]), batch[1])

    problems = [mlo.Problem("classifier", classifier_loss, cls.params, optim.sgd(0.1, momentum=0.9),
                            data=train, hypergrad=hg.cg(maxiter=3)),
                mlo.Problem("reweight", reweight_loss, rw.params, optim.adam(1e-3), data=meta)]
    r = mlo.solve(problems, {"reweight": ["classifier"]}, steps=6,
                  logging=mlo.Logging(every=1, progress=False, console=False))
    norms = [v for _, v in r.history["reweight/grad_norm"]]
    assert len(norms) == 6 and all(0 < v < float("inf") for v in norms)
    moved = [not torch.equal(r.params["reweight"][k], rw.params[k]) for k in rw.params]
    assert all(moved)


@pytest.mark.parametrize("method", ["cg", "darts", "unrolled", "three_levels"])
def test_no_step_state_outlives_its_step(method):
    """Each step's context (and with it the step's autograd graphs) must be freed: a reference
    cycle through the responses' autograd nodes once leaked ~20 MB per step."""
    import gc

    from betty_func.mlo._context import Ctx as StepContext
    if method == "three_levels":
        from test_mlo_levels import Nested
        nz = Nested(1.0)
        problems = nz.problems(hg.cg(maxiter=5), hg.darts())
        graph = {"top": ["middle", "bottom"], "middle": ["bottom"]}
    else:
        m = {"cg": hg.cg(maxiter=3), "darts": hg.darts(), "unrolled": None}[method]
        problems, graph = bilevel(m or hg.cg())
        if method == "unrolled":
            opt = optim.sgd(0.01, momentum=0.5)
            problems[0] = mlo.Problem("lower", problems[0].loss, problems[0].params, opt,
                                      hypergrad=hg.unrolled(2, opt), unroll_steps=2)
    mlo.solve(problems, graph, steps=4, **QUIET)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is StepContext]
