"""MDP inference time per 1680x1120 image (Abuolaim et al., WACV 2022, Table 1 "Time").

The paper reports 0.5 s per image for MDP on an NVIDIA TITAN X (Keras). This script times
`dplab.models.build("mdp")` (46,860,397 weights, three decoders) on one 3x1120x1680 input,
first on the CPU and then on CUDA when available, under `torch.inference_mode`
(:func:`networks.inference_rows`). On the CPU the paper-width network costs one to two minutes
per full image on two cores, so by default the CPU runs once on a 560x832 crop (about a
quarter of the pixels; the network is fully convolutional and its cost is proportional to the
pixel count) after a warm-up on a smaller crop, and reports that time times 4 as the per-image
figure, next to the measured crop time; ``--cpu-scale 1`` times the full image instead. On CUDA
it is the best of several runs on the full image after a full-size warm-up, in fp32 and with
autocast.

    .venv/bin/python benchmarks/mdp.py [--width 1.0] [--cpu-scale 0.5] [--repeats 5] [--no-cpu] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from bench_common import format_table
from dplab.models import build, count_parameters
from networks import inference_rows


def rows(device, size=(1120, 1680), *, width: float = 1.0, scale: float = 0.5, repeats: int | None = None) -> list[dict]:
    """Result rows of MDP inference at width factor ``width`` (see :func:`networks.inference_rows`)."""
    return inference_rows("mdp", device, size, scale=scale, repeats=repeats, model_cfg={"width": width})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="MDP width factor (1 = the paper's network)")
    parser.add_argument("--height", type=int, default=1120)
    parser.add_argument("--width-px", type=int, default=1680)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on CUDA (best is reported)")
    parser.add_argument("--cpu-repeats", type=int, default=1, help="timed runs on the CPU")
    parser.add_argument("--cpu-scale", type=float, default=0.5,
                        help="CPU: time a central crop of this fraction of height and width (1: full image)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU measurement")
    parser.add_argument("--device", default=None, help="only this device (cpu or cuda)")
    args = parser.parse_args()
    with torch.device("meta"):
        n = count_parameters(build("mdp", width=args.width))
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} torch {torch.__version__} "
          f"threads {torch.get_num_threads()}")
    print(f"# MDP width x{args.width:g} ({n:,} weights), input 1x3x{args.height}x{args.width_px}, "
          "inference_mode; paper (Table 1): 0.5 s per image on a TITAN X")
    devices = [torch.device(args.device)] if args.device else (
        ([] if args.no_cpu else [torch.device("cpu")]) + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    table = []
    for device in devices:
        cuda = device.type == "cuda"
        table += rows(device, (args.height, args.width_px), width=args.width, scale=args.cpu_scale,
                      repeats=args.repeats if cuda else args.cpu_repeats)
    print(format_table(table))


if __name__ == "__main__":
    main()
