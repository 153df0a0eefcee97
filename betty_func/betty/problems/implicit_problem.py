"""``ImplicitProblem``: a problem whose uppers differentiate through its best response
implicitly (the method named by its ``Config.type``: darts, neumann, cg)."""
from .problem import Problem

__all__ = ["ImplicitProblem"]


class ImplicitProblem(Problem):
    """A problem trained by its ``torch.optim`` optimizer; as a lower, its uppers'
    hypergradient comes from the implicit function theorem by ``config.type`` (see
    :class:`betty_func.betty.configs.Config`)."""

    iterative = False
    _front_end = True  # one of the front end's own classes (not a user subclass)
