"""Betty programs on betty_func: ``import betty_func.betty as betty`` / ``from
betty_func.betty.X import Y`` runs a program written for Betty (leopard-ai/betty, 0.1.1 or
HEAD) with only the import changed, on ``mlo``'s pure step and hypergradients.

Each Betty ``Problem`` becomes an ``mlo.Problem`` whose loss is its ``training_step`` run with
every module reparametrized (``torch.func.functional_call``); ``torch.optim`` optimizers and
schedulers are mapped by ``optim.from_torch``; one global step is one ``mlo.step``. See the
README's "Coming from Betty" for what differs.
"""
from . import configs, envs, problems
from .configs import Config, EngineConfig
from .engine import Engine
from .envs import Env
from .problems import ImplicitProblem, IterativeProblem, Problem

__version__ = "0.2.1"  # the Betty API this front end follows (HEAD), not betty_func's version

__all__ = ["Engine", "Config", "EngineConfig", "Env", "Problem", "ImplicitProblem",
           "IterativeProblem", "configs", "envs", "problems", "engine", "__version__"]
