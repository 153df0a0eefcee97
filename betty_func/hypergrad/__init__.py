"""Hypergradients as small composable transforms built from ``torch.func``.

``hypergrad.grad(outer_loss, inner_loss, method)(inner_params, outer_params, *args)`` with a
method from: :func:`cg`, :func:`neumann`, :func:`darts`, :func:`exact` (aliases of
:func:`implicit`), :func:`unrolled`, :func:`first_order` (FOMAML), :func:`sama` (the lower's
optimizer step), :func:`zero_order` (evolution strategies, no derivative of the updates) or
:func:`penalty` (fully first order: gradients only). The primitives :func:`implicit`,
:func:`exact_mixed`, :func:`finite_difference` and the HVP builders are public for new
compositions.
"""
from ._aliases import cg, darts, exact, neumann
from ._exact_mixed import exact_mixed
from ._finite_difference import finite_difference
from ._first_order import FirstOrder, first_order
from ._grad import grad
from ._hvp import forward_over_reverse, reverse_over_reverse
from ._implicit import Implicit, implicit
from ._inner import Keyed, LossGrad, LossInner, Updates
from ._method import HypergradInfo, Method
from ._penalty import Penalty, PenaltyState, penalty
from ._sama import Sama, sama
from ._unrolled import Unrolled, unrolled
from ._zero_order import ZeroOrder, zero_order

__all__ = ["grad", "implicit", "Implicit", "LossGrad", "unrolled", "cg", "neumann", "darts",
           "exact", "exact_mixed", "finite_difference", "reverse_over_reverse",
           "forward_over_reverse", "HypergradInfo", "Method", "Unrolled", "LossInner", "Updates",
           "Keyed", "first_order", "FirstOrder", "sama", "Sama", "zero_order", "ZeroOrder",
           "penalty", "Penalty", "PenaltyState"]
