"""``python -m dplab weights``: retrain the shipped networks from scratch (``make weights``).

For every name of :data:`dplab.models.shipped.SHIPPED` (or those given with ``--only``):

1. render the training and held-out synthetic sets (``python -m dplab synth`` with the
   arguments of :data:`~dplab.models.shipped.DATASETS`; deterministic by seed, skipped
   when complete);
2. train with the recorded ``python -m dplab train`` arguments (resumable: an interrupted
   build continues from the last checkpoint when run again);
3. export the final weights as a float16 state dict ``<weights-dir>/<name>.pt``;
4. score it and the blurred input on the held-out set (all 48 images) and on its first
   :data:`CHECK_IMAGES` images (what the test suite re-renders and re-scores), and write the
   card ``<name>.json``: model spec, the exact commands, data settings and seeds, steps, wall
   time, machine, dplab commit, metrics, sha256.

Everything runs on the CPU with one thread per process unless ``OMP_NUM_THREADS`` says
otherwise; the work folder (default ``_build/weights``) keeps the data and the runs.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from dplab._provenance import git_commit

__all__ = ["add_parser", "run", "build_one", "score_heldout", "CHECK_IMAGES", "training_wall_s"]

#: Held-out images the tests re-render and re-score (the first ones of the held-out set).
CHECK_IMAGES = 8


def add_parser(sub) -> None:
    """Add the ``weights`` sub-parser to ``sub`` (an ``argparse`` sub-parsers object)."""
    from dplab.models.shipped import SHIPPED

    p = sub.add_parser(
        "weights", help="retrain the shipped networks from scratch and write their cards (make weights)",
        description="Render the synthetic training and held-out sets, train every shipped network with its "
                    "recorded command, export float16 weights and write a card with held-out metrics. "
                    "Deterministic and resumable: run the same command again after an interruption.")
    p.add_argument("--only", nargs="+", choices=sorted(SHIPPED), metavar="NAME",
                   help="networks to build (default all: " + ", ".join(SHIPPED) + ")")
    p.add_argument("--work", default="_build/weights", help="data and run folder (default _build/weights)")
    p.add_argument("--weights-dir", help="where the .pt files and cards go (default: dplab/weights in the package)")
    p.add_argument("--score-only", action="store_true",
                   help="do not train: export and score runs that are already complete")
    p.add_argument("--data-only", action="store_true", help="only render the training and held-out sets")
    p.add_argument("--skip-data", action="store_true",
                   help="the training and held-out sets are rendered already (the processes of --jobs get it: "
                        "their parent rendered them, and synth runs one at a time per folder)")
    p.add_argument("--jobs", type=int, default=1,
                   help="networks built at once, each in its own process (default 1; make weights uses 2)")
    p.set_defaults(handler=run)


def _dplab(argv: list[str]) -> None:
    """Run ``python -m dplab synth ...`` or ``python -m dplab train ...`` in this process."""
    import argparse

    from dplab.cli import synth, train

    parser = argparse.ArgumentParser(prog="python -m dplab")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (synth, train):
        command.add_parser(sub)
    args = parser.parse_args(argv)
    code = args.handler(args)
    if code != 0:
        raise ValueError(f"python -m dplab {' '.join(argv)} exited with status {code}")


def _commit() -> str:
    return git_commit() or "unknown (not a git checkout)"


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def training_wall_s(log_csv) -> float:
    """Training time in seconds summed over the segments of a (possibly resumed) run, from the
    ``time_s`` column of the trainer's ``log.csv`` (it restarts from 0 at each resume)."""
    total, last = 0.0, 0.0
    with open(log_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("kind") != "train" or not row.get("time_s"):
                continue
            t = float(row["time_s"])
            if t < last:
                total += last
            last = t
    return round(total + last, 1)


def score_heldout(model, data_dir, *, limit: int | None = None) -> dict:
    """Mean PSNR/SSIM/MAE of ``model`` and of the blurred input on the held-out ``test`` split,
    and the gains. ``limit`` scores the first images only."""
    from dplab.data import DPDDDataset
    from dplab.eval.evaluate import evaluate
    from dplab.eval.zoo import NetworkMethod

    dataset = DPDDDataset("test", root=data_dir)
    net = evaluate(NetworkMethod(model), dataset, max_images=limit)
    blurred = evaluate(lambda b: b["combined"], dataset, max_images=limit)
    n, b = net.mean, blurred.mean
    return {"images": len(net) - 1,
            "network": {k: round(n[k], 4) for k in ("psnr", "ssim", "mae")},
            "blurred_input": {k: round(b[k], 4) for k in ("psnr", "ssim", "mae")},
            "gain_psnr": round(n["psnr"] - b["psnr"], 4), "gain_ssim": round(n["ssim"] - b["ssim"], 4),
            "time_s_per_image": round(n["time_s"], 4)}


def _export(run_dir: Path, path: Path) -> dict:
    """fp16 state dict of the run's last checkpoint, written atomically; returns the spec."""
    import torch

    from dplab._io import atomic_file
    from dplab.training.checkpoints import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    with atomic_file(path, "wb") as handle:
        torch.save(half, handle)
    return {"spec": state["model_spec"], "step": int(state["step"])}


def build_one(name: str, work: Path, weights_dir: Path, *, train: bool = True) -> dict:
    """Train (unless ``train=False``), export and score one shipped network; returns its card."""
    from dplab._io import atomic_file
    from dplab.models.shipped import DATASETS, SHIPPED, datasets_of, pretrained, sha256_file, synth_argv, train_argv

    train_set, heldout_set = datasets_of(name)
    data = {"train": work / "data" / train_set, "heldout": work / "data" / heldout_set}
    run_dir = work / "runs" / name
    argv = train_argv(name, data["train"], run_dir)
    # The code that trained, kept across resumes; beside the run folder, which `train` must find
    # empty or its own (builds before this rule kept it inside: still read there).
    started_with = run_dir.parent / f"{name}.dplab_commit.txt"
    if not started_with.is_file() and (run_dir / "dplab_commit.txt").is_file():
        started_with = run_dir / "dplab_commit.txt"
    if train:
        if not started_with.is_file():
            with atomic_file(started_with, "w") as handle:
                handle.write(_commit() + "\n")
        import sys

        # the progress bar only for a terminal (make weights logs to files); not part of the recipe
        _dplab(argv if sys.stderr.isatty() else [*argv, "--quiet"])
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run of {name!r}; run without --score-only")
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{name}.pt"
    exported = _export(run_dir, path)
    card = {
        "name": name,
        "about": SHIPPED[name]["about"],
        "model_spec": exported["spec"],
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "dtype": "float16 (loaded as float32)",
        "steps": exported["step"],
        "commands": {
            "make": f"make weights  (python -m dplab weights --only {name})",
            "data_train": "python -m dplab " + " ".join(synth_argv(train_set, f"DATA/{train_set}")),
            "data_heldout": "python -m dplab " + " ".join(synth_argv(heldout_set, f"DATA/{heldout_set}")),
            "train": "python -m dplab " + " ".join(train_argv(name, f"DATA/{train_set}", "RUN")),
        },
        "data": {"train": DATASETS[train_set], "heldout": DATASETS[heldout_set],
                 "note": "seeds 0 (train) and 1000 (held-out): no held-out image was seen in training"},
        "train_wall_s": training_wall_s(run_dir / "log.csv"),
        "machine": _machine(),
        "dplab_commit": started_with.read_text().strip() if started_with.is_file() else "unknown",
        "scored_with_commit": _commit(),
    }
    # Score through the same loader users call, so the card describes what pretrained() returns.
    tmp_card = weights_dir / f"{name}.json"
    with atomic_file(tmp_card, "w") as handle:
        json.dump(card, handle, indent=2)
    model = pretrained(name, weights_dir=weights_dir)
    card["heldout"] = score_heldout(model, data["heldout"])
    card["check"] = {**score_heldout(model, data["heldout"], limit=CHECK_IMAGES),
                     "note": f"the first {CHECK_IMAGES} held-out images, re-rendered and re-scored by "
                             "tests/models/test_pretrained.py"}
    with atomic_file(tmp_card, "w") as handle:
        json.dump(card, handle, indent=2)
        handle.write("\n")
    return card


def _parallel(names, args, work: Path, weights_dir: Path, started: float) -> int:
    """Build each network in its own ``python -m dplab weights --only NAME`` process, at most
    ``args.jobs`` at a time; their output goes to ``<work>/runs/<name>.log``."""
    import sys

    pending, running, failed = list(names), {}, []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            cmd = [sys.executable, "-m", "dplab", "weights", "--only", name, "--work", str(work),
                   "--weights-dir", str(weights_dir), "--skip-data"] + (["--score-only"] if args.score_only else [])
            log = work / "runs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as handle:
                running[name] = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
            print(f"weights: building {name} (log: {log})", flush=True)
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"weights: {name} {'done' if proc.returncode == 0 else f'FAILED (status {proc.returncode})'}",
                      flush=True)
                if proc.returncode:
                    failed.append(name)
    print(f"weights: done in {time.perf_counter() - started:.0f} s")
    if failed:
        raise ValueError(f"building {', '.join(failed)} failed; see their logs in {work / 'runs'}")
    return 0


