"""``python -m dplab grade NOTEBOOK``: run an assignment notebook and score its answers.

The notebook (one of ``book/assignments/*.ipynb`` or a student's copy: its metadata names the
assignment) is executed with papermill into a temporary folder, or ``--out``; the notebook and
its folder are never written. Each answer its last cell recorded in ``metrics.json`` is compared
with a reference that :mod:`dplab.eval.assignments` computes independently (closed forms, numpy,
dplab's scoring of the shipped networks), within the question's tolerance
(:mod:`dplab.eval.grading`). Prints one row per question and the total; ``--json`` also writes
the report. Exit status 0 when the notebook was graded (a notebook that stops with an error
scores 0 and the table says where it stopped); 2, with one line, for a missing file, a notebook
that is not an assignment, or an ``--out`` folder that is not empty.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Add the ``grade`` sub-parser to ``sub`` (an ``argparse`` sub-parsers object)."""
    p = sub.add_parser(
        "grade", help="run an assignment notebook and score its answers",
        description="Run an assignment notebook (book/assignments/*.ipynb, or a copy) headless with "
                    "papermill into a temporary folder, read the answers it recorded in metrics.json and "
                    "score each against a reference computed independently; print a table with the "
                    "points and the total.")
    p.add_argument("notebook", help="the assignment notebook to grade")
    p.add_argument("--profile", choices=("test", "book", "full"), default="book",
                   help="run profile (default book, what students run; test: seconds)")
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON to this file")
    p.add_argument("--out", metavar="DIR", help="keep the executed notebook and its metrics.json in this new or empty "
                                 "folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory passed to the notebook (default $DPLAB_DATA)")
    p.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default %(default)s)")
    p.add_argument("--show-expected", action="store_true",
                   help="print the reference answers and tolerances in the table (the JSON always has them)")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Handler of ``python -m dplab grade``; returns 0 once the notebook is graded."""
    from dplab._io import write_json_atomic
    from dplab.eval.grading import format_report, grade, notebook_assignment

    notebook = Path(args.notebook)
    notebook_assignment(notebook)       # refuse a non-assignment before anything runs
    if args.json and Path(args.json).resolve() == notebook.resolve():
        raise ValueError(f"--json {args.json} is the notebook itself; give another file for the report")
    report = grade(notebook, profile=args.profile, out_dir=args.out, data_dir=args.data_dir,
                   timeout=args.timeout)
    print(format_report(report, show_expected=args.show_expected))
    if args.json:
        write_json_atomic(args.json, report.to_json())
    return 0
