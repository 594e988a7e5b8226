"""The book is executed in table-of-contents order (book/_ext/dplab_sphinx.py).

Sphinx reads documents alphabetically, and myst-nb executes each notebook when it is read;
the comparison chapter must run after the network chapters whose weights it reuses.
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import dplab_sphinx  # noqa: E402


def test_toc_order_lists_root_then_chapters_in_reading_order():
    toc = {"root": "book/intro", "parts": [
        {"caption": "A", "chapters": [{"file": "book/zeta.ipynb"}, {"file": "book/alpha"}]},
        {"caption": "B", "chapters": [{"file": "book/mid", "sections": [{"file": "book/sub"}]}]}]}
    assert dplab_sphinx.toc_order(toc) == ["book/intro", "book/zeta", "book/alpha", "book/mid", "book/sub"]


def test_docnames_are_reordered_in_place_with_unlisted_documents_last(tmp_path):
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(
        {"root": "book/intro", "chapters": [{"file": "book/mdp"}, {"file": "book/benchmark"}]}))
    app = SimpleNamespace(srcdir=str(tmp_path), config=SimpleNamespace(external_toc_path="_toc.yml"))
    docnames = sorted(["book/benchmark", "book/extra", "book/intro", "book/mdp"])
    dplab_sphinx._read_in_toc_order(app, None, docnames)
    assert docnames == ["book/intro", "book/mdp", "book/benchmark", "book/extra"]


def test_comparison_chapter_is_read_after_every_network_chapter():
    order = dplab_sphinx.toc_order(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    assert all(order.index("book/benchmark") > order.index(f"book/{c}")
               for c in ("dpdnet", "rdpd", "drbnet", "mdp", "mpi_defocus"))
    assert sorted(order) != order  # alphabetical order would run the benchmark first
