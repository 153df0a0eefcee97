"""``check_hypergrad``: a gradcheck for hypergradients, usable in anyone's tests."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch

from .. import tree
from .._errors import fail
from ..hypergrad import Method, grad

PyTree = Any


class HypergradCheck(NamedTuple):
    """What :func:`check_hypergrad` returns (with ``raise_exception=False`` on a failure)."""
    ok: bool  #: every direction within the tolerance
    max_rel_error: float  #: the largest relative error over the directions
    analytic: torch.Tensor  #: <g, u> per direction
    numeric: torch.Tensor   #: central difference of λ -> F(θ*(λ), λ) per direction


def _directions(lam: PyTree, max_coords: int, n_random: int, seed: int) -> list[PyTree]:
    flat, unravel = tree.ravel(lam)
    n = flat.numel()
    if n <= max_coords:
        basis = torch.eye(n, dtype=flat.dtype, device=flat.device)
    else:
        gen = torch.Generator().manual_seed(seed)
        basis = torch.randn(n_random, n, generator=gen, dtype=flat.dtype).to(flat.device)
        basis = basis / basis.norm(dim=1, keepdim=True)
    return [unravel(u) for u in basis]


def check_hypergrad(method: Method, outer_loss: Callable, inner_loss: Callable,
                    inner_solution: Callable, outer_params: PyTree, *args: Any,
                    inner_params: Optional[PyTree] = None, eps: Optional[float] = None,
                    rtol: Optional[float] = None, max_coords: int = 32, n_random: int = 8,
                    seed: int = 0, raise_exception: bool = True) -> HypergradCheck:
    r"""Compare ``method``'s hypergradient with central differences of the true response.

    With :math:`\Phi(\lambda) = F(\theta^*(\lambda), \lambda)` and ``θ* = inner_solution(λ, *args)``
    (an exact or tightly converged inner solver), checks along each direction ``u`` (coordinates if
    λ has ≤ ``max_coords`` entries, else ``n_random`` seeded random unit vectors) that
    :math:`|\langle g, u\rangle - (\Phi(\lambda + hu) - \Phi(\lambda - hu))/2h|
    \le \text{rtol}\cdot\max(|\cdot|, \|g\|/\sqrt{n})`. Defaults: ``h = 1e-6``, ``rtol = 1e-5`` in
    float64; ``1e-2`` and ``2e-2`` otherwise. ``inner_params`` given to the method defaults to
    ``θ*(λ)`` (pass θ0 for ``unrolled``). Cost: 2 inner solves per direction.

    Example:
        >>> from betty_func import hypergrad as hg, testing
        >>> p = testing.ridge(d=5)
        >>> testing.check_hypergrad(hg.cg(maxiter=5), p.outer_loss, p.inner_loss, p.solution,
        ...                         p.lam).ok
        True
    """
    api = "testing.check_hypergrad(method, outer_loss, inner_loss, inner_solution, outer_params)"
    tree.check_float(api, outer_params, "outer_params")
    f64 = all(x.dtype == torch.float64 for x in tree.leaves(outer_params))
    eps = eps if eps is not None else (1e-6 if f64 else 1e-2)
    rtol = rtol if rtol is not None else (1e-5 if f64 else 2e-2)
    theta = inner_params if inner_params is not None else inner_solution(outer_params, *args)
    g = grad(outer_loss, inner_loss, method)(theta, outer_params, *args)
    phi = lambda lv: outer_loss(inner_solution(lv, *args), lv, *args)  # noqa: E731
    dirs = _directions(outer_params, max_coords, n_random, seed)
    with torch.no_grad():
        numeric = torch.stack([(phi(tree.axpy(eps, u, outer_params)) -
                                phi(tree.axpy(-eps, u, outer_params))) / (2 * eps) for u in dirs])
    analytic = torch.stack([tree.vdot(g, u) for u in dirs]).to(numeric.dtype)
    floor = tree.norm(g).to(numeric.dtype) / len(dirs) ** 0.5
    err = float(((analytic - numeric).abs() / torch.maximum(numeric.abs(), floor)).max())
    ok = err <= rtol
    if raise_exception and not ok:
        worst = int(((analytic - numeric).abs()).argmax())
        fail(api, f"hypergradient disagrees with finite differences (max relative error {err:.3g}"
             f" > rtol {rtol:g}; direction {worst}: method {float(analytic[worst]):.6g} vs "
             f"finite difference {float(numeric[worst]):.6g})", None,
             "Converge the inner problem / linear solve further, or check the losses.",
             exc=AssertionError)
    return HypergradCheck(ok, err, analytic, numeric)
