"""Every speed benchmark of dplab in one run: Markdown tables and a JSON record.

What it runs, on the CPU and on CUDA when present (``--devices``), each row next to a
reference that the row names (``reference``) and classifies (``reference_kind``):

| benchmark | reference | kind |
| --- | --- | --- |
| layered DP rendering, 38 layers, 1680x1120, hard mask and alpha (``peer_render.py``) | the RDPD authors' generator procedure (whole-image blur per layer and view, mask, sum), numpy/scipy, same run | peer |
| inference per 1680x1120 image of dpdnet, rdpd, drbnet, drbnet_dual, mdp, fp32 and AMP (``networks.py``) | the same network run as its authors' code runs it (fp32, NCHW, eager, ``torch.no_grad``), same run | peer |
| ``fft_conv2d`` at kernel sizes 7 to 61 (``fftconv.py``) | direct depthwise ``conv2d`` | own slow path |
| layered DP rendering, 100 layers, 1680x1120 (``render.py``) | the direct-convolution renderer (measured on a strip, MAC-extrapolated to the frame) | own slow path |
| one Trainer step per network at its recipe's patch and batch, fp32 and AMP | fp32 for AMP | own slow path |
| inference, fp32 (the same seconds as the peer row) | paper: RDPD Table 1 / MDP Table 1, GPUs of their time | paper |
| MPI optimisation, s per Adam iteration, 1344x1008, 12 layers (``mpi.py``) | paper: 2 h / 10,000 iterations on a Titan RTX | paper |

``ratio`` is always ``reference_seconds / seconds`` of the same row (how many times faster).
Headline ratios (the ``# headline`` lines) are peer ratios only; rows against dplab's own
slower paths and against the papers' typed times are printed in tables of their own and
recorded with their kind. On the CPU the networks, the training steps and MPI run on a
``--cpu-scale`` fraction of height and width (training: one sample) and are scaled by pixel
count (and batch); those rows are marked ``extrapolated`` (a ``*`` after the seconds in the
table). AMP rows exist on CUDA only (dplab.training.trainer refuses AMP on the CPU).
``--quick`` shrinks everything (tiny images, narrow networks) into a smoke test of a few
seconds whose numbers mean nothing.

    .venv/bin/python benchmarks/suite.py [--quick] [--devices cpu,cuda] [--cpu-scale S]
        [--json PATH] [--threads N] [--only peer_render,render,mpi,...]

``--json DIR/`` (a folder, trailing slash or existing) writes ``DIR/<date>-<cpu|cuda>.json``.
``make bench`` runs it with ``--json benchmarks/results/``; the book's appendix
(``book/performance.ipynb``) shows every file there. Rows of the record are ordered by kind
(peer, own slow path, paper, none), each kind in the order the suite ran them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fftconv  # noqa: E402
import mpi  # noqa: E402
import networks  # noqa: E402
import peer_render  # noqa: E402
import render  # noqa: E402
from bench_common import (by_kind, device_name, format_tables, machine_info, parse_devices,  # noqa: E402
                          peer_headline)
from dplab._io import atomic_file  # noqa: E402

# mpi last: dplab.xin.mpi.optimize raises glibc's mmap threshold process-wide (reuse_memory),
# so the process keeps its peak memory afterwards; nothing measured after it should see that.
BENCHMARKS = ("fftconv", "render", "peer_render", "inference", "training", "mpi")
#: Narrow networks for --quick (the numbers of a smoke test mean nothing; the code paths are the same).
QUICK_MODELS = {
    "dpdnet": {"widths": (8, 8, 8, 8)},
    "rdpd": {"widths": (8, 8, 8, 8), "lstm_channels": 8},
    "drbnet": {"width": 8},
    "drbnet_dual": {"width": 8},
    "mdp": {"width": 0.125},
}


def settings(quick: bool, cpu_scale: float) -> dict:
    """Sizes of every benchmark: the paper's (``quick=False``) or a smoke test's."""
    if quick:
        return {"fftconv": {"size": 64, "kernels": (7, 31), "repeats": 1},
                "render": {"size": (96, 144), "layers": 8, "strip": 8, "repeats": 1},
                "peer_render": {"size": (48, 72), "layers": 4, "repeats": 1},
                "mpi": {"size": (96, 128), "layers": 2, "iterations": 2, "blend": 2},
                "inference": {"size": (32, 48), "models": QUICK_MODELS},
                "training": {"patch": 32, "batch": 2, "models": QUICK_MODELS},
                "cpu_scale": 1.0}
    return {"fftconv": {"size": 512, "kernels": (7, 15, 31, 61), "repeats": 3},
            "render": {"size": (1120, 1680), "layers": 100, "strip": 40, "repeats": 2},
            "peer_render": {"size": peer_render.FULL_SIZE, "layers": peer_render.FULL_LAYERS, "repeats": 1},
            "mpi": {"size": (1008, 1344), "layers": 12, "iterations": 3, "cuda_iterations": 30, "blend": 8},
            "inference": {"size": (1120, 1680), "models": {n: {} for n in networks.NETWORKS}},
            "training": {"patch": None, "batch": None, "models": {n: {} for n in networks.NETWORKS}},
            "cpu_scale": float(cpu_scale)}


def run_one(kind: str, device: torch.device, cfg: dict, data_dir) -> list[dict]:
    """Rows of one benchmark ``kind`` on one device with the sizes of :func:`settings`."""
    scale = 1.0 if device.type == "cuda" else cfg["cpu_scale"]
    c = cfg[kind]
    if kind == "fftconv":
        return fftconv.rows(device, c["size"], kernels=c["kernels"], repeats=c["repeats"])
    if kind == "render":
        return render.rows(device, c["size"], c["layers"], strip=c["strip"] if device.type == "cpu" else 20,
                           repeats=c["repeats"])
    if kind == "peer_render":
        return peer_render.rows(device, c["size"], c["layers"], repeats=c["repeats"])
    if kind == "mpi":
        iters = c.get("cuda_iterations", c["iterations"]) if device.type == "cuda" else c["iterations"]
        return mpi.rows(device, c["size"], c["layers"], iters, scale=scale, blend=c["blend"], data_dir=data_dir)
    if kind == "inference":
        return [r for name, mc in c["models"].items()
                for r in networks.inference_rows(name, device, c["size"], scale=scale, model_cfg=mc)]
    if kind == "training":
        return [r for name, mc in c["models"].items()
                for r in networks.training_rows(name, device, patch=c["patch"], batch=c["batch"], scale=scale,
                                                model_cfg=mc)]
    raise ValueError(f"unknown benchmark {kind!r}; known: {BENCHMARKS}")


def run_suite(*, quick: bool = False, devices: str = "cpu,cuda", cpu_scale: float = 0.25,
              only=BENCHMARKS, data_dir=None, log=sys.stderr) -> dict:
    """Run the benchmarks and return the record (``rows``, ``errors``, machine description).

    A benchmark that raises is recorded under ``errors`` (with its traceback's last line) and
    the others still run, so one out-of-memory error does not lose a long GPU run.
    """
    if not 0 < cpu_scale <= 1:
        raise ValueError(f"cpu_scale must be in (0, 1], got {cpu_scale!r}")
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown or not only:
        raise ValueError(f"only must name some of {BENCHMARKS}, got {list(only)}")
    devs, skipped = parse_devices(devices)
    cfg = settings(quick, cpu_scale)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    rows, errors, times = [], [], {}
    for device in devs:
        for kind in (k for k in BENCHMARKS if k in only):
            t = time.perf_counter()
            try:
                got = run_one(kind, device, cfg, data_dir)
            except Exception as exc:  # keep the other benchmarks of a long run
                errors.append({"benchmark": kind, "device": device.type, "error": f"{type(exc).__name__}: {exc}"})
                print(traceback.format_exc(), file=log, flush=True)
                continue
            times[f"{kind}/{device.type}"] = time.perf_counter() - t
            rows += got
            for r in got:
                print(f"[{time.perf_counter() - t0:7.1f} s] {r['device']:>4} {r['benchmark']} {r['dtype']}: "
                      f"{r['seconds']:.4g} s", file=log, flush=True)
    rows = [r for group in by_kind(rows).values() for r in group]  # peer, own slow path, paper, none
    info = machine_info()
    return {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv and sys.argv[0] else "",
        "quick": bool(quick),
        "cpu_scale": cfg["cpu_scale"],
        "devices": [d.type for d in devs],
        "device_names": {d.type: device_name(d) for d in devs},
        "skipped_devices": skipped,
        **info,
        "settings": json.loads(json.dumps({k: v for k, v in cfg.items() if k in only}, default=str)),
        "seconds_per_benchmark": times,
        "wall_seconds": time.perf_counter() - t0,
        "rows": rows,
        "errors": errors,
    }


def json_path(target: str, record: dict) -> Path:
    """``target`` itself, or ``target/<date>-<cpu|cuda>.json`` when it names a folder."""
    path = Path(target)
    if target.endswith(("/", os.sep)) or path.is_dir():
        kind = "cuda" if "cuda" in record["devices"] else "cpu"
        path = path / f"{record['date']}-{kind}{'-quick' if record['quick'] else ''}.json"
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers meaningless")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    parser.add_argument("--cpu-scale", type=float, default=0.25,
                        help="CPU: fraction of height and width timed for networks, training and MPI")
    parser.add_argument("--json", default=None, help="write the record here (a folder: <date>-<cpu|cuda>.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--data-dir", default=os.environ.get("DPLAB_DATA"),
                        help="data directory (real Pixel 4 kernels for MPI when present)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    try:
        record = run_suite(quick=args.quick, devices=args.devices, cpu_scale=args.cpu_scale,
                           only=[s.strip() for s in args.only.split(",") if s.strip()], data_dir=args.data_dir)
    except ValueError as exc:
        parser.error(str(exc))
    names = ", ".join(f"{k}: {v}" for k, v in record["device_names"].items())
    print(f"# dplab benchmark suite, {record['started_utc']}, {names}; torch {record['torch']}, "
          f"{record['threads']} CPU threads, load average {record['load_average_1min']}"
          + (", QUICK (smoke test)" if record["quick"] else "")
          + (f", CPU scale {record['cpu_scale']:g} (* = extrapolated by pixel count)" if record["cpu_scale"] < 1 else ""))
    for s in record["skipped_devices"]:
        print(f"# skipped: {s}")
    headline = peer_headline(record["rows"])
    for line in headline or ["no peer row in this run (peer references: --only peer_render,inference)"]:
        print(f"# headline: {line}")
    print(format_tables(record["rows"]))
    for e in record["errors"]:
        print(f"# FAILED {e['device']} {e['benchmark']}: {e['error']}")
    if args.json:
        path = json_path(args.json, record)
        with atomic_file(path, "w") as handle:
            json.dump(record, handle, indent=1)
            handle.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        path.chmod(0o666 & ~umask)  # the temporary file was private; a record is for everyone
        print(f"# record written to {path}")
    return 1 if record["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
