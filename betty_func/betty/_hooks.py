"""Which hooks a user's class defines, found by definition (not by name lookup on an
instance), and a misspelt or unsupported hook refused instead of silently never called."""
from __future__ import annotations

import difflib
from typing import Any

from .._errors import fail

API = "betty.Engine(...)"

PROBLEM_HOOKS = ("training_step", "forward", "get_batch", "configure_module",
                 "configure_optimizer", "configure_scheduler", "configure_train_data_loader",
                 "on_inner_loop_start", "param_callback")
UNSUPPORTED = {
    "grad_callback": "gradients are computed by torch.func and never land in .grad",
    "custom_optimizer_step": "the optimizer step is betty_func.optim's mapping of your "
                             "torch.optim optimizer",
    "epoch_callback": "loaders are cycled by the engine without epoch hooks",
    "on_epoch_end": "loaders are cycled by the engine without epoch hooks",
    "meta_trainable_parameters": "a hypergradient is taken in all of an upper's trainable "
                                 "parameters",
    "param_groups": "param groups come from your torch.optim optimizer's param_groups",
    "trainable_parameters": "the trained parameters are the module's parameters that require "
                            "grad (set requires_grad=False to freeze one)",
}
ENGINE_HOOKS = ("train_step", "validation")


def defined(obj: Any, base: type) -> dict:
    """``{name: function}`` defined in the user's subclasses of ``base`` (``type(obj)``'s classes
    that are not ``base`` nor one of the front end's own subclasses of it), nearest first."""
    out: dict = {}
    for cls in type(obj).__mro__:
        if not issubclass(cls, base) or "_front_end" in vars(cls):
            continue
        for name, value in vars(cls).items():
            if callable(value) and not name.startswith("__") and name not in out:
                out[name] = value
    return out


def implemented(obj: Any, hook: str, base: type) -> bool:
    return hook in defined(obj, base)


def check_problem_hooks(problem: Any, base: type) -> None:
    """``training_step`` defined; no unsupported hook; no name one edit away from a hook."""
    mine = defined(problem, base)
    where = f"{type(problem).__name__} '{problem.name}'"
    for name in mine:
        if name in UNSUPPORTED:
            fail(API, f"{where} defines `{name}`, a Betty hook the front end does not call: "
                 f"{UNSUPPORTED[name]}", None, f"Remove `{name}` (or rename your method).")
        _near_miss(where, name, PROBLEM_HOOKS + tuple(UNSUPPORTED), set(dir(base)))
    if "training_step" not in mine:
        fail(API, f"{where} does not define training_step(self, batch)", None,
             "Define it: it returns the loss of one batch (or {'loss': loss, **metrics}).")


def check_engine_hooks(engine: Any, base: type) -> None:
    for name in defined(engine, base):
        _near_miss(f"{type(engine).__name__}", name, ENGINE_HOOKS, set(dir(base)))


def _near_miss(where: str, name: str, hooks: tuple, known: set) -> None:
    if name in hooks or name in known:
        return
    close = difflib.get_close_matches(name, hooks, n=1, cutoff=0.8)
    if close:
        fail(API, f"{where} defines `{name}`, which is not a hook (it would never be called)",
             None, f"Did you mean `{close[0]}`? Rename it (a helper of your own: give it a name "
             "further from the hook's).")
