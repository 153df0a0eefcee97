"""Load ``torch._dynamo`` before any process group exists.

Imported after ``torch.distributed.init_process_group`` (as ``torch.func`` and ``torch.compile``
do lazily, at their first call), ``torch._dynamo`` keeps references to the default process group
that ``destroy_process_group`` cannot drop: the group's gloo threads outlive it, and a gloo work
that releases a Python tensor while the interpreter finalizes aborts the process at exit
("terminate called without an active exception"; torch 2.13, see pytorch/pytorch#190489 for the
exit race). Imported first, it holds none. The cost (~1.4 s) is paid at the first ``torch.func``
call anyway. Where a group was already up, a warning says how to avoid the abort.
"""
import sys
import warnings

import torch

_LATE = ("torch._dynamo" not in sys.modules and torch.distributed.is_available()
         and torch.distributed.is_initialized())

import torch._dynamo  # noqa: E402,F401

if _LATE:
    warnings.warn("betty_func was imported after torch.distributed.init_process_group: "
                  "torch._dynamo, loaded now, keeps the process group alive past "
                  "destroy_process_group, and its threads can abort the interpreter at exit. "
                  "Import betty_func (or torch._dynamo) before init_process_group.",
                  RuntimeWarning, stacklevel=2)
