"""Every ```python block of the README runs as written (so the README cannot rot); the
multilevel block's ``STEPS = 3000`` and the Betty block's ``train_iters=800`` are the lines a
test shortens."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_its_four_python_blocks():
    assert len(BLOCKS) == 4


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs(i, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the blocks may write runs/ and ckpt/
    code = BLOCKS[i]
    if "STEPS = 3000" in code:
        code = code.replace("STEPS = 3000", "STEPS = 4")
    if "train_iters=800" in code:  # the Betty program: 10 steps of it
        code = code.replace("train_iters=800", "train_iters=10")
    scope: dict = {}
    exec(compile(code, f"README.md block {i}", "exec"), scope)
    if "mlo.init([lo, hi]" in code:  # the functional-API block prints what it says it does
        assert capsys.readouterr().out.splitlines() == ["tensor([1., 1., 1.])",
                                                        "torch.Size([8])"]
    if "engine" in scope:  # the Betty block ran its steps on the front end
        assert scope["engine"].classifier.count == 10 and scope["engine"].reweight.count == 10
        assert capsys.readouterr().out.startswith("test accuracy 0.")
    if "result" in scope:  # the multilevel block: it ran its steps, validated, logged
        r = scope["result"]
        assert r.step == 4 and len(r.history["reweight/grad_norm"]) == 1
        assert "validation/accuracy" not in r.history  # every=100: not reached in 4 steps
        assert (tmp_path / "runs" / "mwn").is_dir()
