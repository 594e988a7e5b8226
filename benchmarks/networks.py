"""DPDNet and RDPD inference time per 1680x1120 image, fp32 and (on CUDA) bf16 autocast.

The papers report 0.5 s (DPDNet) and 0.3 s (RDPD) per image on their GPUs (RDPD Table 1,
"Time"). This script times `dplab.models.build("dpdnet")` (6-channel DP input) and
`build("rdpd")` (L, R and the radial channel) at paper width under `torch.inference_mode`,
side by side in one run. On the CPU the full image costs minutes on two cores, so by default
the CPU times one crop of about a quarter of the pixels and scales by pixel count (the
networks are fully convolutional); `--cpu-scale 1` times the full image. On CUDA it reports
the best of several full-size runs in fp32 and with bf16 autocast.

    .venv/bin/python benchmarks/networks.py [--cpu-scale 0.5] [--repeats 5] [--no-cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from dplab.models import build, count_parameters

PAPER_SECONDS = {"dpdnet": 0.5, "rdpd": 0.3}
INPUT_CHANNELS = {"dpdnet": 6, "rdpd": 7}


def best_time(model, x, device, repeats, autocast):
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    best = float("inf")
    with torch.inference_mode(), ctx:
        model(x)  # warm-up
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1120)
    parser.add_argument("--width", type=int, default=1680)
    parser.add_argument("--cpu-scale", type=float, default=0.5, help="crop side fraction timed on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on CUDA")
    parser.add_argument("--no-cpu", action="store_true")
    args = parser.parse_args()
    devices = ([] if args.no_cpu else [torch.device("cpu")]) + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"# {time.strftime('%Y-%m-%d')} torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print(f"{'model':>7} {'params':>11} {'device':>24} {'precision':>9} {'s/image':>9} {'paper s':>8}  note")
    for name in ("dpdnet", "rdpd"):
        for device in devices:
            torch.manual_seed(0)
            model = build(name).to(device).eval()
            scale = args.cpu_scale if device.type == "cpu" else 1.0
            h = max(16, round(args.height * scale / 16) * 16)
            w = max(16, round(args.width * scale / 16) * 16)
            x = torch.rand(1, INPUT_CHANNELS[name], h, w, device=device)
            label = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
            for autocast in ((False, True) if device.type == "cuda" else (False,)):
                t = best_time(model, x, device, args.repeats if device.type == "cuda" else 1, autocast)
                per_image = t * args.height * args.width / (h * w)
                note = "" if (h, w) == (args.height, args.width) else f"measured {t:.2f} s on {h}x{w}, scaled by pixels"
                print(f"{name:>7} {count_parameters(model):>11,} {label[:24]:>24} {'bf16' if autocast else 'fp32':>9} "
                      f"{per_image:>9.2f} {PAPER_SECONDS[name]:>8}  {note}", flush=True)
            del model


if __name__ == "__main__":
    main()
