"""The ```python examples of README.md and docs/backends.md run exactly as written.

Every ```python fenced block is a test case of its own, named ``<file>:<line>`` after the
line of its opening fence.  Each block runs as a script in a fresh child process
(``sys.executable``, through :func:`conftest.run_python`), so blocks share no state,
thread settings made by one do not leak into the others, and an
``if __name__ == "__main__":`` guard works as it does for a user.  A block that raises
(an assertion included) fails with its file, line and first line in the message, and
the child's stderr.

Skips:

- A block that imports an optional module (``torch``, ``dask``, ``distributed``,
  ``sklearn``, ``matplotlib``; ``cyconv.torch`` and ``cyconv.dask`` count as ``torch``
  and ``dask``) is skipped with :func:`pytest.importorskip` when that module is not
  importable here.
- A block that is a deliberate fragment, not a complete program, is marked with the
  HTML comment ``<!-- not-run -->`` alone on the line right before its opening fence
  (invisible on the rendered page).  It is reported as skipped, never run.

Blocks in other languages (```bash, ```sh, ...) are not run.
"""
from __future__ import annotations

import ast
import os
import re

import pytest

from conftest import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", os.path.join("docs", "backends.md")]
NOT_RUN_MARKER = "<!-- not-run -->"
OPTIONAL = ("torch", "dask", "distributed", "sklearn", "matplotlib")
TIMEOUT = 300     # seconds per block; a hang fails the test

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def python_blocks(path):
    """``(line, code, marked_not_run)`` for each ```python block of the file at ``path``.

    ``line`` is the 1-based line of the opening fence; the block's indentation (as in
    a list item) is removed.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang.lower() in ("python", "py", "python3"):
            body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:j]]
            marked = i > 0 and lines[i - 1].strip() == NOT_RUN_MARKER
            blocks.append((i + 1, "\n".join(body) + "\n", marked))
        i = j + 1
    return blocks


def optional_imports(code):
    """The optional modules (from ``OPTIONAL``) that ``code`` imports, in order."""
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            if node.module == "cyconv":   # from cyconv import torch
                names += [f"cyconv.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        for module in _needs(name):
            if module not in found:
                found.append(module)
    return found


def _needs(name):
    """The optional modules that importing module ``name`` needs."""
    parts = name.split(".")
    if parts[0] == "cyconv":
        parts = parts[1:2]               # cyconv.torch needs torch, cyconv.dask dask
    needs = parts[:1]
    if parts[:2] == ["dask", "distributed"]:
        needs.append("distributed")      # dask.distributed is the distributed package
    return [module for module in needs if module in OPTIONAL]


def _cases():
    cases = []
    for doc in DOCS:
        for line, code, marked in python_blocks(os.path.join(ROOT, doc)):
            doc_id = doc.replace(os.sep, "/")
            cases.append(pytest.param(doc_id, line, code, marked, id=f"{doc_id}:{line}"))
    return cases


def test_docs_have_python_blocks():
    """The parser finds the README's examples, including the PyTorch and Dask ones."""
    codes = [code for _, code, _ in python_blocks(os.path.join(ROOT, "README.md"))]
    assert len(codes) >= 4
    assert any("cyconv.torch" in code for code in codes)
    assert any("cyconv.dask" in code for code in codes)


@pytest.mark.parametrize("doc, line, code, marked", _cases())
def test_doc_example_runs(doc, line, code, marked, tmp_path):
    first = next((ln for ln in code.splitlines() if ln.strip()), "")
    if marked:
        pytest.skip(f"{doc}:{line} is marked {NOT_RUN_MARKER}")
    for module in optional_imports(code):
        pytest.importorskip(module)
    script = tmp_path / f"example_line{line}.py"
    script.write_text(code, encoding="utf-8")
    proc = run_python([str(script)], timeout=TIMEOUT, env={"MPLBACKEND": "Agg"})
    if proc.returncode != 0:
        pytest.fail(f"{doc}:{line}: the example starting {first!r} failed "
                    f"(exit status {proc.returncode}):\n{proc.stderr[-4000:]}",
                    pytrace=False)
