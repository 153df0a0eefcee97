r"""Zero-order (evolution-strategies) hypergradient: the lower's updates run forward at
perturbed outer variables, nothing differentiated through them."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .. import optim as _optim
from .. import tree
from .._errors import check_positive, check_positive_int, fail
from ..optim._base import check_optimizer
from ._inner import LossInner, Updates
from ._method import HypergradInfo, Loss, outer_grads
from ._unrolled import _rng_restore, _rng_snapshot, _run, _stepper

PyTree = Any


class ZeroOrder:
    r"""Gaussian smoothing with antithetic pairs (Salimans et al. 2017's evolution strategies;
    the REINFORCE estimator of a Gaussian search distribution): for the cotangent :math:`v` on
    the last iterate :math:`\theta_T(x)` of the lower's updates,

    .. math:: \bar x = \frac{1}{N}\sum_{i=1}^{N}
        \frac{v^\top\theta_T(x + \sigma\epsilon_i) - v^\top\theta_T(x - \sigma\epsilon_i)}
             {2\sigma}\,\epsilon_i, \qquad \epsilon_i \sim \mathcal N(0, I),

    an unbiased estimate of :math:`\nabla_x\,\mathbb E_\epsilon[v^\top\theta_T(x+\sigma\epsilon)]`
    (the smoothed response; equal to the unrolled hypergradient when :math:`\theta_T` is affine in
    :math:`x`), its error falling like :math:`1/\sqrt N`. Build with :func:`zero_order`. The
    updates need not be differentiable (a black-box or non-differentiable inner routine). Cost:
    :math:`2 N T` inner steps forward, no backward pass; memory of one run.
    """

    unrolls = True  # mlo runs the lower's updates as a window, as for hypergrad.unrolled

    def __init__(self, samples: int, sigma: float, steps: Optional[int],
                 optimizer: Optional[_optim.Optimizer], generator: Optional[torch.Generator]):
        self.samples, self.sigma, self.steps = samples, sigma, steps
        self.optimizer, self.generator = optimizer, generator

    def __repr__(self) -> str:
        return f"hypergrad.zero_order(samples={self.samples}, sigma={self.sigma})"

    def _noise(self, x: PyTree) -> list:
        if self.generator is not None and torch.compiler.is_compiling():
            fail(repr(self), "a torch.Generator cannot be drawn from in compiled code",
                 "generator=...", "Leave generator=None (torch's global RNG compiles; seed it "
                 "with torch.manual_seed).")
        g = self.generator
        return [tree.map(lambda t: torch.randn(t.shape, generator=g, dtype=t.dtype,
                                               device=t.device), x)
                for _ in range(self.samples)]

    def pullback(self, inner: Any, theta: PyTree, x: PyTree, v: PyTree,
                 init: Optional[PyTree] = None, with_info: bool = False
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        """The method protocol (``_inner.py``): ``v`` on θ_T pulled back to ``x``."""
        u, s = inner.updates, self.sigma
        noise = self._noise(x)
        now = _rng_snapshot(u.theta0)
        total = tree.zeros_like(x)
        for eps in noise:
            runs = []
            for sign in (1.0, -1.0):
                _rng_restore(u.rng)  # every run sees the window's random draws (dropout)
                runs.append(_run(u, tree.axpy(sign * s, eps, x), u.theta0, u.state0, 0,
                                 u.steps)[0])
            slope = tree.vdot(v, tree.sub(runs[0], runs[1])) / (2 * s)
            total = tree.axpy(slope, eps, total)
        _rng_restore(now)
        info = HypergradInfo(None, torch.tensor(2 * self.samples * u.steps), None, None) \
            if with_info else None
        return tree.scale(1.0 / self.samples, total), info

    def response_jvp(self, inner: Any, theta: PyTree, x: PyTree, dx: PyTree) -> PyTree:
        """The move of the last iterate when ``x`` moves by ``dx`` (the updates re-run)."""
        u = inner.updates
        return tree.sub(_run(u, tree.add(x, dx), u.theta0, u.state0, 0, u.steps)[0], theta)

    def __call__(self, outer_loss: Loss, inner_loss: Loss, theta0: PyTree, lam: PyTree,
                 args: tuple, init: Optional[PyTree], with_info: bool
                 ) -> tuple[PyTree, Optional[HypergradInfo]]:
        api = repr(self)
        if self.steps is None or self.optimizer is None:
            fail(api, "`steps` and `optimizer` are needed outside mlo.solve (the updates whose "
                 "result is perturbed)", None,
                 "Pass e.g. hypergrad.zero_order(16, 0.01, steps=10, optimizer=optim.sgd(0.1)).")
        u = Updates(theta0, self.optimizer.init(theta0), self.steps,
                    _stepper(api, self.optimizer, inner_loss, args), rng=_rng_snapshot(theta0))
        theta_t = _run(u, lam, u.theta0, u.state0, 0, u.steps)[0]
        v, direct = outer_grads(api, outer_loss, theta_t, lam, args)
        back, info = self.pullback(LossInner(api, inner_loss, args, u), theta_t, lam, v,
                                   with_info=with_info)
        return tree.add(direct, back), info


def zero_order(samples: int = 16, sigma: float = 0.01, steps: Optional[int] = None,
               optimizer: Optional[_optim.Optimizer] = None,
               generator: Optional[torch.Generator] = None) -> ZeroOrder:
    r"""The zero-order hypergradient (:class:`ZeroOrder`): ``samples`` antithetic pairs of
    Gaussian perturbations of radius ``sigma`` of the outer variables, the lower's updates run
    forward at each. In ``hypergrad.grad`` ``inner_params`` is θ0 and the updates are ``steps``
    of ``optimizer`` (as :func:`unrolled`); in ``mlo.solve`` the lower's own ``unroll_steps``
    updates. The noise comes from ``generator`` (eager only) or torch's global RNG (seed it with
    ``torch.manual_seed``; compiles; under ``torch.vmap`` pass ``randomness="different"``).

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg, optim
        >>> L = lambda th, lam: ((th - lam) ** 2).sum() / 2        # θ1 = θ0 + 0.5 (λ - θ0)
        >>> F = lambda th, lam: (th ** 2).sum() / 2
        >>> g = hg.grad(F, L, hg.zero_order(samples=1024, sigma=0.1, steps=1,
        ...                                 optimizer=optim.sgd(0.5),
        ...                                 generator=torch.Generator().manual_seed(0)))
        >>> lam = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> est = g(torch.zeros(2, dtype=torch.float64), lam)
        >>> bool((est - 0.25 * lam).abs().max() < 0.1)           # exact: dF/dλ = 0.25 λ
        True
    """
    api = "hypergrad.zero_order(samples, sigma, steps, optimizer, generator)"
    check_positive_int(api, "samples", samples)
    check_positive(api, "sigma", sigma)
    if steps is not None:
        check_positive_int(api, "steps", steps)
    if optimizer is not None:
        check_optimizer(api, "optimizer", optimizer)
    if generator is not None and not isinstance(generator, torch.Generator):
        fail(api, "`generator` must be a torch.Generator or None", type(generator).__name__,
             exc=TypeError)
    return ZeroOrder(samples, sigma, steps, optimizer, generator)
