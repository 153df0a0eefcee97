"""solve(compile=...) compiles the whole step as one graph: equal to eager for every method and
for three levels, no graph break (fullgraph=True succeeds), no recompilation from step to step."""
import pytest
import torch
from torch._dynamo.utils import counters

from betty_func import hypergrad as hg, mlo, optim, testing
from _dp_program import program as dp_program
from test_mlo_levels import Chain, Nested

F64 = torch.float64
AOT = {"backend": "aot_eager"}
QUIET = dict(logging=mlo.Logging(every=1, progress=False, console=False))


def bilevel(method, unroll=1, lower_opt=None, **lower_kw):
    p = testing.ridge(d=6, kappa=30.0, n_train=18)
    opt = lower_opt or optim.sgd(0.01, momentum=0.5)
    lower = mlo.Problem("lower", lambda th, b, *, upper: p.inner_loss(th, upper),
                        torch.zeros(6, dtype=F64), opt, hypergrad=method, unroll_steps=unroll,
                        **lower_kw)
    upper = mlo.Problem("upper", lambda lam, b, *, lower: p.outer_loss(lower, lam), p.lam,
                        optim.adam(0.01))
    return [lower, upper], {"upper": ["lower"]}


CASES = {
    "cg": lambda: bilevel(hg.cg(maxiter=4)),
    "neumann": lambda: bilevel(hg.neumann(steps=4, alpha=0.005)),
    "darts": lambda: bilevel(hg.darts()),
    "exact": lambda: bilevel(hg.exact()),
    "cg_unroll3": lambda: bilevel(hg.cg(maxiter=4), unroll=3),
    "unrolled": lambda: bilevel(hg.unrolled(), unroll=2),
    "unrolled_ckpt_adam": lambda: bilevel(hg.unrolled(checkpoint_every=1), unroll=3,
                                          lower_opt=optim.adam(0.01)),
    "accumulate_warmup_project": lambda: bilevel(
        hg.cg(maxiter=3), accumulate=2, warmup=2, project=lambda th: th.clamp(min=-0.5)),
    "buffers": lambda: with_state(),
    "three_levels_cg": lambda: (Nested(1.0).problems(hg.cg(maxiter=5), hg.cg(maxiter=4)),
                                {"top": ["middle", "bottom"], "middle": ["bottom"]}),
    "three_levels_darts": lambda: (Nested(1.0).problems(hg.cg(maxiter=5), hg.darts()),
                                   {"top": ["middle", "bottom"], "middle": ["bottom"]}),
    # data: the upper's first batch is drawn at step 2, after the lower's first graph compiled
    "cg_with_data": lambda: dp_program("cg"),
}


def test_more_programs_than_dynamo_caches_per_function_all_compile():
    """Each pattern of each program compiles as a function of its own: dynamo keeps
    ``recompile_limit`` graphs per function, after which ``fullgraph=True`` fails, so programs
    sharing one function would stop compiling after that many, in one process."""
    torch._dynamo.reset()
    counters.clear()
    n = torch._dynamo.config.recompile_limit + 2
    for i in range(n):
        p = mlo.Problem("fit", lambda w, b: ((w - float(i)) ** 2).sum(), torch.zeros(3),
                        optim.sgd(0.25))
        r = mlo.solve([p], {}, steps=2, compile={"backend": "eager"}, **QUIET)
        assert torch.allclose(r.params["fit"], torch.full((3,), 0.75 * i))
    assert counters["stats"]["unique_graphs"] == n


def with_state():
    """A lower whose loss centres its input by a running mean kept as explicit state."""
    p = testing.ridge(d=6, kappa=30.0, n_train=18)

    def inner(th, b, *, upper, state):
        return p.inner_loss(th - state, upper), {}, 0.9 * state + 0.1 * th

    lower = mlo.Problem("lower", inner, torch.zeros(6, dtype=F64), optim.sgd(0.01),
                        hypergrad=hg.cg(maxiter=3), state=torch.zeros(6, dtype=F64))
    upper = mlo.Problem("upper", lambda lam, b, *, lower: p.outer_loss(lower, lam), p.lam,
                        optim.adam(0.01))
    return [lower, upper], {"upper": ["lower"]}


def patterns(problems, graph, steps):
    g = mlo.build(problems, graph)
    return {(g.updates_at(t), tuple(n for n in g.updates_at(t) if g.starts_inner_loop(n, t)))
            for t in range(1, steps + 1)} - {((), ())}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_step_equals_eager_with_one_graph_per_pattern(name):
    problems, graph = CASES[name]()
    steps = 6
    eager = mlo.solve(problems, graph, steps=steps, **QUIET)
    torch._dynamo.reset()
    counters.clear()
    compiled = mlo.solve(problems, graph, steps=steps, compile=AOT, **QUIET)
    # fullgraph=True: a graph break would have raised; one graph per pattern, none recompiled
    # (a recompile is one more graph, and the compile times logged count every compile)
    assert counters["stats"]["unique_graphs"] == len(patterns(problems, graph, steps))
    for n in eager.params:
        a, b = compiled.params[n], eager.params[n]
        assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max()) + 1e-14, n
    assert len(compiled.history["compile/seconds"]) == len(patterns(problems, graph, steps))


def test_three_level_chain_compiles_and_matches_nested_finite_differences():
    ch = Chain()
    m0 = ch.mid_star(ch.t0)
    probs = [mlo.Problem("low", ch.low, torch.linalg.solve(ch.Hl, ch.P @ m0), optim.sgd(1e-3),
                         hypergrad=hg.cg(maxiter=5)),
             mlo.Problem("mid", ch.mid, m0, optim.sgd(1e-3), hypergrad=hg.cg(maxiter=4)),
             mlo.Problem("top", ch.top, ch.t0, optim.sgd(1.0))]
    r = mlo.solve(probs, {"top": ["mid"], "mid": ["low"]}, steps=1, compile=AOT, **QUIET)
    assert float((r.params["top"] - ch.t0 + ch.fd_hypergrad()).norm()
                 / ch.fd_hypergrad().norm()) < 1e-7


@pytest.mark.parametrize("name", ["cg", "unrolled"])
def test_inductor_step_equals_eager(name):
    problems, graph = CASES[name]()
    eager = mlo.solve(problems, graph, steps=4, **QUIET)
    torch._dynamo.reset()
    compiled = mlo.solve(problems, graph, steps=4, compile=True, **QUIET)
    for n in eager.params:
        assert torch.allclose(compiled.params[n], eager.params[n], rtol=1e-10, atol=1e-12)


def test_bf16_step_compiles_and_stays_close_to_eager():
    from test_mlo_precision import logreg_bilevel
    problems, graph = logreg_bilevel("bf16", [], maxiter=4)
    eager = mlo.solve(problems, graph, steps=2, **QUIET)
    torch._dynamo.reset()
    compiled = mlo.solve(problems, graph, steps=2, compile=AOT, **QUIET)
    for n in eager.params:
        a, b = compiled.params[n], eager.params[n]
        assert float((a - b).norm() / b.norm()) < 1e-2


@pytest.mark.parametrize("bad,exc", [("fast", ValueError), ({"fullgraph": False}, ValueError),
                                     (3, TypeError)])
def test_bad_compile_option(bad, exc):
    problems, graph = CASES["cg"]()
    with pytest.raises(exc):
        mlo.solve(problems, graph, steps=1, compile=bad, **QUIET)
