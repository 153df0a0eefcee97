r"""Unrolled (iterative) differentiation: reverse mode through ``steps`` inner optimizer updates."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch.func import grad

from .. import _autodiff
from .. import optim as _optim
from .. import tree
from .._errors import check_nonneg_int, fail
from ..optim._base import check_optimizer
from ._checks import depends, ensure_coupled, tracks, value_depending
from ._inner import LossInner, Updates
from ._method import HypergradInfo, Loss, outer_grads

PyTree = Any


class Unrolled:
    r"""Reverse mode through ``steps`` optimizer updates; build with :func:`unrolled`.

    ``pullback(inner, θ_T, x, v)`` (the method protocol) differentiates through
    ``inner.updates``: in ``hypergrad.grad`` the method's own ``steps`` updates with its
    ``optimizer``; in ``mlo.solve`` the lower problem's ``unroll_steps`` updates with its own
    optimizer (``steps`` and ``optimizer`` may then be left out).
    """

    unrolls = True  # differentiates through the lower's updates: mlo runs them as a window

    def __init__(self, steps: Optional[int], optimizer: Optional[_optim.Optimizer],
                 checkpoint_every: int):
        self.steps, self.optimizer, self.checkpoint_every = steps, optimizer, checkpoint_every

    def __repr__(self) -> str:
        return f"hypergrad.unrolled(steps={self.steps}, checkpoint_every={self.checkpoint_every})"

    def pullback(self, inner: Any, theta: PyTree, x: PyTree, v: PyTree,
                 init: Optional[PyTree] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        """``v`` on the last iterate pulled back to ``x`` through ``inner.updates``."""
        u = inner.updates
        if u.cached is not None and not self.checkpoint_every:
            return u.cached(v), None
        segments = _segments(u.steps, self.checkpoint_every)
        now = _rng_snapshot(u.theta0)
        _rng_restore(u.rng)  # the random draws of the updates as they were taken
        starts, (_, state_t) = _forward(u, x, segments)
        cot_floats = tree.zeros_like(_split_float(state_t)[0])
        cot_x, _ = _backward(u, x, v, cot_floats, starts, segments)
        _rng_restore(now)
        return cot_x, None

    def response_jvp(self, inner: Any, theta: PyTree, x: PyTree, dx: PyTree) -> PyTree:
        """The move of the last iterate when ``x`` moves by ``dx`` (the updates re-run)."""
        u = inner.updates
        moved = _run(u, tree.add(x, dx), u.theta0, u.state0, 0, u.steps)[0]
        return tree.sub(moved, theta)

    def __call__(self, outer_loss: Loss, inner_loss: Loss, theta0: PyTree, lam: PyTree,
                 args: tuple, init: Optional[PyTree], with_info: bool
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        api = f"hypergrad.unrolled(steps={self.steps}, optimizer, checkpoint_every=" \
              f"{self.checkpoint_every})"
        if self.steps is None or self.optimizer is None:
            fail(api, "`steps` and `optimizer` are needed outside mlo.solve", None,
                 "Pass e.g. hypergrad.unrolled(10, optim.sgd(0.1)).")
        u = Updates(theta0, self.optimizer.init(theta0), self.steps,
                    _stepper(api, self.optimizer, inner_loss, args))
        if self.checkpoint_every:
            segments = _segments(self.steps, self.checkpoint_every)
            starts, (theta_t, state_t) = _forward(u, lam, segments)
            v, direct = outer_grads(api, outer_loss, theta_t, lam, args)
            cot_floats = tree.zeros_like(_split_float(state_t)[0])
            back, final_rng = _backward(u, lam, v, cot_floats, starts, segments)
            _rng_restore(final_rng)
            hyper = tree.add(direct, back)
        else:
            hyper, theta_t = _plain(api, outer_loss, u, lam, args)
        info = None
        if with_info:
            g_t = LossInner(api, inner_loss, args).grad(theta_t, lam)
            info = HypergradInfo(None, torch.tensor(self.steps), tree.norm(g_t), None)
        return hyper, info


def unrolled(steps: Optional[int] = None, optimizer: Optional[_optim.Optimizer] = None,
             checkpoint_every: int = 0) -> Unrolled:
    r"""Hypergradient of :math:`F(\theta_T(\lambda), \lambda)` where ``inner_params`` is
    :math:`\theta_0` and :math:`\theta_{t+1}` is an ``optimizer`` step on
    :math:`\nabla_\theta L(\theta_t, \lambda)`, by reverse mode through all ``steps`` updates
    (the optimizer state starts fresh from ``optimizer.init(θ0)``).

    Exact for the truncated problem; tends to the implicit hypergradient as ``steps`` grows when
    the inner iteration converges. Cost: ``steps`` gradient passes forward and ≈ ``steps`` HVPs
    backward; memory :math:`O(T)` graphs. ``checkpoint_every = k > 0`` keeps only every k-th
    iterate and recomputes each segment during the backward pass: memory :math:`O(T/k + k)`
    (:math:`k \approx \sqrt{T}` is best), time ≈ one extra forward. Recomputed segments replay
    the RNG state of the first pass (eager mode), so dropout masks match. In ``mlo.solve``,
    ``steps`` and ``optimizer`` come from the problem (its ``unroll_steps`` and optimizer).

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
    if steps is not None:
        check_nonneg_int(api, "steps", steps)
        if steps == 0:
            fail(api, "`steps` must be >= 1 to differentiate through the inner problem", steps)
    check_nonneg_int(api, "checkpoint_every", checkpoint_every)
    if optimizer is not None:
        check_optimizer(api, "optimizer", optimizer)
    return Unrolled(steps, optimizer, checkpoint_every)


