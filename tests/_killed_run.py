"""A run that checkpoints every step and resumes: ``python _killed_run.py DIR OUT``.

tests/test_kill_resume.py kills it with SIGKILL at random moments (mid-step, mid-checkpoint),
starts it again, and compares what it finally writes to ``OUT`` with an uninterrupted run.
"""
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from betty_func import hypergrad as hg, mlo, optim

STEPS = 300


def main(where: str, out: str) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = x @ torch.randn(5, generator=g, dtype=torch.float64)
    loader = DataLoader(list(zip(x, y)), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(7))

    def lower(w, b, *, upper):  # dropout: the RNG stream matters too
        xb = F.dropout(b[0], 0.1)
        return ((xb @ w - b[1]) ** 2).mean() + (torch.exp(upper) * w ** 2).sum()

    def upper(lam, b, *, lower):
        return ((b[0] @ lower - b[1]) ** 2).mean()
    lo = mlo.Problem("lower", lower, torch.zeros(5, dtype=torch.float64),
                     optim.adam(0.05), data=loader, hypergrad=hg.cg(maxiter=3))
    hi = mlo.Problem("upper", upper, torch.zeros(5, dtype=torch.float64), optim.adam(0.01),
                     data=loader)
    r = mlo.solve([lo, hi], {"upper": ["lower"]}, steps=STEPS, seed=0,
                  checkpoint=mlo.Checkpoint(where, every=1, resume=True),
                  logging=mlo.Logging(every=0, progress=False, console=False))
    torch.save({"params": r.params, "opt_states": r.opt_states, "step": r.step}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
