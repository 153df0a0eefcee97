"""Smoke test of the benchmark suite: `benchmarks/run.py --smoke` runs every suite end to end.

It checks values (what was computed, that ours and the references agree), never timings: a
loaded machine may make any timing anything."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_suite_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke",
                           "--outdir", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    suites = res["suites"]
    assert set(suites) == {"floor", "step", "mwn", "meta", "unrolled", "accuracy", "dp"}
    assert {r["method"] for r in suites["step"]} == {"darts"}
    assert all(k in suites["step"][0] for k in ("ours_ms", "plain_ms", "ours_cpu_ms"))
    # ours and the hand-written autograd versions compute the same numbers
    assert {r["method"] for r in suites["floor"]} == {"darts", "neumann K=5", "cg K=5",
                                                      "unrolled T=10"}
    assert all(r["match"] < 1e-4 and "ours_ms" in r for r in suites["floor"])
    assert "ours_ms" in suites["mwn"][0]
    assert "betty_ms" in suites["mwn"][0]  # a number, or None with the reason in betty_mib
    assert all("vmap_tps" in r and "loop_tps" in r for r in suites["meta"])
    assert "plain_ms" in suites["unrolled"][0] and "ckpt_ms" in suites["unrolled"][0]
    cg = [r for r in suites["accuracy"]["sweep"] if r["method"] == "cg"]
    assert cg and all(r["rel_error"] < 1.0 for r in cg)
    assert all(r["warm_err"] < 1e-4 for r in suites["accuracy"]["warm_start"])
    dp = {r["method"]: r for r in suites["dp"]}
    assert set(dp) == {"cg K=3", "cg K=3 + ZeRO-1"}  # (every method's values: test_mlo_distributed)
    assert all("sps_1" in r and "sps_2" in r for r in dp.values())
    zero = dp["cg K=3 + ZeRO-1"]  # Adam state of 13k params: half of it per rank at 2 processes
    assert zero["state_2"] == pytest.approx(zero["state_1"] / 2, rel=1e-3)
    assert (tmp_path / "results.json").exists()
    assert "## floor" in proc.stdout and "| method |" in proc.stdout


def test_vmap_programs_runs(tmp_path):
    """The standalone vmapped-programs benchmark builds on the HPO example's functions (a change
    to their signatures once broke it unnoticed); the equality of vmapped and sequential runs
    is tested in test_examples."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vmap_programs.py"),
                           "--seeds", "2", "--steps", "2", "--no-compile"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| 2 sequential steps", "| one vmapped step"]
