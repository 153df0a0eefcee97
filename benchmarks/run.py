"""The benchmark suite: ours vs plain autograd vs the peers, measured side by side in one run.

Usage: python benchmarks/run.py [--quick] [--suites floor step mwn meta unrolled accuracy dp]
                                [--json PATH] [--outdir benchmarks/results]

Pins one thread, warms up, takes medians, prints markdown tables with ratios, and writes
``results.json`` and PNG plots (with matplotlib) under ``--outdir``. Peers come from the ``bench``
extra (``pip install -e ".[bench]"``: betty-ml, torchopt, higher, matplotlib); one that fails to
import or run is reported in its cells, not hidden. Peak memory on CPU is the resident-set
high-water mark; the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` fixed so freed
tensors go back to the OS and each measurement sees only its own allocations. That setting makes
every tensor over 128 KiB page-fault afresh (steps 2-4x slower, unevenly across libraries), so
the times of the ``mwn`` suite are those of its memory run; the ``step`` suite — ours vs plain
autograd vs Betty, alternating step by step, wall and CPU time — runs in a child process with
the allocator as users have it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = ["floor", "step", "mwn", "meta", "unrolled", "accuracy", "dp"]
MODULES = {"floor": "floor", "mwn": "mwn", "meta": "meta", "unrolled": "unrolled_memory",
           "dp": "data_parallel"}  # suites with one table: module.run(level) and COLUMNS


def machine() -> str:
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor()) if Path(
        "/proc/cpuinfo").exists() else platform.processor()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"torch {torch.__version__}, {cpu}, {gpu}, 1 thread"


def run_suite(name: str, level: str, backend: str) -> tuple[object, str]:
    """(rows, markdown) of one suite."""
    import _common as c
    if name == "step":  # timings with the allocator as users have it: a child without MALLOC_*
        import mwn_step
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            subprocess.run([sys.executable, str(HERE / "mwn_step.py"), "--level", level,
                            "--json", f"{tmp}/step.json"], env=env, check=True, cwd=HERE)
            rows = json.loads(Path(f"{tmp}/step.json").read_text())
        return rows, c.markdown(rows, mwn_step.COLUMNS)
    if name in MODULES:
        mod = importlib.import_module(MODULES[name])
        rows = mod.run(level, backend) if name == "floor" else mod.run(level)
        return rows, c.markdown(rows, mod.COLUMNS)
    import accuracy
    rows = {"sweep": accuracy.sweep(level), "warm_start": accuracy.warm_vs_cold(level)}
    return rows, (c.markdown(rows["sweep"], accuracy.COLUMNS) + "\n\nCG warm vs cold start:\n\n"
                  + c.markdown(rows["warm_start"], accuracy.WARM_COLUMNS))


def _merge_earlier(path: Path, out: dict) -> None:
    """A run of some suites keeps the other suites of an earlier run at the same level (and
    machine) in ``results.json``; each suite records when it ran."""
    now = time.strftime("%Y-%m-%d %H:%M")
    for rows in out["suites"].values():
        if isinstance(rows, list):
            for r in rows:
                r.setdefault("run", now)
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old.get("level") == out["level"] and old.get("machine") == out["machine"]:
        out["suites"] = {**old.get("suites", {}), **out["suites"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 3 min)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs (tests)")
    ap.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--outdir", default=str(HERE / "results"))
    ap.add_argument("--backend", default=None,
                    help="torch.compile backend of the floor suite "
                         "(inductor; aot_eager with --quick)")
    a = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # see the module docstring
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    sys.path.insert(0, str(HERE))
    import torch
    torch.set_num_threads(1)
    level = "smoke" if a.smoke else "quick" if a.quick else "full"
    backend = a.backend or ("inductor" if level == "full" else "aot_eager")
    out = {"machine": machine(), "level": level, "backend": backend, "suites": {}}
    print(f"# betty_func benchmarks ({level}): {out['machine']}\n")
    t0 = time.time()
    for name in a.suites:
        rows, table = run_suite(name, level, backend)
        out["suites"][name] = rows
        print(f"## {name}\n\n{table}\n", flush=True)
    out["seconds"] = time.time() - t0
    outdir = Path(a.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    _merge_earlier(outdir / "results.json", out)
    from _plots import plot_all
    out["plots"] = plot_all(out["suites"], outdir)
    for path in [outdir / "results.json"] + ([Path(a.json)] if a.json else []):
        path.write_text(json.dumps(out, indent=1, default=str))
    print(f"{out['seconds']:.0f} s; results in {outdir}" +
          ("" if out["plots"] else " (no plots: matplotlib not installed)"))


if __name__ == "__main__":
    main()
