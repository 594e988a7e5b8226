"""DRBNet inference time per DPDD-sized image (1680x1120), single-image and dual-pixel models.

Both networks at the paper's width (11,689,616 and 11,690,480 parameters, random weights: the
time does not depend on the values) run on one random 1120x1680 image under
``torch.inference_mode``. On CPU each model is timed once after no warm-up (a full-size pass
takes tens of seconds on a laptop; the whole script stays around two minutes on 2 cores); on
CUDA (``--device cuda``, or ``auto`` when present) after two warm-up runs, the median of
``--repeats`` runs with synchronisation. Also printed: the peak resident memory of the process
(CPU) or the peak allocated GPU memory.

    .venv/bin/python benchmarks/drbnet.py [--device auto|cpu|cuda] [--repeats N] [--threads N]
        [--size HxW]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from dplab.models import build


def time_model(model, x, device, repeats: int, warmup: int) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default: 1 on CPU, 10 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--size", default="1120x1680", help="H x W (default: DPDD's 1120x1680)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    h, w = (int(v) for v in args.size.lower().split("x"))
    repeats = args.repeats or (10 if dev.type == "cuda" else 1)
    warmup = 2 if dev.type == "cuda" else 0
    print(f"DRBNet inference, {h}x{w}, device {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, {repeats} timed run(s), {warmup} warm-up")
    g = torch.Generator().manual_seed(0)
    for name, channels in (("drbnet", 3), ("drbnet_dual", 6)):
        torch.manual_seed(0)
        model = build(name).eval().to(dev)
        n = sum(p.numel() for p in model.parameters())
        x = torch.rand(1, channels, h, w, generator=g).to(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = time_model(model, x, dev, repeats, warmup)
        med = statistics.median(times)
        mem = (f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.type == "cuda"
               else f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
        print(f"{name:12s} {n:>12,d} params  {med:8.3f} s/image (median of {len(times)}; "
              f"min {min(times):.3f}, max {max(times):.3f})  {1 / med:7.3f} images/s  {mem}")
        del model, x
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
