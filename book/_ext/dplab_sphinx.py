"""Small fixes to the HTML that jupyter-book 1.x writes, for a page with no console errors.

sphinx-thebe (always loaded by jupyter-book, even with live code off) registers its inline
configuration script twice, and the second copy throws "Identifier 'THEBE_JS_URL' has already
been declared" in every page. We keep the first copy of each identical inline script.
"""


def _dedupe_inline_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body") if hasattr(script, "attributes") else None
        if body:
            if body in seen:
                continue
            seen.add(body)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe_inline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
