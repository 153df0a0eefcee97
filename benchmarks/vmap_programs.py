"""A batch of programs in one call: the HPO example's 8 seeds as one vmapped step vs 8 steps.

The program is ``examples/hpo_weight_decay.py``'s (MLP 784-200-10 without biases, ~159k
per-weight decays learned by cg through the classifier; batch 100). Per global step: the 8
seeds' states stepped one after the other (``mlo.step``, eager: what 8 sequential runs do), the
stacked state in one vmapped step (eager), and the vmapped step compiled as one graph
(``mlo.step(..., batched=True, compile=True)``, after its compile); alternating, order rotated,
medians. 1 thread.

Usage: python benchmarks/vmap_programs.py [--seeds 8] [--steps 20]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import hpo_weight_decay as hpo
    from betty_func import mlo
    from mwn_step import alternate
    args = argparse.Namespace(batch=100, lr=0.05, meta_lr=1e-4, fixed_decay=5e-4, method="cg")
    seeds = list(range(a.seeds))
    cpu = torch.device("cpu")
    built = [hpo.build(s, True, args, hpo.splits(s, 1000, 1000, cpu)) for s in seeds]
    iters = [{p.name: iter(p.data) for p in b[0]} for b in built]
    batch = {n: [next(iters[i][n]) for i in range(len(seeds))] for n in ("classifier", "decay")}
    s0 = mlo.init(built[0][0], built[0][1])
    states = [mlo.with_params(s0, {p.name: p.params for p in b[0]}) for b in built]
    box = {"seq": states, "vmap": mlo.stack(states), "comp": mlo.stack(states)}
    stacked = {n: [torch.stack(xs) for xs in zip(*bs)] for n, bs in batch.items()}

    def sequential() -> None:
        out = []
        for i, s in enumerate(box["seq"]):
            s, logs = mlo.step(s, {n: batch[n][i] for n in batch})
            out.append(s)
        float(logs["decay"]["grad_norm"])
        box["seq"] = out

    def vmapped(key: str, compile: bool) -> None:
        box[key], logs = mlo.step(box[key], stacked, compile=compile, batched=True)
        float(logs["decay"]["grad_norm"][0])

    seq = f"{a.seeds} sequential steps"
    steppers = {seq: sequential,
                "one vmapped step": lambda: vmapped("vmap", False)}
    if not a.no_compile:
        t = time.perf_counter()
        vmapped("comp", True)
        print(f"compile of the vmapped step: {time.perf_counter() - t:.1f} s")
        steppers["one vmapped step, compiled"] = lambda: vmapped("comp", True)
    res = alternate(steppers, a.steps, 2)
    base = res[seq][0]
    print(f"\n{a.seeds} programs (HPO example, cg K=3), 1 thread, medians of {a.steps}:\n")
    print(f"| what | ms per global step | vs {a.seeds} sequential |")
    print("|---|---|---|")
    for k, (w, _) in res.items():
        print(f"| {k} | {1e3 * w:.1f} | {w / base:.2f} |")


if __name__ == "__main__":
    main()
