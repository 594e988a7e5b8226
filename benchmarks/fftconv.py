"""FFT convolution vs direct spatial convolution, measured side by side in one run.

dplab sends large-kernel blurs through FFTs; this prints why. For each kernel size the
same (B, C, H, W) image is blurred by `dplab.ops.fftconv.fft_conv2d` and by `torch.nn.functional.conv2d`
(depthwise, flipped kernel, zero padding), results are checked equal, and times and the ratio
direct/FFT are printed. :func:`rows` returns the same figures as result rows for
``benchmarks/suite.py``.

    .venv/bin/python benchmarks/fftconv.py [--size 512] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from bench_common import best_time, make_row
from dplab.ops.fftconv import fft_conv2d


def rows(device, size: int = 512, channels: int = 3, kernels=(7, 15, 31, 61), repeats: int = 3) -> list[dict]:
    """FFT vs direct depthwise conv2d on a ``1 x channels x size x size`` float32 image.

    One row per kernel size: ``seconds`` is the FFT time (best of ``repeats`` after a warm-up),
    the reference is ``F.conv2d`` on the same image (best of ``repeats + 1`` calls, or of two
    when one call takes over 2 s, as the CPU's depthwise conv2d does at 61x61), and the note
    holds the largest absolute difference of the two results (the same zero-padded correlation).
    """
    device = torch.device(device)
    if int(size) < 1 or int(channels) < 1 or not kernels:
        raise ValueError(f"size and channels must be >= 1 and kernels non-empty, got {size}, {channels}, {kernels}")
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, channels, size, size, generator=gen).to(device)
    out = []
    for k in kernels:
        if int(k) < 1 or k % 2 == 0:
            raise ValueError(f"kernels must be odd positive sizes, got {k}")
        kernel = torch.rand(k, k, generator=gen).to(device)
        kernel /= kernel.sum()
        weight = kernel.flip(-1, -2).expand(channels, 1, k, k).contiguous()
        fft = lambda: fft_conv2d(image, kernel)
        direct = lambda: F.conv2d(image, weight, padding=k // 2, groups=channels)
        first = best_time(direct, device)  # also the warm-up of the direct path
        diff = (fft() - direct()).abs().max().item()
        t_fft = best_time(fft, device, repeats=repeats, warmup=1)
        slow = first > 2.0  # seconds per call: the CPU's depthwise conv2d at large kernels
        t_direct = min(first, best_time(direct, device, repeats=1 if slow else repeats))
        note = f"max abs difference {diff:.1e}; FFT best of {repeats}, direct best of {2 if slow else repeats + 1}"
        out.append(make_row(f"fft_conv2d k={k}", device, "fp32", f"1x{channels}x{size}x{size}", t_fft,
                            unit="Mpx/s", work=size * size / 1e6, reference="direct conv2d (depthwise)",
                            reference_seconds=t_direct, note=note))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--kernels", type=int, nargs="+", default=[7, 15, 31, 61])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__} threads {torch.get_num_threads()} device {device}")
    print(f"# image 1x{args.channels}x{args.size}x{args.size}, float32")
    print(f"{'kernel':>7} {'fft (ms)':>10} {'direct (ms)':>12} {'direct/fft':>11}  note")
    for k, r in zip(args.kernels, rows(device, args.size, args.channels, args.kernels)):
        print(f"{k:>7} {r['seconds'] * 1e3:>10.2f} {r['reference_seconds'] * 1e3:>12.2f} {r['ratio']:>11.1f}  {r['note']}")


if __name__ == "__main__":
    main()
