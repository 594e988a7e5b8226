"""``python -m dplab evaluate``: a trained checkpoint or a shipped network on a DPDD-layout folder,
or on the real Pixel 4 captures of Xin et al. (ICCV 2021) scored like their Table 1.

``--pretrained NAME`` takes a shipped network (:func:`dplab.models.pretrained`) instead of a
checkpoint. The blurred input (the combined image) is always scored beside the method, so the
table shows what the method gains.

The network is rebuilt from the checkpoint's model spec (:func:`dplab.models.from_checkpoint`;
every checkpoint of :class:`dplab.training.trainer.Trainer` and of ``python -m dplab train`` has one),
fed the inputs its registry entry declares by :class:`dplab.eval.zoo.NetworkMethod` (DPDNet:
left and right views; DRBNet: the combined image; RDPD: views and the radial map; MDP: the
combined image, sharp output).

``--data DIR``: run over :class:`dplab.data.DPDDDataset` by :func:`dplab.eval.evaluate.evaluate`:
full images, one at a time, outputs clipped to [0, 1], PSNR, SSIM and MAE averaged over images
(DPDD's protocol, the DPDNet authors' ``metrics.py``), time per image, and the parameter count.

``--pixel4``: run over the released Pixel 4 scenes at full resolution (1008x1344) by
:func:`dplab.eval.pixel4.score_network_pixel4`: PSNR, SSIM and MAE under Table 1's protocol
(:data:`dplab.xin.protocol.TABLE1`, integer shift) and under supplement D's affine alignment
(one map per method, found on the first scene), and the inference seconds per scene.

The table is printed; ``--json`` also writes it (atomically).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Add the ``evaluate`` sub-parser to ``sub`` (an ``argparse`` sub-parsers object)."""
    p = sub.add_parser(
        "evaluate", help="PSNR/SSIM/MAE/time/params of a checkpoint on a DPDD-layout folder or the Pixel 4 scenes",
        description="Rebuild the network of a dplab checkpoint (its model spec), run it over one split of "
                    "a DPDD-layout folder (the Canon release or `python -m dplab synth` output) and print "
                    "PSNR, SSIM, MAE (outputs clipped to [0, 1], means over images), time per image and "
                    "the parameter count; or (--pixel4) over the real Pixel 4 scenes of Xin et al. at "
                    "full resolution, scored like their Table 1 (integer shift, and the affine alignment "
                    "of their supplement D), beside the blurred input.")
    from dplab.models.shipped import SHIPPED

    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a last.pt / best.pt written by dplab's Trainer")
    which.add_argument("--pretrained", choices=sorted(SHIPPED), metavar="NAME",
                       help="a shipped network (dplab.models.pretrained): " + ", ".join(SHIPPED))
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="DPDD-layout folder holding {split}_c/, {split}_l/, {split}_r/")
    data.add_argument("--pixel4", action="store_true",
                      help="the real Pixel 4 scenes (xin_pixel4_dp/ in --data-dir or $DPLAB_DATA), Table 1 scoring")
    p.add_argument("--split", choices=("train", "val", "test"), help="--data: split (default test)")
    p.add_argument("--limit", type=int, help="--data: evaluate only the first N images")
    p.add_argument("--scenes", nargs="+", metavar="ID", help="--pixel4: scene ids (default: every scene present)")
    p.add_argument("--data-dir", help="--pixel4: folder holding xin_pixel4_dp/ (default $DPLAB_DATA)")
    p.add_argument("--downscale", type=int, default=1,
                   help="--pixel4: box-downsample the scenes (quick looks; Table 1 is at 1, the default)")
    p.add_argument("--tile", type=int, help="--pixel4: run the network in overlapping tiles of this size "
                                            "(a network whose whole-field forward does not fit in memory)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--json", metavar="OUT", help="also write the table as JSON to this file")
    p.add_argument("--per-image", action="store_true", help="print every image's (scene's) row, not only the mean")
    p.add_argument("--quiet", action="store_true", help="no progress bar (no per-scene lines)")
    p.set_defaults(handler=run)


def _check_options(args) -> None:
    """Options that belong to the other mode are refused (ValueError: exit 2, one line)."""
    if args.pixel4:
        wrong = [o for o, v in (("--split", args.split), ("--limit", args.limit)) if v is not None]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: only with --data; --pixel4 takes --scenes, --data-dir, "
                             "--downscale and --tile")
        if args.downscale < 1:
            raise ValueError(f"--downscale must be a positive integer, got {args.downscale}")
        if args.tile is not None and args.tile <= 0:
            raise ValueError(f"--tile must be a positive integer, got {args.tile}")
    else:
        wrong = [o for o, v in (("--scenes", args.scenes), ("--data-dir", args.data_dir), ("--tile", args.tile))
                 if v is not None] + (["--downscale"] if args.downscale != 1 else [])
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: only with --pixel4; --data takes --split and --limit")
        if args.limit is not None and args.limit <= 0:
            raise ValueError(f"--limit must be a positive integer, got {args.limit}")


