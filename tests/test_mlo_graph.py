"""Graph and loss validation: each error before any step, in the DESIGN.md §3 form."""
import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim

Z = torch.zeros(2)


def P(name, loss=None, **kw):
    return mlo.Problem(name, loss or (lambda p, b: (p ** 2).sum()), Z, optim.sgd(0.1), **kw)


def lo_hi():
    lo = P("lo", lambda p, b, *, hi: ((p - hi) ** 2).sum())
    hi = P("hi", lambda p, b, *, lo: (lo ** 2).sum())
    return lo, hi


def solve(problems, graph):
    return mlo.solve(problems, graph, steps=1, logging=mlo.Logging(progress=False, console=False))


@pytest.mark.parametrize("graph,match", [
    ({"hi": ["clasifier"]},
     r"solve\(problems, graph\): edge 'hi' -> 'clasifier' names no problem\. "
     r"Got have: \['hi', 'lo'\]"),
    ({"top": ["lo"]}, r"edge source 'top' names no problem"),
    ({"hi": ["lo"], "lo": ["hi"]}, r"the graph has a cycle: (hi -> lo -> hi|lo -> hi -> lo)\. "
                                   r"Multilevel programs must be acyclic"),
    ({"hi": ["lo", "hi"]}, r"problem 'hi' is its own lower \(a self-edge\)"),
    ([("hi", "lo")], r"`graph` must be a mapping \{upper: \[lowers\]\}\. Got list"),
])
def test_bad_graphs(graph, match):
    with pytest.raises(ValueError, match=match):
        solve(list(lo_hi()), graph)


def test_problem_objects_as_graph_keys():
    lo, hi = lo_hi()
    assert solve([lo, hi], {hi: [lo]}).step == 1


def test_duplicate_names_and_loose_problems():
    lo, hi = lo_hi()
    with pytest.raises(ValueError, match=r"problem names must be unique; repeated: \['lo'\]"):
        solve([lo, hi, lo], {"hi": ["lo"]})
    with pytest.raises(ValueError, match=r"problems \['extra'\] appear in no edge of the graph"):
        solve([lo, hi, P("extra")], {"hi": ["lo"]})


def test_reads_must_be_related_problems():
    lo, hi = lo_hi()
    side = P("side", lambda p, b, *, lo: (p * lo).sum())
    top = P("top", lambda p, b, *, hi: (p * hi).sum())
    with pytest.raises(ValueError,
                       match=r"the loss of 'side' reads 'lo', which is neither above nor "
                             r"below it\. Got related to 'side': \['top'\]"):
        solve([lo, hi, side, top], {"hi": ["lo"], "top": ["hi", "side"]})
    typo = P("lo", lambda p, b, *, hii: (p * hii).sum())
    with pytest.raises(ValueError,
                       match=r"the loss of 'lo' has keyword `hii`, which names no problem"):
        solve([typo, hi], {"hi": ["lo"]})


def test_loss_errors_before_any_update():
    lo, hi = lo_hi()
    vec = P("lo", lambda p, b, *, hi: (p - hi) ** 2)
    with pytest.raises(ValueError, match=r"the loss of 'lo' must return a scalar float tensor or "
                                         r"\(scalar, metrics\)\. Got shape \(2,\)"):
        solve([vec, hi], {"hi": ["lo"]})
    blind = P("lo", lambda p, b, *, hi: (hi ** 2).sum())
    with pytest.raises(ValueError, match=r"the loss of 'lo' does not depend on its params, so its "
                                         r"gradient would be a silent zero"):
        solve([blind, hi], {"hi": ["lo"]})
    deaf = P("hi", lambda p, b, *, lo: torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"the loss of 'hi' does not depend on its params or any "
                                         r"problem below it"):
        solve([lo, deaf], {"hi": ["lo"]})
    bad_metrics = P("lo", lambda p, b, *, hi: (((p - hi) ** 2).sum(), [1]))
    with pytest.raises(ValueError, match=r"returned metrics that are not a dict\. Got list"):
        solve([bad_metrics, hi], {"hi": ["lo"]})


