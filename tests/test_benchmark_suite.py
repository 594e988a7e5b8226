"""Smoke test of benchmarks/suite.py: the --quick run on tiny sizes, its table and its JSON record.

No timing threshold is asserted (timings are machine- and load-dependent); what must hold is
the structure: every benchmark family is there, the printed table has one line per recorded
row, and every ratio is reference_seconds / seconds of the same row.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from harness import ROOT

BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_common  # noqa: E402
import suite  # noqa: E402

NETWORKS = ("dpdnet", "rdpd", "drbnet", "drbnet_dual", "mdp")


def _table(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert len(split) >= 2 and set("".join(lines[1].split("|"))) <= {"-", " "}, "no Markdown table header"
    return split[0], split[2:]


def _num(cell: str) -> float | None:
    cell = cell.rstrip("*").strip()
    return float(cell.split()[0]) if cell else None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "suite.py"), "--quick", "--threads", "1", "--devices", "cpu,cuda",
         "--json", f"{out}/"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return proc.stdout, json.loads(files[0].read_text()), files[0]


def test_quick_suite_record(quick_run):
    stdout, record, path = quick_run
    assert path.name == f"{record['date']}-{'cuda' if torch.cuda.is_available() else 'cpu'}-quick.json"
    for key in ("date", "started_utc", "torch", "threads", "cpu", "gpu", "device_names", "rows", "errors"):
        assert key in record, key
    assert record["torch"] == torch.__version__ and record["threads"] == 1 and record["quick"] is True
    assert record["errors"] == []
    expected_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    assert record["devices"] == expected_devices
    if not torch.cuda.is_available():
        assert record["gpu"] is None and any("cuda" in s for s in record["skipped_devices"])
        assert "# skipped: cuda" in stdout
    names = [r["benchmark"] for r in record["rows"]]
    for device in expected_devices:
        rows = [r for r in record["rows"] if r["device"] == device]
        assert sum(r["benchmark"].startswith("fft_conv2d") for r in rows) == 2
        assert sum(r["benchmark"].startswith("render_views") for r in rows) == 2
        assert sum(r["benchmark"].startswith("MPI") for r in rows) == 1
        for net in NETWORKS:
            per_net = 2 if device == "cuda" else 1  # fp32, plus AMP on CUDA
            assert sum(r["benchmark"] == f"{net} inference" for r in rows) == per_net, net
            assert sum(r["benchmark"] == f"{net} training step" for r in rows) == per_net, net
    assert len(names) == len(record["rows"])
    for r in record["rows"]:
        assert set(bench_common.ROW_KEYS) <= set(r)
        assert r["seconds"] > 0
        if r["unit"] == "samples/s":  # a training step processes the whole batch
            work = int(r["size"].split()[1])
        elif r["unit"] == "Mpx/s":
            work = math.prod(int(v) for v in r["size"].split("x")[-2:]) / 1e6
        else:  # one image, one DP pair, one iteration
            work = 1
        assert math.isclose(r["throughput"] * r["seconds"], work, rel_tol=1e-9), r
        if r["reference_seconds"] is None:
            assert r["ratio"] is None
        else:
            assert r["reference"] and math.isclose(r["ratio"], r["reference_seconds"] / r["seconds"], rel_tol=1e-12)
        assert r["extrapolated"] is False  # --quick times every size it reports
    # AMP rows (CUDA only) are compared with the fp32 row of the same network measured in this run.
    for r in record["rows"]:
        if r["dtype"] != "fp32" and "autocast" in r["dtype"]:
            fp32 = [q for q in record["rows"] if q["benchmark"] == r["benchmark"] and q["device"] == r["device"]
                    and q["dtype"] == "fp32"]
            assert len(fp32) == 1 and r["reference_seconds"] == fp32[0]["seconds"]


def test_quick_suite_table_matches_record(quick_run):
    stdout, record, _ = quick_run
    header, body = _table(stdout)
    assert header == list(bench_common.TABLE_COLUMNS)
    assert len(body) == len(record["rows"])
    col = {name: i for i, name in enumerate(header)}
    for cells, r in zip(body, record["rows"]):
        assert len(cells) == len(header)
        assert (cells[col["benchmark"]], cells[col["device"]], cells[col["dtype"]]) == \
            (r["benchmark"], r["device"], r["dtype"])
        seconds, ref, ratio = (_num(cells[col[k]]) for k in ("seconds", "reference s", "ratio"))
        assert math.isclose(seconds, r["seconds"], rel_tol=1e-3)
        if r["reference_seconds"] is None:
            assert ref is None and ratio is None
        else:
            # the printed ratio is the printed reference over the printed time (4 significant digits)
            assert math.isclose(ratio, r["reference_seconds"] / r["seconds"], rel_tol=1e-3)
            assert math.isclose(ratio, ref / seconds, rel_tol=2e-3)


def test_make_row_and_table_arithmetic():
    row = bench_common.make_row("x", "cpu", "fp32", "1x1", 0.25, unit="images/s", work=2,
                                reference="direct", reference_seconds=5.0, extrapolated=True)
    assert row["throughput"] == 8.0 and row["ratio"] == 20.0
    line = bench_common.format_table([row]).splitlines()[2]
    assert "| 0.25* |" in line and "| 20 |" in line and "8 images/s" in line
    with pytest.raises(ValueError, match="seconds"):
        bench_common.make_row("x", "cpu", "fp32", "1", 0.0, unit="s")
    with pytest.raises(ValueError, match="reference label"):
        bench_common.make_row("x", "cpu", "fp32", "1", 1.0, unit="s", reference_seconds=1.0)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="devices"):
        bench_common.parse_devices("tpu")
    with pytest.raises(ValueError, match="scale"):
        bench_common.scaled_hw(1120, 1680, 1.5)
    assert bench_common.scaled_hw(1120, 1680, 0.25) == (288, 416)
    with pytest.raises(ValueError, match="cpu_scale"):
        suite.run_suite(quick=True, cpu_scale=0)
    with pytest.raises(ValueError, match="only"):
        suite.run_suite(quick=True, only=["nothing"])
    if not torch.cuda.is_available():
        devices, skipped = bench_common.parse_devices("cpu,cuda")
        assert devices == [torch.device("cpu")] and "cuda" in skipped[0]
        with pytest.raises(ValueError, match="CUDA"):
            bench_common.amp_dtype("cpu")