def _segments(steps: int, every: int) -> list[int]:
    every = every or steps
    return [min(every, steps - s) for s in range(0, steps, every)]


def _stepper(api: str, opt: _optim.Optimizer, inner_loss: Loss, args: tuple) -> Callable:
    loss = depends(api, "inner_loss", inner_loss, "inner_params")

    def step(theta: PyTree, state: PyTree, lam: PyTree, i: int) -> tuple[PyTree, PyTree]:
        g = grad(loss)(theta, lam, *args)
        if i == 0 and tracks(lam):  # under the transform over λ, at θ0 (independent of λ), the
            # gradient must depend on λ, or dF/dλ is silently 0
            ensure_coupled(api, g, "inner_params", "outer_params", "the unrolled hypergradient")
        return _optim.step(opt, theta, g, state)

    return step


def _run(u: Updates, x: PyTree, theta: PyTree, state: PyTree, start: int,
         n: int) -> tuple[PyTree, PyTree]:
    for i in range(start, start + n):
        theta, state = u.step(theta, state, x, i)
    return theta, state


def _plain(api: str, F: Loss, u: Updates, lam: PyTree, args: tuple) -> tuple[PyTree, PyTree]:
    def objective(lv: PyTree) -> tuple[torch.Tensor, PyTree]:
        theta = _run(u, lv, u.theta0, u.state0, 0, u.steps)[0]
        return value_depending(api, "outer_loss", F, theta, lv, *args), theta

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


def _forward(u: Updates, x: PyTree, segments: list[int]) -> tuple[list, tuple]:
    """Run the updates, keeping each segment's start (iterate, float state, RNG)."""
    theta, state, starts, i = u.theta0, u.state0, [], 0
    for n in segments:
        floats, rebuild = _split_float(state)
        starts.append((theta, floats, rebuild, _rng_snapshot(theta)))
        theta, state = _run(u, x, theta, state, i, n)
        i += n
    return starts, (theta, state)


def _backward(u: Updates, x: PyTree, cot_theta: PyTree, cot_floats: list, starts: list,
              segments: list[int]) -> tuple[PyTree, Optional[tuple]]:
    """Reverse mode by hand over segments, each recomputed under ``vjp`` from its start.

    The optimizer state is split into its float leaves (differentiated) and the rest (step
    counts, replayed as constants). The first segment is pulled back through ``x`` alone: θ0 and
    the initial state do not depend on it. Returns the cotangent on ``x`` and the RNG state
    after the forward run (to restore once done)."""
    offsets = [sum(segments[:k]) for k in range(len(segments))]

    def seg(k: int, theta: PyTree, floats: list, rebuild: Callable, xx: PyTree) -> tuple:
        th, st = _run(u, xx, theta, rebuild(floats), offsets[k], segments[k])
        return th, _split_float(st)[0]

    final_rng = _rng_snapshot(u.theta0)
    total = None
    for k in reversed(range(len(segments))):
        th, fl, rb, rng = starts[k]
        _rng_restore(rng)
        if k == 0:
            _, pullback = _autodiff.vjp(lambda xx: seg(0, th, fl, rb, xx), x)
            (cot_x,) = pullback((cot_theta, cot_floats))
        else:
            _, pullback = _autodiff.vjp(lambda t, f, xx: seg(k, t, f, rb, xx), th, fl, x)
            cot_theta, cot_floats, cot_x = pullback((cot_theta, cot_floats))
        total = cot_x if total is None else tree.add(total, cot_x)
    return total, final_rng
