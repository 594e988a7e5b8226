"""Speed of the MPI optimisation of Xin et al. (ICCV 2021) at the paper's size, CPU and CUDA.

One Adam iteration of `dplab.xin.mpi.optimize` at 1008x1344 with 12 layers and the 6x8 grid of
spatially varying 61x61 kernels (the real Pixel 4 calibration when the data directory is set,
else a synthetic grid of Butterworth DP kernels of the same size). Prints the time per
iteration on each device (median over the timed iterations, the first iteration excluded) and
the extrapolated time of the paper's 10,000 iterations (the paper: about 2 hours on an Nvidia
Titan RTX with the authors' JAX code). The CPU part runs only a few iterations (each takes
seconds). :func:`rows` returns the figures as result rows for ``benchmarks/suite.py``; their
reference is the paper's reported time (there is no direct-convolution MPI in dplab to time:
a spatial 61x61 blur of 12 layers, two views, forward and backward, costs minutes per
iteration on a CPU).

    .venv/bin/python benchmarks/mpi.py [--cpu-iterations 2] [--cuda-iterations 30]
        [--size 1008 1344] [--layers 12] [--threads N] [--blend 8] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench_common import make_row
from dplab.xin.mpi import optimize
from dplab.optics.psf import butterworth_dp


def kernels(data_dir):
    """Real 6x8 calibration grid if available, else a synthetic one (radii 6-13 px)."""
    try:
        from dplab.data import pixel4

        kl, kr = pixel4.load_kernel_grid(data_dir)
        return kl, kr, "Pixel 4 calibration (6x8 x 61x61)"
    except Exception:  # no data directory: synthetic kernels of the same shape
        radii = torch.linspace(6.0, 13.0, 48)
        kl, kr = butterworth_dp(radii, size=61)
        return kl.reshape(6, 8, 61, 61), kr.reshape(6, 8, 61, 61), "synthetic Butterworth grid (6x8 x 61x61)"


def scene(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, h // 8, w // 8, generator=g)
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.rand(1, 1, h, w, generator=g)
    return 0.25 * img, 0.25 * img.roll(3, -1)


def time_device(device, iterations, left, right, kl, kr, layers, blend):
    h, w = left.shape[-2:]
    cell = h // 6
    t0 = time.perf_counter()
    res = optimize(left.to(device), right.to(device), kl.to(device), kr.to(device), n_layers=layers,
                   iterations=iterations, scales=(0.5, 1.6), cell_hw=cell, blend_px=blend, log_every=1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    stamps = [e["seconds"] for e in res.history]
    steps = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    per_it = statistics.median(steps[1:] if len(steps) > 1 else steps)
    return per_it, total


#: Xin et al. (ICCV 2021), supplement: 10,000 Adam iterations in about 2 hours on a Titan RTX.
PAPER_SECONDS_PER_ITERATION = 2 * 3600 / 10_000


def rows(device, size=(1008, 1344), layers: int = 12, iterations: int = 3, *, scale: float = 1.0,
         blend: int = 8, data_dir=None) -> list[dict]:
    """Seconds per Adam iteration of :func:`dplab.xin.mpi.optimize` (Xin et al. Sec. 4.3) as a row.

    The scene is ``size`` (split into the 6x8 kernel grid); with ``scale < 1`` it is that
    fraction of height and width (rounded to the grid) and the time is scaled by pixel count
    (``extrapolated``). The reference is the paper's time per iteration (2 h / 10,000 on a Titan
    RTX, JAX), labelled as the paper's: it is not measured in this run.
    """
    device = torch.device(device)
    h_full, w_full = (int(v) for v in size)
    if h_full % 6 or w_full % 8 or h_full // 6 != w_full // 8 or int(iterations) < 2 or not 0 < scale <= 1:
        raise ValueError(f"size must split into a 6x8 grid of square cells, iterations >= 2 and scale in "
                         f"(0, 1]; got {size}, {iterations}, {scale}")
    cell = max(2 * blend + 2, round(h_full // 6 * scale))  # square cells, as the Pixel 4 grid (168 px)
    h, w = 6 * cell, 8 * cell
    kl, kr, what = kernels(data_dir)
    left, right = scene(h, w)
    per_it, total = time_device(device, iterations, left, right, kl, kr, layers, blend)
    per_full = per_it * (h_full * w_full) / (h * w)
    extrapolated = (h, w) != (h_full, w_full)
    timed = "iteration 2 (the first excluded)" if iterations == 2 else f"median of iterations 2-{iterations}"
    note = (f"{layers} layers, {what}; {timed}"
            + (f"; measured {per_it:.3f} s on {w}x{h}, scaled by pixel count" if extrapolated else ""))
    return [make_row("MPI optimize, one Adam iteration", device, "fp32", f"{w_full}x{h_full}, {layers} layers",
                     per_full, unit="iter/s", reference="paper: Titan RTX, JAX (2 h / 10k iterations)",
                     reference_seconds=PAPER_SECONDS_PER_ITERATION, extrapolated=extrapolated, note=note)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[1008, 1344], metavar=("H", "W"))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--cpu-iterations", type=int, default=2)
    parser.add_argument("--cuda-iterations", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--blend", type=int, default=8, help="cross-fade between kernel cells (px)")
    parser.add_argument("--data-dir", default=os.environ.get("DPLAB_DATA"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.size
    if h % 6 or w % 8:
        parser.error("--size must split into the 6x8 kernel grid")
    kl, kr, what = kernels(args.data_dir)
    left, right = scene(h, w)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__} CPU threads {torch.get_num_threads()}")
    print(f"# MPI optimisation, {h}x{w}, {args.layers} layers, kernels: {what}, blend {args.blend} px")
    print(f"{'device':>8} {'s/iter':>9} {'iter/s':>8} {'10k iters':>12} {'timed':>6} {'wall (s)':>9}")
    devices = [("cpu", args.cpu_iterations)]
    if torch.cuda.is_available():
        devices.append(("cuda", args.cuda_iterations))
    for name, iters in devices:
        device = torch.device(name)
        per_it, total = time_device(device, iters, left, right, kl, kr, args.layers, args.blend)
        hours = per_it * 10_000 / 3600
        label = torch.cuda.get_device_name(device) if name == "cuda" else name
        print(f"{name:>8} {per_it:>9.3f} {1 / per_it:>8.2f} {hours:>10.2f} h {iters:>6} {total:>9.1f}  ({label})")
    if not torch.cuda.is_available():
        print("    cuda   not available on this machine")
    print("# paper: 10,000 iterations in about 2 h on an Nvidia Titan RTX (JAX, spatial-domain convolution)")


if __name__ == "__main__":
    main()
