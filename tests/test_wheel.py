"""The package as users meet it: the wheel and sdist ``python -m build`` makes carry the type
marker and the bundled data, and the wheel, installed into a fresh virtual environment (no
system site packages, so not the editable install), imports, loads the bundled MNIST and runs
an example from outside the repository."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import betty_func

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("betty_func/py.typed", "betty_func/data/mnist10k.npz",
           "betty_func/data/DATA_CREDITS.md")
# not part of a build: the source tree is copied without them (another run's build, caches)
_SKIP = (".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__",
         "*.egg-info", "build", "dist", "runs", "_build")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, sdist), built from a copy of the source tree, so that the build's egg-info is
    not written into the working tree while other runs use it. ``--no-isolation``: the
    environment's setuptools (3 s, against 9 s resolving one for an isolated build)."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("build")
    src, out = tmp / "src", tmp / "dist"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_SKIP))
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-o", str(out),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return wheels[0], sdists[0]


def test_version_single_source():
    # the installed metadata is written at install time: after changing __version__,
    # reinstall (pip install -e .)
    assert betty_func.__version__ == importlib.metadata.version("betty-func")


def test_wheel_contents(built):
    wheel, _ = built
    assert wheel.name == f"betty_func-{betty_func.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"betty_func-{betty_func.__version__}.dist-info/METADATA").decode()
    assert set(SHIPPED) <= names, sorted(set(SHIPPED) - names)
    assert f"\nVersion: {betty_func.__version__}\n" in meta
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)


def test_sdist_contents(built):
    _, sdist = built
    top = f"betty_func-{betty_func.__version__}/"
    with tarfile.open(sdist) as t:
        names = {n[len(top):] for n in t.getnames() if n.startswith(top)}
    assert set(SHIPPED) <= names, sorted(set(SHIPPED) - names)
    # what the sdist's tests need to run (MANIFEST.in)
    assert {"tests/conftest.py", "tests/_betty_small.py", "examples/hpo_logreg.py",
            "benchmarks/run.py", "docs/conf.py", "pyproject.toml", "README.md"} <= names
    assert not any(n.endswith(".pyc") or n.startswith("docs/_build/") for n in names)


_PROGRAM = r"""
import importlib.metadata, importlib.resources, json, sys
import betty_func
from betty_func.data import mnist10k
X, y = mnist10k()
print(json.dumps({
    "file": betty_func.__file__, "version": betty_func.__version__,
    "metadata": importlib.metadata.version("betty-func"),
    "typed": (importlib.resources.files("betty_func") / "py.typed").is_file(),
    "shape": list(X.shape), "labels": sorted(set(y.tolist())),
}))
"""


@pytest.mark.slow
def test_installed_wheel_runs(built, tmp_path):
    """1.5-2.5 min on 2 busy cores: torch's install (~30 s from the local wheel) and the
    example's run (~50 s) dominate. Needs the running torch's version installable (here: the
    local wheel cache) and the dependencies from the package index."""
    wheel, sdist = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-compile", "-q"]
    # the running torch, so that pip takes it from the local wheel cache when it has it
    for target in ([f"torch=={torch.__version__}"], [str(wheel)]):
        proc = subprocess.run(pip + target, capture_output=True, text=True, env=env,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"  # outside the repository: nothing there to import by accident
    run.mkdir()
    proc = subprocess.run([str(py), "-c", _PROGRAM], cwd=run, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(venv.resolve()), got["file"]
    assert not Path(got["file"]).resolve().is_relative_to(ROOT), got["file"]
    assert got["version"] == got["metadata"] == betty_func.__version__
    assert got["typed"] and got["shape"] == [10000, 784] and got["labels"] == list(range(10))
    # an example, as the sdist ships it, against the installed wheel
    with tarfile.open(sdist) as t:
        for name in ("hpo_logreg.py", "_machine.py"):  # the example and its --device/--plot helper
            member = t.getmember(f"betty_func-{betty_func.__version__}/examples/{name}")
            (run / name).write_bytes(t.extractfile(member).read())
    out = run / "result.json"
    proc = subprocess.run([str(py), "hpo_logreg.py", "--quick", "--json", str(out)], cwd=run,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads(out.read_text())["results"]
    assert all(0.5 < r["test_acc"] <= 1.0 for rows in table.values() for r in rows)
