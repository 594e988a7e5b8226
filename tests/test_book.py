"""The book builds strictly from the test-profile notebooks and renders offline in a browser.

The build copies the book sources into a temporary folder, swaps every notebook for its
executed test-profile copy (from the session's notebook runs) and builds with execution off
and the strict flags (-W -n --keep-going). The browser test serves the HTML on 127.0.0.1,
opens pages in headless Chromium with every other host unreachable, and checks that math is
typeset by the vendored MathJax and widgets are drawn by the vendored widget manager.
Screenshots land in _build/screenshots/ as build artefacts.

The student edition (``make book-student``: ``DPLAB_EDITION=student``, book/_ext/dplab_student.py)
is built from the same folder, just as strictly, into another output folder; no page, search
index or downloadable source of it may hold a solution, and its assignment pages and first
chapter are opened in the browser too (screenshots in _build/screenshots/student/).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from harness import ROOT, toc_documents

JB = Path(sys.executable).with_name("jupyter-book")
SCREENSHOTS = ROOT / "_build" / "screenshots"


@pytest.fixture(scope="session")
def book_source(tmp_path_factory, notebook_runner) -> Path:
    """The book's sources with every notebook replaced by its executed test-profile copy."""
    src = tmp_path_factory.mktemp("book_src")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("outputs", ".ipynb_checkpoints"))
    for doc in toc_documents():
        if doc.suffix == ".ipynb":
            run = notebook_runner.run(doc)
            if run.error is not None:
                pytest.fail(f"{doc.name} failed under papermill; the book cannot build:\n{run.error}")
            _copy_without_injected_parameters(run.executed, src / doc.relative_to(ROOT))
    config = yaml.safe_load((src / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))  # order matters: require.js first
    return src


