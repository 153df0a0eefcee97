"""From how many steps does ``compile=True`` pay off? Cold and warm-cache compile time of the MWN
step against the per-step saving over eager.

Each measurement runs in a fresh process (one thread) with its own inductor cache directory:
the first process compiles cold, the second finds the first one's cache (what a user's second
run of the same program sees). Per-step times alternate eager and compiled steps in one process
(``mwn_step.alternate``). Break-even = compile time / (eager - compiled step time).

Usage: python benchmarks/compile_payoff.py [--sizes 85k 1.1M] [--methods darts cg]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(size: str, method: str, out: str) -> None:
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    import mwn_step
    from mwn import SIZES
    k = 5 if method == "cg" else 1
    eager, _ = mwn_step.ours(SIZES[size], method, k, 60, False)
    compiled, seconds = mwn_step.ours(SIZES[size], method, k, 60, True)
    times = mwn_step.alternate({"eager": eager, "compiled": compiled}, 30, 3)
    Path(out).write_text(json.dumps({"compile_s": seconds, "eager_ms": 1e3 * times["eager"][0],
                                     "compiled_ms": 1e3 * times["compiled"][0]}))


def measure(size: str, method: str) -> dict:
    row: dict = {"size": size, "method": "darts" if method == "darts" else "cg K=5"}
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        for run in ("cold", "warm"):
            out = f"{cache}/{run}.json"
            subprocess.run([sys.executable, __file__, "--child", size, method, out], env=env,
                           check=True)
            r = json.loads(Path(out).read_text())
            row[f"{run}_s"] = r["compile_s"]
            row.setdefault("eager_ms", r["eager_ms"])
            row.setdefault("compiled_ms", r["compiled_ms"])
    saving = row["eager_ms"] - row["compiled_ms"]
    for run in ("cold", "warm"):
        row[f"{run}_steps"] = round(1e3 * row[f"{run}_s"] / saving) if saving > 0 else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["85k"])
    ap.add_argument("--methods", nargs="+", default=["darts", "cg"])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    print("| classifier | method | eager (ms) | compiled (ms) | cold compile (s) | pays off after "
          "(steps) | warm-cache compile (s) | pays off after (steps) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in a.sizes:
        for m in a.methods:
            r = measure(size, m)
            print(f"| {size} | {r['method']} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | "
                  f"{r['cold_s']:.1f} | {r['cold_steps']} | {r['warm_s']:.1f} | "
                  f"{r['warm_steps']} |", flush=True)


if __name__ == "__main__":
    main()
