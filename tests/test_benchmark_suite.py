"""Smoke test of benchmarks/suite.py: the --quick run on tiny sizes, its tables and its JSON record.

No timing threshold is asserted (timings are machine- and load-dependent); what must hold is
the structure: every benchmark family is there, every row names its reference and its kind,
the printed tables (one per kind) have one line per recorded row, the headline lines are the
peer rows only, and every ratio is reference_seconds / seconds of the same row.
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


def _tables(stdout: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every Markdown table of the output with the heading above it: (heading, header, body)."""
    out, heading, lines = [], None, stdout.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("###"):
            heading = lines[i].lstrip("#").strip()
        if lines[i].startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            split = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in block]
            assert len(split) >= 2 and set("".join(block[1].split("|"))) <= {"-", " "}, "no Markdown table header"
            out.append((heading, split[0], split[2:]))
            continue
        i += 1
    return out


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
        def kinds(prefix):
            return sorted(r["reference_kind"] for r in rows if r["benchmark"].startswith(prefix))

        assert kinds("fft_conv2d") == ["own slow path"] * 2
        assert kinds("render_views FFT") == kinds("render_views strip") == ["own slow path"]
        # the renderer against the RDPD generator procedure: same output (hard mask) and dplab's default
        for mode in ("hard_mask", "alpha"):
            peer = [r for r in rows if r["benchmark"].startswith(f"render_views {mode}")]
            assert len(peer) == 1 and peer[0]["reference_kind"] == "peer", mode
            assert peer[0]["reference"].startswith("peer: RDPD generator procedure")
        hard = next(r for r in rows if r["benchmark"].startswith("render_views hard_mask"))
        assert "same output as the peer" in hard["note"] and "(within 1e-05)" in hard["note"], hard["note"]
        assert kinds("MPI") == ["paper"]
        for net in NETWORKS:
            inf = [r for r in rows if r["benchmark"] == f"{net} inference"]
            peer = [r for r in inf if r["reference_kind"] == "peer"]
            # fp32, plus AMP on CUDA, each against the authors' way of running the network
            assert [r["dtype"] for r in peer][:1] == ["fp32"] and len(peer) == (2 if device == "cuda" else 1), net
            assert all(r["reference"] == peer[0]["reference"] and r["reference_seconds"] == peer[0]["reference_seconds"]
                       for r in peer)
            # the same module on the same input: equal on the CPU; cuDNN may pick other kernels per call
            diff = float(peer[0]["note"].split("max |output - peer's output| ")[1].split(";")[0])
            assert diff == 0 if device == "cpu" else diff <= 1e-4, peer[0]["note"]
            paper = [r for r in inf if r["reference_kind"] == "paper"]
            assert len(paper) == (net in ("dpdnet", "rdpd", "mdp")), net  # the papers publish no DRBNet time
            for r in paper:  # the same measured seconds as the fp32 peer row, against the typed time
                assert r["reference"].startswith("paper:") and r["seconds"] == peer[0]["seconds"]
            per_net = 2 if device == "cuda" else 1  # fp32, plus AMP on CUDA
            assert sum(r["benchmark"] == f"{net} training step" for r in rows) == per_net, net
    assert len(names) == len(record["rows"])
    # rows ordered by kind: peer, own slow path, paper, none
    order = [(*bench_common.REFERENCE_KINDS, None).index(r["reference_kind"]) for r in record["rows"]]
    assert order == sorted(order)
    for r in record["rows"]:
        assert set(bench_common.ROW_KEYS) <= set(r)
        assert (r["reference"] is None) == (r["reference_kind"] is None), r
        assert r["reference_kind"] in (*bench_common.REFERENCE_KINDS, None)
        assert (r["reference_kind"] == "paper") == bool(r["reference"] and r["reference"].startswith("paper:")), r
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
    # AMP training steps (CUDA only) are compared with the fp32 step of the same network in this run.
    for r in record["rows"]:
        if r["reference"] == "fp32 (same run)":
            assert r["reference_kind"] == "own slow path"
            fp32 = [q for q in record["rows"] if q["benchmark"] == r["benchmark"] and q["device"] == r["device"]
                    and q["dtype"] == "fp32"]
            assert len(fp32) == 1 and r["reference_seconds"] == fp32[0]["seconds"]