def run(args) -> int:
    """Handler of ``python -m dplab weights``; returns 0."""
    from dplab.models.shipped import SHIPPED, WEIGHTS_DIR, datasets_of, synth_argv

    work = Path(args.work).expanduser().resolve()
    weights_dir = Path(args.weights_dir).expanduser().resolve() if args.weights_dir else WEIGHTS_DIR
    names = args.only or list(SHIPPED)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {args.jobs}")
    started = time.perf_counter()
    # only the datasets the requested networks use (the phone's need the Pixel 4 calibration)
    needed = dict.fromkeys(d for name in names for d in datasets_of(name))
    for dataset in needed if not args.skip_data else ():
        _dplab([*synth_argv(dataset, work / "data" / dataset), "--quiet"])
    if args.data_only:
        return 0
    if args.jobs > 1 and len(names) > 1:
        return _parallel(names, args, work, weights_dir, started)
    for name in names:
        card = build_one(name, work, weights_dir, train=not args.score_only)
        h = card["heldout"]
        print(f"weights: {name}: {h['network']['psnr']:.2f} dB on {h['images']} held-out images "
              f"(blurred input {h['blurred_input']['psnr']:.2f} dB, gain {h['gain_psnr']:+.2f} dB), "
              f"trained {card['steps']} steps in {card['train_wall_s']:.0f} s -> {weights_dir / card['file']}")
    print(f"weights: done in {time.perf_counter() - started:.0f} s")
    return 0
