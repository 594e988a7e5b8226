"""The student edition (book/_ext/dplab_student.py, ``make book-student``): every solution is
marked in the sources, and the edition removes it from the notebooks and from the built HTML.

The notebook-level filter is checked on every document of the book; the Sphinx side on a tiny
jupyter-book project built twice (student edition and book), which takes seconds. The full
book's student edition is built and opened in a browser by tests/test_book.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from sphinx.errors import ConfigError

from harness import ROOT, toc_documents

EXT = ROOT / "book" / "_ext"
sys.path.insert(0, str(EXT))
from dplab_student import _check_edition, strip_solution_blocks, student_notebook  # noqa: E402

JB = Path(sys.executable).with_name("jupyter-book")
_SOLUTIONS_BOX = re.compile(r"^(:{3,}|`{3,})\{admonition\}\s*Solutions", re.MULTILINE)


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text, tags=(), outputs=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)} if tags else {}, "source": text,
            "execution_count": None, "outputs": list(outputs)}


def test_solution_blocks_are_cut_from_their_fence_to_its_close():
    text = ("keep 1\n"
            ":::{admonition} Solutions\n:class: dropdown solution\n\n1. x\n:::\n"
            "keep 2\n"
            "::::{admonition} Hint\n:class: dropdown\nkeep 3\n::::\n"
            "````{admonition} Nested\n:class: solution\n```python\ncode\n```\nstill inside\n````\n"
            "keep 4\n")
    assert strip_solution_blocks(text) == "keep 1\nkeep 2\n::::{admonition} Hint\n:class: dropdown\nkeep 3\n::::\nkeep 4\n"
    assert strip_solution_blocks("a\n:::{note}\n:class: solution-like\nb\n:::\n") == "a\n:::{note}\n:class: solution-like\nb\n:::\n"
    assert strip_solution_blocks("a\n:::{note}\n:class: solution\nno close\n") == "a\n"
    assert strip_solution_blocks("a\n```{admonition} S\n---\nclass: dropdown solution\n---\nx\n```\nb\n") == "a\nb\n"


def test_student_notebook_drops_tagged_cells_and_boxes_and_keeps_the_rest():
    nb = {"metadata": {"k": 1}, "nbformat": 4, "cells": [
        _md("# Title\n"), _code("x = None  # TODO\n"), _code("x = 42\n", ["solution", "hide-input"]),
        _md(["text\n", ":::{admonition} Solutions\n", ":class: dropdown solution\n", "x = 42\n", ":::\n"]),
        {**_md("secret prose\n"), "metadata": {"tags": ["solution"]}},
        _md(":::{admonition} Discussion\n:class: solution\nsecret\n:::\n")]}
    original = json.dumps(nb)
    student = student_notebook(nb)
    assert json.dumps(nb) == original, "the input notebook must not change"
    assert [c["source"] for c in student["cells"]] == ["# Title\n", "x = None  # TODO\n", ["text\n"]]
    assert student["metadata"] == nb["metadata"] and student["nbformat"] == 4


def _notebook_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _text(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"])


@pytest.mark.parametrize("doc", [d for d in toc_documents() if d.suffix == ".ipynb"], ids=lambda p: p.stem)
def test_every_solution_in_the_sources_is_marked_and_removed(doc):
    nb = _notebook_json(doc)
    for cell in nb["cells"]:
        for m in _SOLUTIONS_BOX.finditer("".join(cell["source"])):
            options = "".join(cell["source"])[m.end():].split("\n", 2)[1]
            assert re.match(r":class:.*\bsolution\b", options), (
                f"{doc.name}: a Solutions box without ':class: dropdown solution' would stay in the student edition")
    student = student_notebook(nb)
    assert not _SOLUTIONS_BOX.search(_text(student)), f"{doc.name}: a Solutions box survived"
    assert not any("solution" in c["metadata"].get("tags", []) for c in student["cells"])
    assert not re.search(r":class:.*\bsolution\b", _text(student))


def test_assignments_keep_their_todos_and_lose_their_answers():
    for path in sorted((ROOT / "book" / "assignments").glob("*.ipynb")):
        nb = _notebook_json(path)
        student = _text(student_notebook(nb))
        solutions = [c for c in nb["cells"] if "solution" in c["metadata"].get("tags", [])]
        code = [c for c in student_notebook(nb)["cells"] if c["cell_type"] == "code"]
        assert solutions and len(code) == sum(c["cell_type"] == "code" for c in nb["cells"]) - len(solutions)
        assert student.count("# TODO") == _text(nb).count("# TODO") > 0
        assert "Discussion of the answers" in _text(nb) and "Discussion of the answers" not in student


def test_an_unknown_edition_is_refused():
    _check_edition(None, SimpleNamespace(dplab_edition="student"))
    with pytest.raises(ConfigError, match="DPLAB_EDITION"):
        _check_edition(None, SimpleNamespace(dplab_edition="teacher"))


# ----------------------------------------------------------------------------- a tiny book
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _tiny_book(root: Path) -> None:
    root.mkdir()
    (root / "_config.yml").write_text(yaml.safe_dump({
        "title": "tiny", "only_build_toc_files": True, "execute": {"execute_notebooks": "off"},
        "parse": {"myst_enable_extensions": ["colon_fence"]},
        "sphinx": {"local_extensions": {"dplab_student": str(EXT)}}}))
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "index",
                                                   "chapters": [{"file": "page"}]}))
    (root / "index.md").write_text("# Index\n\nSee {doc}`page`.\n")
    nb = {"metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5,
          "cells": [
              _md("# Page\n\nVISIBLE-PROSE\n"),
              _code("answer = None  # TODO VISIBLE-TODO\n"),
              _code("answer = 'SECRET-CODE'\n", ["solution"], [
                  {"output_type": "stream", "name": "stdout", "text": "SECRET-OUTPUT\n"},
                  {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG, "text/plain": "fig"}}]),
              _md(":::{admonition} Solutions\n:class: dropdown solution\n\nSECRET-BOX\n:::\n\n"
                  ":::{admonition} Hint\n:class: dropdown\n\nVISIBLE-HINT\n:::\n")]}
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"c{i}"
    (root / "page.ipynb").write_text(json.dumps(nb))


def _build(root: Path, out: Path, edition: str | None) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "DPLAB_EDITION"}
    if edition:
        env["DPLAB_EDITION"] = edition
    proc = subprocess.run([str(JB), "build", str(root), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "_build" / "html"


def _all_text(html: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in html.rglob("*")
                     if p.is_file() and p.suffix in (".html", ".js", ".ipynb", ".md", ".txt"))


@pytest.mark.slow
def test_tiny_book_student_edition_has_no_solution_anywhere(tmp_path):
    _tiny_book(tmp_path / "src")
    book = _build(tmp_path / "src", tmp_path / "book", None)
    student = _build(tmp_path / "src", tmp_path / "student", "student")
    everything = _all_text(book)
    for word in ("SECRET-CODE", "SECRET-OUTPUT", "SECRET-BOX", "VISIBLE-PROSE", "VISIBLE-TODO", "VISIBLE-HINT"):
        assert word in everything, f"the book edition lost {word}"
    page = (student / "page.html").read_text()
    for word in ("VISIBLE-PROSE", "VISIBLE-TODO", "VISIBLE-HINT"):
        assert word in page, f"the student edition lost {word}"
    leaked = [w for w in ("SECRET-CODE", "SECRET-OUTPUT", "SECRET-BOX", "tag_solution") if w in _all_text(student)]
    assert not leaked, f"the student edition still holds {leaked} (pages, search index or _sources)"
    assert len(list((book / "_images").glob("*.png"))) == 1
    assert not list((student / "_images").glob("*.png")), "the solution's figure was still copied"
    source = json.loads((student / "_sources" / "page.ipynb").read_text())
    assert [c["id"] for c in source["cells"]] == ["c0", "c1", "c3"]
