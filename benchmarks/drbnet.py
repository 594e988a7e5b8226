"""DRBNet inference time per DPDD-sized image (1680x1120), single-image and dual-pixel models.

Both networks at the paper's width (11,689,616 and 11,690,480 parameters, random weights: the
time does not depend on the values) run on one random 1120x1680 image under
``torch.inference_mode`` (:func:`networks.inference_rows`). On the CPU each model is timed once
at full size after a warm-up on a small crop (a full-size pass takes tens of seconds on a
laptop); on CUDA (``--device cuda``, or ``auto`` when present) after a warm-up, the best of
``--repeats`` runs with synchronisation, in fp32 and with autocast. Also printed: the peak
resident memory of the process (CPU) or the peak allocated GPU memory.

    .venv/bin/python benchmarks/drbnet.py [--device auto|cpu|cuda] [--repeats N] [--threads N]
        [--size HxW]
"""

from __future__ import annotations

import argparse
import resource

import torch

from bench_common import device_name, format_table
from networks import inference_rows


def rows(device, size=(1120, 1680), *, scale: float = 1.0, repeats: int | None = None) -> list[dict]:
    """Result rows of ``drbnet`` and ``drbnet_dual`` inference (see :func:`networks.inference_rows`)."""
    return [r for name in ("drbnet", "drbnet_dual")
            for r in inference_rows(name, device, size, scale=scale, repeats=repeats)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default: 1 on CPU, 5 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--size", default="1120x1680", help="H x W (default: DPDD's 1120x1680)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size must be HxW, got {args.size!r}")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    print(f"# DRBNet inference, {h}x{w}, device {dev} ({device_name(dev)}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(format_table(rows(dev, (h, w), repeats=args.repeats)))
    print(f"# peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.type == "cuda"
          else f"# peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
