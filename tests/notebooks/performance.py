"""Checks for book/performance.ipynb: what it rendered must match the JSON records, re-read here."""

import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _records():
    files = sorted(RESULTS.glob("*.json"))
    runs = [(f, json.loads(f.read_text())) for f in files]
    full = [(f, r) for f, r in runs if not r.get("quick")]
    return files, sorted(full, key=lambda fr: (fr[1]["started_utc"], fr[0].name))


# One ratio figure whenever a full run is recorded.
MIN_FIGURES = 1 if _records()[1] else 0


def _parse_table(markdown: str):
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    return cells[0], cells[2:]


def _num(cell: str):
    cell = cell.rstrip("*").strip()
    return float(cell.split()[0]) if cell else None


def check(metrics, output_dir):
    files, runs = _records()
    assert metrics["n_records"] == len(files)
    assert metrics["n_runs"] == len(runs)
    assert metrics["run_files"] == [f.name for f, _ in runs]
    gpu = [r for _, r in runs if "cuda" in r["devices"]]
    assert metrics["n_gpu_runs"] == len(gpu)
    if not gpu:
        assert "No GPU run has been recorded yet" in metrics["gpu_statement"]
        assert "make bench" in metrics["gpu_statement"]
    else:
        for r in gpu:
            assert r["device_names"]["cuda"] in metrics["gpu_statement"]

    assert len(metrics["tables"]) == len(runs)
    for shown, (f, rec) in zip(metrics["tables"], runs):
        assert (shown["file"], shown["date"], shown["torch"], shown["devices"]) == \
            (f.name, rec["date"], rec["torch"], rec["devices"])
        header, body = _parse_table(shown["table"])
        assert len(body) == len(rec["rows"]) == shown["n_rows"]
        col = {name: i for i, name in enumerate(header)}
        for cells, row in zip(body, rec["rows"]):
            assert cells[col["benchmark"]] == row["benchmark"] and cells[col["device"]] == row["device"]
            assert cells[col["seconds"]].endswith("*") == row["extrapolated"]
            seconds = _num(cells[col["seconds"]])
            assert math.isclose(seconds, row["seconds"], rel_tol=1e-3)
            if row["reference_seconds"] is None:
                assert _num(cells[col["ratio"]]) is None and row["ratio"] is None
            else:
                # recomputed from the file, not taken from its "ratio" field
                expected = row["reference_seconds"] / row["seconds"]
                assert math.isclose(row["ratio"], expected, rel_tol=1e-9), (f.name, row["benchmark"])
                assert math.isclose(_num(cells[col["ratio"]]), expected, rel_tol=1e-3), (f.name, row["benchmark"])
            # AMP is compared with the fp32 time of the same run and device
            if row["reference"] == "fp32 (same run)":
                fp32 = [q for q in rec["rows"] if q["benchmark"] == row["benchmark"]
                        and q["device"] == row["device"] and q["dtype"] == "fp32"]
                assert len(fp32) == 1 and row["reference_seconds"] == fp32[0]["seconds"]

    # Headline numbers come from the latest record with CPU rows.
    cpu = [(f, r) for f, r in runs if "cpu" in r["devices"]]
    head = metrics["headline"]
    if not cpu:
        assert metrics["headline_file"] == "none" and all(v is None for v in head.values())
        return
    f, rec = cpu[-1]
    assert metrics["headline_file"] == f.name

    def fp32_cpu(prefix):
        hits = [r for r in rec["rows"] if r["device"] == "cpu" and r["dtype"] == "fp32"
                and r["benchmark"].startswith(prefix)]
        return hits[-1] if hits else None

    for key, prefix, value in (
        ("fft_61_ratio", "fft_conv2d k=61", lambda r: r["reference_seconds"] / r["seconds"]),
        ("render_ratio", "render_views FFT", lambda r: r["reference_seconds"] / r["seconds"]),
        ("render_seconds", "render_views FFT", lambda r: r["seconds"]),
        ("mpi_hours_10k", "MPI optimize", lambda r: r["seconds"] * 10_000 / 3600),
        ("dpdnet_cpu_seconds", "dpdnet inference", lambda r: r["seconds"]),
        ("mdp_cpu_samples_per_s", "mdp training step", lambda r: int(r["size"].split()[1]) / r["seconds"]),
    ):
        row = fp32_cpu(prefix)
        if row is None:
            assert head[key] is None, key
        else:
            assert math.isclose(head[key], value(row), rel_tol=1e-9), key
