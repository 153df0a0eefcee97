"""betty_func: multilevel optimization on ``torch.func``.

Problems are pure loss functions over explicit parameter pytrees; hypergradients are composable
transforms (:mod:`betty_func.hypergrad`) built from ``vjp``/``jvp``/``vmap``.
"""
from . import _preload  # noqa: F401  (first: torch._dynamo before any process group)
from . import data, hypergrad, linsolve, mlo, nn, optim, testing, tree

__version__ = "0.1.0"

__all__ = ["data", "hypergrad", "linsolve", "mlo", "nn", "optim", "testing", "tree", "__version__"]
