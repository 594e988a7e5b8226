"""Shared pieces of the benchmark scripts: timing with CUDA synchronisation, autocast, result
rows, the Markdown table and the description of the machine.

Every benchmark returns a list of *rows*, plain dicts with the keys of :data:`ROW_KEYS`:

    benchmark          what was timed ("dpdnet inference", "fft_conv2d k=61", ...)
    device             "cpu" or "cuda"
    dtype              "fp32", "bf16 autocast", "fp16 autocast + GradScaler"
    size               the size the figure is *for* ("1x3x1120x1680", "batch 5 x 512x512")
    seconds            seconds per unit of work (an image, an iteration, a training step)
    throughput, unit   work per second ("images/s", "samples/s", "iter/s", "Mpx/s")
    reference          what the ratio compares against, e.g. "direct conv2d" or "fp32";
                       "paper: ..." when it is a published time and not measured in this run,
                       "peer: ..." when it is what a user would otherwise run
    reference_kind     what kind of reference (:data:`REFERENCE_KINDS`): "peer" (what a user
                       would otherwise run, measured in the same run: the authors' procedure
                       or the authors' way of running a network), "paper" (a time typed from a
                       paper, other hardware, not measured here) or "own slow path" (a slower
                       path of dplab or the torch primitive it replaces, e.g. direct conv2d, fp32
                       for AMP); None without a reference. Headline ratios are peer ratios only.
                       Records written before this field existed lack it: :func:`reference_kind`
                       infers it from the label (they hold no peer rows)
    reference_seconds  seconds of the reference for the same unit of work (or None)
    ratio              reference_seconds / seconds: how many times faster than the reference
    extrapolated       True when ``seconds`` was measured on a smaller input and scaled by pixel
                       count (CPU runs, ``--cpu-scale``); the note gives the measured size
    note               anything else (measured size and time, checks)
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time

import torch

ROW_KEYS = ("benchmark", "device", "dtype", "size", "seconds", "throughput", "unit", "reference",
            "reference_kind", "reference_seconds", "ratio", "extrapolated", "note")
#: Keys that rows of older records may lack (they are inferred when read).
LATER_KEYS = ("reference_kind",)
TABLE_COLUMNS = ("benchmark", "device", "dtype", "size", "seconds", "throughput", "reference", "kind",
                 "reference s", "ratio", "note")
#: Kinds of reference, in the order tables show them (see the module docstring).
REFERENCE_KINDS = ("peer", "own slow path", "paper")
#: Section titles of :func:`format_tables`, per kind (None: rows without a reference).
KIND_TITLES = {
    "peer": "Against peers: what a user would otherwise run, measured in the same run",
    "own slow path": "Against dplab's own slower paths (or the torch primitive they replace), same run",
    "paper": "Against times typed from papers: other hardware, not measured here",
    None: "No reference",
}


def infer_reference_kind(reference: str | None) -> str | None:
    """Kind of a reference from its label: ``"paper: ..."`` -> paper, ``"peer: ..."`` -> peer,
    any other label -> own slow path, None -> None (how rows of older records are read).

    Example:
        >>> [infer_reference_kind(x) for x in ("paper: RDPD Table 1", "fp32 (same run)", None)]
        ['paper', 'own slow path', None]
    """
    if reference is None:
        return None
    label = str(reference).strip().lower()
    if label.startswith("paper"):
        return "paper"
    if label.startswith("peer"):
        return "peer"
    return "own slow path"


def reference_kind(row: dict) -> str | None:
    """The row's ``reference_kind``, or the kind inferred from its label when the row predates it."""
    kind = row.get("reference_kind")
    return kind if kind is not None else infer_reference_kind(row.get("reference"))


def missing_keys(row: dict) -> list[str]:
    """Keys of :data:`ROW_KEYS` a row lacks, not counting :data:`LATER_KEYS` (older records)."""
    return sorted(set(ROW_KEYS) - set(LATER_KEYS) - set(row))


def by_kind(rows: list[dict]) -> dict:
    """Rows grouped by :func:`reference_kind` in the order of :data:`REFERENCE_KINDS` (then None),
    each group in its original order; empty groups left out."""
    groups = {k: [r for r in rows if reference_kind(r) == k] for k in (*REFERENCE_KINDS, None)}
    return {k: v for k, v in groups.items() if v}


