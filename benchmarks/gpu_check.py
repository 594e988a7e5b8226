"""The prepared GPU check: everything that has never run on a GPU, in one script under 10 minutes.

Run it first whenever a machine with CUDA (one H100/H200) is available: ``make gpu-check``.
Four stages, each in processes of its own with a time budget; a process over its budget is
stopped with its children (the papermill kernel included) and the check goes on:

1. ``tests``: the CUDA tests. The suite has no pytest marker for CUDA (its CUDA tests are
   ``skipif(not torch.cuda.is_available())`` or take a CUDA branch), so this runs every test
   file whose source mentions ``cuda`` (:func:`cuda_test_files`), ``-m "not notebook"``.
2. ``suite``: ``benchmarks/suite.py --devices cuda``, one process per benchmark (fftconv,
   render, peer_render, inference, training): fp32, and bf16 autocast for inference (fp16 +
   GradScaler for the Trainer's AMP).
3. ``mpi``: the suite's MPI benchmark on CUDA, the full-resolution step (1008x1344, 12 layers,
   30 iterations; ``benchmarks/mpi.py`` itself has no ``--device`` option).
4. ``chapters``: each network chapter (:data:`NETWORK_CHAPTERS`) with papermill,
   ``-p profile full -p device cuda``. The chapters have no parameter that caps training
   steps (their parameters are profile, device, data_dir, output_dir, seed), so the cap is
   wall time: a chapter is stopped at its budget and the record says how far it got (the
   cell it was running, from papermill's output notebook). That shows the full profile
   starts and runs on the GPU, not that it finishes.

Records, written atomically: the suite and MPI rows as one suite record
``<results>/<date>-<HHMM>-cuda-gpu-check.json`` (the performance appendix shows it; a
benchmark that failed or ran out of time is listed under ``errors``), and a summary of every
stage (command, status, seconds, the pytest summary line, how far each chapter got, the last
lines of each log) in ``<results>/gpu_check/<date>-<HHMM>-cuda.json``. Logs and papermill's
notebooks go to ``--logs`` (default ``_build/gpu_check/<stamp>/``).

``--dry-run`` prints the plan and exits; ``--cpu-smoke`` runs the same plumbing on the CPU at
tiny sizes (``-k cuda`` for the tests, ``--quick`` for the suite, the ``test`` profile for the
chapters) and writes its records, marked ``quick``, under ``_build/gpu_check/smoke-results/``
unless ``--results`` says otherwise. Exit status: 0 when every stage passed (a chapter stopped
at its budget counts as passed), 1 otherwise, 2 for a usage error or no CUDA.

    .venv/bin/python benchmarks/gpu_check.py [--dry-run | --cpu-smoke] [--budget 570]
        [--results DIR] [--logs DIR] [--only tests,suite,mpi,chapters] [--kinds K,...]
        [--chapters NAME ...] [--chapter-seconds S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import by_kind, machine_info  # noqa: E402
from dplab._io import atomic_file, write_json_atomic  # noqa: E402

STAGES = ("tests", "suite", "mpi", "chapters")
SUITE_KINDS = ("fftconv", "render", "peer_render", "inference", "training")
NETWORK_CHAPTERS = ("dpdnet", "rdpd", "drbnet", "mdp", "phone_network")
#: Seconds per step on one H100/H200: they sum to 505 s, under the default --budget of 570 s.
GPU_BUDGETS = {"tests": 90, "fftconv": 20, "render": 40, "peer_render": 60, "inference": 60, "training": 60,
               "mpi": 50, "chapter": 25}
SMOKE_BUDGETS = {"tests": 120, "fftconv": 60, "render": 60, "peer_render": 60, "inference": 120, "training": 120,
                 "mpi": 60, "chapter": 20}
DEFAULT_BUDGET = 570.0
#: Files never run by the tests stage: this check's own test runs the check.
EXCLUDED_TESTS = ("test_gpu_check.py",)


@dataclass
class Step:
    """One process of the plan: ``stage`` (of :data:`STAGES`), ``name``, its command and budget."""

    stage: str
    name: str
    command: list
    budget: float
    env: dict = field(default_factory=dict)
    output: Path | None = None  # a file the step writes (suite JSON, papermill notebook)


def cuda_test_files(tests_dir: Path = ROOT / "tests") -> list[Path]:
    """Test files whose source mentions CUDA (``cuda``, any case), minus :data:`EXCLUDED_TESTS`."""
    return sorted(p for p in Path(tests_dir).glob("test_*.py")
                  if p.name not in EXCLUDED_TESTS and "cuda" in p.read_text(errors="replace").lower())


def plan(*, smoke: bool, logs: Path, only=STAGES, kinds=SUITE_KINDS, chapters=NETWORK_CHAPTERS,
         chapter_seconds: float | None = None) -> list[Step]:
    """The steps of a GPU check (``smoke=False``) or of its CPU smoke run, in order."""
    py, budgets = sys.executable, SMOKE_BUDGETS if smoke else GPU_BUDGETS
    device = "cpu" if smoke else "cuda"
    quiet = {"TQDM_DISABLE": "1", "MPLBACKEND": "agg"} | ({"OMP_NUM_THREADS": "1"} if smoke else {})
    steps = []
    if "tests" in only:
        files = [str(p.relative_to(ROOT)) for p in cuda_test_files()]
        select = ["-k", "cuda"] if smoke else ["-m", "not notebook"]
        steps.append(Step("tests", "cuda", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                                  *select, *files], budgets["tests"], quiet))
    suite_args = ["--devices", device] + (["--quick", "--threads", "1"] if smoke else [])
    for kind in [k for k in kinds if "suite" in only] + (["mpi"] if "mpi" in only else []):
        out = logs / f"suite-{kind}.json"
        steps.append(Step("mpi" if kind == "mpi" else "suite", kind,
                          [py, "benchmarks/suite.py", *suite_args, "--only", kind, "--json", str(out)],
                          budgets[kind], quiet, out))
    if "chapters" in only:
        notebook_env = {"TQDM_DISABLE": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"} | (
            {"OMP_NUM_THREADS": "1"} if smoke else {})
        for name in chapters:
            if not (ROOT / "book" / f"{name}.ipynb").exists():
                continue
            out = logs / f"{name}.{'test' if smoke else 'full'}.ipynb"
            steps.append(Step("chapters", name, [
                py, "-m", "papermill", "-k", "python3", "--no-progress-bar", "--cwd", "book", f"book/{name}.ipynb",
                str(out), "-p", "profile", "test" if smoke else "full", "-p", "device", device,
                "-p", "output_dir", str(logs / "outputs" / name)],
                float(chapter_seconds or budgets["chapter"]), notebook_env, out))
    return steps


def _kill_tree(pid: int) -> None:
    """Stop process ``pid`` (started by this script) and every process below it."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def run_command(command, *, timeout: float, log: Path, env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run ``command`` with its output in ``log``; stop it and its children after ``timeout`` s.

    Returns:
        dict: ``command`` (shell-quoted), ``rc``, ``timed_out``, ``seconds``, ``log``, ``tail``
        (the log's last 15 lines).
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen([str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=max(float(timeout), 0.1)), False
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            rc, timed_out = proc.wait(), True
    text = log.read_text(errors="replace").splitlines()
    return {"command": shlex.join(str(c) for c in command), "rc": rc, "timed_out": timed_out,
            "seconds": round(time.perf_counter() - t0, 2), "log": str(log), "tail": text[-15:]}


def pytest_summary(lines) -> str | None:
    """The ``N passed, M skipped ...`` line of a pytest log (its last such line)."""
    hits = [ln.strip("= ").strip() for ln in lines if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)", ln)]
    return hits[-1] if hits else None


def notebook_progress(path) -> dict:
    """How far papermill got: ``cells`` (code cells), ``completed``, ``running`` (index and first
    line of the cell running when it stopped, or None), ``failed`` (the failing cell's error)."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return {"cells": None, "completed": None, "running": None, "failed": None,
                "unreadable": f"{type(exc).__name__}: {exc}"}
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    status = [c.get("metadata", {}).get("papermill", {}).get("status") for c in code]
    first = lambda c: "".join(c.get("source", "")).strip().splitlines()[:1] or [""]  # noqa: E731
    running = next(((i, first(c)[0][:80]) for i, (c, s) in enumerate(zip(code, status)) if s == "running"), None)
    failed = next((f"{o.get('ename')}: {o.get('evalue', '')[:200]}" for c in code for o in c.get("outputs", [])
                   if o.get("output_type") == "error"), None)
    return {"cells": len(code), "completed": status.count("completed"), "running": running, "failed": failed}


def merge_records(parts: list[dict], failures: list[dict], *, started, command: str, quick: bool,
                  device: str) -> dict:
    """One suite record from the records of the per-benchmark processes (same format as
    ``suite.py --json``); ``failures`` (benchmark, device, error) join the ``errors``."""
    rows = [r for p in parts for r in p["rows"]]
    info = machine_info()
    names = {k: v for p in parts for k, v in p.get("device_names", {}).items()}
    if device not in names:
        names[device] = info["gpu"] if device == "cuda" and info["gpu"] else info["cpu"]
    return {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "quick": bool(quick),
        "cpu_scale": parts[0]["cpu_scale"] if parts else 1.0,
        "devices": [device],
        "device_names": names,
        "skipped_devices": sorted({s for p in parts for s in p.get("skipped_devices", [])}),
        **info,
        "settings": {k: v for p in parts for k, v in p.get("settings", {}).items()},
        "seconds_per_benchmark": {k: v for p in parts for k, v in p.get("seconds_per_benchmark", {}).items()},
        "wall_seconds": sum(p.get("wall_seconds", 0.0) for p in parts),
        "rows": [r for group in by_kind(rows).values() for r in group],
        "errors": [e for p in parts for e in p.get("errors", [])] + list(failures),
        "gpu_check": True,
    }


def _write_record(path: Path, record: dict) -> Path:
    with atomic_file(path, "w") as handle:  # the suite's own format: indent 1, keys in order
        json.dump(record, handle, indent=1)
        handle.write("\n")
    return path


def run(steps: list[Step], *, budget: float, results: Path, logs: Path, smoke: bool, log=sys.stdout) -> dict:
    """Run ``steps`` within ``budget`` seconds in all; write the suite record and the summary."""
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    device = "cpu" if smoke else "cuda"
    parts, failures, done = [], [], []
    for step in steps:
        left = budget - (time.perf_counter() - t0)
        entry = {"stage": step.stage, "name": step.name, "budget_s": step.budget}
        if left < 5:
            entry |= {"status": "skipped", "reason": f"the check's budget of {budget:g} s was spent"}
            done.append(entry)
            print(f"[gpu-check] {step.stage}/{step.name}: skipped (budget spent)", file=log, flush=True)
            continue
        timeout = min(step.budget, left)
        res = run_command(step.command, timeout=timeout, log=logs / f"{step.stage}-{step.name}.log", env=step.env)
        entry |= res | {"timeout_s": round(timeout, 1)}
        if step.stage == "tests":
            entry["summary"] = pytest_summary(res["tail"])
            entry["status"] = "timeout" if res["timed_out"] else ("ok" if res["rc"] == 0 else "failed")
        elif step.stage in ("suite", "mpi"):
            part = json.loads(step.output.read_text()) if step.output.exists() else None
            if part is not None:
                parts.append(part)
            if res["timed_out"] or part is None:
                why = f"timed out after {timeout:.0f} s (gpu-check budget)" if res["timed_out"] else \
                    f"exited {res['rc']} without a record; see {res['log']}"
                failures.append({"benchmark": step.name, "device": device, "error": why})
            entry["status"] = "timeout" if res["timed_out"] else (
                "ok" if res["rc"] == 0 and part is not None and not part.get("errors") else "failed")
            entry["rows"] = len(part["rows"]) if part else 0
        else:  # chapters: capped by wall time
            progress = notebook_progress(step.output)
            entry["progress"] = progress
            entry["status"] = ("capped" if res["timed_out"] and not progress.get("failed") else
                               "ok" if res["rc"] == 0 and not res["timed_out"] else "failed")
        done.append(entry)
        print(f"[gpu-check] {step.stage}/{step.name}: {entry['status']} in {res['seconds']:.0f} s"
              + (f" ({entry['summary']})" if entry.get("summary") else ""), file=log, flush=True)
    stamp = started.strftime("%Y-%m-%d-%H%M")
    kind = "cpu-smoke" if smoke else "cuda"
    command = shlex.join(["gpu_check.py", *sys.argv[1:]]) if sys.argv and sys.argv[0] else "gpu_check.py"
    record_path = None
    if any(s.stage in ("suite", "mpi") for s in steps):
        record = merge_records(parts, failures, started=started, command=command, quick=smoke, device=device)
        name = f"{stamp}-cpu-smoke-quick.json" if smoke else f"{stamp}-cuda-gpu-check.json"
        record_path = _write_record(results / name, record)
    summary = {
        "started_utc": started.isoformat(timespec="seconds"), "mode": kind, "budget_s": budget,
        "wall_s": round(time.perf_counter() - t0, 1), "machine": machine_info(),
        "suite_record": record_path.name if record_path else None, "logs": str(logs),
        "passed": all(e["status"] in ("ok", "capped") for e in done),
        "notes": ["tests: no pytest marker for CUDA exists; the files that mention cuda were run",
                  "chapters: no step-cap parameter exists; each chapter was stopped at its wall-time budget",
                  "mpi: the suite's MPI benchmark on CUDA (benchmarks/mpi.py has no --device option)"],
        "stages": done,
    }
    summary_path = write_json_atomic(results / "gpu_check" / f"{stamp}-{kind}.json", summary)
    print(f"[gpu-check] {'passed' if summary['passed'] else 'FAILED'} in {summary['wall_s']:.0f} s; "
          f"records: {record_path or '(no suite stage)'}, {summary_path}", file=log, flush=True)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    mode.add_argument("--cpu-smoke", action="store_true", help="the same plumbing on the CPU at tiny sizes")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the whole check")
    parser.add_argument("--results", default=None, help="where the records go (default benchmarks/results)")
    parser.add_argument("--logs", default=None, help="logs and papermill notebooks (default _build/gpu_check/<stamp>)")
    parser.add_argument("--only", default=",".join(STAGES), help=f"stages, of {','.join(STAGES)}")
    parser.add_argument("--kinds", default=",".join(SUITE_KINDS), help="benchmarks of the suite stage")
    parser.add_argument("--chapters", nargs="+", default=list(NETWORK_CHAPTERS), help="network chapters to run")
    parser.add_argument("--chapter-seconds", type=float, default=None, help="wall-time cap per chapter")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    kinds = [s.strip() for s in args.kinds.split(",") if s.strip()]
    bad = sorted(set(only) - set(STAGES)) + sorted(set(kinds) - set(SUITE_KINDS))
    if bad or not only:
        parser.error(f"--only takes some of {','.join(STAGES)} and --kinds some of {','.join(SUITE_KINDS)}; got {bad}")
    if not 0 < args.budget <= 3600 or (args.chapter_seconds is not None and args.chapter_seconds <= 0):
        parser.error("--budget must be in (0, 3600] seconds and --chapter-seconds > 0")
    unknown = [c for c in args.chapters if not (ROOT / "book" / f"{c}.ipynb").exists()]
    if unknown:
        parser.error(f"--chapters: no book/<name>.ipynb for {unknown}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    logs = Path(args.logs) if args.logs else ROOT / "_build" / "gpu_check" / stamp
    default = ROOT / "_build" / "gpu_check" / "smoke-results" if args.cpu_smoke else ROOT / "benchmarks" / "results"
    results = Path(args.results) if args.results else default
    steps = plan(smoke=args.cpu_smoke, logs=logs.resolve(), only=only, kinds=kinds, chapters=args.chapters,
                 chapter_seconds=args.chapter_seconds)
    if args.dry_run:
        total = sum(s.budget for s in steps)
        print(f"# gpu-check plan: {len(steps)} steps, budgets summing to {total:.0f} s, whole check capped at "
              f"{args.budget:.0f} s; records into {results}")
        for s in steps:
            print(f"{s.stage:>8} {s.name:<14} {s.budget:>5.0f} s  {shlex.join(str(c) for c in s.command)}")
        print("# chapters: no step-cap parameter exists, so each is stopped at its wall-time budget")
        return 0
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: no CUDA device (torch.cuda.is_available() is False); use --dry-run or --cpu-smoke",
                  file=sys.stderr)
            return 2
    summary = run(steps, budget=args.budget, results=results, logs=logs, smoke=args.cpu_smoke)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
