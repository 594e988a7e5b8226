"""The network chapters' "result first" figure: shipped networks on a held-out image."""

from __future__ import annotations

import torch

from dplab.book.figures import image_grid
from dplab.eval.heldout import heldout_samples
from dplab.eval.zoo import NetworkMethod
from dplab.metrics.image import psnr as psnr_fn
from dplab.models.shipped import pretrained

__all__ = ["showcase"]


def showcase(names, index: int = 0, *, size: float = 2.6, weights_dir=None):
    """The book's "result first" figure: a held-out image blurred, deblurred by each shipped
    network in ``names``, and sharp, each titled with its PSNR; returns ``(figure, psnrs)``.

    Args:
        names: shipped network names (one or several).
        index: held-out image index.
        size: panel height in inches.
        weights_dir: folder of the weights and cards (default the shipped ones).

    Returns:
        ``(fig, psnr)``: the matplotlib figure and a dict of PSNR in dB per panel
        (``"blurred input"``, each name).
    """
    names = [names] if isinstance(names, str) else list(names)
    sample = heldout_samples(index)[0]
    panels, scores = [("blurred input", sample["combined"])], {}
    with torch.no_grad():
        for name in names:
            panels.append((name, NetworkMethod(pretrained(name, weights_dir=weights_dir))(sample).clamp(0, 1)))
    for label, img in panels:
        scores[label] = float(psnr_fn(img.clamp(0, 1), sample["sharp"])[0])
    titles = [f"{label}\n{scores[label]:.2f} dB" for label, _ in panels] + ["ground truth"]
    fig = image_grid([[img for _, img in panels] + [sample["sharp"]]], [titles], size=size)
    return fig, scores