def make_row(benchmark: str, device, dtype: str, size: str, seconds: float, *, unit: str,
             work: float = 1.0, reference: str | None = None, reference_seconds: float | None = None,
             reference_kind: str | None = None, extrapolated: bool = False, note: str = "") -> dict:
    """One result row; ``throughput = work / seconds`` and ``ratio = reference_seconds / seconds``.

    ``reference_kind`` defaults to :func:`infer_reference_kind` of the label.

    Raises:
        ValueError: ``seconds`` or ``work`` not a positive finite number, a reference time
            without a reference label, an unknown ``reference_kind``, a kind without a
            reference, or a "paper: ..." label given another kind.
    """
    for name, value in (("seconds", seconds), ("work", work)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if reference_seconds is not None:
        if not isinstance(reference_seconds, (int, float)) or not reference_seconds > 0:
            raise ValueError(f"reference_seconds must be a positive number or None, got {reference_seconds!r}")
        if not reference:
            raise ValueError("reference_seconds needs a reference label saying what it is")
    if reference_kind is None:
        reference_kind = infer_reference_kind(reference)
    elif reference_kind not in REFERENCE_KINDS:
        raise ValueError(f"reference_kind must be one of {REFERENCE_KINDS} (or None), got {reference_kind!r}")
    elif not reference:
        raise ValueError("reference_kind needs a reference label saying what the reference is")
    elif (infer_reference_kind(reference) == "paper") != (reference_kind == "paper"):
        raise ValueError(f"a paper's time is labelled 'paper: ...' and has reference_kind 'paper'; "
                         f"got {reference!r} with {reference_kind!r}")
    return {
        "benchmark": str(benchmark),
        "device": torch.device(device).type,
        "dtype": str(dtype),
        "size": str(size),
        "seconds": float(seconds),
        "throughput": float(work) / float(seconds),
        "unit": str(unit),
        "reference": reference,
        "reference_kind": reference_kind,
        "reference_seconds": None if reference_seconds is None else float(reference_seconds),
        "ratio": None if reference_seconds is None else float(reference_seconds) / float(seconds),
        "extrapolated": bool(extrapolated),
        "note": str(note),
    }


def synchronize(device) -> None:
    """Wait for queued CUDA work on ``device`` (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_best_times(fns, device, *, repeats: int = 1, warmup: int = 0) -> tuple[list[float], list]:
    """Best wall time (s) of each of ``fns`` over ``repeats`` rounds, the calls interleaved
    (ABBA: each round in the reverse order of the previous one) so that a change of load or
    of clock affects all alike; ``warmup`` untimed calls of each first. Returns the times and
    the last output of each function."""
    fns = list(fns)
    if int(repeats) < 1 or int(warmup) < 0 or not fns:
        raise ValueError(f"repeats must be >= 1, warmup >= 0 and fns non-empty, got {repeats}, {warmup}, {len(fns)}")
    for fn in fns:
        for _ in range(int(warmup)):
            fn()
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for rep in range(int(repeats)):
        order = range(len(fns)) if rep % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            synchronize(device)
            t0 = time.perf_counter()
            outs[i] = fns[i]()
            synchronize(device)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


def best_time(fn, device, *, repeats: int = 1, warmup: int = 0) -> float:
    """Best wall time (s) of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls,
    synchronising CUDA before and after each timed call."""
    if int(repeats) < 1 or int(warmup) < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(int(warmup)):
        fn()
    best = float("inf")
    for _ in range(int(repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def amp_dtype(device) -> torch.dtype:
    """Autocast dtype for inference on ``device``: bf16 where the GPU supports it, else fp16."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"AMP is benchmarked on CUDA only (dplab.training.trainer runs fp32 on the CPU), got {device}")
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, enabled: bool):
    """``torch.autocast`` on CUDA with :func:`amp_dtype`, or a null context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def scaled_hw(height: int, width: int, scale: float, multiple: int = 16) -> tuple[int, int]:
    """``(height, width) * scale`` rounded to ``multiple`` (at least one multiple)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


def parse_devices(spec: str) -> tuple[list[torch.device], list[str]]:
    """``"cpu,cuda"`` -> the available devices and a list of skipped names with the reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"devices must be a comma-separated list such as 'cpu,cuda', got {spec!r}")
    devices, skipped = [], []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in ("cpu", "cuda"):
            raise ValueError(f"devices: unknown device {name!r}; use 'cpu' and/or 'cuda'")
        if name == "cuda" and not torch.cuda.is_available():
            skipped.append("cuda (torch.cuda.is_available() is False on this machine)")
            continue
        devices.append(torch.device(name))
    return devices, skipped


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def machine_info() -> dict:
    """What a recorded run needs to be read later: models, versions, threads, load."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def format_table(rows: list[dict]) -> str:
    """Markdown table of rows (columns :data:`TABLE_COLUMNS`); extrapolated times get a ``*``.

    The ratio column is ``reference_seconds / seconds`` of the same row, printed with four
    significant digits; the kind column is :func:`reference_kind` (inferred for older rows).
    """
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        missing = missing_keys(r)
        if missing:
            raise ValueError(f"row {r.get('benchmark')!r} lacks {missing}")
        cells = [
            r["benchmark"], r["device"], r["dtype"], r["size"],
            _fmt(r["seconds"]) + ("*" if r["extrapolated"] else ""),
            f"{_fmt(r['throughput'])} {r['unit']}",
            r["reference"] or "",
            reference_kind(r) or "",
            _fmt(r["reference_seconds"]),
            _fmt(r["ratio"]),
            r["note"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_tables(rows: list[dict], heading: str = "###") -> str:
    """One :func:`format_table` per reference kind (:func:`by_kind`), each under a Markdown
    heading of :data:`KIND_TITLES`: peer ratios, dplab's own slower paths and the papers'
    typed times are never mixed in one table."""
    return "\n\n".join(f"{heading} {KIND_TITLES[k]}\n\n{format_table(group)}" for k, group in by_kind(rows).items())


def peer_headline(rows: list[dict]) -> list[str]:
    """One line per peer row, ``"<device> <benchmark> (<dtype>, <size>): <ratio>x as fast as <peer> (...)"``,
    where ratio is the peer's time over dplab's: the only ratios a headline may quote."""
    out = []
    for r in rows:
        if reference_kind(r) == "peer" and r["ratio"] is not None:
            out.append(f"{r['device']} {r['benchmark']} ({r['dtype']}, {r['size']}): {r['ratio']:.3g}x as fast as "
                       f"{r['reference'].split(':', 1)[-1].strip()} ({_fmt(r['seconds'])} s vs "
                       f"{_fmt(r['reference_seconds'])} s)")
    return out
