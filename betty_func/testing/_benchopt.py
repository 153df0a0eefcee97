r"""benchopt's simulated bilevel quadratic (``benchmark_bilevel``), rebuilt here in torch.

Both levels are averages of per-sample quadratics (inner θ ∈ R^p, outer λ ∈ R^d):

.. math:: L(\theta, \lambda) = \frac1n\sum_i \tfrac12\theta^\top H_i\theta
          + \tfrac12\lambda^\top G_i\lambda + \lambda^\top C_i\theta + b_i^\top\theta
          + c_i^\top\lambda, \qquad F = \text{the same form with its own } m \text{ samples},

with rank-one :math:`H_i = a_i a_i^\top` (:math:`a_i = A z_i`, :math:`A = U\,\mathrm{diag}(e)^{1/2}
U^\top`, :math:`e` log-spaced over [``mu_inner``, ``L_inner``]), :math:`G_i` the same with the
spectrum :math:`\{0\} \cup` log-spaced [``mu_inner``, 1], :math:`C_i = (UDz_i)(Vz_i)^\top` with
singular values :math:`D` log-spaced over [``mu_inner``, ``L_cross``], Gaussian :math:`b_i,
c_i`; both levels are drawn alike and independently (benchopt's separate ``L_*`` constants at
their defaults: 1 for the θθ and λλ blocks, ``L_cross`` for both cross terms). Source:
repository ``benchopt/benchmark_bilevel``, ``benchmark_utils/oracles/quadratic.py``
(``gen_matrices``), used by its ``simulated`` and ``quadratic`` datasets
(``datasets/simulated.py``, ``datasets/quadratic.py``); sizes from
``config/quadratics_021424.yml`` (p = 100, d = 10, L_cross = 0.1, mu = 0.1, seed 2442); start
point zeros as in its ``objective.py``.

Differences, on purpose: the draws :math:`z_i` are whitened (:math:`\frac1n\sum_i z_iz_i^\top = I`
exactly), so the full-batch Hessians have exactly the spectra that benchmark's README states
(its raw draws give κ ≈ 14-16 and λmax ≈ 1.1-1.2 instead of 10 and 1 at these sizes: pass
``exact_spectrum=False`` for those); bases are random orthogonal (Q of a Gaussian's QR;
benchopt takes the singular basis of one Gaussian vector, and the cross term's from numpy's
unseeded global generator); as in ``datasets/quadratic.py`` a draw is repeated (at most 20
times) until the value function :math:`h(\lambda) = F(\theta^*(\lambda), \lambda)` is strongly
convex, here with its full Hessian :math:`G_F + C_FJ + J^\top C_F^\top + J^\top H_FJ`,
:math:`J = -H^{-1}C^\top` (benchopt's check halves the two cross terms). Exact quantities use
the full-batch matrices: :math:`\theta^* = -H^{-1}(b + C^\top\lambda)`, :math:`\nabla h =
\nabla_\lambda F - C H^{-1}\nabla_\theta F` (two solves, :math:`O(p^3)`). A loss evaluation
costs :math:`O(p^2 + pd)`; with ``idx`` (sample indices) it is that minibatch's average,
:math:`O(|idx|\,p)`.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .._errors import check_positive, check_positive_int, fail

F64 = torch.float64
API = "testing.quadratic_benchopt(dim_inner, dim_outer, n_samples_inner, n_samples_outer, ...)"


class QuadTerms(NamedTuple):
    r"""One level: per-sample factors (``P`` rows :math:`a_i`, ``S`` for :math:`G_i`, ``Q``/``R``
    for :math:`C_i = q_ir_i^\top`, linear ``b``, ``c``) and their full-batch means."""
    P: torch.Tensor
    S: torch.Tensor
    Q: torch.Tensor
    R: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    H: torch.Tensor   # mean of H_i (p, p)
    G: torch.Tensor   # mean of G_i (d, d)
    C: torch.Tensor   # mean of C_i (d, p)
    bm: torch.Tensor  # mean of b_i
    cm: torch.Tensor  # mean of c_i

    def loss(self, theta: torch.Tensor, lam: torch.Tensor,
             idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        if idx is None:  # full batch from the mean matrices
            return (0.5 * theta @ (self.H @ theta) + 0.5 * lam @ (self.G @ lam)
                    + lam @ (self.C @ theta) + self.bm @ theta + self.cm @ lam)
        p_th, s_lam = self.P[idx] @ theta, self.S[idx] @ lam
        cross = (self.Q[idx] @ lam) * (self.R[idx] @ theta)
        lin = self.b[idx] @ theta + self.c[idx] @ lam
        return (0.5 * p_th ** 2 + 0.5 * s_lam ** 2 + cross + lin).mean()


class BenchoptQuadratic(NamedTuple):
    r"""The problem (module docstring): ``inner_loss`` / ``outer_loss(θ, λ, idx=None)``, the start
    point (``theta0``, ``lam0``: zeros), ``kappa`` and ``L`` (condition number and largest
    eigenvalue of the inner Hessian), closed forms ``solution(λ)``, ``hypergrad(λ)``,
    ``value(λ)`` and ``value_hessian()`` (of :math:`h`)."""
    inner: QuadTerms
    outer: QuadTerms
    theta0: torch.Tensor
    lam0: torch.Tensor
    kappa: float
    L: float

    def inner_loss(self, theta: torch.Tensor, lam: torch.Tensor,
                   idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.inner.loss(theta, lam, idx)

    def outer_loss(self, theta: torch.Tensor, lam: torch.Tensor,
                   idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.outer.loss(theta, lam, idx)

    def solution(self, lam: torch.Tensor) -> torch.Tensor:
        """θ*(λ) = -H⁻¹(b + Cᵀλ): one solve."""
        i = self.inner
        return -torch.linalg.solve(i.H, i.bm + i.C.T @ lam)

    def value(self, lam: torch.Tensor) -> torch.Tensor:
        """h(λ) = F(θ*(λ), λ)."""
        return self.outer_loss(self.solution(lam), lam)

    def hypergrad(self, lam: torch.Tensor) -> torch.Tensor:
        """∇h(λ) = ∇λF - C H⁻¹ ∇θF at θ*(λ): the second solve."""
        i, o, theta = self.inner, self.outer, self.solution(lam)
        g_theta = o.H @ theta + o.C.T @ lam + o.bm
        g_lam = o.G @ lam + o.C @ theta + o.cm
        return g_lam - i.C @ torch.linalg.solve(i.H, g_theta)

    def value_hessian(self) -> torch.Tensor:
        """∇²h = G_F + C_F J + Jᵀ C_Fᵀ + Jᵀ H_F J with J = dθ*/dλ = -H⁻¹Cᵀ (h is quadratic)."""
        i, o = self.inner, self.outer
        J = -torch.linalg.solve(i.H, i.C.T)
        return o.G + o.C @ J + J.T @ o.C.T + J.T @ o.H @ J


def _orth(d: int, gen: torch.Generator) -> torch.Tensor:
    """Q of a Gaussian's QR (by geqrf: torch.linalg.qr is ~100x slower on a busy 2-core CPU)."""
    return torch.linalg.householder_product(*torch.geqrf(torch.randn(d, d, generator=gen,
                                                                     dtype=F64)))


