"""Small fixes to the HTML that jupyter-book 1.x writes, for pages with no console errors.

1. sphinx-thebe (always loaded by jupyter-book, even with live code off) registers its inline
   configuration script twice; the second copy throws "Identifier 'THEBE_JS_URL' has already
   been declared". We keep the first copy of each identical inline script.
2. ipywidgets' html-manager calls the MathJax 2 API to typeset widget labels, but the book
   loads MathJax 3. On pages that load MathJax we insert ``static/mathjax2-shim.js`` right
   before MathJax (after Sphinx's inline ``window.MathJax`` config).
3. Sphinx reads (and so myst-nb executes) documents in alphabetical order. The comparison
   chapter reuses the weights the network chapters saved, so documents are read in the
   order of ``_toc.yml`` instead (Sphinx's ``env-before-read-docs`` allows reordering).
4. ``static/dplab.css``: wide tables scroll sideways instead of being cut off, one line per cell.
"""

from pathlib import Path

import yaml
from sphinx.builders.html._assets import _JavaScript

STATIC = Path(__file__).parent / "static"
SHIM = "_static/mathjax2-shim.js"


def _add_static_path(app, config):
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def _fix_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body")
        if body:
            if body in seen:
                continue
            seen.add(body)
        kept.append(script)
    mathjax = [i for i, s in enumerate(kept) if "mathjax/" in str(s) and str(s) != SHIM]
    if mathjax and SHIM not in map(str, kept):
        kept.insert(mathjax[0], _JavaScript(SHIM))
    context["script_files"] = kept


def toc_order(toc: dict) -> list[str]:
    """Docnames of a jupyter-book ``_toc.yml`` (root first), in reading order, without suffix."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    found.append(str(Path(node[key]).with_suffix("")))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _read_in_toc_order(app, env, docnames):
    toc_path = Path(app.srcdir) / getattr(app.config, "external_toc_path", "_toc.yml")
    if not toc_path.is_file():
        return
    rank = {name: i for i, name in enumerate(toc_order(yaml.safe_load(toc_path.read_text())))}
    docnames.sort(key=lambda name: (rank.get(name, len(rank)), name))


def setup(app):
    app.connect("env-before-read-docs", _read_in_toc_order)
    app.connect("config-inited", _add_static_path)
    app.connect("html-page-context", _fix_scripts, priority=900)
    app.add_css_file("dplab.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
