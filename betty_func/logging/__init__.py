"""Where a run reports: one protocol (:class:`Logger`) for the console, a progress bar,
TensorBoard, JSON lines, Weights & Biases and callbacks of your own.

``mlo.solve(..., logging=mlo.Logging(every=50, loggers=[logging.JSONLines("run.jsonl")]))``:
values reach loggers only on log and validation steps (the only host reads of a run).
"""
from ._base import Logger
from ._callback import Callback
from ._console import Console
from ._jsonl import JSONLines
from ._progress import Progress
from ._tensorboard import TensorBoard
from ._wandb import WandB

__all__ = ["Logger", "Callback", "Console", "Progress", "TensorBoard", "JSONLines", "WandB"]
