"""Whole-run checkpoints, written atomically (temporary file + rename)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .._errors import fail

FILE = "mlo_checkpoint.pt"


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
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
    torch.save(state, tmp)
    os.replace(tmp, d / FILE)
    return d / FILE


def load(directory: str | Path) -> Optional[dict[str, Any]]:
    """The checkpoint in ``directory``, or None when there is none."""
    f = Path(directory) / FILE
    return torch.load(f, weights_only=False) if f.is_file() else None


def snapshot(directory: str | Path, run: dict, local: dict, rt: Any) -> None:
    """Save ``run`` (what all ranks share) with every rank's ``local`` part (RNG, data positions,
    sharded optimizer states): gathered to rank 0, written by it; the others wait for the file."""
    ranks = rt.gather(local) if rt is not None else [local]
    if rt is None or rt.leader:
        save(directory, {**run, "world_size": len(ranks), "ranks": ranks})
    if rt is not None:
        rt.barrier()


def restore(directory: str | Path, rt: Any) -> Optional[tuple[dict, dict]]:
    """``(run, this rank's local part)`` from ``directory``, or None; an error when the world
    size changed since it was written (data positions, RNG streams and optimizer shards are per
    rank)."""
    saved = load(directory)
    if saved is None:
        return None
    world, rank = (1, 0) if rt is None else (rt.world, rt.rank)
    if saved.get("world_size", 1) != world:
        fail("solve(..., checkpoint_dir, resume=True)", "the checkpoint was written by a run on a "
             "different number of processes", f"world size {saved.get('world_size', 1)} in "
             f"{Path(directory) / FILE}, {world} now",
             "Resume with the world size it was written with, or start afresh (resume=False).")
    if "ranks" not in saved:  # written before data parallel: one process, its parts at the top
        return saved, {"rng": saved["rng"], "sources": saved["sources"], "opt_states": {}}
    return saved, saved["ranks"][rank]
