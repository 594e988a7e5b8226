"""Small fixes to the HTML that jupyter-book 1.x writes, for pages with no console errors.

1. sphinx-thebe (always loaded by jupyter-book, even with live code off) registers its inline
   configuration script twice; the second copy throws "Identifier 'THEBE_JS_URL' has already
   been declared". We keep the first copy of each identical inline script.
2. ipywidgets' html-manager calls the MathJax 2 API to typeset widget labels, but the book
   loads MathJax 3. On pages that load MathJax we insert ``static/mathjax2-shim.js`` right
   before MathJax (after Sphinx's inline ``window.MathJax`` config).
"""

from pathlib import Path

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


def setup(app):
    app.connect("config-inited", _add_static_path)
    app.connect("html-page-context", _fix_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
