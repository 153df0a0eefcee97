"""optim.partition (one optimizer per group of leaves, frozen leaves) and optim.accumulate
(one update per `every` gradients, on their mean)."""
import pytest
import torch

from betty_func import optim, tree

F64 = torch.float64


def nested(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return {"a": {"w": r(3, 2), "b": r(2)}, "c": [r(4), r(1)], "f": r(2)}


LABELS = {"a": {"w": 0, "b": 1}, "c": [2, 0], "f": None}
GROUPS = [lambda: optim.sgd(0.1, momentum=0.9, weight_decay=0.01),
          lambda: optim.adam(0.05, amsgrad=True),
          lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.adamw(0.02))]


def test_each_group_steps_as_its_transform_alone_and_a_frozen_leaf_stays():
    """The leaves of each label, as a flat list in the params' leaf order (a: b, w; c: 0, 1),
    go through their transform exactly as they would alone; clip's norm is its group's."""
    opt = optim.partition([make() for make in GROUPS], LABELS)
    p = nested()
    s = opt.init(p)
    alone = [make() for make in GROUPS]
    mine = [lambda t: [t["a"]["w"], t["c"][1]], lambda t: [t["a"]["b"]], lambda t: [t["c"][0]]]
    q = [m(p) for m in mine]
    qs = [o.init(x) for o, x in zip(alone, q)]
    assert isinstance(s, optim.PartitionState) and len(s.states) == 3
    for step in range(5):
        grads = nested(seed=1 + step)
        p, s = optim.step(opt, p, grads, s)
        for i, (o, m) in enumerate(zip(alone, mine)):
            q[i], qs[i] = optim.step(o, q[i], m(grads), qs[i])
            for x, y in zip(m(p), q[i]):
                assert torch.equal(x, y)
    assert torch.equal(p["f"], nested()["f"])
    assert not torch.equal(p["a"]["w"], nested()["a"]["w"])


def test_rates_the_first_groups_for_lookups_and_each_groups_for_group_learning_rates():
    opt = optim.partition([optim.sgd(optim.multistep(0.1, [1], 0.5)), optim.adam(0.01)],
                          {"x": 1, "y": 0})
    p = {"x": torch.zeros(2, dtype=F64), "y": torch.zeros(3, dtype=F64)}
    s = opt.init(p)
    assert float(optim.learning_rate(s)) == 0.1 and float(optim.tree_get(s, "lr")) == 0.1
    _, s = opt.update({k: torch.ones_like(v) for k, v in p.items()}, s, p)
    assert [float(r) for r in optim.group_learning_rates(s)] == [0.05, 0.01]
    s = optim.tree_set(s, lr=0.3)  # every group's
    assert [float(r) for r in optim.group_learning_rates(s)] == [0.3, 0.3]
    with pytest.raises(ValueError, match=r"'count' names 2"):  # ambiguity inside a group stays
        optim.tree_get(optim.partition([optim.chain(optim.sgd(0.1), optim.adam(0.1))],
                                       {"x": 0}).init({"x": torch.zeros(1)}), "count")


def test_a_first_group_without_a_rate():
    opt = optim.partition([optim.clip_by_global_norm(1.0), optim.sgd(0.2)], {"x": 0, "y": 1})
    s = opt.init({"x": torch.zeros(1), "y": torch.zeros(1)})
    assert float(optim.learning_rate(s)) == pytest.approx(0.2)  # the first group that has one
    with pytest.raises(ValueError, match=r"optim\.group_learning_rates\(state\): group 0 of the "
                       r"partition has no learning rate.*Got tuple"):
        optim.group_learning_rates(s)
    with pytest.raises(ValueError, match=r"the state has no learning rate"):
        optim.group_learning_rates(())
    assert [float(r) for r in optim.group_learning_rates(optim.sgd(0.1).init(torch.ones(1)))] \
        == pytest.approx([0.1])


@pytest.mark.parametrize("transforms,labels,exc,match", [
    (lambda: optim.sgd(0.1), {"x": 0}, TypeError,
     r"optim\.partition\(transforms, labels\): `transforms` must be a list of optimizers.*"
     r"Got Optimizer"),
    (lambda: [], {"x": 0}, ValueError, r"`transforms` must not be empty"),
    (lambda: [torch.optim.SGD], {"x": 0}, TypeError,
     r"`transforms\[0\]` must be a betty_func\.optim optimizer"),
    (lambda: [optim.sgd(0.1)], {"x": 1}, ValueError,
     r"a label must index `transforms` \(0 to 0\); one of `labels` does not\. Got 1"),
    (lambda: [optim.sgd(0.1)], {"x": -1}, ValueError, r"Got -1"),
    (lambda: [optim.sgd(0.1)], {"x": 0.0}, TypeError,
     r"every label must be an int or None; one of `labels` is not\. Got float 0\.0"),
    (lambda: [optim.sgd(0.1)], {"x": True}, TypeError, r"Got bool True"),
    (lambda: [optim.sgd(0.1)], {"x": "adam"}, TypeError, r"Got str 'adam'"),
])
def test_bad_partitions_are_refused(transforms, labels, exc, match):
    with pytest.raises(exc, match=match):
        optim.partition(transforms(), labels)


@pytest.mark.parametrize("labels,match", [
    ({"x": 0}, r"`labels` must have the structure of the params.*missing key"),
    ({"x": 0, "y": 0, "z": 0}, r"`labels` must have the structure of the params"),
    ({"x": 0, "y": [0, 0]}, r"every label must be an int or None; the label of leaf \['y'\] is not"
                            r"\. Got list"),
])
def test_labels_that_do_not_fit_the_params_are_refused_at_init(labels, match):
    opt = optim.partition([optim.sgd(0.1)], labels)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.init({"x": torch.zeros(1), "y": torch.zeros(2)})


