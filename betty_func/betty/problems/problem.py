"""Betty's ``Problem``: a module, an optimizer, data and ``training_step(batch)`` — evaluated here
as a pure loss over the problem's parameters (``torch.func.functional_call``), nothing written
into the module on a differentiated path."""
from __future__ import annotations

from typing import Any, Optional, cast

from torch import nn

from ..._errors import fail
from ..configs import Config

__all__ = ["Problem"]

# attributes every problem has: a problem with one of these names could not be reached by name
_FIELDS = ("name", "config", "cfg", "scheduler", "train_data_loader", "device", "env",
           "cur_batch", "iterative")


class Problem:
    """One level of a Betty program. Subclass :class:`ImplicitProblem` (or
    :class:`IterativeProblem`) and define ``training_step(self, batch)``.

    Inside ``training_step`` (and ``forward`` and your helpers it calls), ``self.module``,
    ``self.parameters()``, ``self.forward(x)`` / ``self(x)`` and every other problem by name
    (``self.classifier(x)``, ``self.hpo.module.fc.weight``) hold the parameters of the point
    being differentiated: the problem's current parameters, a lower's best response, the
    perturbed points of a hypergradient method. Outside it (hooks, validation, after
    ``engine.run()``) ``self.module`` holds the trained parameters.

    Betty's constructor in both dialects: ``Problem(name, config, module, optimizer, scheduler,
    train_data_loader, extra_config)`` (HEAD) and ``device=`` (Betty 0.1). ``extra_config`` is
    kept as ``self.cfg``.

    Example:
        >>> import torch
        >>> from betty_func.betty.problems import ImplicitProblem
        >>> class Inner(ImplicitProblem):
        ...     def training_step(self, batch):
        ...         return ((self.module.weight - 1.0) ** 2).sum()
        >>> m = torch.nn.Linear(2, 1, bias=False)
        >>> p = Inner("inner", module=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1))
        >>> p.name, p.count
        ('inner', 0)
    """

    iterative = False  # IterativeProblem: its uppers differentiate through its updates
    _front_end = True  # set in the body of the front end's own classes, never by a user's

    def __init__(self, name: str, config: Optional[Config] = None,
                 module: Optional[nn.Module] = None, optimizer: Any = None,
                 scheduler: Any = None, train_data_loader: Any = None,
                 extra_config: Any = None, device: Any = None):
        api = f"{type(self).__name__}(name={name!r}, ...)"
        if not isinstance(name, str) or not name.isidentifier():
            fail(api, "`name` must be a valid Python identifier (other problems reach this one "
                 "as self.<name>)", repr(name), "Use e.g. name='classifier'.", exc=TypeError)
        if name in RESERVED or name.startswith("_"):
            fail(api, f"`name` {name!r} is an attribute of every problem, so self.{name} could "
                 "not reach the problem", repr(name), "Rename the problem.")
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            fail(api, "`config` must be a betty.configs.Config", type(config).__name__,
                 exc=TypeError)
        if module is not None and not isinstance(module, nn.Module):
            fail(api, "`module` must be a torch.nn.Module", type(module).__name__,
                 "Pass the network, or define configure_module().", exc=TypeError)
        self.name, self.config, self.cfg = name, config, extra_config
        # None only until the Engine runs configure_module() (it refuses a problem left
        # without one), so the engine and user code always see a module
        self._module = cast(nn.Module, module)
        self._optimizer = optimizer
        self.scheduler, self.train_data_loader = scheduler, train_data_loader
        self._device_arg, self.device = device, device
        self.env: Any = None
        self.cur_batch: Any = None
        self._engine: Any = None
        self._training = True

    # -- what user code reads ------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        """The problem's module, holding its current parameters (see the class docstring)."""
        return self._module

    @module.setter
    def module(self, value: nn.Module) -> None:
        self._refuse_after_engine("module")
        self._module = value

    @property
    def optimizer(self) -> Any:
        """The ``torch.optim`` optimizer given; its ``param_groups[i]["lr"]`` follows its
        scheduler, stepped every local step as Betty steps it."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: Any) -> None:
        self._refuse_after_engine("optimizer")
        self._optimizer = value

    def _refuse_after_engine(self, what: str) -> None:
        if self.__dict__.get("_engine") is not None:
            fail(f"{self.name}.{what} = ...", f"the {what} of a problem cannot be replaced "
                 "once it belongs to an Engine (the program was built from it)", None,
                 "Edit it in place instead (e.g. self.module.load_state_dict(...)).",
                 exc=AttributeError)

    @property
    def count(self) -> int:
        """Local steps taken (batches this problem has trained on)."""
        return 0 if self._engine is None else self._engine._counts[self.name]

    @property
    def _count(self) -> int:
        return self.count

    @property
    def children(self) -> list:
        """The problems directly below this one (its lowers)."""
        return [] if self._engine is None else self._engine._below(self.name)

    @property
    def parents(self) -> list:
        """The problems directly above this one (its uppers, which it steps)."""
        return [] if self._engine is None else self._engine._above(self.name)

    @property
    def leaf(self) -> bool:
        """True for a problem with nothing below it (``Engine.leaves``)."""
        return not self.children

    @property
    def paths(self) -> list:
        """Betty's hypergradient paths, ``[self, lower, ..., self]`` for each chain down from
        this problem to a problem with nothing below (``[[upper, lower, upper]]`` bilevel)."""
        out: list = []

        def down(chain: list) -> None:
            below = chain[-1].children
            if not below and len(chain) > 1:
                out.append(chain + [self])
            for q in below:
                down(chain + [q])
        down([self])
        return out

    @property
    def _global_step(self) -> int:
        return 0 if self._engine is None else self._engine.global_step

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``self(x)``: by default the module's forward."""
        return self.module(*args, **kwargs)

    def training_step(self, batch: Any) -> Any:
        """The loss of one batch: a scalar tensor, or ``{"loss": tensor, **metrics}``."""
        raise NotImplementedError(f"{type(self).__name__}.training_step(batch) must be defined")

    def parameters(self) -> list:
        return list(self.module.parameters())

    def trainable_parameters(self) -> list:
        return list(self.module.parameters())

    def get_batch(self) -> Any:
        """The next batch of ``train_data_loader`` (cycled; a tuple of loaders gives a tuple),
        moved to the device. Override it to draw from ``self.env``."""
        if self._engine is None:
            fail(f"{self.name}.get_batch()", "the problem belongs to no Engine yet", None,
                 "Build the Engine first.", exc=RuntimeError)
        return self._engine._feeds[self.name].next()

    def step(self, global_step: Optional[int] = None) -> None:
        """One step of the program from this leaf (``Engine.train_step`` calls it on every
        leaf): every problem due updates, lowers first; after ``unroll_steps`` lower steps
        the uppers step. Several leaves stepped in turn share one global step."""
        if self._engine is None:
            fail(f"{self.name}.step()", "the problem belongs to no Engine yet", None,
                 "Build the Engine with this problem first.", exc=RuntimeError)
        self._engine._leaf_step(self)

    def train(self) -> None:
        self._training = True
        self._module.train()

    def eval(self) -> None:
        self._training = False
        self._module.eval()

    def state_dict(self) -> dict:
        """The module's state dict, the optimizer's functional state and the scheduler's."""
        out = {"module": self.module.state_dict()}
        if self._engine is not None:
            out["optimizer"] = self._engine._opt_state(self.name)
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Load what :meth:`state_dict` returned (the module's parameters become the problem's
        current parameters; the optimizer state is restored when given)."""
        self.module.load_state_dict(state["module"])
        if self._engine is not None:
            self._engine._load(self.name, state.get("optimizer"))

    def __getattr__(self, item: str) -> Any:
        # reached only for names that are not attributes: a misspelt problem name
        engine = self.__dict__.get("_engine")
        names = sorted(engine._problems) if engine is not None else []
        raise AttributeError(f"{type(self).__name__} '{self.__dict__.get('name')}' has no "
                             f"attribute '{item}'" + (f" (problems: {names})" if names else ""))


RESERVED = frozenset(dir(Problem)) | frozenset(_FIELDS)
