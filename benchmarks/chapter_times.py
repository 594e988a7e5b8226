"""How long each chapter of the book takes to execute, per profile, as a reader would run it.

Each chapter listed in ``_toc.yml`` runs from a fresh kernel with papermill (``-p profile P``),
one after the other in the book's order, with its ``output_dir`` inside one temporary folder
laid out like ``book/outputs/`` (so a chapter that reuses an earlier chapter's results finds
them, as in a real build, and nothing under ``book/outputs/`` is read or overwritten). The
wall time of each run, its exit status and the 1-minute load average before it go into a JSON
record, with the machine, the dplab commit and whether the Pixel 4 data directory was set.
The instructors page shows the latest record of each profile (through
``book/performance.ipynb``).

    DPLAB_DATA=/path/to/data .venv/bin/python benchmarks/chapter_times.py --profile test
    DPLAB_DATA=/path/to/data .venv/bin/python benchmarks/chapter_times.py --profile book \\
        [--chapters thin_lens dp_psf] [--record-dir benchmarks/results/chapter_times]

A record is written to ``<record-dir>/<profile>.json`` (replacing that profile's previous
record: the page shows the latest measurement). Times measured while other work shares the CPU
are upper bounds; the load average in the record says how busy the machine was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info  # noqa: E402
from dplab._provenance import git_commit  # noqa: E402

__all__ = ["PROFILES", "toc_chapters", "time_chapter", "time_chapters", "merge_records", "main"]

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("test", "book", "full")


def toc_chapters(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """The notebooks of ``_toc.yml`` in book order, as paths relative to ``book/`` without
    the suffix (``"thin_lens"``, ``"assignments/networks"``); markdown pages are left out."""
    toc = Path(toc)
    if not toc.is_file():
        raise FileNotFoundError(f"toc: {toc} does not exist; pass the book's _toc.yml")
    data = yaml.safe_load(toc.read_text())
    stems = []
    for part in data.get("parts", []):
        for chapter in part.get("chapters", []):
            path = toc.parent / f"{chapter['file']}.ipynb"
            if path.is_file():
                stems.append(Path(chapter["file"]).relative_to("book").as_posix())
    return stems


def time_chapter(notebook: Path, profile: str, output_root: Path, *, data_dir: str | None = None,
                 timeout_s: float | None = None) -> dict:
    """Run one chapter with papermill in ``profile`` and return its row.

    Args:
        notebook: the chapter's ``.ipynb`` (run with its own folder as working directory).
        profile: ``"test"``, ``"book"`` or ``"full"``.
        output_root: the chapter writes into ``output_root/<stem>``.
        data_dir: passed as the ``data_dir`` parameter when given (else the chapter reads
            ``$DPLAB_DATA``).
        timeout_s: stop the run after this many seconds (the row says so).

    Returns:
        ``{"chapter", "profile", "seconds", "returncode", "timed_out", "load_average_1min"}``.
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook: {notebook} does not exist")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    stem = notebook.stem
    output_root = Path(output_root)
    output_root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", "--no-progress-bar", "--log-level", "ERROR",
           "--cwd", str(notebook.parent), str(notebook), str(output_root / f"{stem}.out.ipynb"),
           "-p", "profile", profile, "-p", "output_dir", str(output_root / stem)]
    if data_dir is not None:
        cmd += ["-p", "data_dir", str(data_dir)]
    env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    timed_out = False
    with open(output_root / f"{stem}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
    return {"chapter": stem, "profile": profile, "seconds": round(time.perf_counter() - t0, 2),
            "returncode": rc, "timed_out": timed_out, "load_average_1min": load,
            "date": dt.datetime.now().isoformat(timespec="seconds"), "dplab_commit": git_commit(short=True)}


def time_chapters(chapters: list[str], profile: str, *, book_dir: Path = ROOT / "book",
                  data_dir: str | None = None, timeout_s: float | None = None, work: Path | None = None,
                  log=print) -> dict:
    """Time ``chapters`` (paths under ``book_dir`` without ``.ipynb``) one after the other;
    returns the record (each row's ``chapter`` is the name it was given)."""
    if not chapters:
        raise ValueError("chapters is empty: name at least one chapter")
    missing = [c for c in chapters if not (Path(book_dir) / f"{c}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"chapters: no notebook for {missing} under {book_dir}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dplab-chapter-times-") as tmp:
        root = Path(work) if work is not None else Path(tmp)
        for stem in chapters:
            row = time_chapter(Path(book_dir) / f"{stem}.ipynb", profile, root, data_dir=data_dir, timeout_s=timeout_s)
            row["chapter"] = stem
            log(f"{stem:28s} {profile:5s} {row['seconds']:9.1f} s  rc={row['returncode']}"
                f"  load={row['load_average_1min']}")
            rows.append(row)
    return {
        "kind": "chapter_times",
        "profile": profile,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "dplab_commit": git_commit(short=True),
        "data_dir_set": bool(data_dir or os.environ.get("DPLAB_DATA")),
        "machine": machine_info(),
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
        "rows": rows,
    }


def merge_records(old: dict, new: dict) -> dict:
    """``new``'s rows replace ``old``'s rows of the same chapters; the others are kept (each
    row carries its own date and commit). The merged record lists the chapters in ``old``'s
    order, then any new ones, and its total is recomputed."""
    if old.get("profile") != new.get("profile"):
        raise ValueError(f"cannot merge a {new.get('profile')!r} record into a {old.get('profile')!r} one")
    fresh = {r["chapter"]: r for r in new["rows"]}
    rows = [fresh.pop(r["chapter"], r) for r in old["rows"]] + list(fresh.values())
    merged = dict(new, rows=rows, total_seconds=round(sum(r["seconds"] for r in rows), 1))
    merged["updated_from"] = old.get("date")
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("--chapters", nargs="+", default=None, help="stems (default: every notebook of _toc.yml)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $DPLAB_DATA)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per chapter")
    parser.add_argument("--record-dir", default=str(ROOT / "benchmarks" / "results" / "chapter_times"))
    parser.add_argument("--work", default=None, help="keep the output notebooks and logs here (default: a temp folder)")
    parser.add_argument("--update", action="store_true",
                        help="re-time only --chapters and keep the other rows of the profile's record")
    args = parser.parse_args(argv)
    if args.update and not args.chapters:
        print("chapter_times: --update needs --chapters (the chapters to re-time)", file=sys.stderr)
        return 2
    chapters = args.chapters or toc_chapters()
    try:
        record = time_chapters(chapters, args.profile, data_dir=args.data_dir, timeout_s=args.timeout,
                               work=args.work)
    except (FileNotFoundError, ValueError) as err:
        print(f"chapter_times: {err}", file=sys.stderr)
        return 2
    record["command"] = " ".join(["benchmarks/chapter_times.py", *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.record_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.profile}.json"
    if args.update and path.is_file():
        record = merge_records(json.loads(path.read_text()), record)
    path.write_text(json.dumps(record, indent=1) + "\n")
    failed = [r["chapter"] for r in record["rows"] if r["returncode"] != 0]
    print(f"{len(record['rows'])} chapters, {record['total_seconds']:.0f} s in all -> {path}"
          + (f"; FAILED or stopped: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
