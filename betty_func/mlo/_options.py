"""``solve``'s options checked together, before any work: each one honoured or refused."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from .._errors import check_arity, check_nonneg_int, check_type, fail
from ._compile import compile_options

API = "solve(problems, graph, ...)"
NONFINITE = ("raise", "skip", "warn")


def check_options(steps: int, env: Optional[Callable], validate: Optional[Callable],
                  validate_every: int, log_every: int, checkpoint_dir: Optional[str],
                  checkpoint_every: int, resume: bool, compile: Any, seed: Optional[int],
                  early_stopping: Any, roll_back: bool, on_nonfinite: str) -> None:
    """A clear error for an option of the wrong type or value, or for options that make no
    sense together (one without the other it needs)."""
    check_nonneg_int(API, "steps", steps)
    check_nonneg_int(API, "log_every", log_every)
    check_nonneg_int(API, "validate_every", validate_every)
    check_nonneg_int(API, "checkpoint_every", checkpoint_every)
    for name, fn in (("env", env), ("validate", validate)):
        if fn is not None and not callable(fn):
            fail(API, f"`{name}` must be a function", type(fn).__name__,
                 f"Pass {name}=lambda ...: ... or leave it out.", exc=TypeError)
    if env is not None:
        check_arity(API, "`env`", env, 1, "env(step) -> {problem name: batch}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        fail(API, "`seed` must be an int or None", f"{type(seed).__name__} {seed!r}",
             "Pass e.g. seed=0.", exc=TypeError)
    if on_nonfinite not in NONFINITE:
        fail(API, f"`on_nonfinite` must be one of {NONFINITE}", repr(on_nonfinite),
             "'raise' stops the run, 'skip' drops the update, 'warn' goes on and says so.")
    if compile:
        compile_options(compile)
    pairs = [(checkpoint_every and not checkpoint_dir, "`checkpoint_every` needs a "
              "`checkpoint_dir` to write to", "Pass checkpoint_dir=... too, or drop it."),
             (checkpoint_dir and not checkpoint_every, "`checkpoint_dir` is given but "
              "`checkpoint_every` is 0, so nothing would be written", "Pass checkpoint_every=N "
              "(e.g. 100), or drop checkpoint_dir."),
             (resume and not checkpoint_dir, "`resume=True` needs the `checkpoint_dir` to "
              "resume from", "Pass checkpoint_dir=... ."),
             (validate is not None and not validate_every, "`validate` is given but "
              "`validate_every` is 0, so it would never run", "Pass validate_every=N."),
             (validate is None and validate_every, "`validate_every` is given without "
              "`validate`", "Pass validate=fn(params) -> {metric: value}."),
             (validate is None and early_stopping is not None, "`early_stopping` needs "
              "`validate` (and `validate_every`) for its metric", "Pass validate=... ."),
             (validate is None and roll_back, "`roll_back=True` needs `validate` (and "
              "`validate_every`) to pick the best params by", "Pass validate=... .")]
    for bad, what, fix in pairs:
        if bad:
            fail(API, what, None, fix)
    if early_stopping is not None:
        from ._monitor import EarlyStopping
        check_type(API, "early_stopping", early_stopping, EarlyStopping,
                   "an mlo.EarlyStopping", "Pass mlo.EarlyStopping('loss', 'min', patience=5).")


def probe_writable(directory: str) -> None:
    """Create ``directory`` and write (and remove) a file in it, or say why it cannot be."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".probe")
        os.close(fd)
        os.remove(name)
    except OSError as e:
        fail(API, "`checkpoint_dir` cannot be written", f"{directory!r} ({e.strerror})",
             "Pass a directory this process can create and write.")
