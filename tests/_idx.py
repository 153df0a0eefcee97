"""Write arrays in MNIST's IDX format (what ``data.load_mnist`` reads), for fake MNIST folders."""
import gzip

import numpy as np


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
