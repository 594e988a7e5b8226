"""Shipped, CPU-trained weights of the book's networks: :func:`pretrained` and their recipes.

The book's network chapters show what each method does when trained long enough, without
asking the reader for a GPU: reduced-width versions of DPDNet (dual-pixel and single-image
input), RDPD, DRBNet and MDP were trained on a 2-core CPU on dplab's own synthetic DP data
(RDPD's generator, ``python -m dplab synth``) and ship in ``dplab/weights/`` as float16
state dicts, each beside a JSON *card*: the model spec, the exact commands that made the
data and trained the network, the seed, steps, wall time, machine, dplab commit, held-out
metrics and the file's sha256.

:data:`SHIPPED` is the single source of those recipes; ``make weights`` (``python -m dplab
weights``, :mod:`dplab.cli.weights`) re-runs them from scratch, deterministically and
resumably.

What differs from the papers (and why), for every shipped network:

* widths are reduced (about 0.2-0.7 M parameters instead of 12-47 M) so that a CPU trains them
  in minutes;
* the U-Nets (DPDNet, RDPD, MDP) use the residual output head
  (:class:`~dplab.models.blocks.ImageHead`, ``head="residual"``): they start from the blurred
  input and learn a correction. The authors' head (3x3 convolution to three ReLU channels,
  1x1 convolution, sigmoid) starts near grey, far below the blurred input, and needs
  thousands of steps to relearn the identity; on one fixed batch a DPDNet with it stays below
  the input after 300 steps while the residual head is 11 dB above it (the test suite checks
  the residual heads, ``tests/models/test_overfit.py``);
* one Adam learning rate per network with a cosine decay over the step budget, in place of
  the papers' epoch-based halving tuned for hundreds of epochs on real data;
* training data: 192x256 synthetic images with RDPD's cameras, PSF bank, radial distortion
  and noise, the CoC scaled so that blur matters at this size (``--coc-gain 8``: a mean
  |CoC| of 4.8 px over the held-out set, up to 43 px); the held-out test set is rendered
  with seed 1000, which no training used. Both are drawn from the same six scikit-image photographs (other crops,
  shapes, depths and blur), so the held-out score measures generalisation to new blur and
  new compositions, not to new kinds of content.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from dplab.models.registry import build

__all__ = ["WEIGHTS_DIR", "SHIPPED", "DATASETS", "DEFAULT_DATA", "datasets_of", "list_pretrained", "load_card", "pretrained",
           "sha256_file", "train_argv", "synth_argv"]

#: Where the shipped ``<name>.pt`` files and ``<name>.json`` cards live (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: The synthetic sets the shipped weights were trained and scored on: ``python -m dplab synth``
#: arguments (``--out`` is added by the caller).
DATASETS: dict[str, list[str]] = {
    "train": ["--count", "640", "--seed", "0", "--size", "192x256", "--coc-gain", "8",
              "--split-fractions", "0.9", "0.1", "0"],
    "heldout": ["--count", "48", "--seed", "1000", "--size", "192x256", "--coc-gain", "8",
                "--split-fractions", "0", "0", "1"],
    # The Google Pixel 4 as Xin et al. calibrated it (dplab.xin.phone_data): its 6x8 grid of DP
    # kernels, white-sheet noise, one gray channel; needs the release's calibration ($DPLAB_DATA).
    "phone_train": ["--camera", "pixel4", "--count", "720", "--seed", "0", "--size", "256x256",
                    "--split-fractions", "0.9", "0.1", "0"],
    "phone_heldout": ["--camera", "pixel4", "--count", "48", "--seed", "1000", "--size", "256x256",
                      "--split-fractions", "0", "0", "1"],
}

#: The (training, held-out) datasets of a shipped network without a "data" entry.
DEFAULT_DATA = ("train", "heldout")

_COMMON = ["--patch", "64", "--batch-size", "8", "--schedule", "cosine", "--cache", "--seed", "0"]

#: Name -> recipe of every shipped network: ``python -m dplab train`` arguments (``--data``
#: and ``--out`` are added by the caller) and a one-line description.
SHIPPED: dict[str, dict] = {
    "dpdnet": {
        "about": "DPDNet (ECCV 2020), dual-pixel input [left, right], widths 16-32-64-64, residual head",
        "train": ["--model", "dpdnet", "--recipe", "dpdnet", "--widths", "16", "32", "64", "64",
                  "--option", "head=residual", "--lr", "1e-3", "--steps", "10000", *_COMMON],
    },
    "dpdnet_single": {
        "about": "DPDNet (single): the same network fed the combined image only",
        "train": ["--model", "dpdnet_single", "--recipe", "dpdnet", "--widths", "16", "32", "64", "64",
                  "--option", "head=residual", "--lr", "1e-3", "--steps", "10000", *_COMMON],
    },
    "rdpd": {
        "about": "RDPD (ICCV 2021), [left, right, radial] input, widths 16-32-64-64, ConvLSTM 64, "
                 "residual head, MSE + multi-scale edge loss (Eq. 16) on single frames",
        "train": ["--model", "rdpd", "--recipe", "rdpd", "--widths", "16", "32", "64", "64",
                  "--option", "lstm_channels=64", "--option", "head=residual", "--lr", "1e-3",
                  "--steps", "3000", *_COMMON],
    },
    "drbnet": {
        "about": "DRBNet (CVPR 2022), single-image input, base width 8, residual pyramid, "
                 "multi-scale L1 (Eq. 6)",
        "train": ["--model", "drbnet", "--recipe", "drbnet_lfdof", "--width", "8",
                  "--option", "pyramid=residual", "--lr", "1e-3", "--grad-clip", "1.0",
                  "--steps", "10000", *_COMMON],
    },
    "mdp": {
        "about": "MDP (WACV 2022), single-image input, width x0.125, residual heads, step-2 loss "
                 "(views and sharp image jointly)",
        "train": ["--model", "mdp", "--recipe", "mdp_step2", "--width", "0.125",
                  "--option", "head=residual", "--lr", "1e-3", "--grad-clip", "1.0",
                  "--steps", "10000", *_COMMON],
    },
    "dpdnet_pixel4": {
        "about": "DPDNet for the Google Pixel 4: the dpdnet recipe on data rendered with the phone's calibrated "
                 "DP kernels and noise (python -m dplab synth --camera pixel4), 128-px patches (its blur reaches "
                 "40 px across)",
        "data": ("phone_train", "phone_heldout"),
        "train": ["--model", "dpdnet", "--recipe", "dpdnet", "--widths", "16", "32", "64", "64",
                  "--option", "head=residual", "--lr", "1e-3", "--steps", "6000", "--patch", "128",
                  "--batch-size", "4", "--schedule", "cosine", "--cache", "--seed", "0"],
    },
    # Ablations: the headline comparison of a chapter, at the shipped networks' scale.
    "rdpd_mse": {
        "about": "ablation of rdpd: the same network and steps trained with MSE alone (no edge loss, "
                 "RDPD Eq. 16 with lambda = 0)",
        "ablation_of": "rdpd",
        "train": ["--model", "rdpd", "--recipe", "dpdnet", "--widths", "16", "32", "64", "64",
                  "--option", "lstm_channels=64", "--option", "head=residual", "--lr", "1e-3",
                  "--steps", "3000", *_COMMON],
    },
    "mdp_single_task": {
        "about": "ablation of mdp: MDP's encoder and one widened decoder predicting the sharp image "
                 "only (MDP Table 3's single-task baseline, about the same weights), same steps",
        "ablation_of": "mdp",
        "train": ["--model", "mdp_single_task", "--recipe", "mdp_step2", "--width", "0.125",
                  "--option", "head=residual", "--lr", "1e-3", "--grad-clip", "1.0",
                  "--steps", "10000", *_COMMON],
    },
}


def list_pretrained() -> list[str]:
    """Names of the shipped networks (those with a weights file and a card).

    Example:
        >>> set(list_pretrained()) <= set(SHIPPED)
        True
    """
    return sorted(n for n in SHIPPED if (WEIGHTS_DIR / f"{n}.pt").is_file()
                  and (WEIGHTS_DIR / f"{n}.json").is_file())


def datasets_of(name: str) -> tuple[str, str]:
    """The (training, held-out) :data:`DATASETS` of shipped network ``name``."""
    _check_name(name)
    return tuple(SHIPPED[name].get("data", DEFAULT_DATA))


def synth_argv(dataset: str, out) -> list[str]:
    """``python -m dplab synth`` arguments of one of :data:`DATASETS`."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    return ["synth", "--out", str(out), *DATASETS[dataset]]


