"""``solve``'s options checked together, before any work: each one honoured or refused."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from .._errors import check_arity, check_nonneg_int, fail
from ._compile import compile_options
from ._records import Checkpoint, Logging, Validation

API = "solve(problems, graph, ...)"
NONFINITE = ("raise", "skip", "warn")


def check_options(steps: int, env: Optional[Callable], compile: Any, seed: Optional[int],
                  on_nonfinite: str) -> None:
    """A clear error for an option of the wrong type or value (the records check their own)."""
    check_nonneg_int(API, "steps", steps)
    if env is not None:
        if not callable(env):
            fail(API, "`env` must be a function", type(env).__name__,
                 "Pass env=lambda step: {problem name: batch} or leave it out.", exc=TypeError)
        check_arity(API, "`env`", env, 1, "env(step) -> {problem name: batch}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        fail(API, "`seed` must be an int or None", f"{type(seed).__name__} {seed!r}",
             "Pass e.g. seed=0.", exc=TypeError)
    if on_nonfinite not in NONFINITE:
        fail(API, f"`on_nonfinite` must be one of {NONFINITE}", repr(on_nonfinite),
             "'raise' stops the run, 'skip' drops the update, 'warn' goes on and says so.")
    if compile:
        compile_options(compile)


# the flat options of earlier versions, and the record field each one became
FLAT = {"log_every": ("logging", "every"), "logdir": ("logging", "logdir"),
        "progress": ("logging", "progress"), "console": ("logging", "console"),
        "validate": ("validation", "fn"), "validate_every": ("validation", "every"),
        "early_stopping": ("validation", "early_stopping"),
        "roll_back": ("validation", "roll_back"), "checkpoint_dir": ("checkpoint", "dir"),
        "checkpoint_every": ("checkpoint", "every"), "resume": ("checkpoint", "resume")}
RECORDS = {"logging": Logging, "validation": Validation, "checkpoint": Checkpoint}


def records(logging: Any, validation: Any, checkpoint: Any, flat: dict) -> tuple:
    """``(Logging, Validation or None, Checkpoint or None)`` from ``solve``'s arguments, each
    of its record type. The flat options of earlier versions are refused with the record
    each one moved to; any other unknown keyword as unknown."""
    moved = sorted(k for k in flat if k in FLAT)
    if moved:
        where = sorted({FLAT[k][0] for k in moved})
        fix = "; ".join(f"{r}=mlo.{RECORDS[r].__name__}("
                        f"{', '.join(f for k, (rr, f) in FLAT.items() if rr == r)})" for r in where)
        fail(API, "options of earlier versions, now grouped into records", moved,
             f"Pass {fix}.", exc=TypeError)
    if flat:
        fail(API, f"unknown option(s) {sorted(flat)}", None, f"solve takes steps, env, "
             f"{', '.join(RECORDS)}, compile, seed, distributed, on_nonfinite.", exc=TypeError)
    given = {"logging": logging, "validation": validation, "checkpoint": checkpoint}
    for name, value in given.items():
        if value is not None and not isinstance(value, RECORDS[name]):
            kind = RECORDS[name].__name__
            fail(API, f"`{name}` must be an mlo.{kind}", type(value).__name__,
                 f"Pass {name}=mlo.{kind}(...).", exc=TypeError)
    return logging or Logging(), validation, checkpoint


def probe_writable(directory: str) -> None:
    """Create ``directory`` and write (and remove) a file in it, or say why it cannot be."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".probe")
        os.close(fd)
        os.remove(name)
    except OSError as e:
        fail(API, "the checkpoint directory cannot be written", f"{directory!r} ({e.strerror})",
             "Pass a directory this process can create and write.")
