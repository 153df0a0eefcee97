"""``IterativeProblem``: a problem whose uppers differentiate through its updates (reverse mode
through the last ``unroll_steps`` optimizer steps: ``hypergrad.unrolled``)."""
from .problem import Problem

__all__ = ["IterativeProblem"]


class IterativeProblem(Problem):
    """As a lower, its ``unroll_steps`` updates run as one differentiable window and its uppers
    differentiate through them exactly (MAML). ``param_callback`` and ``gradient_accumulation``
    are refused on it (an in-place edit would cut the differentiated window)."""

    iterative = True
    _front_end = True
