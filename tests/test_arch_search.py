"""Smoke test of examples/architecture_search.py (DARTS): every row is there, the derived cells
are well formed, and the searches moved α."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"first-order", "second-order", "sama", "random"}
EDGES, CANDIDATES = 6, ("skip", "max_pool_3x3", "conv_3x3", "conv_5x5")  # zero is never derived


def test_architecture_search_quick(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "architecture_search.py"),
                           "--quick", "--json", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads(out.read_text())["results"]
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
