"""Loader for the bundled MNIST 10k digits."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .._errors import fail

BUNDLED = Path(__file__).with_name("mnist10k.npz")


def mnist10k(path: Optional[str | Path] = None, dtype: torch.dtype = torch.float32,
             device: Optional[torch.device | str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(X, y)``: ``X`` of shape (10000, 784) scaled to [0, 1], ``y`` int64 labels 0-9.

    Reads the copy bundled with the package unless ``path`` names another ``.npz`` with arrays
    ``X`` (uint8, N x 784) and ``y``. Nothing is downloaded.

    Example:
        >>> from betty_func.data import mnist10k
        >>> X, y = mnist10k()
        >>> tuple(X.shape), int(y.max())
        ((10000, 784), 9)
    """
    file = Path(path) if path is not None else BUNDLED
    if not file.is_file():
        fail("data.mnist10k(path)", f"no file at {str(file)!r}", None,
             "Pass the path of an .npz holding arrays X (N x 784, uint8) and y.",
             exc=FileNotFoundError)
    with np.load(file) as npz:
        X = torch.from_numpy(npz["X"].astype(np.float32) / 255.0)
        y = torch.from_numpy(npz["y"].astype(np.int64))
    return X.to(dtype=dtype, device=device), y.to(device=device)
