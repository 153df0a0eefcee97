r"""Unrolled (iterative) differentiation: reverse mode through ``steps`` inner optimizer updates."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch.func import grad, vjp

from .. import optim as _optim
from .. import tree
from .._errors import check_nonneg_int, fail
from ._checks import depends, ensure_coupled, value_depending
from ._method import HypergradInfo, Loss, outer_grads

PyTree = Any


class Unrolled:
    """Reverse mode through ``steps`` optimizer updates; build with :func:`unrolled`."""

    def __init__(self, steps: int, optimizer: _optim.Optimizer, checkpoint_every: int,
                 call: Callable):
        self.steps, self.optimizer, self.checkpoint_every, self._call = (
            steps, optimizer, checkpoint_every, call)

    def __repr__(self) -> str:
        return f"hypergrad.unrolled(steps={self.steps}, checkpoint_every={self.checkpoint_every})"

    def __call__(self, *a: Any) -> tuple[PyTree, Optional[HypergradInfo]]:
        return self._call(*a)


def unrolled(steps: int, optimizer: _optim.Optimizer, checkpoint_every: int = 0) -> Unrolled:
    r"""Hypergradient of :math:`F(\theta_T(\lambda), \lambda)` where ``inner_params`` is
    :math:`\theta_0` and :math:`\theta_{t+1}` is an ``optimizer`` step on
    :math:`\nabla_\theta L(\theta_t, \lambda)`, by reverse mode through all ``steps`` updates
    (the optimizer state starts fresh from ``optimizer.init(θ0)``).

    Exact for the truncated problem; tends to the implicit hypergradient as ``steps`` grows when
    the inner iteration converges. Cost: ``steps`` gradient passes forward and ≈ ``steps`` HVPs
    backward; memory :math:`O(T)` graphs. ``checkpoint_every = k > 0`` keeps only every k-th
    iterate and recomputes each segment during the backward pass: memory :math:`O(T/k + k)`
    (:math:`k \approx \sqrt{T}` is best), time ≈ one extra forward. Recomputed segments replay
    the RNG state of the first pass (eager mode), so dropout masks match.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg, optim
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2
        >>> F = lambda th, lam: (th ** 2).sum() / 2
        >>> g = hg.grad(F, L, hg.unrolled(steps=1, optimizer=optim.sgd(1.0)))
        >>> g(torch.zeros(2), torch.tensor([1.0, 2.0])).tolist()      # θ1 = λ
        [1.0, 2.0]
    """
    api = f"hypergrad.unrolled(steps={steps}, optimizer, checkpoint_every={checkpoint_every})"
    check_nonneg_int(api, "steps", steps)
    check_nonneg_int(api, "checkpoint_every", checkpoint_every)
    if steps == 0:
        fail(api, "`steps` must be >= 1 to differentiate through the inner problem", steps)
    if not isinstance(optimizer, _optim.Optimizer):
        fail(api, "`optimizer` must be a betty_func.optim optimizer", type(optimizer).__name__,
             "Pass e.g. optim.sgd(0.1); torch.optim optimizers mutate in place and cannot be "
             "differentiated through.")
    every = checkpoint_every or steps
    segments = [min(every, steps - s) for s in range(0, steps, every)]

    def method(outer_loss: Loss, inner_loss: Loss, theta0: PyTree, lam: PyTree, args: tuple,
               init: Optional[PyTree], with_info: bool) -> tuple[PyTree, Optional[HypergradInfo]]:
        run = _checkpointed if checkpoint_every else _plain
        hyper, theta_t = run(api, outer_loss, inner_loss, optimizer, theta0, lam, args, segments)
        info = None
        if with_info:
            g_t = grad(depends(api, "inner_loss", inner_loss, "inner_params"))(theta_t, lam, *args)
            info = HypergradInfo(None, torch.tensor(steps), tree.norm(g_t), None)
        return hyper, info

    return Unrolled(steps, optimizer, checkpoint_every, method)


def _stepper(api: str, opt: _optim.Optimizer, inner_loss: Loss, lam: PyTree,
             args: tuple) -> Callable:
    loss = depends(api, "inner_loss", inner_loss, "inner_params")

    def step(theta: PyTree, state: PyTree, check: bool = False) -> tuple[PyTree, PyTree]:
        g = grad(loss)(theta, lam, *args)
        if check:  # at θ0 (independent of λ) the gradient must depend on λ, or dF/dλ is silently 0
            ensure_coupled(api, g, "inner_params", "outer_params", "the unrolled hypergradient")
        return _optim.step(opt, theta, g, state)

    return step


def _plain(api: str, F: Loss, L: Loss, opt: _optim.Optimizer, theta0: PyTree, lam: PyTree,
           args: tuple, segments: list[int]) -> tuple[PyTree, PyTree]:
    def objective(l: PyTree) -> tuple[torch.Tensor, PyTree]:
        step = _stepper(api, opt, L, l, args)
        theta, state = step(theta0, opt.init(theta0), check=True)
        for _ in range(sum(segments) - 1):
            theta, state = step(theta, state)
        return value_depending(api, "outer_loss", F, theta, l, *args), theta

    return grad(objective, has_aux=True)(lam)


def _split_float(state: PyTree) -> tuple[list, Callable[[list], PyTree]]:
    """The float leaves of ``state`` as a list, and the function that puts new ones back."""
    flat, treedef = tree.leaves(state), tree.structure(state)
    mask = [tree.is_float(x) for x in flat]

    def rebuild(floats: list) -> PyTree:
        it = iter(floats)
        return tree.unflatten(treedef, [next(it) if m else x for x, m in zip(flat, mask)])

    return [x for x, m in zip(flat, mask) if m], rebuild


def _rng_snapshot(theta: PyTree) -> Optional[tuple]:
    if torch.compiler.is_compiling():
        return None
    cuda = [x.device for x in tree.leaves(theta) if x.device.type == "cuda"][:1]
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda], cuda


def _rng_restore(snapshot: Optional[tuple]) -> None:
    if snapshot is not None:
        cpu, cuda_states, devices = snapshot
        torch.set_rng_state(cpu)
        for s, d in zip(cuda_states, devices):
            torch.cuda.set_rng_state(s, d)


def _checkpointed(api: str, F: Loss, L: Loss, opt: _optim.Optimizer, theta0: PyTree, lam: PyTree,
                  args: tuple, segments: list[int]) -> tuple[PyTree, PyTree]:
    """Reverse mode by hand over segments: keep segment starts, recompute each under ``vjp``.

    The optimizer state is split into its float leaves (differentiated) and the rest (step
    counts, replayed as constants). The first segment is pulled back through λ alone: θ0 and the
    initial state do not depend on λ, and only there does the λ-dependence check see λ by itself.
    """
    def run(theta: PyTree, floats: list, rebuild: Callable, l: PyTree, n: int,
            check: bool) -> tuple:
        step, state = _stepper(api, opt, L, l, args), rebuild(floats)
        for i in range(n):
            theta, state = step(theta, state, check=check and i == 0)
        return (theta, *_split_float(state))

    theta, (floats, rebuild), starts = theta0, _split_float(opt.init(theta0)), []
    for n in segments:
        starts.append((theta, floats, rebuild, _rng_snapshot(theta)))
        theta, floats, rebuild = run(theta, floats, rebuild, lam, n, check=False)
    final_rng = _rng_snapshot(theta)
    cot_theta, total = outer_grads(api, F, theta, lam, args)
    cot_floats = tree.zeros_like(floats)
    for k in reversed(range(len(segments))):
        th, fl, rb, rng = starts[k]
        n = segments[k]
        _rng_restore(rng)
        if k == 0:
            _, pullback = vjp(lambda l: run(th, fl, rb, l, n, check=True)[:2], lam)
            (cot_lam,) = pullback((cot_theta, cot_floats))
        else:
            _, pullback = vjp(lambda t, f, l: run(t, f, rb, l, n, check=False)[:2], th, fl, lam)
            cot_theta, cot_floats, cot_lam = pullback((cot_theta, cot_floats))
        total = tree.add(total, cot_lam)
    _rng_restore(final_rng)
    return total, theta
