"""benchmarks/gpu_check.py on the CPU: its plan, its process handling and its --cpu-smoke plumbing.

The GPU check itself needs CUDA; here the same steps run on tiny sizes (--cpu-smoke), and the
pieces are checked against what they must do: a step over its budget is stopped with its
children, the per-benchmark records merge into one suite record the performance appendix can
read, and the whole plan fits in 10 minutes.
"""

from __future__ import annotations

import json
import sys
import time

import psutil
import pytest
import torch

from harness import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_common  # noqa: E402
import gpu_check  # noqa: E402


def test_plan_fits_in_ten_minutes_and_covers_every_stage(tmp_path, capsys):
    steps = gpu_check.plan(smoke=False, logs=tmp_path)
    assert sum(s.budget for s in steps) <= gpu_check.DEFAULT_BUDGET < 600
    assert [s.stage for s in steps][0] == "tests" and {s.stage for s in steps} == set(gpu_check.STAGES)
    suite = [s for s in steps if s.stage == "suite"]
    assert [s.name for s in suite] == list(gpu_check.SUITE_KINDS)
    for s in suite + [s for s in steps if s.stage == "mpi"]:
        assert s.command[s.command.index("--devices") + 1] == "cuda" and "--quick" not in s.command
    chapters = [s for s in steps if s.stage == "chapters"]
    names = {s.name for s in chapters}
    assert names <= set(gpu_check.NETWORK_CHAPTERS) and {"dpdnet", "rdpd", "drbnet", "mdp"} <= names
    for s in chapters:
        cmd = s.command
        assert cmd[cmd.index("profile") + 1] == "full" and cmd[cmd.index("device") + 1] == "cuda"
    tests = steps[0].command
    assert "tests/test_fftconv.py" in tests and "tests/test_gpu_check.py" not in tests  # no recursion
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "budgets summing to 505 s" in out and "no step-cap parameter" in out
    assert out.count("\n") == len(steps) + 2


def test_without_cuda_it_refuses_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cpu-smoke" in err[0]
    with pytest.raises(SystemExit):
        gpu_check.main(["--only", "everything"])
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--chapters", "no_such_chapter"])


def test_a_step_over_budget_is_stopped_with_its_children(tmp_path):
    # a parent that starts a child and both sleep: both must be gone after the budget
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)")
    t0 = time.perf_counter()
    res = gpu_check.run_command([sys.executable, "-c", code], timeout=1.5, log=tmp_path / "x.log")
    assert res["timed_out"] and time.perf_counter() - t0 < 20
    child = int(res["tail"][0])
    time.sleep(0.2)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    ok = gpu_check.run_command([sys.executable, "-c", "print('3 passed, 1 skipped in 0.1s')"], timeout=30,
                               log=tmp_path / "y.log")
    assert (ok["rc"], ok["timed_out"]) == (0, False)
    assert gpu_check.pytest_summary(ok["tail"]) == "3 passed, 1 skipped in 0.1s"


def test_merge_keeps_every_row_and_lists_what_failed():
    def row(name, ref, kind, s):
        return bench_common.make_row(name, "cpu", "fp32", "1", s, unit="images/s", reference=ref,
                                     reference_seconds=None if ref is None else 1.0, reference_kind=kind)

    a = {"rows": [row("x", "paper: t", "paper", 2.0), row("y", "peer: p", "peer", 0.5)], "errors": [],
         "settings": {"inference": {}}, "seconds_per_benchmark": {"inference/cpu": 3.0}, "wall_seconds": 3.0,
         "cpu_scale": 0.25, "device_names": {"cpu": "some CPU"}, "skipped_devices": ["cuda (absent)"]}
    b = {"rows": [row("z", "direct", None, 0.1)], "errors": [{"benchmark": "render", "device": "cpu", "error": "E"}],
         "settings": {"render": {}}, "seconds_per_benchmark": {"render/cpu": 1.0}, "wall_seconds": 1.0}
    timeout = {"benchmark": "training", "device": "cpu", "error": "timed out after 60 s (gpu-check budget)"}
    from datetime import datetime, timezone

    rec = gpu_check.merge_records([a, b], [timeout], started=datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc),
                                  command="gpu_check.py", quick=True, device="cpu")
    assert [r["benchmark"] for r in rec["rows"]] == ["y", "z", "x"]  # peer, own slow path, paper
    assert rec["errors"] == b["errors"] + [timeout] and rec["wall_seconds"] == 4.0
    assert set(rec["settings"]) == {"inference", "render"} and rec["date"] == "2026-01-02"
    assert rec["devices"] == ["cpu"] and rec["device_names"] == {"cpu": "some CPU"} and rec["quick"] is True
    # what the performance appendix reads of a record
    for key in ("started_utc", "torch", "threads", "cpu_count", "load_average_1min", "cpu_scale", "command"):
        assert key in rec, key
    assert bench_common.format_tables(rec["rows"]).count("| benchmark |") == 3


def test_cpu_smoke_runs_every_stage_and_writes_both_records(tmp_path):
    results, logs = tmp_path / "results", tmp_path / "logs"
    code = gpu_check.main(["--cpu-smoke", "--results", str(results), "--logs", str(logs), "--kinds",
                           "fftconv,peer_render", "--chapters", "dpdnet", "--chapter-seconds", "3"])
    summaries = list((results / "gpu_check").glob("*-cpu-smoke.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    stages = {(s["stage"], s["name"]): s for s in summary["stages"]}
    assert list(stages) == [("tests", "cuda"), ("suite", "fftconv"), ("suite", "peer_render"),
                            ("mpi", "mpi"), ("chapters", "dpdnet")]
    tests = stages["tests", "cuda"]
    assert tests["status"] == "ok" and "skipped" in tests["summary"], tests  # CUDA tests skip on a CPU
    for key in (("suite", "fftconv"), ("suite", "peer_render"), ("mpi", "mpi")):
        assert stages[key]["status"] == "ok" and stages[key]["rows"] > 0, stages[key]
    chapter = stages["chapters", "dpdnet"]
    assert chapter["status"] == "capped" and chapter["timed_out"] and chapter["seconds"] < 20, chapter
    assert "progress" in chapter
    assert code == 0 and summary["passed"] is True
    record = json.loads((results / summary["suite_record"]).read_text())
    assert record["quick"] is True and record["devices"] == ["cpu"] and record["errors"] == []
    kinds = [r["reference_kind"] for r in record["rows"]]
    assert kinds == ["peer", "peer", "own slow path", "own slow path", "paper"]
    assert [r["benchmark"] for r in record["rows"]][-1].startswith("MPI")
    for r in record["rows"]:
        assert set(bench_common.ROW_KEYS) <= set(r)
