"""Smoke test of examples/architecture_search.py (DARTS): every row is there, the derived cells
are well formed, the searches moved α, and the header line and the --plot figure are there."""
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"first-order", "second-order", "sama", "random"}
EDGES, CANDIDATES = 6, ("skip", "max_pool_3x3", "conv_3x3", "conv_5x5")  # zero is never derived


def test_architecture_search_quick(tmp_path):
    out, png = tmp_path / "result.json", tmp_path / "cells.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "architecture_search.py"),
                           "--quick", "--json", str(out), "--plot", str(png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    header = proc.stdout.splitlines()[0]
    assert header.startswith("# device cpu, ") and header.endswith(f", torch {torch.__version__}")
    assert res["machine"] == header and proc.stdout.count(header + "\n") == 2  # and at the table
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    table = res["results"]
    assert set(table) == METHODS
    for method, rows in table.items():
        assert len(rows) == 1, method  # --quick: one seed
        row = rows[0]
        assert 0.0 <= row["test_acc"] <= 1.0, (method, row["test_acc"])
        assert len(row["ops"]) == EDGES and set(row["ops"]) <= set(CANDIDATES), row["ops"]
        assert len(row["alpha"]) == EDGES and all(len(e) == 5 for e in row["alpha"])
        assert f"| {method} |" in proc.stdout
    for method in METHODS - {"random"}:  # Adam moves every logit with a non-zero gradient
        assert table[method][0]["alpha_change"] > 0.05, (method, table[method][0])
