"""MDP inference time per 1680x1120 image (Abuolaim et al., WACV 2022, Table 1 "Time").

The paper reports 0.5 s per image for MDP on an NVIDIA TITAN X (Keras). This script times
`dplab.models.build("mdp")` (46,860,397 weights, three decoders) on one 3x1120x1680 input,
first on the CPU and then on CUDA when available, under `torch.inference_mode`. On the CPU
the paper-width network costs one to two minutes per full image on two cores, so by default
the CPU runs once on a 560x832 crop (about a quarter of the pixels; the network is fully
convolutional and its cost is proportional to the pixel count) after a warm-up on a smaller
crop, and reports that time times 4 as the per-image figure, next to the measured crop time
(about a minute in total); ``--cpu-scale 1`` times the full image instead. On CUDA it is the
best of several runs on the full image after a full-size warm-up.

    .venv/bin/python benchmarks/mdp.py [--width 1.0] [--cpu-scale 0.5] [--repeats 5] [--no-cpu] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dplab.models import build, count_parameters


def timed(model, x, device, repeats):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    assert tuple(out.sharp.shape) == tuple(x.shape)
    return best


def run(device: torch.device, args) -> None:
    torch.manual_seed(0)
    model = build("mdp", width=args.width).to(device).eval()
    h, w = args.height, args.width_px
    scale = args.cpu_scale if device.type == "cpu" else 1.0
    hs, ws = max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)
    x = torch.rand(1, 3, hs, ws, device=device)
    with torch.inference_mode():
        if device.type == "cuda":
            timed(model, x, device, 1)  # warm-up at full size (cuDNN algorithm choice)
            repeats = args.repeats
            mem = torch.cuda.max_memory_allocated(device) / 2**30
        else:
            timed(model, x[..., : hs // 4, : ws // 4], device, 1)  # warm-up on a small crop
            repeats = args.cpu_repeats
            mem = float("nan")
        t = timed(model, x, device, repeats)
    per_image = t * (h * w) / (hs * ws)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    note = "" if (hs, ws) == (h, w) else f"  (measured {t:.2f} s on {hs}x{ws}, scaled by pixel count)"
    print(f"{device.type:>5} {name[:28]:>28} {per_image:>10.3f} {h * w / per_image / 1e6:>9.2f} {mem:>9.2f}{note}")


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
    print(f"# MDP width x{args.width:g} ({n:,} weights), input 1x3x{args.height}x{args.width_px}, float32, "
          "inference_mode; paper (Table 1): 0.5 s per image on a TITAN X")
    print(f"{'device':>5} {'name':>28} {'s/image':>10} {'Mpx/s':>9} {'peak GiB':>9}")
    devices = [torch.device(args.device)] if args.device else (
        ([] if args.no_cpu else [torch.device("cpu")]) + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    for device in devices:
        run(device, args)


if __name__ == "__main__":
    main()
