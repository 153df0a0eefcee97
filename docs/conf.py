"""Sphinx configuration for betty_func's documentation.

Build (warnings are errors, unresolved references fail)::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

Nothing is downloaded at build time: no intersphinx, so references to torch and typing names
that cannot resolve offline are listed, narrowly, in ``nitpick_ignore`` below. MathJax is loaded
by the reader's browser.
"""
import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))  # an uninstalled checkout builds too

import betty_func  # noqa: E402

project = "betty_func"
author = "betty_func contributors"
copyright = "betty_func contributors, Apache-2.0"
version = release = betty_func.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# -- API reference: one page per public module, its members read from its ``__all__`` --------
autosummary_generate = True
autosummary_ignore_module_all = False   # a module's page lists exactly its __all__
autosummary_imported_members = True     # names are defined in private submodules, re-exported
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"       # with __all__: the order of __all__
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "class"
add_module_names = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# -- Nitpicky references that cannot resolve offline (no intersphinx) --------------------------
nitpicky = True
nitpick_ignore = [
    # the standard library and torch under the names the annotations use
    ("py:class", "os.PathLike"),
    ("py:class", "pathlib.Path"),
    ("py:class", "nn.Module"),             # torch.nn.Module, imported as nn
    # type aliases of private modules, shown by name in signatures (Callable / Union / Any)
    ("py:class", "Loss"),                  # hypergrad._inner: Callable[..., Any]
    ("py:class", "Multiplier"),            # hypergrad._penalty: float | schedule
    ("py:class", "Run"),                   # linsolve._base: the solver's loop
    ("py:class", "Hook"),                  # logging._callback: an optional callable
]
nitpick_ignore_regex = [
    # classes of private modules that public signatures name but no __all__ exports
    # (testing._benchopt.QuadTerms, hypergrad._hvp.LinearizedMatVec, ...); one that is public
    # under another name is resolved by _resolve_betty_func below and never reaches this list
    (r"py:class", r"betty_func(\.[a-z]\w*)*\._\w+\.[A-Z]\w*"),
    # torch is not documented here (no intersphinx): torch.Tensor, torch.nn.Module, ...
    (r"py:.*", r"torch(\..*)?"),
]

# The docstrings name things as the library is imported (``hypergrad.grad``, ``linsolve.cg``,
# ``mlo.Problem``) and the annotations by their import aliases (``ls.LinearSolver``) or by a
# submodule path (``betty_func.betty.configs.Config``). Resolve such a reference to the page
# that documents the same object; one that names no documented object still fails. A bare name
# that Sphinx cannot place (``:class:`Logger``` of a module's docstring, shown in the API
# index's table, outside its module) resolves only if exactly one documented object has it.
ALIASES = {"ls": "betty_func.linsolve", "_optim": "betty_func.optim", "hg": "betty_func.hypergrad",
           "bnn": "betty_func.nn"}


def _lookup(dotted):
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - not a module: try a shorter prefix
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


_DOCUMENTED: dict = {}  # id(object) -> the name it is documented under, for this build


def _documented(env):
    if not _DOCUMENTED:
        for fullname, entry in sorted(env.get_domain("py").objects.items()):
            if getattr(entry, "aliased", False) or not fullname.startswith("betty_func"):
                continue
            obj = _lookup(fullname)
            if obj is not None and not isinstance(obj, (str, int, float, bool, type(None))):
                _DOCUMENTED.setdefault(id(obj), fullname)
    return _DOCUMENTED


def _resolve_betty_func(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    head, _, rest = target.partition(".")
    candidates = [target, f"betty_func.{target}"]
    if head in ALIASES and rest:
        candidates.append(f"{ALIASES[head]}.{rest}")
    for candidate in candidates:
        if not candidate.startswith("betty_func"):
            continue
        obj = _lookup(candidate)
        name = _documented(env).get(id(obj)) if obj is not None else None
        if name is not None:
            return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                                     node["reftype"], name, node, contnode)
    if "." not in target:
        same = sorted({n for n in _documented(env).values() if n.rsplit(".", 1)[-1] == target})
        if len(same) == 1:
            return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                                     node["reftype"], same[0], node, contnode)
    return None


# -- HTML ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"betty_func {release}"
html_static_path = ["_static"]
html_show_sourcelink = False


def _no_field_alias(app, what, name, obj, options, lines):
    """A ``NamedTuple`` field without a ``#:`` comment: no text rather than 'Alias for field
    number 2'."""
    if len(lines) == 1 and re.fullmatch(r"Alias for field number \d+", lines[0]):
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _no_field_alias)
    app.connect("env-updated", lambda app, env: _DOCUMENTED.clear())  # read: names are final
    app.connect("missing-reference", _resolve_betty_func)