def test_lower_ignoring_upper_is_an_error_not_a_zero():
    lo = P("lo", lambda p, b: (p ** 2).sum())
    hi = P("hi", lambda p, b, *, lo: (lo ** 2).sum() + (p ** 2).sum())
    with pytest.raises(ValueError, match=r"does not depend on `outer_params`.* silent zero"):
        solve([lo, hi], {"hi": ["lo"]})


@pytest.mark.parametrize("make,match", [
    (lambda: mlo.Problem("a b", lambda p, b: p.sum(), Z, optim.sgd(0.1)),
     r"`name` must be a valid Python identifier"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), {"n": torch.tensor([1])}, optim.sgd(0.1)),
     r"mlo\.Problem\('x', loss, params, optimizer\): leaf .* of `params` "
     r"is not a floating-point tensor"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), Z, torch.optim.SGD),
     r"`optimizer` must be a betty_func\.optim optimizer"),
    (lambda: mlo.Problem("x", lambda p: p.sum(), Z, optim.sgd(0.1)),
     r"`loss` must take \(params, batch, \*, <problem names>\.\.\.\)"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), Z, optim.sgd(0.1), unroll_steps=0),
     r"`unroll_steps` must be >= 1"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), Z, optim.sgd(0.1), accumulate=-1),
     r"`accumulate` must be an integer >= 0\. Got -1"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), Z, optim.sgd(0.1), hypergrad="cg"),
     r"`hypergrad` must be a hypergradient method or \{upper: method\}"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), Z, optim.sgd(0.1), unroll_steps=2,
                         hypergrad=hg.unrolled(3, optim.sgd(0.1))),
     r"an unrolled method must unroll this problem's own updates"),
    (lambda: mlo.Problem("x", lambda p, b: p.sum(), Z, optim.sgd(0.1), state={"s": Z}),
     r"a problem with `state` needs a loss with a keyword-only `state` parameter"),
])
def test_bad_problems(make, match):
    wrong_kind = "optimizer` must be" in match or "hypergrad` must be" in match
    with pytest.raises(TypeError if wrong_kind else ValueError, match=match):
        make()


def test_unrolled_needs_an_upper_and_one_batch_per_update():
    opt = optim.sgd(0.1)
    alone = mlo.Problem("x", lambda p, b: (p ** 2).sum(), Z, opt, hypergrad=hg.unrolled(1, opt))
    with pytest.raises(ValueError, match=r"problem 'x' is unrolled but has no upper"):
        solve([alone], {})


def test_data_must_be_reiterable():
    lo, hi = lo_hi()
    lo = mlo.Problem("lo", lo.loss, Z, optim.sgd(0.1), data=iter([1, 2, 3]))
    with pytest.raises(ValueError, match=r"`data` of 'lo' is a one-shot iterator"):
        solve([lo, hi], {"hi": ["lo"]})


def test_schedule_lists_order_periods_and_steps(capsys):
    lo = P("lo", lambda p, b, *, mid: ((p - mid) ** 2).sum(), unroll_steps=2)
    mid = P("mid", lambda p, b, *, lo, top: ((lo - 1) ** 2).sum() + ((p - top) ** 2).sum(),
            unroll_steps=3)
    top = P("top", lambda p, b, *, mid: (mid ** 2).sum())
    lines = mlo.schedule([lo, mid, top], {"top": ["mid"], "mid": ["lo"]}, steps=6)
    assert lines[0] == "order (bottom-up): lo, mid, top"
    assert lines[-6:] == ["step 1: lo", "step 2: lo, mid", "step 3: lo", "step 4: lo, mid",
                          "step 5: lo", "step 6: lo, mid, top"]
    assert "every 2 step(s)" in lines[2] and "every 6 step(s)" in lines[3]
    assert capsys.readouterr().out.startswith("order (bottom-up)")