def train_argv(name: str, data, out) -> list[str]:
    """``python -m dplab train`` arguments of shipped network ``name``."""
    _check_name(name)
    return ["train", *SHIPPED[name]["train"], "--data", str(data), "--out", str(out)]


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(name: str) -> None:
    if name not in SHIPPED:
        raise ValueError(f"no shipped network {name!r}; shipped: {sorted(SHIPPED)}")


def load_card(name: str, weights_dir=None) -> dict:
    """The JSON card of shipped network ``name``.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the card is missing (``make weights`` writes it).
    """
    _check_name(name)
    path = Path(weights_dir or WEIGHTS_DIR) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no card for {name!r} at {path}; run `make weights` to train and write it")
    return json.loads(path.read_text())


def pretrained(name: str, *, map_location="cpu", weights_dir=None) -> nn.Module:
    """A shipped network, ready to run: built from its card's spec, weights loaded, eval mode.

    The file's sha256 is checked against the card first, so a weights file that does not
    belong to its card (a partial copy, a retrain without a new card) is refused.

    Args:
        name: one of :data:`SHIPPED` (``"dpdnet"``, ``"dpdnet_single"``, ``"rdpd"``,
            ``"drbnet"``, ``"mdp"``).
        map_location: device of the returned model.
        weights_dir: folder holding ``<name>.pt`` and ``<name>.json`` (default
            :data:`WEIGHTS_DIR`).

    Returns:
        The float32 network in eval mode; ``model.dplab_spec`` holds its spec and
        ``model.dplab_card`` its card. Feed it as :class:`dplab.eval.zoo.NetworkMethod` does.

    Raises:
        ValueError: unknown name, or the file's sha256 differs from the card's.
        FileNotFoundError: the file or its card is missing.

    Example:
        >>> net = pretrained("dpdnet")                               # doctest: +SKIP
        >>> net.dplab_card["heldout"]["gain_psnr"] > 1.5             # doctest: +SKIP
        True
    """
    card = load_card(name, weights_dir)
    path = Path(weights_dir or WEIGHTS_DIR) / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no weights for {name!r} at {path}; run `make weights`")
    digest = sha256_file(path)
    if digest != card.get("sha256"):
        raise ValueError(f"{path} has sha256 {digest}, its card says {card.get('sha256')}: the file does not "
                         "belong to this card; restore it (git checkout) or retrain with `make weights`")
    spec = card["model_spec"]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("kwargs", {}).items()}
    model = build(spec["name"], **kwargs)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.dplab_card = card
    return model.to(map_location).eval()
