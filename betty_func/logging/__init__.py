"""Where a run reports: a progress line, console lines and TensorBoard scalars."""
from ._writers import Console, Progress, TensorBoard

__all__ = ["Console", "Progress", "TensorBoard"]
