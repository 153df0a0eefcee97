"""Whole-run checkpoints, written atomically (temporary file + rename)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

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