def _draws(n: int, d: int, gen: torch.Generator, white: bool) -> torch.Tensor:
    """n standard Gaussian rows, whitened where asked: Z L⁻ᵀ with ZᵀZ/n = LLᵀ, so its ZᵀZ/n = I."""
    z = torch.randn(n, d, generator=gen, dtype=F64)
    if white:
        chol = torch.linalg.cholesky(z.T @ z / n)
        z = z @ torch.linalg.solve_triangular(chol, torch.eye(d, dtype=F64), upper=False).T
    return z


def _level(n: int, p: int, d: int, mu: float, L: float, L_cross: float, gen: torch.Generator,
           white: bool) -> QuadTerms:
    def factor(dim: int, eig: torch.Tensor) -> torch.Tensor:
        u = _orth(dim, gen)
        return _draws(n, dim, gen, white) @ (u * eig.sqrt()) @ u.T  # rows a_i = A z_i
    logspace = lambda lo, hi, k: torch.logspace(math.log10(lo), math.log10(hi), k, dtype=F64)  # noqa
    P = factor(p, logspace(mu, L, p))
    S = factor(d, torch.cat([torch.zeros(1, dtype=F64), logspace(mu, 1.0, d - 1)]))
    k = min(p, d)
    u, v = _orth(d, gen), _orth(p, gen)
    z = _draws(n, p, gen, white)
    Q = (z[:, :k] * logspace(mu, L_cross, k)) @ u[:, :k].T  # q_i = U D z_i
    R = z @ v.T                                              # r_i = V z_i
    b, c = torch.randn(n, p, generator=gen, dtype=F64), torch.randn(n, d, generator=gen, dtype=F64)
    return QuadTerms(P, S, Q, R, b, c, P.T @ P / n, S.T @ S / n, Q.T @ R / n, b.mean(0), c.mean(0))


