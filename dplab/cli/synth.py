"""``python -m dplab synth``: render a synthetic DP dataset in the DPDD folder layout.

The generator is RDPD's (Abuolaim et al., ICCV 2021, Sec. 3) on procedural scenes
(:func:`dplab.render.synth.synthesize`); deterministic by seed and resumable. One run per
folder: while a run writes ``--out``, another one there is refused (exit 2) with the first
one's pid; a ``--size`` whose images cannot fit in memory is refused before anything is
written.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Add the ``synth`` sub-parser to ``sub`` (an ``argparse`` sub-parsers object)."""
    from dplab.render.synth import SynthConfig, parse_size

    d = SynthConfig(count=0)
    p = sub.add_parser(
        "synth", help="render a synthetic DP dataset in the DPDD folder layout",
        description="Render a synthetic dual-pixel dataset (RDPD's generator on procedural "
                    "scenes from scikit-image photos) in the DPDD layout: {train,val,test}_c/"
                    "{source,target}, {..}_l/source, {..}_r/source (16-bit PNG), {..}_c/defocus "
                    "(.npy CoC maps), plus sequences/ for the recurrent network. Deterministic by "
                    "seed; re-run the same command to resume an interrupted run. One run per --out at a "
                    "time: a second one is refused at once, with the first one's pid.")
    p.add_argument("--out", required=True,
                   help="output folder (empty, new, or an earlier run to resume)")
    p.add_argument("--count", type=int, required=True, help="number of single-image samples")
    p.add_argument("--seed", type=int, default=d.seed, help="base seed (default %(default)s)")
    p.add_argument("--split-fractions", type=float, nargs=3, default=list(d.split_fractions),
                   metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions summing to 1 (default 0.8 0.1 0.1)")
    p.add_argument("--size", type=parse_size, default=d.size, metavar="HxW",
                   help="image size (default %s)" % "x".join(map(str, d.size)))
    p.add_argument("--sequences", type=int, default=d.sequences,
                   help="number of image sequences (default 0)")
    p.add_argument("--frames", type=int, default=d.frames,
                   help="frames per sequence (default %(default)s)")
    p.add_argument("--psf", choices=("bank", "butterworth", "punnappurath"), default=d.psf,
                   help="PSF model: a random Butterworth set of the RDPD bank per sample "
                        "(default), "
                        "Butterworth defaults, or Punnappurath et al.")
    p.add_argument("--no-distortion", action="store_true", help="skip the radial distortion")
    p.add_argument("--noise-sigma", type=float, nargs=2, default=list(d.noise_sigma),
                   metavar=("MIN", "MAX"),
                   help="range of the noise level (default 0 0.05; RDPD: 0.05 0.5)")
    p.add_argument("--coc-gain", type=float, default=d.coc_gain,
                   help="multiply every CoC (default 1)")
    p.add_argument("--max-layers", type=int, default=d.max_layers,
                   help="most depth layers (default 500)")
    p.add_argument("--composite", choices=("alpha", "hard_mask"), default=d.composite,
                   help="layer compositing (default alpha)")
    p.add_argument("--camera", choices=("rdpd", "pixel4"), default="rdpd",
                   help="rdpd (default): RDPD's generator with the options above; pixel4: the Google "
                        "Pixel 4 as Xin et al. calibrated it (its 6x8 grid of DP kernels, white-sheet "
                        "noise, one gray channel; dplab.xin.phone_data), read from --data-dir; the "
                        "RDPD options --psf, --no-distortion, --noise-sigma, --coc-gain, --max-layers, "
                        "--composite and --sequences do not apply to it and are refused")
    p.add_argument("--data-dir", default=None,
                   help="with --camera pixel4: the data directory holding xin_pixel4_dp/calibration "
                        "(default $DPLAB_DATA)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset made with other arguments, or write into a "
                        "non-empty folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Handler of ``python -m dplab synth``; returns 0."""
    from dplab.render.synth import SynthConfig, synthesize

    cfg = SynthConfig(count=args.count, seed=args.seed, size=tuple(args.size),
                      split_fractions=tuple(args.split_fractions), sequences=args.sequences,
                      frames=args.frames, psf=args.psf, distortion=not args.no_distortion,
                      noise_sigma=tuple(args.noise_sigma), coc_gain=args.coc_gain,
                      max_layers=args.max_layers, composite=args.composite)
    renderer = None
    if args.camera == "pixel4":
        from dplab.xin.phone_data import PhoneConfig, PhoneRenderer

        default = SynthConfig(count=cfg.count, seed=cfg.seed, size=cfg.size,
                              split_fractions=cfg.split_fractions, frames=cfg.frames)
        changed = [k for k in ("psf", "distortion", "noise_sigma", "coc_gain", "max_layers", "composite",
                               "sequences") if getattr(cfg, k) != getattr(default, k)]
        if changed:
            raise ValueError(f"--camera pixel4 renders with the phone's calibrated kernels and noise: "
                             f"drop the RDPD options {', '.join('--' + k.replace('_', '-') for k in changed)}")
        if args.data_dir is not None and not Path(args.data_dir).is_dir():
            raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist; pass the folder that "
                                    "holds xin_pixel4_dp/")
        renderer = PhoneRenderer(PhoneConfig(size=cfg.size), cfg.seed, args.data_dir)
    elif args.data_dir is not None:
        raise ValueError("--data-dir is only read with --camera pixel4")
    result = synthesize(args.out, cfg, overwrite=args.overwrite, progress=not args.quiet,
                        renderer=renderer)
    print(f"synth: {result['written']} written, {result['skipped']} already complete, "
          f"in {args.out}")
    return 0
