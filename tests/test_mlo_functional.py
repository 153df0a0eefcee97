"""The functional API: mlo.init / mlo.step / mlo.due, vmap over a batch of programs."""
import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim, testing

F64 = torch.float64
P = testing.ridge(d=6, kappa=30.0, n_train=18)


def program(method, unroll=1):
    """Ridge bilevel whose inner loss scales each feature by the batch (a tensor of 6)."""
    lower = mlo.Problem("lower", lambda th, b, *, upper: P.inner_loss(th * b, upper),
                        torch.zeros(6, dtype=F64), optim.sgd(0.01, momentum=0.5),
                        hypergrad=method, unroll_steps=unroll)
    upper = mlo.Problem("upper", lambda lam, b, *, lower: P.outer_loss(lower, lam), P.lam,
                        optim.adam(0.01))
    return [lower, upper], {"upper": ["lower"]}


def batches_for(state, b):
    k = mlo.due(state).get("lower")
    return {} if k is None else {"lower": b if k == 1 else [b] * k}


def test_step_loop_equals_solve():
    probs, graph = program(hg.cg(maxiter=4))
    one = torch.ones(6, dtype=F64)
    probs[0] = mlo.Problem("lower", probs[0].loss, probs[0].params, probs[0].optimizer,
                           hypergrad=probs[0].hypergrad, data=lambda i: one)
    state = mlo.init(probs, graph)
    for _ in range(5):
        state, logs = mlo.step(state, {"lower": one})
    r = mlo.solve(probs, graph, steps=5, logging=mlo.Logging(progress=False, console=False))
    assert state.step == 5 and torch.equal(state.params["upper"], r.params["upper"])
    assert set(logs) == {"lower", "upper"} and "residual/lower" in logs["upper"]


