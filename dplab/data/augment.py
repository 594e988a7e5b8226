"""DRBNet's training augmentations (Ruan et al., CVPR 2022, Sec. 5.1): "Gaussian noise,
gray-scale image conversion and scaling".

The paper gives no parameters; dplab's defaults are stated here and in the chapter:

* **scaling**: every image of the sample (input, views, ground truth, defocus map) is resized by
  one factor ``s ~ U(scale_range)`` (bilinear with antialiasing) and cropped at the centre (or
  padded by edge replication) back to its size, so the pair stays aligned;
* **gray-scale**: with probability ``gray_prob`` every RGB image becomes its luminance
  ``0.299 R + 0.587 G + 0.114 B`` repeated in three channels (input and target alike);
* **Gaussian noise**: ``sigma ~ U(noise_sigma)`` and ``x + N(0, sigma^2)``, clipped to [0, 1],
  on the *inputs* only (``combined``, ``left``, ``right``); the ground truth stays clean.

:func:`augment` transforms one sample dict with an explicit generator; :class:`Augmented`
wraps a dataset so that item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dplab.data.patches import item_generator

__all__ = ["INPUT_KEYS", "IMAGE_KEYS", "LUMA", "augment", "Augmented"]

INPUT_KEYS = ("combined", "left", "right")
IMAGE_KEYS = INPUT_KEYS + ("sharp",)
LUMA = (0.299, 0.587, 0.114)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo) + (float(hi) - float(lo)) * float(torch.rand((), generator=g, dtype=torch.float64))


def _rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    y = F.interpolate(x[None].float(), size=(nh, nw), mode="bilinear", align_corners=False,
                      antialias=s < 1)[0]
    if nh < h or nw < w:
        ph, pw = max(0, h - nh), max(0, w - nw)
        y = F.pad(y[None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")[0]
    top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
    return y[..., top:top + h, left:left + w].to(x.dtype)


def augment(sample: dict, generator: torch.Generator, *, noise_sigma=(0.0, 0.02),
            gray_prob: float = 0.2, scale_range=(0.8, 1.25)) -> dict:
    """DRBNet's augmentations on one sample dict of ``(C, H, W)`` tensors.

    Args:
        sample: ``"combined"`` (and optionally ``"left"``, ``"right"``, ``"sharp"``,
            ``"defocus"``); other entries are passed through.
        generator: the only source of randomness.
        noise_sigma: ``(min, max)`` of the noise level on the inputs (``(0, 0)``: off).
        gray_prob: probability of the gray-scale conversion.
        scale_range: ``(min, max)`` scale factor (``(1, 1)``: off).

    Returns:
        A new dict; the draws are recorded as ``"aug_scale"``, ``"aug_gray"``, ``"aug_sigma"``.

    Example:
        >>> s = {"combined": torch.rand(3, 8, 8), "sharp": torch.rand(3, 8, 8)}
        >>> out = augment(s, torch.Generator().manual_seed(0), gray_prob=1.0, noise_sigma=(0, 0))
        >>> torch.equal(out["sharp"][0], out["sharp"][2]), tuple(out["combined"].shape)
        (True, (3, 8, 8))
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not 0.0 <= float(gray_prob) <= 1.0:
        raise ValueError(f"gray_prob must be in [0, 1], got {gray_prob!r}")
    lo_s, hi_s = (float(v) for v in scale_range)
    lo_n, hi_n = (float(v) for v in noise_sigma)
    if not (0 < lo_s <= hi_s) or not (0 <= lo_n <= hi_n):
        raise ValueError(f"need 0 < scale min <= max and 0 <= sigma min <= max, got {scale_range!r}, {noise_sigma!r}")
    if "combined" not in sample:
        raise KeyError(f"the sample has no 'combined' input (keys: {sorted(sample)})")
    out = dict(sample)
    g = generator
    s = _uniform(g, lo_s, hi_s)
    gray = float(torch.rand((), generator=g, dtype=torch.float64)) < gray_prob
    sigma = _uniform(g, lo_n, hi_n)
    for key in IMAGE_KEYS + ("defocus",):
        if key not in out:
            continue
        x = out[key]
        if s != 1.0:
            x = _rescale(x, s)
        if gray and key in IMAGE_KEYS and x.shape[0] == 3:
            y = sum(c * x[i] for i, c in enumerate(LUMA))
            x = y[None].expand(3, -1, -1).clone()
        if sigma > 0 and key in INPUT_KEYS:
            x = (x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0.0, 1.0)
        out[key] = x
    out.update(aug_scale=torch.tensor(s), aug_gray=torch.tensor(gray), aug_sigma=torch.tensor(sigma))
    return out


class Augmented(torch.utils.data.Dataset):
    """A dataset whose items go through :func:`augment`; item ``i`` of epoch ``e`` depends only
    on ``(seed, e, i)`` (``set_epoch`` is forwarded to the base when it has one).

    Example:
        >>> base = [{"combined": torch.rand(3, 8, 8), "sharp": torch.rand(3, 8, 8)}] * 2
        >>> ds = Augmented(base, seed=3)
        >>> torch.equal(ds[1]["combined"], ds[1]["combined"]), len(ds)
        (True, 2)
    """

    def __init__(self, base, *, seed: int = 0, **options):
        self.base, self.seed, self.options, self.epoch = base, int(seed), options, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        return augment(self.base[index], item_generator(self.seed + 7919, self.epoch, index), **self.options)
