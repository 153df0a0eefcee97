"""Multilevel optimization: problems as pure losses, a graph ``{upper: [lowers]}``, one solver.

``mlo.solve(problems, graph, steps=...)`` runs a program with data, logging, validation and
checkpoints (``mlo.Logging``, ``mlo.Validation``, ``mlo.Checkpoint``); it loops over the pure
step ``state, logs = mlo.step(state, batches)`` from ``state = mlo.init(problems, graph)``,
public for loops of your own and ``torch.vmap``.

>>> import torch
>>> from betty_func import mlo, optim
>>> inner = mlo.Problem("inner", lambda w, b, *, outer: ((w - outer) ** 2).sum(), torch.zeros(2),
...                     optim.sgd(0.5))
>>> outer = mlo.Problem("outer", lambda w, b, *, inner: ((inner - 3.0) ** 2).sum(),
...                     torch.zeros(2), optim.sgd(0.5))
>>> result = mlo.solve([inner, outer], {"outer": ["inner"]}, steps=40,
...                    logging=mlo.Logging(progress=False, console=False))
>>> [round(v, 3) for v in result.params["outer"].tolist()]
[3.0, 3.0]
"""
from ._distributed import Distributed
from ._graph import Graph, build, schedule
from ._monitor import EarlyStopping
from ._problem import Problem
from ._records import Checkpoint, Logging, Validation
from ._solve import Result, solve
from ._state import State, due, init, stack, step, unstack, with_params

__all__ = ["Problem", "solve", "schedule", "Result", "Logging", "Validation", "Checkpoint",
           "EarlyStopping", "Graph", "build",
           "Distributed", "State", "init", "step", "due", "stack", "unstack", "with_params"]
