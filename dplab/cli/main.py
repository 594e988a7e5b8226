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
  ``make weights``);
* ``grade`` runs an assignment notebook of the book headless and scores the answers it
  recorded against independently computed references (:mod:`dplab.cli.grade`,
  :mod:`dplab.eval.grading`)::

    python -m dplab synth --out data/synth --count 100 --seed 0 --size 512x768 \\
        --sequences 10 --frames 4
    python -m dplab train --model dpdnet --recipe dpdnet --data data/synth --out runs/dpdnet \\
        --steps 2000 --patch 256
    python -m dplab evaluate --checkpoint runs/dpdnet/checkpoints/last.pt --data data/synth
    python -m dplab evaluate --pretrained dpdnet --data data/synth
    python -m dplab grade book/assignments/image_formation.ipynb --profile test

Run ``python -m dplab COMMAND --help`` for every option. Exit status: 0 on success, 130 when
interrupted (run the same command again to resume), and 2, with one line on stderr that names
the file or argument and says what to do, for every failure a user can meet and fix:

* bad arguments (an unknown ``--device``, a ``--size`` whose image cannot fit in memory, ...);
* a missing, empty, truncated or foreign checkpoint, or one of another network;
* a missing notebook, or one that is not one of the book's assignments (``grade``);
* a missing or damaged dataset, or training data other than the run's (``train``);
* an output folder that is refused: not empty and not this command's, another run's
  settings, or in use by another run right now (the message names its pid);
* a full disk (``ENOSPC``) or a folder that cannot be written;
* a diverging training run (a NaN loss), a damaged ``log.csv`` or ``cli_train.json``.

Anything else is a bug in dplab and shows its traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys

from dplab._io import FolderInUseError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Failures of a write (or read) for want of room or permission, and what to do about them.
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space (or use another folder) and run the same "
                  "command again; it resumes where it stopped",
    errno.EDQUOT: "disk quota exceeded: free some space (or use another folder) and run the same command "
                  "again; it resumes where it stopped",
    errno.EFBIG: "file too large for this file system or for the process's file-size limit; use another folder",
    errno.EROFS: "read-only file system: choose a folder you can write to",
    errno.EACCES: "permission denied: make it writable (and readable) or choose another folder",
    errno.EPERM: "operation not permitted: make it writable (and readable) or choose another folder",
}


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


def _add_grade(sub) -> None:
    from dplab.cli.grade import add_parser

    add_parser(sub)


#: Sub-commands: name -> function(subparsers) that adds the sub-parser.
COMMANDS = {"synth": _add_synth, "train": _add_train, "evaluate": _add_evaluate, "weights": _add_weights,
            "grade": _add_grade}


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


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status
    (see the module docstring: 2 and one line on stderr for an expected failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"python -m dplab {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            FloatingPointError, FolderInUseError) as err:
        if isinstance(err, IsADirectoryError) and err.filename:
            text = f"{err.filename}: {err.strerror}"
        else:
            text = str(err)
    except OSError as err:
        if err.errno not in _OS_ADVICE:
            raise
        text = f"{err.filename or 'a file'}: {_OS_ADVICE[err.errno]}"
    print(f"python -m dplab {args.command}: error: {_one_line(text)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
