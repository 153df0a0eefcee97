"""Hyperparameters live in the optimizer state, found by name through any nesting: no combinator
forwards (or drops) a learning rate or a loss scale."""
import pytest
import torch

from betty_func import mlo, optim

F64 = torch.float64


def test_tree_get_finds_a_field_through_any_nesting_and_refuses_ambiguity():
    p = torch.zeros(3, dtype=F64)
    s = optim.loss_scaled(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.01))).init(p)
    assert float(optim.tree_get(s, "lr")) == 0.01 and optim.tree_get(s, "lr").dtype == F64
    assert float(optim.loss_scale(s)) == 2.0 ** 16 and float(optim.learning_rate(s)) == 0.01
    assert optim.tree_get(s, "nothing", None) is None
    with pytest.raises(ValueError, match=r"optim\.tree_get.*'nothing' names 0"):
        optim.tree_get(s, "nothing")
    two = optim.chain(optim.sgd(0.1), optim.sgd(0.2)).init(p)
    with pytest.raises(ValueError, match=r"'lr' names 2.*state\[0\]\.lr.*state\[1\]\.lr"):
        optim.tree_get(two, "lr")
    assert float(optim.learning_rate(two)) == 0.2  # the last one applied


def test_tree_set_changes_the_rate_of_later_updates_and_a_schedule_takes_over_again():
    p, g = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)
    opt = optim.sgd(0.1)
    s = optim.tree_set(opt.init(p), lr=0.5)
    for _ in range(2):  # a constant rate, once set, stays
        u, s = opt.update(g, s, p)
        assert u.tolist() == [-0.5, -0.5]
    sched = optim.sgd(optim.multistep(0.1, [5], 0.1))
    s = optim.tree_set(sched.init(p), lr=0.5)
    u, s = sched.update(g, s, p)
    assert u.tolist() == [-0.5, -0.5] and float(optim.learning_rate(s)) == 0.1  # schedule(1)
    with pytest.raises(ValueError, match=r"optim\.tree_set.*no field 'learning_rate'"):
        optim.tree_set(s, learning_rate=0.1)


@pytest.mark.parametrize("make, match", [
    (lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.loss_scaled(optim.sgd(0.1))),
     r"optim\.chain.*`transforms\[1\]` is a loss_scaled optimizer.*Put it outermost"),
    (lambda: optim.chain(optim.loss_scaled(optim.sgd(0.1)), optim.sgd(0.1)),
     r"`transforms\[0\]` is a loss_scaled optimizer"),
    (lambda: optim.sharded(optim.loss_scaled(optim.adam(0.1))),
     r"optim\.sharded.*`opt` is a loss_scaled optimizer"),
    (lambda: optim.loss_scaled(optim.loss_scaled(optim.adam(0.1))),
     r"optim\.loss_scaled.*`opt` is a loss_scaled optimizer"),
])
def test_a_loss_scale_inside_a_combinator_is_refused_at_init(make, match):
    """Inside chain the parts before it would see scaled gradients (the bug this replaces: chain
    dropped the inner scale, so the loss went unscaled and the update was 65536x too small)."""
    with pytest.raises(ValueError, match=match):
        make().init(torch.zeros(2))


def _lower(optimizer, precision=None):
    target = torch.linspace(-1.0, 1.0, 4)
    return mlo.Problem("p", lambda w, batch: ((w - target) ** 2).sum(), torch.zeros(4),
                       optimizer, precision=precision)


def test_mlo_scales_the_loss_of_a_loss_scaled_chain_and_logs_its_rate():
    """``loss_scaled(chain(clip, sgd))`` given by hand: the loss is scaled, the update unscaled,
    the same params as the plain chain (float32 eager; scale 2**10 is exact)."""
    plain = optim.chain(optim.clip_by_global_norm(0.5), optim.sgd(0.1))
    runs = [mlo.solve([_lower(o)], {}, steps=3,
                      logging=mlo.Logging(progress=False, console=False, every=1))
            for o in (plain, optim.loss_scaled(plain, init_scale=2.0 ** 10))]
    assert torch.equal(runs[0].params["p"], runs[1].params["p"])
    assert runs[1].history["p/loss_scale"][0] == (1, 2.0 ** 10)
    assert [v for _, v in runs[1].history["p/lr"]] == pytest.approx([0.1] * 3)
    norms = [[v for _, v in r.history["p/grad_norm"]] for r in runs]
    assert norms[1] == pytest.approx(norms[0], rel=1e-6)  # the true (unscaled) gradient's norm


