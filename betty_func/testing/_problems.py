"""Bilevel problems whose solution and hypergradient are known in closed form (float64)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import check_positive, fail

F64 = torch.float64


def _spd(d: int, kappa: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random orthogonal basis and eigenvalues spread geometrically over [1, kappa]."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    return q, torch.logspace(0, torch.log10(torch.tensor(kappa, dtype=F64)).item(), d, dtype=F64)


@dataclass(frozen=True)
class Ridge:
    r"""Ridge regression with one decay per feature:

    .. math:: L(\theta, \lambda) = \tfrac12\|X\theta - y\|^2 + \tfrac12 \sum_i \lambda_i\theta_i^2,
              \quad F(\theta, \lambda) = \tfrac12\|X_v\theta - y_v\|^2

    :math:`\theta^* = A^{-1}X^\top y` with :math:`A = X^\top X + \mathrm{diag}(\lambda)`, and
    :math:`dF/d\lambda_i = -\theta^*_i\,[A^{-1}\nabla_\theta F]_i` (no direct term).
    """
    X: torch.Tensor
    y: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    lam: torch.Tensor  # a default outer point

    def inner_loss(self, theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.X @ theta - self.y) ** 2).sum() + 0.5 * (lam * theta ** 2).sum()

    def outer_loss(self, theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.X_val @ theta - self.y_val) ** 2).sum()

    def hessian(self, lam: torch.Tensor) -> torch.Tensor:
        return self.X.T @ self.X + torch.diag(lam)

    def solution(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.hessian(lam), self.X.T @ self.y)

    def outer_grad_theta(self, theta: torch.Tensor) -> torch.Tensor:
        return self.X_val.T @ (self.X_val @ theta - self.y_val)

    def hypergrad(self, lam: torch.Tensor) -> torch.Tensor:
        theta = self.solution(lam)
        return -theta * torch.linalg.solve(self.hessian(lam), self.outer_grad_theta(theta))

    def kappa(self, lam: torch.Tensor) -> float:
        eig = torch.linalg.eigvalsh(self.hessian(lam))
        return float(eig[-1] / eig[0])


def ridge(d: int = 20, kappa: float = 30.0, n_train: int = 60, n_val: int = 40,
          seed: int = 0) -> Ridge:
    """A :class:`Ridge` problem whose inner Hessian at ``problem.lam`` has condition number
    ≈ ``kappa`` (``X^T X`` has eigenvalues spread over [1, kappa]; λ in [0.1, 0.3]).

    Example:
        >>> from betty_func import testing
        >>> p = testing.ridge(d=10, kappa=30.0)
        >>> 20 < p.kappa(p.lam) < 35
        True
    """
    check_positive("testing.ridge(d, kappa, ...)", "kappa", kappa)
    if n_train < d:
        fail("testing.ridge(d, kappa, n_train, ...)", "`n_train` must be >= `d`", (n_train, d))
    gen = torch.Generator().manual_seed(seed)
    v, eig = _spd(d, kappa, gen)
    u, _ = torch.linalg.qr(torch.randn(n_train, d, generator=gen, dtype=F64))
    X = u @ torch.diag(eig.sqrt()) @ v.T
    w = torch.randn(d, generator=gen, dtype=F64)
    X_val = torch.randn(n_val, d, generator=gen, dtype=F64) * (kappa / n_val) ** 0.5
    noise = lambda n: 0.3 * torch.randn(n, generator=gen, dtype=F64)  # noqa: E731
    lam = 0.1 + 0.2 * torch.rand(d, generator=gen, dtype=F64)
    return Ridge(X, X @ w + noise(n_train), X_val, X_val @ w + noise(n_val), lam)


@dataclass(frozen=True)
class Quadratic:
    r"""A quadratic bilevel family with a direct term:

    .. math:: L(\theta, \lambda) = \tfrac12\theta^\top H\theta - \theta^\top B\lambda,\quad
              F(\theta, \lambda) = \tfrac12\|\theta - c\|^2 + \tfrac{\mu}2\|\lambda\|^2

    :math:`\theta^* = H^{-1}B\lambda`,
    :math:`dF/d\lambda = B^\top H^{-1}(\theta^* - c) + \mu\lambda`.
    """
    H: torch.Tensor
    B: torch.Tensor
    c: torch.Tensor
    mu: float
    lam: torch.Tensor

    def inner_loss(self, theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * theta @ (self.H @ theta) - theta @ (self.B @ lam)

    def outer_loss(self, theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((theta - self.c) ** 2).sum() + 0.5 * self.mu * (lam ** 2).sum()

    def solution(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.H, self.B @ lam)

    def hypergrad(self, lam: torch.Tensor) -> torch.Tensor:
        return self.B.T @ torch.linalg.solve(self.H, self.solution(lam) - self.c) + self.mu * lam


def quadratic(d_inner: int = 10, d_outer: int = 4, kappa: float = 30.0, mu: float = 0.1,
              seed: int = 0) -> Quadratic:
    """A :class:`Quadratic` problem whose inner Hessian has eigenvalues spread over [1, kappa]."""
    check_positive("testing.quadratic(d_inner, d_outer, kappa, ...)", "kappa", kappa)
    gen = torch.Generator().manual_seed(seed)
    q, eig = _spd(d_inner, kappa, gen)
    B = torch.randn(d_inner, d_outer, generator=gen, dtype=F64)
    return Quadratic(q @ torch.diag(eig) @ q.T, B, torch.randn(d_inner, generator=gen, dtype=F64),
                     mu, torch.randn(d_outer, generator=gen, dtype=F64))
