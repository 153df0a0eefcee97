"""The documentation site (``docs/``): it builds with no warning, every public name has a
docstring, and every ```python block of the guides runs as written.

1. ``sphinx-build -W --keep-going -n`` into a temporary folder: a reST error in a docstring or
   an unresolved reference fails the test with Sphinx's messages. Skipped when Sphinx is not
   installed (``pip install -e ".[docs]"``), except under CI (``CI`` set), where it fails.
2. Every name in the ``__all__`` of every public module (and of the modules those list, as
   ``betty_func.betty``'s ``configs`` / ``engine`` / ...) has a docstring of its own: a
   function's, a module's, a class's own ``__doc__`` (not the signature that ``NamedTuple`` and
   ``dataclass`` write when there is none). Values that cannot carry one (a version string) must
   be listed in ``CONSTANTS``, so a new constant in an ``__all__`` is a decision, not an
   accident.
3. The ```python blocks of ``docs/index.md`` and of each ``docs/guides/*.md`` page run in order
   in one fresh namespace per page, in a temporary working directory, within ``TIMEOUT_S``. A
   ```text block right after a ```python block (blank lines between at most) is what that
   block prints, compared exactly. Code meant for another process (a ``torchrun`` script) is
   shown in a ```{code-block} python directive instead, which is not run.
"""
import contextlib
import dataclasses
import importlib
import inspect
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = sorted((DOCS / "guides").glob("*.md"))
PAGES = [DOCS / "index.md", *GUIDES]
PUBLIC = ["betty_func", "betty_func.hypergrad", "betty_func.mlo", "betty_func.optim",
          "betty_func.linsolve", "betty_func.tree", "betty_func.nn", "betty_func.testing",
          "betty_func.data", "betty_func.logging", "betty_func.betty"]
# (module, name) pairs in an __all__ that hold a plain value, documented in the module's text
CONSTANTS = {("betty_func", "__version__"), ("betty_func.betty", "__version__")}
TIMEOUT_S = 180
BLOCK = re.compile(r"```python\n(.*?)```[ \t]*\n(?:[ \t]*\n)*(?:```text\n(.*?)```)?", re.S)


# -- 1. the build --------------------------------------------------------------------------------

def test_the_docs_build_without_warnings(tmp_path):
    try:
        import sphinx  # noqa: F401
        import furo  # noqa: F401
        import myst_parser  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the docs extra (pip install -e '.[docs]'): {e}")
        pytest.skip(f"sphinx, furo and myst-parser are not installed "
                    f"(pip install -e '.[docs]'): {e}")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx-build failed:\n{run.stderr}\n{run.stdout[-4000:]}"
    assert (tmp_path / "html" / "index.html").is_file()
    for module in PUBLIC[1:]:
        assert (tmp_path / "html" / "api" / "generated" / f"{module}.html").is_file(), module


# -- 2. docstrings -------------------------------------------------------------------------------

def _auto_doc(cls):
    """The docstring ``NamedTuple`` / ``dataclass`` generate for a class that has none."""
    if hasattr(cls, "_fields"):  # collections.namedtuple's text: "P(a, b)", "P(a,)"
        fields = repr(tuple(cls._fields)).replace("'", "")[1:-1]
        return f"{cls.__name__}({fields})"
    if dataclasses.is_dataclass(cls):
        try:
            return cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            return None
    return None


def _own_doc(obj):
    if inspect.ismodule(obj) or inspect.isroutine(obj):
        return obj.__doc__
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        return None if doc == _auto_doc(obj) else doc
    return None  # a value: its __doc__ is its type's


def _public_names():
    seen, out, todo = set(), [], list(PUBLIC)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        for attr in module.__all__:
            obj = getattr(module, attr)  # a name in __all__ that is not there fails here
            out.append((name, attr, obj))
            if inspect.ismodule(obj):
                todo.append(obj.__name__)
    return out


def test_every_public_name_has_a_docstring():
    missing = [f"{module}.{attr}" for module, attr, obj in _public_names()
               if (module, attr) not in CONSTANTS and not (_own_doc(obj) or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"


def test_the_constants_listed_are_still_public():
    public = {(module, attr) for module, attr, _ in _public_names()}
    assert CONSTANTS <= public, CONSTANTS - public


# -- 3. the guides' code -------------------------------------------------------------------------

def test_the_guides_have_code():
    assert len(GUIDES) >= 8, GUIDES
    assert sum(len(BLOCK.findall(page.read_text())) for page in PAGES) >= 15


@contextlib.contextmanager
def _time_limit(seconds, what):
    def expire(signum, frame):
        raise TimeoutError(f"{what} ran past {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_guide_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks may write runs/ and checkpoints
    scope: dict = {}
    with _time_limit(TIMEOUT_S, page.name):
        for i, (code, expected) in enumerate(BLOCK.findall(page.read_text())):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"{page.relative_to(ROOT)} block {i}", "exec"), scope)
            if expected:
                assert out.getvalue().rstrip() == expected.rstrip(), (
                    f"{page.name} block {i} printed\n{out.getvalue()}")
