"""The student edition: the same sources, built with every solution removed.

Solution material is marked once in the sources:

* code cells tagged ``solution`` (the assignments' reference answers);
* directive blocks with the class ``solution``, e.g. a chapter's
  ``:::{admonition} Solutions`` box with ``:class: dropdown solution``;
* any cell tagged ``solution`` (markdown too) is dropped whole.

With ``DPLAB_EDITION=student`` in the environment (``make book-student``; the config value
``dplab_edition`` takes it as its default) this extension

1. removes those nodes from every doctree right after it is read, before Sphinx collects its
   images and search index: myst-nb marks a code cell's container with the class
   ``tag_<tag>``, a directive's ``:class:`` lands on its node. Execution is untouched, so both
   editions share the jupyter-cache (its key includes cell metadata, which is not changed);
2. rewrites the copies of the sources under ``_sources/`` (the page's download button) with
   :func:`student_notebook` / :func:`strip_solution_blocks`, so no solution ships there either.

The normal build (``make book``, no ``DPLAB_EDITION``) is unchanged.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from docutils import nodes
from sphinx.errors import ConfigError

EDITIONS = ("book", "student")
TAG = "solution"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>:{3,}|`{3,})\s*\{[^}]+\}")
_CLASS = re.compile(r"^\s*:?class:\s*(?P<classes>.*)$")


def _is_solution_cell(cell: dict) -> bool:
    return TAG in (cell.get("metadata") or {}).get("tags", [])


def strip_solution_blocks(text: str) -> str:
    """``text`` (MyST markdown) without the directive blocks whose ``:class:`` has ``solution``.

    A block runs from its opening fence (``:::{name}`` or ````` ```{name} `````) to the first
    line holding only a fence of the same character at least as long (MyST's rule, so nested
    blocks with shorter fences stay inside it). Its options are the ``:key: value`` lines after
    the fence, or a ``---`` YAML block there.

    Example:
        >>> strip_solution_blocks("a\\n:::{admonition} S\\n:class: dropdown solution\\nx\\n:::\\nb\\n")
        'a\\nb\\n'
    """
    lines = text.splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            fence = m.group("fence")
            j, classes = i + 1, []
            if j < len(lines) and lines[j].strip() == "---":
                end_yaml = next((k for k in range(j + 1, len(lines)) if lines[k].strip() == "---"), j)
                options, j = lines[j + 1:end_yaml], end_yaml + 1
            else:
                while j < len(lines) and lines[j].lstrip().startswith(":") and not lines[j].lstrip().startswith(fence[0] * 3):
                    j += 1
                options = lines[i + 1:j]
            for line in options:
                c = _CLASS.match(line)
                if c:
                    classes += c.group("classes").split()
            if TAG in classes:
                close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
                end = next((k for k in range(j, len(lines)) if close.match(lines[k])), len(lines) - 1)
                i = end + 1
                continue
        out.append(lines[i])
        i += 1
    return "".join(out)


def student_notebook(nb: dict) -> dict:
    """A copy of a notebook (nbformat JSON) for students: cells tagged ``solution`` dropped,
    solution blocks stripped from the markdown cells (a cell left empty is dropped too);
    everything else as it was.

    Example:
        >>> nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": "x = 1"},
        ...                 {"cell_type": "code", "metadata": {}, "source": "x = None  # TODO"}]}
        >>> [c["source"] for c in student_notebook(nb)["cells"]]
        ['x = None  # TODO']
    """
    cells = []
    for cell in nb.get("cells", []):
        if _is_solution_cell(cell):
            continue
        cell = dict(cell)
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            text = source if isinstance(source, str) else "".join(source)
            stripped = strip_solution_blocks(text)
            if stripped != text:
                if not stripped.strip():
                    continue                      # the cell held only solutions
                cell["source"] = stripped.splitlines(keepends=True) if isinstance(source, list) else stripped
        cells.append(cell)
    return {**nb, "cells": cells}


def _solution_nodes(doctree) -> list:
    found = []
    for node in doctree.findall(nodes.Element):
        classes = node.get("classes", [])
        if TAG in classes or f"tag_{TAG}" in classes:
            found.append(node)
    return found


def _remove_solutions(app, doctree) -> None:
    if app.config.dplab_edition != "student":
        return
    for node in _solution_nodes(doctree):
        if node.parent is not None:
            node.parent.remove(node)


def _strip_sources(app, exception) -> None:
    if exception is not None or app.config.dplab_edition != "student":
        return
    sources = Path(app.outdir) / "_sources"
    for path in sources.rglob("*") if sources.is_dir() else []:
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text(encoding="utf-8"))
            path.write_text(json.dumps(student_notebook(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        elif path.suffix in (".md", ".txt"):
            path.write_text(strip_solution_blocks(path.read_text(encoding="utf-8")), encoding="utf-8")


def _check_edition(app, config) -> None:
    if config.dplab_edition not in EDITIONS:
        raise ConfigError(f"dplab_edition (or $DPLAB_EDITION) must be one of {', '.join(EDITIONS)}, "
                          f"got {config.dplab_edition!r}; `make book-student` sets it to 'student'")


def setup(app):
    app.add_config_value("dplab_edition", os.environ.get("DPLAB_EDITION", "book"), "env")
    app.connect("config-inited", _check_edition)
    # Before Sphinx's own collectors (images, search index) see the doctree.
    app.connect("doctree-read", _remove_solutions, priority=100)
    app.connect("build-finished", _strip_sources)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
