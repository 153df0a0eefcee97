"""Smoke tests: each example runs end to end in --quick mode and writes its JSON table."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    """Run ``examples/<script> --quick --json ...``; return its results table and stdout."""
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick",
                           "--json", str(out), *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())["results"], proc.stdout


def test_hpo_logreg_quick(tmp_path):
    table, stdout = run_quick("hpo_logreg.py", tmp_path)
    assert set(table) == {"grid-searched single decay", "learned single decay", "learned per-pixel decay"}
    for rows in table.values():
        assert all(0.5 < r["test_acc"] <= 1.0 for r in rows)
    assert "| learned per-pixel decay |" in stdout


def test_data_reweighting_quick(tmp_path):
    table, _ = run_quick("data_reweighting.py", tmp_path, "--logdir", str(tmp_path / "tb"))
    assert set(table) == {"baseline", "darts", "cg", "neumann"}
    assert all(0.0 < r["test_acc"] <= 1.0 for rows in table.values() for r in rows)
    assert any((tmp_path / "tb").iterdir())  # TensorBoard logs were written


def test_data_reweighting_under_torchrun_on_two_processes(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           str(ROOT / "examples" / "data_reweighting.py"), "--quick", "--methods",
                           "cg", "--logdir", str(tmp_path / "tb"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and 0.0 < res["results"]["cg"][0]["test_acc"] <= 1.0
    assert proc.stdout.count("| cg |") == 1  # rank 0 alone prints
    assert len(list((tmp_path / "tb").iterdir())) == 1  # and writes TensorBoard logs


def test_hpo_weight_decay_quick(tmp_path):
    table, _ = run_quick("hpo_weight_decay.py", tmp_path, "--logdir", "")
    rows = table["learned per-parameter decay (cg)"]
    assert rows[0]["decay_min"] >= 0.0  # projected onto decay >= 0
    assert abs(rows[0]["decay_mean"] - 5e-4) > 1e-6  # and they moved from the initial 5e-4


def test_maml_quick(tmp_path):
    rows, _ = run_quick("maml.py", tmp_path, "--logdir", "")
    assert {r["method"] for r in rows} == {"maml", "fomaml", "imaml"}
    assert all(0.0 < r["acc"] <= 1.0 and r["ci95"] > 0 for r in rows)


def test_three_level_quick(tmp_path):
    table, stdout = run_quick("three_level.py", tmp_path, "--logdir", "")
    assert set(table) == {"classifier", "decay>classifier", "weights>classifier",
                          "(weights, decay)>classifier", "weights>decay>classifier"}
    assert table["classifier"][0]["decay"] == pytest.approx(5e-4)
    top = table["weights>decay>classifier"][0]
    assert top["decay"] != pytest.approx(5e-4, rel=1e-3)  # the middle level moved
    assert 0.0 < top["weight_clean"] < 1.0 and 0.0 < top["weight_noisy"] < 1.0
    assert "| weights>decay>classifier |" in stdout


def test_bundled_data_and_missing_path(tmp_path):
    from betty_func.data import mnist10k
    X, y = mnist10k()
    assert X.shape == (10000, 784) and float(X.max()) == 1.0 and int(y.bincount()[5]) == 863
    with pytest.raises(FileNotFoundError, match=r"data\.mnist10k\(path\): no file at '.*nope\.npz'"):
        mnist10k(tmp_path / "nope.npz")