def test_a_loss_scaled_group_is_refused():
    opt = optim.partition([optim.loss_scaled(optim.sgd(0.1))], {"x": 0})
    with pytest.raises(ValueError, match=r"optim\.partition.*`transforms\[0\]` is a loss_scaled"):
        opt.init({"x": torch.zeros(1)})


def test_accumulate_equals_torch_sgd_on_the_mean_of_each_three_gradients():
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(4, 3, generator=g, dtype=F64)
    grads = [torch.randn(4, 3, generator=g, dtype=F64) for _ in range(12)]
    opt = optim.accumulate(optim.sgd(optim.multistep(0.1, [2], 0.5), momentum=0.9,
                                     weight_decay=0.01), 3)
    p, s = {"w": w0}, opt.init({"w": w0})
    t = torch.nn.Parameter(w0.clone())
    topt = torch.optim.SGD([t], lr=0.1, momentum=0.9, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.MultiStepLR(topt, [2], 0.5)
    for i, gi in enumerate(grads):
        assert float(optim.learning_rate(s)) == topt.param_groups[0]["lr"]
        before = p["w"]
        p, s = optim.step(opt, p, {"w": gi}, s)
        if i % 3 < 2:
            assert torch.equal(p["w"], before) and int(s.seen) == i % 3 + 1
            continue
        t.grad = (grads[i - 2] + grads[i - 1] + gi) / 3
        topt.step()
        sched.step()
        torch.testing.assert_close(p["w"], t.detach(), rtol=1e-12, atol=1e-15)
        assert int(s.seen) == 0 and not s.total["w"].any()
    assert int(optim.tree_get(s, "count")) == 4


def test_accumulate_compiles_as_one_graph_equal_to_eager():
    opt = optim.accumulate(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.1)), 2)
    p = {"w": torch.linspace(-1, 1, 4, dtype=F64)}
    gs = [{"w": torch.ones(4, dtype=F64)}, {"w": torch.arange(4.0, dtype=F64)}]

    def run(step):
        q, s = p, opt.init(p)
        for g in gs:  # one accumulating call, one applying call: the same graph
            q, s = step(q, g, s)
        return q, s

    from torch._dynamo.backends.debugging import aot_eager
    calls = []

    def backend(gm, example):
        calls.append(1)
        return aot_eager(gm, example)

    def f(q, g, s):
        return optim.step(opt, q, g, s)
    torch._dynamo.reset()
    got, want = run(torch.compile(f, backend=backend, fullgraph=True)), run(f)
    torch.testing.assert_close(got[0]["w"], want[0]["w"], rtol=1e-15, atol=0)
    assert not torch.equal(got[0]["w"], p["w"]) and int(got[1].seen) == 0
    assert len(calls) == 1  # one graph for both calls (the branch is a torch.where)


def test_partition_compiles_as_one_graph_equal_to_eager():
    opt = optim.partition([make() for make in GROUPS], LABELS)
    p, g = nested(), nested(seed=1)

    def f(q, s):
        return optim.step(opt, q, g, s)
    torch._dynamo.reset()
    got, want = torch.compile(f, backend="aot_eager", fullgraph=True)(p, opt.init(p)), \
        f(p, opt.init(p))
    for x, y in zip(tree.leaves(got), tree.leaves(want)):
        torch.testing.assert_close(x, y, rtol=1e-15, atol=0)


def test_accumulate_of_one_is_the_optimizer_and_bad_every_is_refused():
    sgd = optim.sgd(0.1)
    assert optim.accumulate(sgd, 1) is sgd
    with pytest.raises(ValueError, match=r"optim\.accumulate\(opt, every\): `every` must be an "
                       r"integer >= 1\. Got 0"):
        optim.accumulate(sgd, 0)
    with pytest.raises(TypeError, match=r"`every` must be an integer\. Got float 2\.0"):
        optim.accumulate(sgd, 2.0)
    with pytest.raises(TypeError, match=r"`opt` must be a betty_func\.optim optimizer"):
        optim.accumulate(torch.optim.SGD, 2)


def test_accumulate_of_a_from_torch_partition_with_schedule_stride():
    """A front end stepping the scheduler every micro step, the optimizer every 2: the rates
    of the groups follow torch's after 2k scheduler steps, read through accumulate."""
    w = torch.nn.Parameter(torch.ones(2, dtype=F64))
    b = torch.nn.Parameter(torch.ones(1, dtype=F64))
    topt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    opt = optim.accumulate(optim.from_torch(topt, {"w": w, "b": b}, sched, schedule_stride=2), 2)
    p = {"w": w.detach().clone(), "b": b.detach().clone()}
    s = opt.init(p)
    for k in range(6):
        assert [float(r) for r in optim.group_learning_rates(s)] == \
            [g["lr"] for g in topt.param_groups]
        for _ in range(2):
            p, s = optim.step(opt, p, {"w": torch.ones(2, dtype=F64),
                                       "b": torch.ones(1, dtype=F64)}, s)
        w.grad, b.grad = torch.ones(2, dtype=F64), torch.ones(1, dtype=F64)
        topt.step()
        sched.step()
        sched.step()
        torch.testing.assert_close(p["w"], w.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(p["b"], b.detach(), rtol=1e-12, atol=0)
