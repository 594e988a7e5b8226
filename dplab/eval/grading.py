"""Grade an assignment notebook: run it headless, read its ``metrics.json``, compare each answer.

:func:`grade` reads which assignment a notebook is from its metadata
(``{"dplab": {"assignment": NAME}}``, :mod:`dplab.eval.assignments`), executes it with
papermill into a separate folder (a temporary one unless ``out_dir`` is given; the notebook
itself and its folder are never written), with the run settings and the assignment's givens
passed as parameters, reads the answers its last cell recorded, and scores each against the
reference that :mod:`dplab.eval.assignments` computes independently: full points within the
question's absolute tolerance, none otherwise. A notebook that stops with an error scores
nothing; the report says in which cell and why.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dplab.eval.assignments import ASSIGNMENTS, Assignment, as_number, assignment

__all__ = ["QuestionResult", "GradeReport", "notebook_assignment", "score", "grade", "format_report"]

PROFILES = ("test", "book", "full")


@dataclass
class QuestionResult:
    """One question's outcome: ``status`` is ``"correct"``, ``"wrong"``, ``"no answer"`` or
    ``"not a number"``."""

    key: str
    text: str
    answer: float | str | None
    expected: float
    tolerance: float
    points: int
    max_points: int
    status: str


@dataclass
class GradeReport:
    """The outcome of :func:`grade`; :func:`format_report` prints it, ``asdict`` makes it JSON."""

    assignment: str
    title: str
    notebook: str
    profile: str
    questions: list = field(default_factory=list)
    error: str | None = None
    executed: str | None = None

    @property
    def points(self) -> int:
        return sum(q.points for q in self.questions)

    @property
    def max_points(self) -> int:
        return sum(q.max_points for q in self.questions)

    def to_json(self) -> dict:
        return {**asdict(self), "points": self.points, "max_points": self.max_points}


def notebook_assignment(path) -> Assignment:
    """The assignment a notebook belongs to, from its metadata.

    Raises:
        FileNotFoundError: no such file.
        IsADirectoryError: a folder.
        ValueError: not a notebook (``.ipynb`` JSON), or one that names no known assignment.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "a folder, not a notebook; give an assignment's .ipynb", str(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook; give the path of an assignment's .ipynb "
                                f"(book/assignments/{{{','.join(ASSIGNMENTS)}}}.ipynb or a copy of one)")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a notebook (not JSON: {err.__class__.__name__})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path} is not a Jupyter notebook (no cells)")
    name = ((nb.get("metadata") or {}).get("dplab") or {}).get("assignment")
    if name not in ASSIGNMENTS:
        raise ValueError(f"{path} is not one of the assignments ({', '.join(ASSIGNMENTS)}): its metadata "
                         f"names {'no assignment' if name is None else repr(name)}; grade a copy of one of "
                         "book/assignments/*.ipynb")
    return ASSIGNMENTS[name]


def score(spec: Assignment, answers: dict, expected: dict) -> list[QuestionResult]:
    """Score recorded ``answers`` against ``expected`` (both ``{key: value}``).

    Example:
        >>> spec = assignment("image_formation")
        >>> ref = {q.key: 1.0 for q in spec.questions}
        >>> [r.status for r in score(spec, {"q1_coc_far_px": 1.0005, "q2_coc_near_px": 2.0,
        ...                                 "q3_depth_m": "not a number: 'x'"}, ref)]
        ['correct', 'wrong', 'not a number', 'no answer']
    """
    results = []
    for q in spec.questions:
        raw = answers.get(q.key)
        value = as_number(raw)
        ref = float(expected[q.key])
        if raw is None:
            status = "no answer"
        elif value is None or not math.isfinite(value):
            status = "not a number"
        else:
            status = "correct" if abs(value - ref) <= q.tolerance + 1e-12 * abs(ref) else "wrong"
        shown = raw if value is None else value
        results.append(QuestionResult(q.key, q.text, shown, ref, q.tolerance,
                                      q.points if status == "correct" else 0, q.points, status))
    return results


