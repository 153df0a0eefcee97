"""PNG plots of the benchmark tables (matplotlib, a bench-only dependency; skipped without it)."""
from __future__ import annotations

from pathlib import Path


def plot_all(results: dict, outdir: Path) -> list[str]:
    """Write one PNG per plotted suite under ``outdir``; return the paths (empty without
    matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []

    def save(fig, name: str) -> None:
        path = outdir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    if "accuracy" in results:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        rows = results["accuracy"]["sweep"]
        for m in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["ms"], r["rel_error"]) for r in rows if r["method"] == m)
            ax.loglog(*zip(*pts), "o-", label=m)
        ax.set(xlabel="time per hypergradient (ms)", ylabel="relative error",
               title="ridge d=2000, κ≈30: accuracy per cost")
        ax.legend()
        save(fig, "accuracy_per_cost.png")
    if "unrolled" in results:
        rows = results["unrolled"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot([r["T"] for r in rows], [r["plain_mib"] for r in rows], "o-", label="plain")
        ax.plot([r["T"] for r in rows], [r["ckpt_mib"] for r in rows], "o-", label="checkpointed")
        ax.set(xlabel="unroll length T", ylabel="peak memory added (MiB)",
               title="unrolled reverse mode")
        ax.legend()
        save(fig, "unrolled_memory.png")
    if "meta" in results:
        rows = results["meta"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for m in dict.fromkeys(r["method"] for r in rows):
            rs = [r for r in rows if r["method"] == m]
            ax.plot([r["tasks"] for r in rs], [r["vmap_tps"] for r in rs], "o-", label=f"{m} vmap")
            ax.plot([r["tasks"] for r in rs], [r["loop_tps"] for r in rs], "o--", label=f"{m} loop")
        ax.set(xlabel="meta-batch (tasks)", ylabel="tasks / s", xscale="log",
               title="meta-gradient throughput")
        ax.legend()
        save(fig, "meta_throughput.png")
    return written
