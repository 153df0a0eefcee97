"""A Betty program translated onto ``mlo``: devices, configured components, the graph, each
problem's optimizer (its ``torch.optim`` one mapped by ``optim.from_torch``) and the method
its uppers differentiate through it with."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .. import hypergrad as hg
from .. import optim
from .._errors import fail
from ._hooks import implemented

API = "betty.Engine(problems, config, dependencies, env)"


def resolve_device(strategy: str, problems: list) -> torch.device:
    """The one device of the program: ``Problem(device=...)`` (Betty 0.1) where given, else by
    ``strategy`` (Betty HEAD: CUDA if available)."""
    asked = {str(torch.device(p._device_arg)) for p in problems if p._device_arg is not None}
    if len(asked) > 1:
        fail(API, "the problems ask for different devices; one program runs on one device",
             sorted(asked), "Pass the same device= to every problem (or none).")
    if strategy in ("gpu", "cuda") or any(d.startswith("cuda") for d in asked):
        if not torch.cuda.is_available():
            what = f"device {sorted(asked)[0]!r}" if asked else f"strategy={strategy!r}"
            fail(API, f"{what} needs CUDA, which this machine does not have", None,
                 "Pass device='cpu' to the problems (or strategy='cpu'), or run on a GPU.")
    if asked:
        device = torch.device(sorted(asked)[0])
        if strategy == "cpu" and device.type != "cpu":
            fail(API, "strategy='cpu' but a problem asks for another device", str(device),
                 "Drop device= from the problems, or the strategy.")
        return device
    if strategy == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure(problem: Any, base: type, device: torch.device) -> None:
    """Betty's ``configure_*`` hooks, for what the constructor was not given (a component
    given both ways is refused: which one Betty used differs between its versions)."""
    where = f"{type(problem).__name__} '{problem.name}'"
    for field, hook in (("_module", "configure_module"), ("_optimizer", "configure_optimizer"),
                        ("scheduler", "configure_scheduler"),
                        ("train_data_loader", "configure_train_data_loader")):
        if not implemented(problem, hook, base):
            continue
        if getattr(problem, field) is not None:
            fail(API, f"{where} is given its {field.strip('_')} and also defines {hook}()",
                 None, f"Keep one: the constructor argument or {hook}().")
        setattr(problem, field, getattr(problem, hook)())
        if field == "_module":
            problem._module.to(device)
    if problem._module is None:
        fail(API, f"{where} has no module", None,
             "Pass module= or define configure_module().")
    problem._module.to(device)
    if problem._optimizer is None:
        fail(API, f"{where} has no optimizer", None,
             "Pass optimizer= (a torch.optim optimizer) or define configure_optimizer().")
    if problem.train_data_loader is None and not implemented(problem, "get_batch", base):
        fail(API, f"{where} has no data", None,
             "Pass train_data_loader=, define configure_train_data_loader(), or define "
             "get_batch() (e.g. reading self.env.batch).")


def graph_of(dependencies: Any, problems: list) -> dict:
    """``{upper name: [lower names]}`` from Betty's ``{"u2l": ..., "l2u": ...}``: every edge of
    either is an upper -> lower edge here (the upper's hypergradient is the total derivative
    through every problem below it, which covers Betty's paths)."""
    if not isinstance(dependencies, Mapping) or set(dependencies) != {"u2l", "l2u"}:
        got = sorted(dependencies) if isinstance(dependencies, Mapping) else \
            type(dependencies).__name__
        fail(API, "`dependencies` must be a dict with the keys 'u2l' and 'l2u'", got,
             "Pass {'u2l': {upper: [lowers]}, 'l2u': {lower: [uppers]}} (empty dicts for one "
             "problem).", exc=TypeError if not isinstance(dependencies, Mapping) else ValueError)
    known = {id(p): p.name for p in problems}
    edges: dict = {p.name: [] for p in problems}

    def name(p: Any, where: str) -> str:
        if id(p) not in known:
            what = getattr(p, "name", type(p).__name__)
            fail(API, f"dependencies[{where!r}] names a problem not in `problems`", repr(what),
                 "Add it to problems=[...] or remove the edge.")
        return known[id(p)]

    for key in ("u2l", "l2u"):
        for src, dsts in dependencies[key].items():
            if not isinstance(dsts, (list, tuple)):
                fail(API, f"dependencies[{key!r}] values must be lists of problems",
                     type(dsts).__name__, exc=TypeError)
            for dst in dsts:
                up, low = (src, dst) if key == "u2l" else (dst, src)
                u, lo = name(up, key), name(low, key)
                if lo not in edges[u]:
                    edges[u].append(lo)
    return {u: lows for u, lows in edges.items() if lows}


def method_for(lower: Any) -> Any:
    """How an upper differentiates through ``lower``: Betty reads it from the lower's
    ``Config.type`` (an ``IterativeProblem``: through its updates)."""
    if lower.iterative:
        return hg.unrolled()
    c, kind = lower.config, lower.config.type
    if kind == "darts":
        return hg.darts(eps=c.darts_alpha)
    if kind == "neumann":
        return hg.neumann(steps=c.neumann_iterations, alpha=c.neumann_alpha)
    if kind == "cg":
        return hg.cg(maxiter=c.cg_iterations)
    if kind == "sama":
        return hg.sama(eps=c.sama_adam_alpha)
    return hg.zero_order()  # "reinforce": Betty's stub; evolution strategies on the updates


def windowed(problem: Any) -> bool:
    """True when the uppers differentiate through this problem's updates (a window of its
    ``unroll_steps`` updates run together): an ``IterativeProblem``, or ``type="reinforce"``
    (the zero-order method perturbs the window's result)."""
    return problem.iterative or problem.config.type == "reinforce"


def optimizer_for(problem: Any, named: dict) -> optim.Optimizer:
    """The problem's ``torch.optim`` optimizer and scheduler as a functional optimizer, with
    Betty's clipping, gradient accumulation (the scheduler stepping every local step) and
    fp16 loss scaling around it."""
    c = problem.config
    gas = c.gradient_accumulation
    # Betty steps the scheduler every local step, the optimizer every `gas`: update k uses the
    # rate after k * gas + gas - 1 scheduler steps
    opt = optim.from_torch(problem._optimizer, named, problem.scheduler, schedule_stride=gas,
                           schedule_offset=gas - 1)
    if c.gradient_clipping > 0:
        opt = optim.chain(optim.clip_by_global_norm(c.gradient_clipping), opt)
    if gas > 1:
        opt = optim.accumulate(opt, gas)
    if c.precision == "fp16":
        opt = optim.loss_scaled(opt, init_scale=c.initial_dynamic_scale, factor=c.scale_factor)
    return opt


def check_orders(problems: dict, graph: dict) -> None:
    """``first_order=False`` on an upper asks for iterative differentiation: its lowers must
    be ``IterativeProblem`` (Betty then silently computed no hypergradient at all)."""
    for up, lows in graph.items():
        p = problems[up]
        implicit = [lo for lo in lows if not windowed(problems[lo])]
        if not p.config.first_order and implicit:
            fail(API, f"'{up}' has Config(first_order=False), which asks to differentiate "
                 f"through its lowers' updates, but {implicit} are ImplicitProblem", None,
                 "Make those lowers IterativeProblem, or drop first_order=False (an implicit "
                 "lower's method is its Config.type).")


def check_disjoint(problems: dict) -> None:
    """Each parameter belongs to one problem (a module shared by two would be two states)."""
    owner: dict = {}
    for n, p in problems.items():
        for k, t in p._module.named_parameters():
            other = owner.setdefault(id(t), (n, k))
            if other[0] != n:
                fail(API, f"problems '{other[0]}' and '{n}' share a parameter ({other[1]!r} / "
                     f"{k!r}); each problem optimizes its own", None, "Give each problem its "
                     "own module (copy it: copy.deepcopy(module)), and read the other's by name "
                     "(self.<name>.module).")
