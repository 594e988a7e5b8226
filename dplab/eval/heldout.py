"""The held-out synthetic test set of the shipped networks, re-rendered in memory, and their scores.

The shipped weights (:mod:`dplab.models.shipped`) were scored on 48 images rendered by
``python -m dplab synth`` with seed 1000, which no training run used. The renderer is
deterministic by ``(seed, index)``, so this module re-renders any of them without files and
scores networks on them the way the cards were made.
"""

from __future__ import annotations

import numpy as np
import torch

from dplab.eval.zoo import NetworkMethod
from dplab.metrics.image import psnr as psnr_fn, ssim as ssim_fn
from dplab.models.shipped import DATASETS, pretrained
from dplab.render.synth import SynthConfig, parse_size, render_sample
from dplab.xin.phone_data import PhoneConfig, PhoneRenderer

__all__ = ["heldout_config", "heldout_samples", "heldout_scores", "comparison"]


def heldout_config(dataset: str = "heldout"):
    """The :class:`dplab.render.synth.SynthConfig` of a held-out set of :data:`DATASETS`
    (``"heldout"``: the RDPD-style set; ``"phone_heldout"``: the Pixel 4 set, whose camera
    settings live in :class:`dplab.xin.phone_data.PhoneConfig`)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    argv = DATASETS[dataset]
    at = argv.index("--split-fractions") + 1
    args = dict(zip(argv[:at - 1:2], argv[1:at - 1:2]))
    args.update(zip(argv[at + 3::2], argv[at + 4::2]))
    return SynthConfig(count=int(args["--count"]), seed=int(args["--seed"]), size=parse_size(args["--size"]),
                       coc_gain=float(args.get("--coc-gain", 1.0)),
                       split_fractions=tuple(float(f) for f in argv[at:at + 3]))


def _sample_source(dataset: str, data_dir):
    """``index -> arrays`` of a held-out set: RDPD's renderer, or the phone's."""
    cfg = heldout_config(dataset)
    if "pixel4" in DATASETS[dataset]:
        renderer = PhoneRenderer(PhoneConfig(size=cfg.size), cfg.seed, data_dir)
        return cfg, lambda i: renderer.sample(i)[0]
    return cfg, lambda i: render_sample(cfg, i)[0]


def heldout_samples(indices, dataset: str = "heldout", *, data_dir=None) -> list[dict]:
    """Held-out images re-rendered in memory (no files needed), as the DPDD loader reads the
    written set: 16-bit values / 65535, views at half brightness, each a batch of one.

    The renderer is deterministic by ``(seed, index)``, so sample ``i`` is the held-out set's
    image ``i`` that the cards were scored on.

    Args:
        indices: held-out image indices (0 to 47), an int or an iterable.
        dataset: which held-out set of :data:`DATASETS` (``"heldout"`` or ``"phone_heldout"``).
        data_dir: data directory with the Pixel 4 calibration (the phone set only; default
            ``$DPLAB_DATA``).

    Returns:
        A list of dicts with ``"combined"``, ``"left"``, ``"right"``, ``"sharp"`` as
        ``(1, 3, H, W)`` tensors and ``"defocus"`` (signed CoC in pixels, ``(1, 1, H, W)``).

    Example:
        >>> s = heldout_samples(0)[0]
        >>> tuple(s["combined"].shape), bool(torch.allclose(s["left"] + s["right"], s["combined"], atol=1e-4))
        ((1, 3, 192, 256), True)
    """
    cfg, render = _sample_source(dataset, data_dir)
    indices = [indices] if isinstance(indices, int) else list(indices)
    bad = [i for i in indices if not (isinstance(i, int) and 0 <= i < cfg.count)]
    if bad:
        raise ValueError(f"held-out indices must be integers in [0, {cfg.count}), got {bad}")

    def image(a):
        return torch.from_numpy(a.astype(np.float32) / 65535).permute(2, 0, 1)[None]

    samples = []
    for i in indices:
        arrays = render(i)
        samples.append({"combined": image(arrays["combined"]), "sharp": image(arrays["target"]),
                        "left": image(arrays["left"]) / 2, "right": image(arrays["right"]) / 2,
                        "defocus": torch.from_numpy(arrays["defocus"])[None, None]})
    return samples


def heldout_scores(names, indices=None, *, weights_dir=None, dataset: str = "heldout", data_dir=None) -> dict:
    """Per-image PSNR and SSIM of shipped networks and of the blurred input on held-out images.

    Args:
        names: shipped network names.
        indices: held-out image indices (default all 48).
        weights_dir: folder of the weights and cards (default the shipped ones).
        dataset, data_dir: the held-out set (see :func:`heldout_samples`).

    Returns:
        ``{"images": [indices], "<label>": {"psnr": [...], "ssim": [...]}}`` for
        ``"blurred input"`` and each name; outputs clipped to [0, 1] (the cards' protocol).
    """
    names = [names] if isinstance(names, str) else list(names)
    indices = list(range(heldout_config(dataset).count)) if indices is None else list(indices)
    methods = {"blurred input": lambda b: b["combined"]}
    methods.update({n: NetworkMethod(pretrained(n, weights_dir=weights_dir)) for n in names})
    out = {"images": indices, **{k: {"psnr": [], "ssim": []} for k in methods}}
    with torch.no_grad():
        for sample in heldout_samples(indices, dataset, data_dir=data_dir):
            for label, method in methods.items():
                y = method(sample).clamp(0, 1)
                out[label]["psnr"].append(float(psnr_fn(y, sample["sharp"])[0]))
                out[label]["ssim"].append(float(ssim_fn(y, sample["sharp"])[0]))
    return out


def comparison(scores: dict, a: str, b: str) -> dict:
    """A paper's claim "``a`` beats ``b``" checked on :func:`heldout_scores` output.

    Returns:
        ``{"margin_db", "wins", "images", "reproduced"}``: mean PSNR of ``a`` minus ``b``, on
        how many images ``a`` scores higher, the number of images, and whether the mean
        margin is positive.

    Example:
        >>> comparison({"x": {"psnr": [30.0, 28.0]}, "y": {"psnr": [29.0, 28.5]}}, "x", "y")
        {'margin_db': 0.25, 'wins': 1, 'images': 2, 'reproduced': True}
    """
    pa, pb = scores[a]["psnr"], scores[b]["psnr"]
    if len(pa) != len(pb) or not pa:
        raise ValueError(f"{a!r} and {b!r} must be scored on the same, non-empty set of images")
    margin = sum(pa) / len(pa) - sum(pb) / len(pb)
    return {"margin_db": round(margin, 4), "wins": sum(x > y for x, y in zip(pa, pb)), "images": len(pa),
            "reproduced": margin > 0}
