"""Smoke test of benchmarks/bilevel_quadratic.py --quick: both tables have every method's row
and the values that do not depend on timing are what the methods compute."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"exact", "cg", "neumann", "darts", "sama (SGD)", "sama (Adam)", "unrolled",
           "penalty"}


def _tables(text: str) -> list[list[dict]]:
    """Each markdown table of ``text`` as a list of {header: cell} rows."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            head = [c.strip() for c in lines[i - 1].strip("|").split("|")]
            rows = []
            for row in lines[i + 1:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(head, (c.strip() for c in row.strip("|").split("|")))))
            tables.append(rows)
    return tables


def test_bilevel_quadratic_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bilevel_quadratic.py"),
                           "--quick", "--outdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fixed, outer = _tables(proc.stdout)
    assert {r["method"] for r in fixed} == METHODS
    assert {r["method"] for r in outer} == METHODS | {"cg, warm start", "penalty, warm start"}
    err = {(r["method"], r["maxiter / steps"]): float(r["relative error"]) for r in fixed}
    assert err[("exact", "–")] < 1e-12 and err[("cg", "20")] < 1e-5
    assert err[("cg", "5")] > err[("cg", "20")] and err[("neumann", "10")] > err[("neumann", "50")]
    assert err[("darts", "–")] == err[("sama (SGD)", "–")] > 0.1  # SGD's sama = darts(scale=η)
    # K gradient steps of the penalty method are a K-term Neumann series computed from gradients
    assert 0.5 < err[("penalty", "10")] / err[("neumann", "10")] < 2
    hv = {(r["method"], r["maxiter / steps"]): int(r["H·v (counted)"]) for r in fixed}
    assert hv[("cg", "20")] - hv[("cg", "5")] == 30  # 2 H·v per HVP: one HVP per iteration
    status = {r["method"] + r["maxiter / steps"]: r["target"] for r in outer}
    assert status["exact–"] == status["cg, warm start5"] == "reached"
    assert status["penalty, warm start5"] == "reached" != status["penalty10"]  # F2SA's carry
    assert status["darts–"] != "reached"
    png = tmp_path / "bilevel_quadratic.png"
    try:
        import matplotlib  # noqa: F401
        assert png.exists() and f"plot: {png}" in proc.stdout
    except ImportError:
        assert "no plot: matplotlib is not importable" in proc.stdout
