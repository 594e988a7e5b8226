"""FFT convolution vs direct spatial convolution, measured side by side in one run.

DESIGN.md asks large-kernel blurs to go through FFTs; this prints why. For each kernel size the
same (B, C, H, W) image is blurred by `dplab.fftconv.fft_conv2d` and by `torch.nn.functional.conv2d`
(depthwise, flipped kernel, zero padding), results are checked equal, and times and the ratio
direct/FFT are printed.

    .venv/bin/python benchmarks/fftconv.py [--size 512] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from dplab.fftconv import fft_conv2d


def timeit(fn, device, repeats=3):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--kernels", type=int, nargs="+", default=[7, 15, 31, 61])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, args.channels, args.size, args.size, generator=gen).to(device)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__} threads {torch.get_num_threads()} device {device}")
    print(f"# image 1x{args.channels}x{args.size}x{args.size}, float32, best of 3")
    print(f"{'kernel':>7} {'fft (ms)':>10} {'direct (ms)':>12} {'direct/fft':>11} {'max |diff|':>11}")
    for k in args.kernels:
        kernel = torch.rand(k, k, generator=gen).to(device)
        kernel /= kernel.sum()
        weight = kernel.flip(-1, -2).expand(args.channels, 1, k, k).contiguous()
        fft = lambda: fft_conv2d(image, kernel)
        direct = lambda: F.conv2d(image, weight, padding=k // 2, groups=args.channels)
        diff = (fft() - direct()).abs().max().item()
        t_fft, t_direct = timeit(fft, device), timeit(direct, device)
        print(f"{k:>7} {t_fft * 1e3:>10.2f} {t_direct * 1e3:>12.2f} {t_direct / t_fft:>11.1f} {diff:>11.1e}")


if __name__ == "__main__":
    main()
