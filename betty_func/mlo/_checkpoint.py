"""Whole-run checkpoints, written atomically (temporary file, fsync, rename, fsync of the
directory) and checked against the program at resume."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .. import tree
from .._errors import fail

API = "solve(..., checkpoint=mlo.Checkpoint(dir, every, resume=True))"

FILE = "mlo_checkpoint.pt"


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
         "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(directory: str | Path, state: dict) -> Path:
    """Write ``state`` to ``directory/mlo_checkpoint.pt``; a crash mid-write leaves the old one."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (FILE + ".tmp")
    with open(tmp, "wb") as f:  # a stale temporary file of a killed write is overwritten
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / FILE)
    fd = os.open(d, os.O_RDONLY)
    try:  # the rename itself survives a power cut only once the directory is on disk
        os.fsync(fd)
    finally:
        os.close(fd)
    return d / FILE


def load(directory: str | Path) -> Optional[dict[str, Any]]:
    """The checkpoint in ``directory``, or None when there is none."""
    f = Path(directory) / FILE
    stale = Path(directory) / (FILE + ".tmp")
    if stale.is_file():  # a write that was killed before its rename: the old file stands
        stale.unlink()
    if not f.is_file():
        return None
    try:
        out = torch.load(f, weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling, truncation and zip errors alike
        fail(API, f"the checkpoint {f} cannot be read (corrupt or truncated)",
             f"{type(e).__name__}: {e}", "Delete it to start afresh (resume=False), or restore "
             "a good copy.")
    if not isinstance(out, dict) or not {"step", "params", "opt_states"} <= set(out):
        fail(API, f"{f} is not a betty_func checkpoint", type(out).__name__,
             "Point the Checkpoint dir at a directory solve wrote.")
    return out


def check_matches(saved: dict, params: dict, opt_states: dict, where: str) -> None:
    """The checkpoint ``saved`` belongs to the program whose initial ``params`` and optimizer
    states (``opt_states``: of that structure, shapes and dtypes; meta tensors will do) these
    are: the same problem names, params (structure, shapes, dtypes) and optimizer states."""
    names, now = sorted(saved["params"]), sorted(params)
    if names != now:
        fail(API, f"the checkpoint in {where} is of another program (problems {names})",
             f"problems {now} now", "Resume with the program that wrote it, or start afresh.")
    for n in now:
        pairs = [("params", saved["params"][n], params[n])]
        if n in saved["opt_states"]:  # else sharded: saved per rank, outside the shared part
            pairs.append(("optimizer state", saved["opt_states"][n], opt_states[n]))
        for what, a, b in pairs:
            sa, sb = tree.structure(a), tree.structure(b)
            if sa != sb:
                fail(API, f"the {what} of '{n}' in the checkpoint in {where} and this "
                     f"program's differ in structure (another optimizer or params?)",
                     f"{sa} vs {sb}", "Resume with the program that wrote it, or start afresh.")
            for x, y in zip(tree.leaves(a), tree.leaves(b)):
                if isinstance(x, torch.Tensor) and (x.shape != y.shape or x.dtype != y.dtype):
                    fail(API, f"the {what} of '{n}' in the checkpoint in {where} and this "
                         "program's differ in shape or dtype", f"{tuple(x.shape)} {x.dtype} vs "
                         f"{tuple(y.shape)} {y.dtype}", "Resume with the program that wrote "
                         "it, or start afresh.")


def carries_of(saved: dict, fresh: dict, where: str) -> dict:
    """The methods' carries saved in ``saved``, checked against this program's ``fresh`` ones
    (same pairs, structure, shapes and dtypes); a checkpoint written before any method carried
    state has none, and resumes with ``fresh`` (what such a run started its carries from)."""
    if "carries" not in saved:
        return fresh
    a, b = saved["carries"], fresh
    same = tree.structure(a) == tree.structure(b) and all(
        x.shape == y.shape and x.dtype == y.dtype for x, y in zip(tree.leaves(a), tree.leaves(b)))
    if not same:
        fail(API, f"the hypergradient methods' carried state in the checkpoint in {where} and "
             "this program's differ (a method with warm_start= or a penalty schedule added, "
             "removed or changed?)", f"{sorted(a)} vs {sorted(b)}",
             "Resume with the methods that wrote it, or start afresh (resume=False).")
    return a


def snapshot(directory: str | Path, run: dict, local: dict, rt: Any) -> Path:
    """Save ``run`` (what all ranks share) with every rank's ``local`` part (RNG, data positions,
    sharded optimizer states): gathered to rank 0, written by it; the others wait for the file.
    Returns the file's path."""
    ranks = rt.gather(local) if rt is not None else [local]
    if rt is None or rt.leader:
        save(directory, {**run, "world_size": len(ranks), "ranks": ranks})
    if rt is not None:
        rt.barrier()
    return Path(directory) / FILE


def restore(directory: str | Path, rt: Any) -> Optional[tuple[dict, dict]]:
    """``(run, this rank's local part)`` from ``directory``, or None; an error when the world
    size changed since it was written (data positions, RNG streams and optimizer shards are per
    rank)."""
    saved = load(directory)
    if saved is None:
        return None
    world, rank = (1, 0) if rt is None else (rt.world, rt.rank)
    if saved.get("world_size", 1) != world:
        fail(API, "the checkpoint was written by a run on a "
             "different number of processes", f"world size {saved.get('world_size', 1)} in "
             f"{Path(directory) / FILE}, {world} now",
             "Resume with the world size it was written with, or start afresh (resume=False).")
    if "ranks" not in saved:  # written before data parallel: one process, its parts at the top
        return saved, {"rng": saved["rng"], "sources": saved["sources"], "opt_states": {}}
    return saved, saved["ranks"][rank]
