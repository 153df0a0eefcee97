"""Pytree utilities. The only package that imports ``optree``.

>>> import torch
>>> from betty_func import tree
>>> a = {"w": torch.ones(2), "b": torch.zeros(())}
>>> float(tree.vdot(a, tree.scale(2.0, a)))
4.0
"""
from ._ops import (add, all_finite, axpy, leaves, map, neg, norm, ones_like, scale, sub, vdot,
                   where, zeros_like)
from ._structure import (check_float, check_same, combine, is_float, partition, paths, ravel,
                         structure, unflatten)

__all__ = ["map", "leaves", "add", "sub", "scale", "axpy", "neg", "vdot", "norm", "zeros_like",
           "ones_like", "where", "structure", "unflatten", "is_float", "partition", "combine",
           "check_same", "check_float", "ravel", "all_finite", "paths"]
