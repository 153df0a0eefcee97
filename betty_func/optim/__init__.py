"""Functional, differentiable optimizers over pytrees: ``(init, update)`` pairs, out of place.

>>> import torch
>>> from betty_func import optim
>>> opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
>>> params = {"w": torch.zeros(3)}
>>> state = opt.init(params)
>>> params, state = optim.step(opt, params, {"w": torch.ones(3)}, state)
"""
from ._accumulate import AccumulateState, accumulate
from ._adam import AdamState, adam, adamw
from ._base import Optimizer, apply_updates, chain, step
from ._clip import clip_by_global_norm
from ._hyper import learning_rate, loss_scale, tree_get, tree_set
from ._loss_scale import LossScaleState, loss_scaled
from ._partition import PartitionState, group_learning_rates, partition
from ._schedules import constant, cosine, multistep, warmup
from ._sgd import SgdState, sgd
from ._sharded import ShardedState, is_sharded, sharded
from ._torch import from_torch

__all__ = ["Optimizer", "apply_updates", "step", "chain", "sgd", "SgdState", "adam", "adamw",
           "AdamState", "clip_by_global_norm", "loss_scaled", "LossScaleState", "constant",
           "multistep", "cosine", "warmup", "sharded", "ShardedState", "is_sharded",
           "learning_rate", "loss_scale", "tree_get", "tree_set", "partition", "PartitionState",
           "group_learning_rates", "accumulate", "AccumulateState", "from_torch"]
