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
                       "paper: ..." when it is a published time and not measured in this run
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
            "reference_seconds", "ratio", "extrapolated", "note")
TABLE_COLUMNS = ("benchmark", "device", "dtype", "size", "seconds", "throughput", "reference",
                 "reference s", "ratio", "note")


def make_row(benchmark: str, device, dtype: str, size: str, seconds: float, *, unit: str,
             work: float = 1.0, reference: str | None = None, reference_seconds: float | None = None,
             extrapolated: bool = False, note: str = "") -> dict:
    """One result row; ``throughput = work / seconds`` and ``ratio = reference_seconds / seconds``.

    Raises:
        ValueError: ``seconds`` or ``work`` not a positive finite number, or a reference time
            without a reference label.
    """
    for name, value in (("seconds", seconds), ("work", work)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if reference_seconds is not None:
        if not isinstance(reference_seconds, (int, float)) or not reference_seconds > 0:
            raise ValueError(f"reference_seconds must be a positive number or None, got {reference_seconds!r}")
        if not reference:
            raise ValueError("reference_seconds needs a reference label saying what it is")
    return {
        "benchmark": str(benchmark),
        "device": torch.device(device).type,
        "dtype": str(dtype),
        "size": str(size),
        "seconds": float(seconds),
        "throughput": float(work) / float(seconds),
        "unit": str(unit),
        "reference": reference,
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
    significant digits.
    """
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        missing = set(ROW_KEYS) - set(r)
        if missing:
            raise ValueError(f"row {r.get('benchmark')!r} lacks {sorted(missing)}")
        cells = [
            r["benchmark"], r["device"], r["dtype"], r["size"],
            _fmt(r["seconds"]) + ("*" if r["extrapolated"] else ""),
            f"{_fmt(r['throughput'])} {r['unit']}",
            r["reference"] or "",
            _fmt(r["reference_seconds"]),
            _fmt(r["ratio"]),
            r["note"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
