"""The shipped CPU-trained networks against the blurred input, side by side on one held-out set.

What a user would otherwise have is the blurred photograph itself: every row is measured next
to it, on the same 48 held-out synthetic images (192x256, rendered by dplab's generator with
seed 1000, which no training used; re-rendered here from the recorded settings, so no files
are needed). Columns: PSNR, SSIM and MAE of the network and of the blurred input, the gain,
how many images the network improves, and the inference time per image on this machine.

    .venv/bin/python benchmarks/shipped.py [--images N] [--threads T] [--json PATH]

``--json`` writes the record (machine, torch version, threads, rows) atomically; the committed
record is ``benchmarks/results/shipped/<date>-cpu.json``. The same numbers are in each
network's card (``dplab/weights/<name>.json``), measured by ``make weights`` on the PNG files
of the held-out set; the two agree to rounding (tests/models/test_pretrained.py checks that).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info  # noqa: E402
from dplab._io import atomic_file  # noqa: E402
from dplab.metrics.image import mae, psnr, ssim  # noqa: E402
from dplab.models import count_parameters, list_pretrained, pretrained  # noqa: E402
from dplab.models.shipped import DEFAULT_DATA, datasets_of  # noqa: E402
from dplab.eval.heldout import heldout_config, heldout_samples  # noqa: E402
from dplab.eval.zoo import NetworkMethod  # noqa: E402


def run(images: int | None = None) -> list[dict]:
    """One row per shipped network trained on the RDPD-style data (the phone's networks have their
    own held-out set and the real captures: ``python -m dplab evaluate --pixel4``): its means,
    the blurred input's, gains and time per image."""
    n = heldout_config().count if images is None else int(images)
    samples = heldout_samples(range(n))

    def score(method):
        values = {"psnr": [], "ssim": [], "mae": [], "time_s": []}
        with torch.no_grad():
            method(samples[0])                                   # warm-up, untimed
            for s in samples:
                start = time.perf_counter()
                y = method(s)
                values["time_s"].append(time.perf_counter() - start)
                y = y.clamp(0, 1)
                for key, fn in (("psnr", psnr), ("ssim", ssim), ("mae", mae)):
                    values[key].append(float(fn(y, s["sharp"])[0]))
        return values

    blurred = score(lambda b: b["combined"])
    rows = []
    for name in (n for n in list_pretrained() if datasets_of(n) == DEFAULT_DATA):
        net = pretrained(name)
        v = score(NetworkMethod(net))
        mean = {k: sum(x) / len(x) for k, x in v.items()}
        base = {k: sum(x) / len(x) for k, x in blurred.items()}
        rows.append({"network": name, "params": count_parameters(net), "images": n,
                     "psnr": mean["psnr"], "ssim": mean["ssim"], "mae": mean["mae"],
                     "blurred_psnr": base["psnr"], "blurred_ssim": base["ssim"], "blurred_mae": base["mae"],
                     "gain_psnr": mean["psnr"] - base["psnr"], "gain_ssim": mean["ssim"] - base["ssim"],
                     "improved": sum(a > b for a, b in zip(v["psnr"], blurred["psnr"])),
                     "seconds_per_image": mean["time_s"]})
    return rows


def table(rows: list[dict]) -> str:
    head = ("| network | params | PSNR (input) | SSIM (input) | gain dB | improved | s/image |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n")
    return head + "".join(
        f"| {r['network']} | {r['params']:,} | {r['psnr']:.2f} ({r['blurred_psnr']:.2f}) | "
        f"{r['ssim']:.3f} ({r['blurred_ssim']:.3f}) | {r['gain_psnr']:+.2f} | {r['improved']}/{r['images']} | "
        f"{r['seconds_per_image']:.3f} |\n" for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, help="held-out images to score (default all 48)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="write the record to this file")
    args = parser.parse_args(argv)
    if args.images is not None and not 1 <= args.images <= heldout_config().count:
        parser.error(f"--images must be in [1, {heldout_config().count}]")
    if args.threads < 1:
        parser.error("--threads must be a positive integer")
    torch.set_num_threads(args.threads)
    rows = run(args.images)
    print(table(rows))
    if args.json:
        record = {"date": dt.date.today().isoformat(), "benchmark": "shipped networks vs blurred input",
                  "machine": machine_info(), "threads": args.threads, "rows": rows}
        with atomic_file(args.json, "w") as handle:
            json.dump(record, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