def test_quick_suite_table_matches_record(quick_run):
    stdout, record, _ = quick_run
    tables = _tables(stdout)
    # one table per kind, in the order peer, own slow path, paper, none; never two kinds in one
    kinds = [k for k in (*bench_common.REFERENCE_KINDS, None) if any(r["reference_kind"] == k for r in record["rows"])]
    assert [t[0] for t in tables] == [bench_common.KIND_TITLES[k] for k in kinds]
    body = [cells for _, header, rows in tables for cells in rows]
    header = tables[0][1]
    assert all(t[1] == list(bench_common.TABLE_COLUMNS) for t in tables)
    assert len(body) == len(record["rows"])
    col = {name: i for i, name in enumerate(header)}
    for (heading, _, rows), kind in zip(tables, kinds):
        assert {cells[col["kind"]] for cells in rows} == {kind or ""}, heading
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


def test_headline_lines_are_the_peer_rows(quick_run):
    stdout, record, _ = quick_run
    lines = [ln[len("# headline: "):] for ln in stdout.splitlines() if ln.startswith("# headline: ")]
    peer = [r for r in record["rows"] if r["reference_kind"] == "peer"]
    assert len(lines) == len(peer) > 0
    for line, r in zip(lines, peer):
        assert line.startswith(f"{r['device']} {r['benchmark']} ({r['dtype']}")
        assert f"{r['reference_seconds'] / r['seconds']:.3g}x as fast as" in line
    assert not any("paper" in ln.split(" as fast as ")[1] for ln in lines)


def test_old_records_are_read_as_before():
    """A record written before reference_kind existed: every row still formats, kinds inferred
    from the labels (papers' times as paper, the rest as dplab's own slower paths, no peer)."""
    old = {"benchmark": "dpdnet inference", "device": "cpu", "dtype": "fp32", "size": "1x6x1120x1680",
           "seconds": 6.0, "throughput": 1 / 6.0, "unit": "images/s", "reference": "paper: RDPD Table 1, GPU",
           "reference_seconds": 0.5, "ratio": 0.5 / 6.0, "extrapolated": True, "note": ""}
    amp = dict(old, reference="fp32 (same run)", dtype="bf16 autocast")
    bare = dict(old, reference=None, reference_seconds=None, ratio=None)
    assert bench_common.missing_keys(old) == []
    assert [bench_common.reference_kind(r) for r in (old, amp, bare)] == ["paper", "own slow path", None]
    assert list(bench_common.by_kind([bare, old, amp])) == ["own slow path", "paper", None]
    assert bench_common.peer_headline([old, amp, bare]) == []
    table = bench_common.format_table([old])
    assert "| paper |" in table and "| 0.5* |" not in table and "| 6* |" in table
    with pytest.raises(ValueError, match="lacks"):
        bench_common.format_table([{k: v for k, v in old.items() if k != "seconds"}])
    for f in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        rows = json.loads(f.read_text())["rows"]
        assert bench_common.format_tables(rows).count("| benchmark |") == len(bench_common.by_kind(rows)), f.name


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
    assert row["reference_kind"] == "own slow path"  # inferred from a label that is neither paper nor peer
    for kind, label, expected in (("peer", "peer: x", "peer"), (None, "paper: y", "paper"), (None, None, None)):
        r = bench_common.make_row("x", "cpu", "fp32", "1", 1.0, unit="s", reference=label, reference_kind=kind)
        assert r["reference_kind"] == expected
    with pytest.raises(ValueError, match="reference_kind"):
        bench_common.make_row("x", "cpu", "fp32", "1", 1.0, unit="s", reference="a", reference_kind="mine")
    with pytest.raises(ValueError, match="paper"):  # a typed paper time is never a peer
        bench_common.make_row("x", "cpu", "fp32", "1", 1.0, unit="s", reference="paper: z", reference_kind="peer")


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
