"""Command line of dplab: ``python -m dplab COMMAND ...``.

Commands register themselves in :data:`COMMANDS` (name -> function adding a sub-parser and
setting ``handler``):

* ``synth`` writes a synthetic DP dataset in the DPDD layout (:mod:`dplab.render.synth`);
* ``train`` trains a network with a paper's recipe and :class:`dplab.training.trainer.Trainer`,
  resumably (:mod:`dplab.cli.train`);
* ``evaluate`` tabulates PSNR/SSIM/MAE/time/params of a checkpoint or a shipped network beside
  the blurred input (:mod:`dplab.cli.evaluate`);
* ``weights`` retrains the shipped networks and writes their cards (:mod:`dplab.cli.weights`,
  ``make weights``)::

    python -m dplab synth --out data/synth --count 100 --seed 0 --size 512x768 \\
        --sequences 10 --frames 4
    python -m dplab train --model dpdnet --recipe dpdnet --data data/synth --out runs/dpdnet \\
        --steps 2000 --patch 256
    python -m dplab evaluate --checkpoint runs/dpdnet/checkpoints/last.pt --data data/synth
    python -m dplab evaluate --pretrained dpdnet --data data/synth

Run ``python -m dplab COMMAND --help`` for every option. Exit status: 0 on success, 2 on bad
arguments, a missing checkpoint or dataset, or a refused output folder, 130 when interrupted
(run the same command again to resume).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["COMMANDS", "build_parser", "main"]


def _add_synth(sub) -> None:
    from dplab.render.synth import SynthConfig, parse_size

    d = SynthConfig(count=0)
    p = sub.add_parser(
        "synth", help="render a synthetic DP dataset in the DPDD folder layout",
        description="Render a synthetic dual-pixel dataset (RDPD's generator on procedural "
                    "scenes from scikit-image photos) in the DPDD layout: {train,val,test}_c/"
                    "{source,target}, {..}_l/source, {..}_r/source (16-bit PNG), {..}_c/defocus "
                    "(.npy CoC maps), plus sequences/ for the recurrent network. Deterministic by "
                    "seed; re-run the same command to resume an interrupted run.")
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
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset made with other arguments, or write into a "
                        "non-empty folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_synth)


def _run_synth(args) -> int:
    from dplab.render.synth import SynthConfig, synthesize

    cfg = SynthConfig(count=args.count, seed=args.seed, size=tuple(args.size),
                      split_fractions=tuple(args.split_fractions), sequences=args.sequences,
                      frames=args.frames, psf=args.psf, distortion=not args.no_distortion,
                      noise_sigma=tuple(args.noise_sigma), coc_gain=args.coc_gain,
                      max_layers=args.max_layers, composite=args.composite)
    result = synthesize(args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(f"synth: {result['written']} written, {result['skipped']} already complete, "
          f"in {args.out}")
    return 0


def _add_train(sub) -> None:
    from dplab.cli.train import add_parser

    add_parser(sub)


def _add_evaluate(sub) -> None:
    from dplab.cli.evaluate import add_parser

    add_parser(sub)


def _add_weights(sub) -> None:
    from dplab.cli.weights import add_parser

    add_parser(sub)


#: Sub-commands: name -> function(subparsers) that adds the sub-parser.
COMMANDS = {"synth": _add_synth, "train": _add_train, "evaluate": _add_evaluate, "weights": _add_weights}


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dplab`` parser with every command of :data:`COMMANDS`.

    Example:
        >>> build_parser().parse_args(["synth", "--out", "x", "--count", "2"]).count
        2
    """
    parser = argparse.ArgumentParser(prog="python -m dplab", description="dplab command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, FloatingPointError) as err:
        print(f"python -m dplab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"python -m dplab {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