def _run(path: Path, spec: Assignment, out: Path, profile: str, data_dir, timeout: int):
    """Execute ``path`` into ``out`` with papermill; return ``(answers, error)``."""
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError
    except ImportError:
        raise ValueError("grading runs notebooks with papermill, which is not installed: "
                         "pip install papermill (it is in requirements.txt)") from None
    executed, output_dir = out / f"{path.stem}.graded.ipynb", out / "outputs"
    params = {**spec.givens, "profile": profile, "device": "cpu", "data_dir": data_dir,
              "output_dir": str(output_dir)}
    try:
        papermill.execute_notebook(str(path), str(executed), parameters=params, cwd=str(path.parent.resolve()),
                                   kernel_name="python3", execution_timeout=timeout, progress_bar=False)
    except PapermillExecutionError as err:
        first = str(err.evalue).splitlines()[0] if err.evalue else ""
        return {}, (f"the notebook stopped in cell [{err.exec_count}] with {err.ename}: {first}; "
                    "it recorded no answers")
    except TimeoutError:
        return {}, f"a cell ran longer than {timeout} s and was stopped; it recorded no answers"
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        return {}, "the notebook ran but wrote no metrics.json: run its last cell (record_answers, chapter.finish)"
    payload = json.loads(metrics.read_text())
    if payload.get("chapter") != spec.name:
        return {}, f"the notebook recorded its answers as {payload.get('chapter')!r}, not as {spec.name!r}"
    return payload.get("metrics", {}), None


def grade(notebook, *, profile: str = "book", out_dir=None, data_dir=None, timeout: int = 600) -> GradeReport:
    """Run an assignment notebook and score its answers.

    Args:
        notebook: path of an assignment notebook (or a copy: its metadata says which).
        profile: ``"test"``, ``"book"`` (default: what a student runs) or ``"full"``; sets the
            size of the ``networks`` held-out set.
        out_dir: a new or empty folder for the executed notebook and ``outputs/metrics.json``
            (default: a temporary folder, removed afterwards).
        data_dir: the data directory passed to the notebook (default None: ``$DPLAB_DATA``).
        timeout: seconds allowed per cell.

    Returns:
        A :class:`GradeReport`.

    Raises:
        FileNotFoundError / IsADirectoryError / ValueError: not an assignment notebook (see
            :func:`notebook_assignment`), an unknown profile, a bad timeout.
        FileExistsError: ``out_dir`` exists and is not an empty folder.
    """
    path = Path(notebook)
    spec = notebook_assignment(path)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    out = None if out_dir is None else Path(out_dir)
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not an empty folder; give a new or empty one (the grader "
                              "never overwrites files)")
    expected = spec.reference(spec.givens, profile)
    report = GradeReport(spec.name, spec.title, str(path), profile)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        answers, report.error = _run(path, spec, out, profile, data_dir, timeout)
        report.executed = str(out / f"{path.stem}.graded.ipynb")
    else:
        with tempfile.TemporaryDirectory(prefix="dplab-grade-") as tmp:
            answers, report.error = _run(path, spec, Path(tmp), profile, data_dir, timeout)
    report.questions = score(spec, answers, expected)
    return report


def format_report(report: GradeReport, *, show_expected: bool = False) -> str:
    """The per-question table and the total, as text (``show_expected`` adds the references)."""
    head = f"{report.title} ({report.notebook}, profile {report.profile})"
    rows = [("question", "", "answer", "expected ± tol" if show_expected else "", "result", "points")]
    for q in report.questions:
        answer = "" if q.answer is None else (f"{q.answer:.6g}" if isinstance(q.answer, float) else str(q.answer)[:24])
        exp = f"{q.expected:.6g} ± {q.tolerance:g}" if show_expected else ""
        rows.append((q.key, q.text, answer, exp, q.status, f"{q.points} / {q.max_points}"))
    rows.append(("total", "", "", "", "", f"{report.points} / {report.max_points}"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if report.error:
        lines.append(f"note: {report.error}")
    if report.executed:
        lines.append(f"executed notebook: {report.executed}")
    return "\n".join(lines)
