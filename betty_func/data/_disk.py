"""Real MNIST and CIFAR-10 from a user's disk, in torchvision's folder layout. Nothing downloads."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from .._errors import fail


def _missing(api: str, path: Path) -> None:
    fail(api, f"no file at {str(path)!r}", None,
         "Point `root` at the folder that holds torchvision's layout (nothing is downloaded).",
         exc=FileNotFoundError)


def _idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(root: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` from ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``:
    ``X`` float32 (N, 784) in [0, 1], ``y`` int64."""
    raw, stem = Path(root) / "MNIST" / "raw", "train" if train else "t10k"
    out = []
    for kind in ("images-idx3", "labels-idx1"):
        base = raw / f"{stem}-{kind}-ubyte"
        f = base if base.is_file() else base.with_name(base.name + ".gz")
        if not f.is_file():
            _missing("data.load_mnist(root, train)", base)
        out.append(_idx(f))
    X = torch.from_numpy(out[0].reshape(len(out[0]), -1).astype(np.float32) / 255.0)
    return X, torch.from_numpy(out[1].astype(np.int64))


def load_cifar10(root: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` from ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}``:
    ``X`` float32 (N, 3, 32, 32) in [0, 1], ``y`` int64."""
    folder = Path(root) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for n in names:
        if not (folder / n).is_file():
            _missing("data.load_cifar10(root, train)", folder / n)
        with open(folder / n, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d["labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0), \
        torch.from_numpy(np.concatenate(ys))
