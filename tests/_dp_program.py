"""The bilevel program the data-parallel tests run in one process and on two gloo ranks.

Softmax regression (12 features, 3 classes, float64) whose per-feature log weight decays are
learned on validation batches; every step draws a fresh global batch (a function of the step),
which each rank slices. Inner updates: Adam; the inner loss has noise from the global RNG (rank
dependent under data parallel) so that a resume must restore every rank's own stream.
"""
import torch
import torch.nn.functional as F

from betty_func import hypergrad as hg, mlo, optim

N_TRAIN, N_VAL = 16, 8  # global batch sizes (per rank: half)
QUIET = dict(logging=mlo.Logging(every=1, progress=False, console=False))


def batch(i: int, n: int, salt: int) -> tuple:
    g = torch.Generator().manual_seed(1000 * salt + i)
    X = torch.randn(n, 12, generator=g, dtype=torch.float64)
    w = torch.linspace(-1, 1, 36, dtype=torch.float64).reshape(12, 3)
    return X, (X @ w + 0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)).argmax(1)


def program(method: str, noise: bool = False, unroll_steps: int = 2, zero: bool = False) -> tuple:
    """``zero``: both optimizers sharded over the ranks (ZeRO-1); not with ``unrolled``."""
    opt = optim.adam(0.05)
    outer_opt = optim.sgd(0.5, momentum=0.5)
    if zero:
        opt, outer_opt = optim.sharded(opt), optim.sharded(outer_opt)
    methods = {"darts": hg.darts(), "cg": hg.cg(maxiter=5),
               "unrolled": hg.unrolled(unroll_steps, opt)}

    def inner(W, b, *, outer):
        X, y = b
        fit = F.cross_entropy(X @ W, y)
        if noise:  # a rank-local random perturbation (each rank's own RNG stream)
            fit = fit + 1e-3 * (torch.rand(()) * W).sum()
        return fit + 0.5 * (torch.exp(outer)[:, None] * W ** 2).sum()

    def outer(lam, b, *, inner):
        X, y = b
        return F.cross_entropy(X @ inner, y)

    g = torch.Generator().manual_seed(7)
    lo = mlo.Problem("inner", inner, 0.1 * torch.randn(12, 3, generator=g, dtype=torch.float64),
                     opt, data=lambda i: batch(i, N_TRAIN, 1), hypergrad=methods[method],
                     unroll_steps=unroll_steps)
    hi = mlo.Problem("outer", outer, torch.full((12,), -1.0, dtype=torch.float64),
                     outer_opt, data=lambda i: batch(i, N_VAL, 2))
    return [lo, hi], {"outer": ["inner"]}


def with_buffer() -> tuple:
    """One level whose loss centres its inputs by a running mean kept as ``state`` (statistics
    of the batch itself would be per rank under data parallel, as in DDP without SyncBatchNorm)."""
    def fit(W, b, *, state):
        X, y = b
        return F.cross_entropy((X - state) @ W, y), {}, 0.8 * state + 0.2 * X.mean(0)

    p = mlo.Problem("fit", fit, torch.zeros(12, 3, dtype=torch.float64), optim.sgd(0.5),
                    data=lambda i: batch(i, N_TRAIN, 3), state=torch.zeros(12, dtype=torch.float64))
    return [p], {}