def test_fp16_does_not_wrap_an_optimizer_that_already_scales():
    opt = optim.loss_scaled(optim.adam(0.01), init_scale=2.0 ** 8)
    p = _lower(opt, precision="fp16")
    assert p.optimizer is opt
    assert float(optim.loss_scale(p.optimizer.init(p.params))) == 2.0 ** 8
    assert _lower(optim.adam(0.01), precision="fp16").optimizer is not opt


OPTIMIZERS = {"sgd": lambda: optim.sgd(0.1, momentum=0.5), "adam": lambda: optim.adam(0.1),
              "adamw": lambda: optim.adamw(0.1, amsgrad=True),
              "sgd_cosine": lambda: optim.sgd(optim.cosine(0.1, 10)),
              "loss_scaled_chain": lambda: optim.loss_scaled(optim.chain(
                  optim.clip_by_global_norm(1.0), optim.adam(optim.warmup(0.1, 3))))}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_leaf_keeps_its_dtype_under_a_float64_rate(name):
    """The float64 rate is cast to each leaf's dtype: a 0-d float32 leaf (a scalar
    hyperparameter) is not promoted to float64 beside float64 and float32 leaves."""
    opt = OPTIMIZERS[name]()
    p = {"s": torch.zeros(()), "w": torch.zeros(2), "d": torch.zeros((), dtype=F64)}
    s = opt.init(p)
    for _ in range(2):
        p, s = optim.step(opt, p, {k: torch.ones_like(v) for k, v in p.items()}, s)
    assert {k: v.dtype for k, v in p.items()} == {"s": torch.float32, "w": torch.float32,
                                                  "d": F64}
    assert float(p["s"]) != 0.0


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_compiled_update_is_traced_once(name):
    """No 0-d float64 CPU tensor among the state's inputs: torch.compile (2.13) restarts its
    analysis for each one (a second trace, counted as a second backend call), which doubled the
    compile time of whole float64 steps; the compiled update equals eager."""
    from torch._dynamo.backends.debugging import aot_eager
    calls = []

    def backend(gm, example):
        calls.append(1)
        return aot_eager(gm, example)

    opt = OPTIMIZERS[name]()  # (a 0-d float64 param would be such an input too)
    p = {"w": torch.linspace(-1, 1, 4, dtype=F64), "s": torch.ones(1, dtype=F64)}
    g = {"w": torch.ones(4, dtype=F64), "s": -torch.ones(1, dtype=F64)}

    def f(p, s):
        return optim.step(opt, p, g, s)

    torch._dynamo.reset()
    got = torch.compile(f, backend=backend, fullgraph=True)(p, opt.init(p))
    want = f(p, opt.init(p))
    assert len(calls) == 1
    assert all(torch.equal(got[0][k], want[0][k]) for k in p)


def test_a_param_named_like_a_hyperparameter_is_not_taken_for_one():
    """Momentum and Adam buffers are dicts keyed by the user's param names: a param called
    'lr' (a meta-learned rate, say) or 'loss_scale' is not the optimizer's."""
    p = {"lr": torch.ones(2, dtype=F64), "loss_scale": torch.ones(1, dtype=F64)}
    opt = optim.loss_scaled(optim.sgd(0.1, momentum=0.9), init_scale=8.0)
    s = opt.init(p)
    _, s = opt.update({k: torch.ones_like(v) for k, v in p.items()}, s, p)
    assert float(optim.learning_rate(s)) == 0.1 and float(optim.loss_scale(s)) == 8.0
    assert float(optim.tree_get(s, "lr")) == 0.1
    s2 = optim.tree_set(s, lr=0.5)
    assert float(optim.learning_rate(s2)) == 0.5
    assert torch.equal(s2[0].momentum["lr"], s[0].momentum["lr"])
