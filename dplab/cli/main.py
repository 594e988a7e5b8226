"""Command line of dplab: ``python -m dplab COMMAND ...``.

Commands register themselves in :data:`COMMANDS` (name -> function adding a sub-parser and
setting ``handler``):

* ``synth`` writes a synthetic DP dataset in the DPDD layout (:mod:`dplab.cli.synth`,
  :mod:`dplab.render.synth`);
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
    from dplab.cli.synth import add_parser

    add_parser(sub)


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