def _command(args) -> str:
    """The command line that reproduces this run (for the JSON record)."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("DPLAB_DATA", "OMP_NUM_THREADS") if k in os.environ)
    words = ["python", "-m", "dplab", "evaluate"]
    words += ["--pretrained", args.pretrained] if args.pretrained else ["--checkpoint", args.checkpoint]
    words += ["--pixel4"]
    for opt, value in (("--scenes", args.scenes), ("--data-dir", args.data_dir), ("--tile", args.tile),
                       ("--downscale", args.downscale if args.downscale != 1 else None),
                       ("--device", args.device), ("--json", args.json)):
        if value is not None:
            words += [opt, *(value if isinstance(value, list) else [str(value)])]
    return (env + " " if env else "") + shlex.join(words)


def _load(args, device):
    from dplab.models import from_checkpoint, pretrained

    if args.pretrained:
        return pretrained(args.pretrained, map_location=device), f"shipped network {args.pretrained}"
    model = from_checkpoint(args.checkpoint, map_location=device)   # FileNotFoundError, ValueError (no spec)
    return model, f"checkpoint {args.checkpoint}"


def _run_pixel4(args, device) -> int:
    from dplab._io import write_json_atomic
    from dplab.data import DatasetNotFoundError, pixel4
    from dplab.eval.pixel4 import METRICS, machine_info, score_network_pixel4, summary_rows
    from dplab.eval.tables import format_table

    try:
        pixel4.list_scenes(args.data_dir)                              # fail before loading the network
    except DatasetNotFoundError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()
                 if ln.strip() and not ln.strip().startswith(("manifest:", "to get it:", "then pass"))]
        raise FileNotFoundError(" ".join(lines) + "; pass --data-dir DIR (or set DPLAB_DATA) naming the folder "
                                f"that holds {pixel4.NAME}/") from None
    model, source = _load(args, device)
    progress = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    result = score_network_pixel4(model, data_dir=args.data_dir, scenes=args.scenes, downscale=args.downscale,
                                  device=device, tile=args.tile, progress=progress,
                                  name=args.pretrained or Path(args.checkpoint).name)
    h, w = result["image_hw"]
    print(f"{len(result['scenes'])} Pixel 4 scene(s) ({', '.join(result['scenes'])}) at {h}x{w}, {source}, "
          f"device {device}, {result['params']:,} parameters")
    protos = list(result["protocols"])
    columns = ["method", *(f"{p}_{k}" for p in protos for k in METRICS), "seconds"]
    headers = ["method", *(f"{k.upper()} {p}" for p in protos for k in METRICS), "s/scene"]
    formats = {c: ".2f" if c.endswith("psnr") else ".4f" if c.endswith("mae") else ".3f" for c in columns[1:]}
    rows = summary_rows(result)
    if args.per_image:
        for scene in result["scenes"]:
            for key in ("input", "network"):
                r = result[key]
                rows.append({"method": f"{scene} {r['label']}", "seconds": r["seconds"][scene],
                             **{f"{p}_{k}": r["per_scene"][scene][p][k] for p in protos for k in METRICS}})
    print(format_table(rows, columns, headers=headers, formats=formats))
    for p in protos:
        g = result["gain"][p]
        print(f"gain over the blurred input ({result['protocols'][p]}): PSNR {g['psnr']:+.2f} dB, "
              f"SSIM {g['ssim']:+.4f}, MAE {g['mae']:+.4f}")
    if args.json:
        data_dir = args.data_dir or os.environ.get("DPLAB_DATA")
        record = {"command": _command(args), "machine": machine_info(),
                  "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
                  "pretrained": args.pretrained, "data_dir": str(Path(data_dir).resolve()),
                  "weights_sha256": (getattr(model, "dplab_card", None) or {}).get("sha256"),
                  "model_spec": model.dplab_spec, **result}
        write_json_atomic(args.json, record)
        print(f"evaluate: wrote {args.json}")
    return 0


def run(args) -> int:
    """Handler of ``python -m dplab evaluate`` (see the module docstring); returns 0."""
    import json

    from dplab._io import atomic_file
    from dplab._validate import resolve_device

    _check_options(args)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from None
    if args.pixel4:
        return _run_pixel4(args, device)

    from dplab.data import DPDDDataset
    from dplab.eval.evaluate import evaluate
    from dplab.eval.zoo import NetworkMethod

    split = args.split or "test"
    model, source = _load(args, device)
    method = NetworkMethod(model)
    dataset = DPDDDataset(split, root=args.data)                     # DatasetNotFoundError
    table = evaluate(method, dataset, name=method.kind, device=device, max_images=args.limit,
                     progress=not args.quiet)
    blurred = evaluate(lambda b: b["combined"], dataset, name="blurred input", device=device,
                       max_images=args.limit)
    print(f"{len(table) - 1} image(s) of {Path(args.data)} ({split}), {source}, device {device}")
    for t in (blurred, table):
        shown = t if args.per_image else type(t)([t.mean], method=t.method, params=t.params, columns=t.columns)
        print(shown.format())
    gain = {k: table.mean[k] - blurred.mean[k] for k in ("psnr", "ssim", "mae")}
    print(f"gain over the blurred input: PSNR {gain['psnr']:+.2f} dB, SSIM {gain['ssim']:+.4f}, "
          f"MAE {gain['mae']:+.4f}")
    if args.json:
        record = {"checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
                  "pretrained": args.pretrained, "data": str(Path(args.data).resolve()),
                  "split": split, "device": str(device), "model_spec": model.dplab_spec, **table.to_dict(),
                  "blurred_input": blurred.to_dict(), "gain": gain}
        with atomic_file(args.json, "w") as handle:
            json.dump(record, handle, indent=2)
        print(f"evaluate: wrote {args.json}")
    return 0
