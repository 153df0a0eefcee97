"""Closed-form bilevel problems and a hypergradient checker, for this project's tests and yours."""
from ._benchopt import BenchoptQuadratic, quadratic_benchopt
from ._check import HypergradCheck, check_hypergrad
from ._problems import Quadratic, Ridge, quadratic, ridge

__all__ = ["check_hypergrad", "HypergradCheck", "ridge", "Ridge", "quadratic", "Quadratic",
           "quadratic_benchopt", "BenchoptQuadratic"]
