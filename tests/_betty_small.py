"""A small Betty program for the front end's tests: a lower fits w to the upper's target λ
(``½‖w − λ‖² + ½‖w‖²``), the upper pulls the lower's w to 1 (``½‖w* − 1‖²``)."""
import torch
from torch import nn

from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.engine import Engine
from betty_func.betty.problems import ImplicitProblem


class Vec(nn.Module):
    def __init__(self, n=3, value=0.0, dtype=torch.float64):
        super().__init__()
        self.w = nn.Parameter(torch.full((n,), value, dtype=dtype))

    def forward(self):
        return self.w


class Inner(ImplicitProblem):
    def training_step(self, batch):
        return 0.5 * ((self.module.w - self.outer()) ** 2).sum() + 0.5 * (self.module.w ** 2).sum()


class Outer(ImplicitProblem):
    def training_step(self, batch):
        return 0.5 * ((self.inner.module.w - 1.0) ** 2).sum()


def program(inner_cls=Inner, outer_cls=Outer, inner_config=None, outer_config=None,
            engine_cls=Engine, engine_config=None, lr=0.1, outer_lr=0.1, env=None,
            dtype=torch.float64, inner_optimizer=None, **kw):
    """The engine of the program; ``inner_optimizer(params)`` replaces the inner SGD(lr)."""
    data = [(torch.zeros(1),)]
    mi, mo = Vec(dtype=dtype), Vec(value=0.5, dtype=dtype)
    opt = inner_optimizer(mi.parameters()) if inner_optimizer else \
        torch.optim.SGD(mi.parameters(), lr=lr)
    inner = inner_cls("inner", config=inner_config or Config(type="cg", cg_iterations=3),
                      module=mi, optimizer=opt, train_data_loader=data, **kw)
    outer = outer_cls("outer", config=outer_config or Config(), module=mo,
                      optimizer=torch.optim.SGD(mo.parameters(), lr=outer_lr),
                      train_data_loader=data)
    deps = {"u2l": {outer: [inner]}, "l2u": {inner: [outer]}}
    return engine_cls(problems=[outer, inner], config=engine_config or EngineConfig(train_iters=5),
                      dependencies=deps, env=env)


def mlo_twin(inner_optimizer, hypergrad, steps, outer_lr=0.1, unroll_steps=1):
    """The same program written with mlo directly, solved for ``steps``: its params."""
    from betty_func import mlo, optim
    probs = [mlo.Problem("inner", lambda w, b, *, outer: 0.5 * ((w - outer) ** 2).sum()
                         + 0.5 * (w ** 2).sum(), torch.zeros(3, dtype=torch.float64),
                         inner_optimizer, hypergrad=hypergrad, unroll_steps=unroll_steps),
             mlo.Problem("outer", lambda w, b, *, inner: 0.5 * ((inner - 1.0) ** 2).sum(),
                         torch.full((3,), 0.5, dtype=torch.float64), optim.sgd(outer_lr))]
    return mlo.solve(probs, {"outer": ["inner"]}, steps=steps,
                     logging=mlo.Logging(progress=False, console=False)).params
