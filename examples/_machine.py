"""What every example shares about the machine it runs on: ``--device``, ``--threads`` and
``--plot``, checked before any work, the header line that states the setting, and how a
figure is saved with it."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional

import torch


def add_machine_args(ap: argparse.ArgumentParser, plot: str,
                     device: str = "where the params and the data live",
                     threads: str = "torch CPU threads (default: min(2, available))") -> None:
    """``--device cpu|cuda``, ``--threads N`` and ``--plot PATH`` (``plot``: what it draws)."""
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help=device)
    ap.add_argument("--threads", type=int, default=None, help=threads)
    ap.add_argument("--plot", default=None, metavar="PATH",
                    help=f"draw {plot} to PATH\n(.png, .pdf, ...; needs matplotlib)")


def machine(ap: argparse.ArgumentParser, a: argparse.Namespace, file: str,
            default_threads: Optional[int] = None,
            gpu: Optional[int] = None) -> tuple[torch.device, str]:
    """Check ``--device``, ``--threads`` and ``--plot`` of the example ``file`` before any work,
    set the CPU thread count (and with ``--device cuda`` and a ``gpu`` number, the current GPU);
    returns the device and the header line that states the setting."""
    script = os.path.basename(file)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error(f"{script}(--device): CUDA is not available to this torch "
                 f"(torch.cuda.is_available() is False). Got --device cuda, torch "
                 f"{torch.__version__}. Pass --device cpu, or run on a machine with a GPU and a "
                 f"CUDA build of torch.")
    if a.threads is not None and a.threads < 1:
        ap.error(f"{script}(--threads): the thread count must be at least 1. Got {a.threads}. "
                 f"Pass e.g. --threads 2, or leave it out for the default.")
    if a.plot:
        try:
            import matplotlib
        except ImportError:
            ap.error(f"{script}(--plot): the plot needs matplotlib, which is not installed. Got "
                     f"--plot {a.plot}. pip install matplotlib, or leave out --plot.")
        matplotlib.use("Agg")
    torch.set_num_threads(a.threads or default_threads or min(2, torch.get_num_threads()))
    device = torch.device(a.device) if gpu is None or a.device != "cuda" else \
        torch.device("cuda", gpu)
    if device.type == "cuda" and gpu is not None:
        torch.cuda.set_device(device)
    where = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    n = torch.get_num_threads()
    return device, f"# device {where}, {n} thread{'s' * (n != 1)}, torch {torch.__version__}"


def save_figure(fig: Any, path: str, title: str, header: str, tight: bool = True) -> None:
    """``fig`` to ``path`` (its folder made) with ``title`` and the machine's ``header`` line
    as its title, then closed; ``tight``: ``tight_layout`` first."""
    import matplotlib.pyplot as plt
    fig.suptitle(f"{title}\n{header.lstrip('# ')}", fontsize=10)
    if tight:
        fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