@pytest.mark.parametrize("name", ["cg", "darts", "unrolled"])
def test_vmap_over_programs_equals_a_loop(name):
    method, unroll = {"cg": (hg.cg(maxiter=4), 1), "darts": (hg.darts(), 1),
                      "unrolled": (hg.unrolled(), 2)}[name]
    probs, graph = program(method, unroll)
    s0 = mlo.init(probs, graph, batches={"lower": torch.ones(6, dtype=F64)})
    gen = lambda i: torch.Generator().manual_seed(i)  # noqa: E731
    inits = [mlo.with_params(s0, {"lower": torch.randn(6, dtype=F64, generator=gen(i)),
                                  "upper": P.lam * (1 + 0.1 * i)}) for i in range(3)]
    data = torch.stack([torch.full((6,), 1.0 + 0.1 * i, dtype=F64) for i in range(3)])
    loop = []
    for i, s in enumerate(inits):
        for _ in range(4):
            s, _ = mlo.step(s, batches_for(s, data[i]))
        loop.append(s)
    batched = mlo.stack(inits)
    for _ in range(4):
        batched, logs = torch.vmap(mlo.step)(batched, batches_for(batched, data))
    assert batched.step == 4 and logs["upper"]["loss"].shape == (3,)
    for i, s in enumerate(mlo.unstack(batched)):
        for n in ("lower", "upper"):
            assert torch.allclose(s.params[n], loop[i].params[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("compile", [False, {"backend": "aot_eager"}], ids=["eager", "compiled"])
def test_batched_step_equals_vmap_of_the_step(compile):
    """mlo.step(batched=True) vmaps inside (so a compiled step is compile(vmap(...)), compile
    outermost): equal to torch.vmap(mlo.step)."""
    probs, graph = program(hg.cg(maxiter=4))
    s0 = mlo.init(probs, graph, batches={"lower": torch.ones(6, dtype=F64)})
    batched = mlo.stack([mlo.with_params(s0, {"upper": P.lam * (1 + 0.1 * i)}) for i in range(3)])
    data = torch.stack([torch.full((6,), 1.0 + 0.1 * i, dtype=F64) for i in range(3)])
    a = b = batched
    for _ in range(3):
        a, _ = torch.vmap(mlo.step)(a, {"lower": data})
        b, logs = mlo.step(b, {"lower": data}, compile=compile, batched=True)
    assert logs["lower"]["loss"].shape == (3,)
    for n in ("lower", "upper"):
        assert torch.allclose(a.params[n], b.params[n], rtol=1e-12, atol=1e-14)


def test_due_counts_batches_and_step_checks_them():
    probs, graph = program(hg.unrolled(), unroll=3)
    state = mlo.init(probs, graph, batches={"lower": torch.ones(6, dtype=F64)})
    assert mlo.due(state) == {}  # the window closes at step 3
    state, _ = mlo.step(mlo.step(state, {})[0], {})
    assert mlo.due(state) == {"lower": 3, "upper": 1}
    with pytest.raises(ValueError, match=r"'lower' consumes 3 batches at this step"):
        mlo.step(state, {"lower": torch.ones(6, dtype=F64)})
    with pytest.raises(ValueError, match=r"`batches` names no problem: \['lowr'\]"):
        mlo.step(state, {"lowr": 1})
    with pytest.raises(TypeError, match=r"`state` must be an mlo.State"):
        mlo.step({"params": {}}, {})


def test_stack_refuses_states_of_different_steps():
    probs, graph = program(hg.cg(maxiter=2))
    s0 = mlo.init(probs, graph, batches={"lower": torch.ones(6, dtype=F64)})
    s1, _ = mlo.step(s0, {"lower": torch.ones(6, dtype=F64)})
    with pytest.raises(ValueError, match=r"one program .* at the same step"):
        mlo.stack([s0, s1])


def test_init_preflight_names_the_problem_whose_loss_raised():
    probs, graph = program(hg.cg(maxiter=2))
    with pytest.raises(TypeError, match=r"the loss of 'lower' raised TypeError in the preflight "
                                        r"of 'lower'") as err:
        mlo.init(probs, graph)  # no batch: the loss multiplies by None
    assert isinstance(err.value.__cause__, TypeError)


def test_with_params_refuses_unknown_names_and_detaches():
    probs, graph = program(hg.cg(maxiter=2))
    s0 = mlo.init(probs, graph, batches={"lower": torch.ones(6, dtype=F64)})
    with pytest.raises(ValueError, match=r"`params` names no problem: \['uper'\]"):
        mlo.with_params(s0, {"uper": P.lam})
    leaf = P.lam.clone().requires_grad_()
    s1 = mlo.with_params(s0, {"upper": leaf})
    assert not s1.params["upper"].requires_grad and torch.equal(s1.params["upper"], P.lam)


def test_params_that_require_grad_are_detached_and_the_module_is_not_touched():
    """``dict(model.named_parameters())`` as params: no autograd tape across steps (each new
    param has no grad_fn, so no step's graph stays alive), the module's tensors and grads as
    they were, the same update as detached copies."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.randn(8, 3, dtype=F64)

    def fit(params):
        loss = lambda w, batch: ((x @ w["weight"].T + w["bias"]) ** 2).mean()  # noqa: E731
        p = mlo.Problem("p", loss, params, optim.sgd(0.1))
        state = mlo.init([p], {})
        for _ in range(3):
            state, _ = mlo.step(state, {})
        return state.params["p"]

    ours, ref = fit(dict(model.named_parameters())), fit(before)
    assert all(v.grad_fn is None and not v.requires_grad for v in ours.values())
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert all(torch.equal(v, before[k]) and v.grad is None for k, v in model.named_parameters())
    assert not torch.equal(ours["weight"], before["weight"])


def test_logs_false_does_no_logging_work_and_the_same_update():
    probs, graph = program(hg.cg(maxiter=3))
    one = torch.ones(6, dtype=F64)
    s0 = mlo.init(probs, graph, batches={"lower": one})
    a, la = mlo.step(s0, {"lower": one})
    b, lb = mlo.step(s0, {"lower": one}, logs=False)
    assert set(la) == {"lower", "upper"}  # logs=False: only the non-finite masks
    assert {n: set(d) for n, d in lb.items()} == {"lower": {"nonfinite"}, "upper": {"nonfinite"}}
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)
