"""Betty's problem classes: ``Problem``, ``ImplicitProblem``, ``IterativeProblem``."""
from .implicit_problem import ImplicitProblem
from .iterative_problem import IterativeProblem
from .problem import Problem

__all__ = ["Problem", "ImplicitProblem", "IterativeProblem"]
