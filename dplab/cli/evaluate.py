"""``python -m dplab evaluate``: a trained checkpoint or a shipped network on a DPDD-layout folder.

``--pretrained NAME`` takes a shipped network (:func:`dplab.models.pretrained`) instead of a
checkpoint. The blurred input (the combined image) is always scored beside the method, so the
table shows what the method gains.

The network is rebuilt from the checkpoint's model spec (:func:`dplab.models.from_checkpoint`;
every checkpoint of :class:`dplab.training.trainer.Trainer` and of ``python -m dplab train`` has one),
fed the inputs its registry entry declares by :class:`dplab.eval.zoo.NetworkMethod` (DPDNet:
left and right views; DRBNet: the combined image; RDPD: views and the radial map; MDP: the
combined image, sharp output), and run over :class:`dplab.data.DPDDDataset` by
:func:`dplab.eval.evaluate.evaluate`: full images, one at a time, outputs clipped to [0, 1], PSNR,
SSIM and MAE averaged over images (DPDD's protocol, the DPDNet authors' ``metrics.py``), time per
image, and the parameter count. The table is printed; ``--json`` also writes it (atomically).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Add the ``evaluate`` sub-parser to ``sub`` (an ``argparse`` sub-parsers object)."""
    p = sub.add_parser(
        "evaluate", help="PSNR/SSIM/MAE/time/params of a checkpoint on a DPDD-layout folder",
        description="Rebuild the network of a dplab checkpoint (its model spec), run it over one split of "
                    "a DPDD-layout folder (the Canon release or `python -m dplab synth` output) and print "
                    "PSNR, SSIM, MAE (outputs clipped to [0, 1], means over images), time per image and "
                    "the parameter count.")
    from dplab.models.shipped import SHIPPED

    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a last.pt / best.pt written by dplab's Trainer")
    which.add_argument("--pretrained", choices=sorted(SHIPPED), metavar="NAME",
                       help="a shipped network (dplab.models.pretrained): " + ", ".join(SHIPPED))
    p.add_argument("--data", required=True, help="DPDD-layout folder holding {split}_c/, {split}_l/, {split}_r/")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--json", metavar="OUT", help="also write the table as JSON to this file")
    p.add_argument("--per-image", action="store_true", help="print every image's row, not only the mean")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Handler of ``python -m dplab evaluate`` (see the module docstring); returns 0."""
    from dplab._io import atomic_file
    from dplab.data import DPDDDataset
    from dplab.eval.evaluate import evaluate
    from dplab.models import from_checkpoint, pretrained
    from dplab._validate import resolve_device
    from dplab.eval.zoo import NetworkMethod

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive integer, got {args.limit}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from None
    if args.pretrained:
        model, source = pretrained(args.pretrained, map_location=device), f"shipped network {args.pretrained}"
    else:
        model = from_checkpoint(args.checkpoint, map_location=device)   # FileNotFoundError, ValueError (no spec)
        source = f"checkpoint {args.checkpoint}"
    method = NetworkMethod(model)
    dataset = DPDDDataset(args.split, root=args.data)                # DatasetNotFoundError
    table = evaluate(method, dataset, name=method.kind, device=device, max_images=args.limit,
                     progress=not args.quiet)
    blurred = evaluate(lambda b: b["combined"], dataset, name="blurred input", device=device,
                       max_images=args.limit)
    print(f"{len(table) - 1} image(s) of {Path(args.data)} ({args.split}), {source}, device {device}")
    for t in (blurred, table):
        shown = t if args.per_image else type(t)([t.mean], method=t.method, params=t.params, columns=t.columns)
        print(shown.format())
    gain = {k: table.mean[k] - blurred.mean[k] for k in ("psnr", "ssim", "mae")}
    print(f"gain over the blurred input: PSNR {gain['psnr']:+.2f} dB, SSIM {gain['ssim']:+.4f}, "
          f"MAE {gain['mae']:+.4f}")
    if args.json:
        record = {"checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
                  "pretrained": args.pretrained, "data": str(Path(args.data).resolve()),
                  "split": args.split, "device": str(device), "model_spec": model.dplab_spec, **table.to_dict(),
                  "blurred_input": blurred.to_dict(), "gain": gain}
        with atomic_file(args.json, "w") as handle:
            json.dump(record, handle, indent=2)
        print(f"evaluate: wrote {args.json}")
    return 0
