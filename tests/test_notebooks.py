"""Every chapter listed in _toc.yml runs headless in the `test` profile and passes its checks.

Each notebook is executed with papermill (parameters: profile="test", a fresh output_dir,
data_dir from $DPLAB_DATA), then the chapter's checker ``tests/notebooks/<stem>.py`` asserts on
the ``metrics.json`` the notebook wrote. A chapter without a checker, or whose metrics.json is
missing, fails.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from harness import ROOT, toc_notebooks

CHECKERS = Path(__file__).resolve().parent / "notebooks"


def _load_checker(stem: str):
    path = CHECKERS / f"{stem}.py"
    if not path.is_file():
        pytest.fail(f"chapter {stem!r} has no checker; add {path.relative_to(ROOT)} with check(metrics, output_dir)")
    spec = importlib.util.spec_from_file_location(f"notebook_checker_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toc_lists_notebooks():
    assert toc_notebooks(), "_toc.yml lists no notebook"


def test_every_checker_has_a_notebook():
    stems = {p.stem for p in toc_notebooks()}
    orphans = sorted(p.stem for p in CHECKERS.glob("*.py") if p.stem not in stems)
    assert not orphans, f"checkers without a notebook in _toc.yml: {orphans}"


def test_notebooks_are_committed_without_outputs():
    for notebook in toc_notebooks():
        cells = json.loads(notebook.read_text())["cells"]
        dirty = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count")]
        assert not dirty, f"{notebook.name}: cells {dirty} carry outputs; clear them before committing"


def test_parameters_cell_holds_the_standard_literals():
    import ast

    for notebook in toc_notebooks():
        cells = json.loads(notebook.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{notebook.name}: needs exactly one cell tagged 'parameters'"
        tree = ast.parse("".join(tagged[0]["source"]))
        names = {}
        for node in tree.body:
            assert isinstance(node, ast.Assign), f"{notebook.name}: parameters cell holds only assignments"
            names[node.targets[0].id] = ast.literal_eval(node.value)
        assert names.get("profile") == "book", f"{notebook.name}: default profile must be 'book'"
        assert {"profile", "device", "data_dir", "output_dir", "seed"} <= set(names), notebook.name


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", toc_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_test_profile(notebook: Path, notebook_runner):
    checker = _load_checker(notebook.stem)
    run = notebook_runner.run(notebook)
    if run.error is not None:
        pytest.fail(f"{notebook.name} failed under papermill (see {run.executed}):\n{run.error}")
    metrics_path = run.output_dir / "metrics.json"
    assert metrics_path.is_file(), f"{notebook.name} wrote no metrics.json into its output_dir"
    payload = json.loads(metrics_path.read_text())
    assert payload["profile"] == "test"
    figures = _count_figures(run.executed)
    minimum = getattr(checker, "MIN_FIGURES", 0)
    assert figures >= minimum, f"{notebook.name} showed {figures} figure(s), its checker expects at least {minimum}"
    _assert_every_glue_key_recorded(run.executed)
    _assert_no_stray_output(run.executed)
    checker.check(payload["metrics"], run.output_dir)


def _uses_data_dir(notebook: Path) -> bool:
    return "chapter.data_dir" in notebook.read_text()


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", [p for p in toc_notebooks() if _uses_data_dir(p)], ids=lambda p: p.stem)
def test_notebook_runs_without_any_real_data(notebook: Path, notebook_runner):
    """A reader without the datasets still gets a complete page: the chapter runs, says what
    is missing, and glues every key its prose cites (a missing key fails the strict build)."""
    run = notebook_runner.run(notebook, without_data=True)
    if run.error is not None:
        pytest.fail(f"{notebook.name} failed with an empty data_dir (see {run.executed}):\n{run.error}")
    assert (run.output_dir / "metrics.json").is_file(), f"{notebook.name} wrote no metrics.json"
    _assert_every_glue_key_recorded(run.executed)


# {glue}`key`, {glue:text}`key:.2f`, {glue:any}`key`, and the ```{glue} key / {glue:figure} key directives;
# cross-document references (path::key) are resolved by the book build, not here.
_GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]+)`")
_GLUE_DIRECTIVE = re.compile(r"^[`:]{3,}\{glue(?::\w+)?\}\s+(\S+)", re.MULTILINE)


def glue_keys_cited(cells) -> set[str]:
    keys = set()
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for ref in _GLUE_ROLE.findall(text) + _GLUE_DIRECTIVE.findall(text):
            if "::" not in ref:
                keys.add(ref.split(":", 1)[0])
    return keys


def glue_keys_recorded(cells) -> set[str]:
    return {out["metadata"]["scrapbook"]["name"] for c in cells for out in c.get("outputs", [])
            if "scrapbook" in out.get("metadata", {})}


def _assert_every_glue_key_recorded(executed: Path) -> None:
    cells = json.loads(executed.read_text())["cells"]
    missing = sorted(glue_keys_cited(cells) - glue_keys_recorded(cells))
    assert not missing, (f"{executed.name}: the prose cites glue keys this run never recorded: {missing}; "
                         "record them in every branch (e.g. chapter.record(key, None, display='n/a'))")


def test_glue_key_scanner_finds_roles_and_directives():
    cells = [{"cell_type": "markdown", "source": ["a {glue:text}`x:.2f` b {glue}`y` c {glue:text}`other.ipynb::z`\n",
                                                   "```{glue:figure} fig_a\n```\n"]},
             {"cell_type": "code", "source": ["{glue}`not_prose`"], "outputs": [
                 {"output_type": "display_data", "metadata": {"scrapbook": {"name": "x", "mime_prefix": ""}}}]}]
    assert glue_keys_cited(cells) == {"x", "y", "fig_a"}
    assert glue_keys_recorded(cells) == {"x"}


def stray_outputs(cells) -> list[tuple[int, str]]:
    """Code cells whose last expression leaks its bare value onto the page: an ``execute_result``
    with only ``text/plain`` (a float, a path, a dict, a quoted string). Tables, figures and
    widgets carry richer data; printed text is a ``stream`` output and is meant to be read."""
    leaks = []
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if out["output_type"] == "execute_result" and set(out.get("data", {})) <= {"text/plain"}:
                leaks.append((i, "".join(out["data"].get("text/plain", ""))[:80]))
    return leaks


def _assert_no_stray_output(executed: Path) -> None:
    leaks = stray_outputs(json.loads(executed.read_text())["cells"])
    assert not leaks, (f"{executed.name}: cells leak a bare value onto the page (end the cell with a statement, "
                       f"or assign the value): {leaks}")


def test_stray_output_scanner():
    cells = [{"cell_type": "code", "outputs": [{"output_type": "execute_result", "data": {"text/plain": ["0.5"]}}]},
             {"cell_type": "code", "outputs": [{"output_type": "execute_result",
                                                "data": {"text/plain": ["<table>"], "text/html": ["<table>"]}}]},
             {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": ["printed"]}]},
             {"cell_type": "markdown", "source": ["x"]}]
    assert stray_outputs(cells) == [(0, "0.5")]


def _count_figures(executed: Path) -> int:
    cells = json.loads(executed.read_text())["cells"]
    return sum("image/png" in out.get("data", {}) for c in cells for out in c.get("outputs", []))