def _build(src: Path, path_output: Path, edition: str | None) -> Path:
    """Build strictly into ``path_output/_build/html`` (``DPLAB_EDITION=edition`` when given)."""
    env = {k: v for k, v in os.environ.items() if k != "DPLAB_EDITION"}
    if edition:
        env["DPLAB_EDITION"] = edition
    proc = subprocess.run(
        [str(JB), "build", str(src), "--path-output", str(path_output), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    log = proc.stdout + proc.stderr
    problems = [l for l in log.splitlines() if re.search(r"WARNING|ERROR", l) and "IPKernelApp" not in l]
    assert proc.returncode == 0 and not problems, "strict book build failed:\n" + "\n".join(problems or log.splitlines()[-40:])
    return path_output / "_build" / "html"


@pytest.fixture(scope="session")
def built_book(book_source) -> Path:
    return _build(book_source, book_source, None)


@pytest.fixture(scope="session")
def built_student_book(book_source, tmp_path_factory) -> Path:
    return _build(book_source, tmp_path_factory.mktemp("student_edition"), "student")


def _copy_without_injected_parameters(executed: Path, target: Path) -> None:
    """Copy an executed notebook, hiding papermill's injected-parameters cell in the HTML."""
    nb = json.loads(executed.read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    target.write_text(json.dumps(nb))


def _pages(html: Path) -> list[Path]:
    return [html / doc.relative_to(ROOT).with_suffix(".html") for doc in toc_documents()]


def test_book_builds_every_page(built_book):
    assert (built_book / "index.html").is_file()
    for page in _pages(built_book):
        assert page.is_file(), f"{page} was not built"


def test_no_script_or_style_comes_from_the_network(built_book):
    for page in _pages(built_book):
        text = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        remote = [u for u in remote if u.endswith((".js", ".css")) or "js?" in u]
        assert not remote, f"{page.name} loads {remote} from the network"
    for vendored in ("mathjax/tex-svg-full.js", "requirejs/require.js", "html-manager/embed-amd.js"):
        assert (built_book / "_static" / vendored).is_file(), f"{vendored} missing from _static"


def test_wide_tables_scroll_instead_of_being_cut(built_book):
    """book/_ext/static/dplab.css reaches every page: tables scroll sideways, one line per cell."""
    css = (built_book / "_static" / "dplab.css").read_text()
    assert "overflow-x: auto" in css and "white-space: nowrap" in css
    for page in _pages(built_book):
        assert re.search(r'<link[^>]+href="[^"]*_static/dplab\.css', page.read_text()), f"{page.name} lacks dplab.css"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@contextlib.contextmanager
def _serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def served_book(built_book):
    with _serve(built_book) as url:
        yield url


def _render(url: str, tmp: Path, screenshot: Path | None = None) -> tuple[str, str]:
    browser = _chromium()
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp}", "--enable-logging=stderr", "--v=0",
        # Networking off: every host but the local server resolves to nothing.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000", "--window-size=1280,1600",
    ]
    proc = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    return proc.stdout, proc.stderr


def _console_errors(stderr: str) -> list[str]:
    lines = [l for l in stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    return [l for l in lines if re.search(r"error|uncaught|failed", l, re.I)]


def _check_page(base_url: str, html: Path, page: Path, tmp: Path, shots: Path) -> None:
    """Open one page in the browser: math typeset, widgets drawn, no console error, images present."""
    rel = page.relative_to(html).as_posix()
    text = page.read_text()
    dom, stderr = _render(f"{base_url}/{rel}", tmp / page.stem, shots / f"{page.stem}.png")
    assert dom.strip(), f"{rel}: the browser returned no DOM"
    if 'class="math' in text:
        assert "<mjx-container" in dom and "<svg" in dom, f"{rel}: math was not typeset by MathJax"
        assert '<g data-mml-node="merror"' not in dom, f"{rel}: MathJax reported a TeX error"
    if "application/vnd.jupyter.widget-view+json" in text:
        assert re.search(r'class="[^"]*(widget-|lm-Widget)', dom), f"{rel}: widgets were not rendered"
    errors = _console_errors(stderr)
    assert not errors, f"{rel}: console errors:\n" + "\n".join(errors)
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', text)
    for src in imgs:
        if not src.startswith(("http", "data:")):
            assert (page.parent / src.split("?")[0]).resolve().is_file(), f"{rel}: image {src} missing"


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_pages_render_math_and_widgets_offline(served_book, built_book, tmp_path):
    for page in _pages(built_book):
        _check_page(served_book, built_book, page, tmp_path, SCREENSHOTS)


# ----------------------------------------------------------------------------- student edition
_SOLUTION_HTML = re.compile(r'class="[^"]*\b(tag_solution|solution)\b')


def _assignment_pages(html: Path) -> list[Path]:
    return [p for p in _pages(html) if p.parent.name == "assignments"]


def test_book_edition_shows_the_solutions(built_book):
    pages = _assignment_pages(built_book)
    assert len(pages) == 3
    for page in pages + [built_book / "book" / "thin_lens.html"]:
        assert _SOLUTION_HTML.search(page.read_text()), f"{page.name}: the book edition lost its solutions"


def test_student_edition_has_every_page_and_no_solution(built_student_book):
    for page in _pages(built_student_book):
        assert page.is_file(), f"{page} was not built"
        text = page.read_text()
        assert not _SOLUTION_HTML.search(text), f"{page.name}: a solution is left in the student edition"
        assert "Discussion of the answers" not in text, page.name
        assert not re.search(r'admonition-title">\s*Solutions', text), f"{page.name}: a Solutions box is left"
    for page in _assignment_pages(built_student_book):
        assert "# TODO" in page.read_text(), f"{page.name}: the student edition lost the TODO cells"
    assert "Discussion of the answers" not in (built_student_book / "searchindex.js").read_text()
    sources = list((built_student_book / "_sources").rglob("*.ipynb"))
    assert len(sources) == len([d for d in toc_documents() if d.suffix == ".ipynb"])
    for source in sources:
        cells = json.loads(source.read_text())["cells"]
        assert not any("solution" in c["metadata"].get("tags", []) for c in cells), f"{source.name} ships a solution"
        assert not re.search(r":class:.*\bsolution\b", "".join("".join(c["source"]) for c in cells)), source.name


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_student_pages_render_offline(built_student_book, tmp_path):
    """The assignments and the first chapter; the other chapters differ from the book's pages
    only by their removed Solutions box, which the text check above covers."""
    pages = _assignment_pages(built_student_book) + [built_student_book / "book" / "thin_lens.html"]
    with _serve(built_student_book) as url:
        for page in pages:
            _check_page(url, built_student_book, page, tmp_path, SCREENSHOTS / "student")