def quadratic_benchopt(dim_inner: int = 100, dim_outer: int = 10, n_samples_inner: int = 1024,
                       n_samples_outer: int = 1024, mu_inner: float = 0.1, L_inner: float = 1.0,
                       L_cross: float = 0.1, seed: int = 2442, dtype: torch.dtype = F64,
                       exact_spectrum: bool = True) -> BenchoptQuadratic:
    r"""benchopt's simulated bilevel quadratic (:class:`BenchoptQuadratic`; module docstring):
    inner Hessian spectrum log-spaced over [``mu_inner``, ``L_inner``] (κ = ``L_inner /
    mu_inner``), cross terms of spectral norm ``L_cross``. Built in float64, then cast to
    ``dtype``. Cost: a few :math:`O(n p^2)` products and :math:`O(p^3)` decompositions.

    Example:
        >>> import torch
        >>> from betty_func import hypergrad as hg
        >>> from betty_func.testing._benchopt import quadratic_benchopt
        >>> p = quadratic_benchopt(dim_inner=20, dim_outer=4, n_samples_inner=64,
        ...                        n_samples_outer=64)
        >>> round(p.kappa, 6)
        10.0
        >>> lam = torch.ones(4, dtype=torch.float64)
        >>> g = hg.grad(p.outer_loss, p.inner_loss, hg.cg(maxiter=20))(p.solution(lam), lam)
        >>> bool(torch.allclose(g, p.hypergrad(lam), rtol=1e-9))
        True
    """
    for name, v in (("dim_inner", dim_inner), ("dim_outer", dim_outer),
                    ("n_samples_inner", n_samples_inner), ("n_samples_outer", n_samples_outer)):
        check_positive_int(API, name, v)
    for name, bound in (("mu_inner", mu_inner), ("L_inner", L_inner), ("L_cross", L_cross)):
        check_positive(API, name, bound)
    if mu_inner > L_inner:
        fail(API, "`mu_inner` must be <= `L_inner` (the inner Hessian's spectrum is "
             "[mu_inner, L_inner])", (mu_inner, L_inner), "Pass e.g. mu_inner=0.1, L_inner=1.0.")
    if exact_spectrum and min(n_samples_inner, n_samples_outer) < max(dim_inner, dim_outer):
        fail(API, "exact spectra need at least max(dim_inner, dim_outer) samples per level "
             "(averages of rank-one Hessians must have full rank)",
             (n_samples_inner, n_samples_outer, dim_inner, dim_outer),
             "Pass more samples, or exact_spectrum=False.")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        inner = _level(n_samples_inner, dim_inner, dim_outer, mu_inner, L_inner, L_cross, gen,
                       exact_spectrum)
        outer = _level(n_samples_outer, dim_inner, dim_outer, mu_inner, L_inner, L_cross, gen,
                       exact_spectrum)
        eig = torch.linalg.eigvalsh(inner.H)
        p = BenchoptQuadratic(inner, outer, torch.zeros(dim_inner, dtype=F64),
                              torch.zeros(dim_outer, dtype=F64), float(eig[-1] / eig[0]),
                              float(eig[-1]))
        if float(torch.linalg.eigvalsh(p.value_hessian())[0]) > 1e-12:
            break
    else:
        fail(API, "no draw in 20 gave a strongly convex value function", f"seed={seed}",
             "Try another seed.")
    cast = lambda t: t.to(dtype)  # noqa: E731
    return p._replace(inner=QuadTerms(*map(cast, p.inner)), outer=QuadTerms(*map(cast, p.outer)),
                      theta0=cast(p.theta0), lam0=cast(p.lam0))
