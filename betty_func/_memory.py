"""Free memory on a device, for refusing work that cannot fit before it starts."""
from __future__ import annotations

import os
from typing import Optional

import torch


def free_bytes(device: torch.device) -> Optional[int]:
    """Bytes a new allocation on ``device`` can take now: CUDA's free memory, the host's
    ``MemAvailable`` for the CPU (the kernel's estimate before swapping); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    """``n`` bytes as e.g. '3.2 GiB'."""
    return f"{n / 2 ** 30:.3g} GiB"
