"""``python -m dplab grade``: the assignments' reference notebooks earn full marks, a wrong answer
loses exactly its question's points, a student copy runs and earns nothing, a failing notebook
is graded 0 with the cell named, and what is not an assignment is refused (exit 2, one line).

Every grading run executes a notebook with papermill (a few seconds each); the references are
computed by :mod:`dplab.eval.assignments`, independently of the notebooks' solution cells.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import pytest

from dplab.book.chapter import Chapter
from dplab.cli.main import main
from dplab.eval.assignments import ASSIGNMENTS, assignment, record_answers
from dplab.eval.grading import grade, notebook_assignment, score
from harness import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from dplab_student import student_notebook  # noqa: E402

NOTEBOOKS = ROOT / "book" / "assignments"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell) -> str:
    return "".join(cell["source"])


def test_each_assignment_has_a_notebook_whose_metadata_names_it():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ASSIGNMENTS)
    for name in ASSIGNMENTS:
        assert notebook_assignment(NOTEBOOKS / f"{name}.ipynb").name == name


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_parameters_cell_holds_the_grader_givens(name):
    """The grader passes its givens again; the notebook's defaults must be the same values, so that
    what a student sees when running it is what is graded."""
    cell = next(c for c in _cells(NOTEBOOKS / f"{name}.ipynb") if "parameters" in c["metadata"].get("tags", []))
    literals = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(_source(cell)).body}
    assert {k: literals[k] for k in ASSIGNMENTS[name].givens} == ASSIGNMENTS[name].givens


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_every_question_has_a_todo_and_a_solution(name):
    cells = _cells(NOTEBOOKS / f"{name}.ipynb")
    solutions = "".join(_source(c) for c in cells if "solution" in c["metadata"].get("tags", []))
    todos = "".join(_source(c) for c in cells if "# TODO" in _source(c))
    for key in ASSIGNMENTS[name].keys:
        assert f"{key} = None" in todos, f"{name}: no TODO cell sets {key} = None"
        assert f"{key} = " in solutions, f"{name}: no solution cell computes {key}"


def test_scoring_counts_each_question_on_its_own():
    spec = assignment("optimisation")
    ref = {q.key: 10.0 * (i + 1) for i, q in enumerate(spec.questions)}
    answers = dict(ref)
    answers["q2_psnr_wiener_true_db"] += 0.05          # outside its 0.01 dB
    answers["q1_psnr_blurred_db"] += 0.009             # inside
    answers["q5_gain_db"] = "not a number: nan"
    del answers["q4_radius_corrected_px"]
    results = {r.key: r for r in score(spec, answers, ref)}
    assert [results[k].status for k in spec.keys] == ["correct", "wrong", "correct", "no answer", "not a number"]
    assert sum(r.points for r in results.values()) == 2 + 2


def test_record_answers_skips_open_questions_and_refuses_unknown_keys(tmp_path, capsys):
    chapter = Chapter("image_formation", profile="test", output_dir=tmp_path)
    record_answers(chapter, "image_formation", {"q1_coc_far_px": 1.5, "q2_coc_near_px": None,
                                                "q3_depth_m": float("nan")})
    assert chapter.metrics["q1_coc_far_px"] == 1.5
    assert "q2_coc_near_px" not in chapter.metrics
    assert chapter.metrics["q3_depth_m"].startswith("not a number")
    assert "q4_disparity_px: not answered yet" in capsys.readouterr().out
    with pytest.raises(ValueError, match="q9_extra"):
        record_answers(chapter, "image_formation", {"q9_extra": 1.0})


@pytest.mark.notebook
@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_reference_notebook_earns_full_marks(name, tmp_path, capsys):
    """Through the command line: exit 0, the table, the JSON report; nothing new next to the notebook."""
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    nb_bytes = (NOTEBOOKS / f"{name}.ipynb").read_bytes()
    report = tmp_path / "report.json"
    assert main(["grade", str(NOTEBOOKS / f"{name}.ipynb"), "--profile", "test", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    payload = json.loads(report.read_text())
    total = ASSIGNMENTS[name].max_points
    assert payload["points"] == payload["max_points"] == total, payload
    assert payload["error"] is None and all(q["status"] == "correct" for q in payload["questions"])
    assert f"{total} / {total}" in out.splitlines()[-1]
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before
    assert (NOTEBOOKS / f"{name}.ipynb").read_bytes() == nb_bytes


def _copy_with(tmp_path: Path, name: str, edit) -> Path:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    nb = edit(nb)
    path = tmp_path / "student" / f"{name}_copy.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(nb))
    return path


@pytest.mark.notebook
def test_one_wrong_answer_loses_exactly_its_points(tmp_path):
    def wrong_q2(nb):
        cell = next(c for c in nb["cells"] if "q2_coc_near_px = optics.coc_radius_px" in _source(c))
        cell["source"] = _source(cell) + "\nq2_coc_near_px += 0.5\n"
        return nb

    path = _copy_with(tmp_path, "image_formation", wrong_q2)
    out = tmp_path / "graded"
    report = grade(path, profile="test", out_dir=out)
    status = {q.key: q.status for q in report.questions}
    assert status == {"q1_coc_far_px": "correct", "q2_coc_near_px": "wrong", "q3_depth_m": "correct",
                      "q4_disparity_px": "correct"}
    spec = assignment("image_formation")
    assert report.points == spec.max_points - next(q.points for q in spec.questions if q.key == "q2_coc_near_px")
    q2 = next(q for q in report.questions if q.key == "q2_coc_near_px")
    assert math.isclose(q2.answer - q2.expected, 0.5, abs_tol=1e-9)
    assert (out / "image_formation_copy.graded.ipynb").is_file() and (out / "outputs" / "metrics.json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]   # nothing written beside the copy


@pytest.mark.notebook
def test_student_edition_runs_and_earns_nothing(tmp_path):
    path = _copy_with(tmp_path, "image_formation", student_notebook)
    report = grade(path, profile="test")
    assert report.error is None, report.error
    assert report.points == 0 and {q.status for q in report.questions} == {"no answer"}


@pytest.mark.notebook
def test_a_notebook_that_stops_scores_zero_and_names_the_cell(tmp_path, capsys):
    def broken(nb):
        cell = next(c for c in nb["cells"] if "q3_depth_m = optics.depth_from_coc" in _source(c))
        cell["source"] = "raise RuntimeError('student bug')\n"
        return nb

    path = _copy_with(tmp_path, "image_formation", broken)
    assert main(["grade", str(path), "--profile", "test"]) == 0
    out = capsys.readouterr().out
    assert "RuntimeError: student bug" in out and "0 / 10" in out


def _refused(argv, capsys, *phrases) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m dplab grade: error:"), err
    for phrase in phrases:
        assert phrase in err, err


def test_cli_refuses_what_is_not_an_assignment(tmp_path, capsys):
    _refused(["grade", str(tmp_path / "missing.ipynb")], capsys, "no such notebook")
    _refused(["grade", str(ROOT / "book" / "thin_lens.ipynb")], capsys, "not one of the assignments")
    _refused(["grade", str(tmp_path)], capsys, "a folder")
    text = tmp_path / "notes.ipynb"
    text.write_text("not json")
    _refused(["grade", str(text)], capsys, "is not a notebook")
    nb = NOTEBOOKS / "image_formation.ipynb"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    _refused(["grade", str(nb), "--out", str(busy)], capsys, "not an empty folder")
    assert (busy / "keep.txt").read_text() == "mine"
    _refused(["grade", str(nb), "--json", str(nb)], capsys, "the notebook itself")
    with pytest.raises(SystemExit):
        main(["grade", str(nb), "--profile", "fast"])
