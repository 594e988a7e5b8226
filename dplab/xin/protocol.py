"""How an all-in-focus image is scored against Table 1 of Xin et al.: scale, saving, alignment, crop.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Table 1 and supplement D ("Quantitative
Metrics"): the ground-truth all-in-focus image is aligned to each algorithm's output with an
affine transform that OpenCV finds on one scene per algorithm, the same transform is used on
every scene, and an 8-pixel border is cropped before PSNR, SSIM and MAE. The paper does not say
in which intensity units the metrics are computed, and PSNR depends on it; the release holds
the views as 14-bit raw values and the ground truth as 16-bit PNGs whose maximum equals the
views' maximum. A :class:`Protocol` names every choice, so that the candidates can be
compared side by side (:data:`CANDIDATES`) and the one that fits the paper's Wiener row is the
default (:data:`TABLE1`):

* ``scale``: ``"raw"`` (the release's units, ``(raw - 1024) / (2^14 - 1)``), ``"own_max"``
  (each image divided by its own maximum), ``"gt_max"`` (both by the ground truth's maximum),
  ``"obs_max"`` (both by the maximum of the two views, as the authors' ``run.py`` normalises its
  input) or ``"obs_mean"`` (both multiplied by ``0.5 / mean(views)``, the normalisation of
  supplement D).
* ``quantize``: the estimate saved as an unsigned ``quantize``-bit image of the release's units
  (``run.py`` writes 16 bits, truncating: ``(x * (2^16 - 1)).astype(uint16)``), or None.
* ``bilateral``: the filter ``run.py`` applies to the MPI's all-in-focus image before saving it
  (:func:`authors_bilateral`).
* ``align``: ``"affine"`` (the ground truth warped onto the estimate by an affine transform,
  :func:`fit_affine`; found on one scene per method when a transform is passed in, else on the
  image itself), ``"shift"`` (the integer translation within ``max_shift`` px that minimises the
  squared error, found per image) or ``"none"``.
* ``border``: pixels cropped on each side (8, supplement D), ``max_shift``: shift search radius
  (for the affine fit: the radius of its starting translation; 0 turns the alignment off).

Both images go through the same scale and are clipped to [0, 1] (with ``"obs_max"`` the
ground truth of a synthetic scene can exceed the blurred views' maximum), then aligned; PSNR
(``data_range`` 1), SSIM (scikit-image's defaults) and MAE are computed on the cropped window
(:func:`score_all_in_focus`). Sizes in pixels are for the full-resolution 1008x1344 field;
:func:`score_all_in_focus` divides them by ``downscale`` (rounding up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_image, require_positive, require_tensor
from dplab.metrics.image import mae, psnr, ssim

__all__ = ["Protocol", "CANDIDATES", "TABLE1", "SCALES", "ALIGNMENTS", "authors_bilateral",
           "quantize", "fit_affine", "warp_affine", "prepare", "score_all_in_focus"]

#: Intensity scales of :class:`Protocol` (see the module docstring).
SCALES = ("raw", "own_max", "gt_max", "obs_max", "obs_mean")
#: Alignments of :class:`Protocol`.
ALIGNMENTS = ("affine", "shift", "none")


@dataclass(frozen=True)
class Protocol:
    """One way of scoring an all-in-focus estimate (see the module docstring).

    Attributes:
        scale: one of :data:`SCALES`.
        quantize: 16, 8 or None (no saving step).
        bilateral: apply :func:`authors_bilateral` to the estimate first.
        align: one of :data:`ALIGNMENTS`.
        border: cropped border at full resolution (supplement D: 8 px).
        max_shift: translation search radius at full resolution (also the affine fit's start).

    The defaults are :data:`TABLE1`.

    Example:
        >>> Protocol(scale="raw", align="affine").describe()
        'scale raw, affine alignment, 8-px border'
        >>> TABLE1.describe()
        'scale obs_max, shift alignment, 8-px border'
    """

    scale: str = "obs_max"
    quantize: int | None = None
    bilateral: bool = False
    align: str = "shift"
    border: int = 8
    max_shift: int = 6

    def __post_init__(self):
        require_choice("scale", self.scale, SCALES)
        require_choice("align", self.align, ALIGNMENTS)
        if self.quantize not in (None, 8, 16):
            raise ValueError(f"quantize must be None, 8 or 16, got {self.quantize!r}")
        require_positive("border", self.border, allow_zero=True, integer=True)
        require_positive("max_shift", self.max_shift, allow_zero=True, integer=True)
        if self.border < self.max_shift:
            raise ValueError(f"border ({self.border}) must be at least max_shift ({self.max_shift})")

    def describe(self) -> str:
        """One line: the choices that differ from none."""
        parts = [f"scale {self.scale}"]
        if self.quantize:
            parts.append(f"{self.quantize}-bit")
        if self.bilateral:
            parts.append("run.py bilateral")
        parts += [f"{self.align} alignment" if self.align != "none" else "no alignment",
                  f"{self.border}-px border"]
        return ", ".join(parts)


#: The protocol of every Table 1 comparison in :mod:`dplab.xin`: both images divided by the
#: views' maximum, the integer translation (within 6 px) that best aligns the estimate, an
#: 8-px border. Chosen in ``benchmarks/results/xin_table1/protocol.json``: with it dplab's
#: full-resolution Wiener over the ten released scenes lands closest to the paper's Wiener
#: row (26.87 dB / 0.786 / 0.029 against 25.81 / 0.704 / 0.032 over 17 scenes); the
#: supplement's affine alignment found on one scene (``align="affine"``) gives 27.16 / 0.797 /
#: 0.028, and on a small crop a six-parameter fit per image over-fits.
TABLE1 = Protocol(scale="obs_max", align="shift")

#: The candidates compared side by side (``benchmarks/xin_table1.py --protocols``).
CANDIDATES = {
    "raw, shift (dplab before issue 18)": Protocol(scale="raw"),
    "raw, affine": Protocol(scale="raw", align="affine"),
    "own max, shift": Protocol(scale="own_max"),
    "own max, affine": Protocol(scale="own_max", align="affine"),
    "GT max, affine": Protocol(scale="gt_max", align="affine"),
    "obs max, shift (TABLE1)": Protocol(),
    "obs max, affine": Protocol(align="affine"),
    "0.5/mean, affine": Protocol(scale="obs_mean", align="affine"),
    "obs max, affine, 16-bit": Protocol(align="affine", quantize=16),
    "obs max, affine, 8-bit": Protocol(align="affine", quantize=8),
    "obs max, affine, bilateral + 16-bit": Protocol(align="affine", quantize=16, bilateral=True),
    "own max, affine, bilateral + 16-bit": Protocol(scale="own_max", align="affine", quantize=16, bilateral=True),
    "raw, affine, bilateral + 16-bit": Protocol(scale="raw", align="affine", quantize=16, bilateral=True),
}


def _spatial_weight(r2: float, sigma: float) -> float:
    w = torch.exp(torch.tensor(-0.5 * r2 / sigma ** 2, dtype=torch.float32))
    return float(torch.floor(w * 3) / 3)


def authors_bilateral(image: torch.Tensor, obs_mean: float, *, sigma_s: float = 3.0,
                      sigma_v: float = 0.05, reg: float = 1e-8) -> torch.Tensor:
    """The bilateral filter the authors' ``run.py`` applies to the all-in-focus image before saving.

    What the code does (``util.filter_bilateral``, after J. Gregson's example): the image is
    first multiplied by ``s = 0.5 / mean(views)`` (supplement D), filtered, and divided by
    ``s`` again. Both Gaussian weights are *quantised* to ``{0, 1/3, 2/3, 1}``
    (``floor(3 exp(-r^2 / 2 sigma^2)) / 3``): the spatial one with ``sigma_s = 3`` over a
    ``(2 int(3 sigma_s + 1) + 1)^2`` window (non-zero only for ``r^2 <= 19``), the range one
    with ``sigma_v = 0.05`` on ``s``-scaled values (non-zero for differences up to about
    0.074); the image is shifted circularly (``np.roll``: the borders wrap around), and both
    sums start at ``reg = 1e-8``. Computed in float32 in the code's order.

    Args:
        image: ``(..., H, W)`` all-in-focus image in the release's units.
        obs_mean: mean of both views in the same units.
        sigma_s, sigma_v, reg: the code's constants.

    Returns:
        The filtered image, same shape and units (float32).

    Example:
        >>> x = torch.full((8, 8), 0.3)
        >>> bool(torch.allclose(authors_bilateral(x, 0.3), x))
        True
    """
    x = require_tensor("image", image).detach().float()
    s = 0.5 / float(require_positive("obs_mean", obs_mean))
    x = x * s
    win = int(3 * sigma_s + 1)
    wsum = torch.full_like(x, reg)
    acc = x * reg
    for dx in range(-win, win + 1):
        for dy in range(-win, win + 1):
            w = _spatial_weight(dx * dx + dy * dy, sigma_s)
            if w == 0.0:                                       # adds exactly zero in the code
                continue
            off = torch.roll(x, (dy, dx), (-2, -1))
            tw = torch.floor(torch.exp(-0.5 * (off - x).square() / sigma_v ** 2) * 3) / 3 * w
            acc += off * tw
            wsum += tw
    return acc / wsum / s


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``floor(clip(x, 0, 1) (2^bits - 1)) / (2^bits - 1)``: an image saved as ``bits``-bit PNG
    the way the authors' ``save_16_bit_figure`` does (truncation; clipped first, since the
    code's cast of values outside [0, 1] is platform-dependent)."""
    q = float(2 ** int(bits) - 1)
    return torch.floor(x.clamp(0, 1) * q) / q


def warp_affine(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at ``matrix @ (x, y, 1)`` for every output pixel ``(x, y)`` (bilinear,
    zero outside; OpenCV's ``warpAffine(image, M, flags=INTER_LINEAR | WARP_INVERSE_MAP)``).

    Args:
        image: ``(B, C, H, W)``.
        matrix: ``(2, 3)`` affine map from output to input pixel coordinates (x right, y down).

    Returns:
        ``(B, C, H, W)``, float64.
    """
    B, C, H, W = image.shape
    m = matrix.to(torch.float64)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([2 * sx / (W - 1) - 1, 2 * sy / (H - 1) - 1], -1).expand(B, H, W, 2)
    return F.grid_sample(image.to(torch.float64), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def _best_shift(pred: torch.Tensor, gt: torch.Tensor, m: int, b: int) -> tuple[int, int]:
    H, W = gt.shape[-2:]
    g = gt[..., b:H - b, b:W - b]
    best = None
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            err = float((pred[..., b + dy:H - b + dy, b + dx:W - b + dx] - g).square().mean())
            if best is None or err < best[0]:
                best = (err, dy, dx)
    return best[1], best[2]


def fit_affine(pred: torch.Tensor, gt: torch.Tensor, *, max_shift: int = 6, border: int = 8,
               iterations: int = 30) -> torch.Tensor:
    """Affine map that aligns ``gt`` to ``pred`` (supplement D), by least squares.

    Starts from the best integer translation within ``max_shift`` px and refines the six
    parameters by Gauss-Newton on ``sum (warp_affine(gt, M) - pred)^2`` over the window inside
    ``border`` px (OpenCV's ``findTransformECC``, which the paper's "OpenCV ... affine
    transform" most likely means, maximises a normalised correlation instead; once both images
    are on one intensity scale the two agree up to that scale).

    Args:
        pred: ``(1, 1, H, W)`` estimate.
        gt: ``(1, 1, H, W)`` ground truth on the same intensity scale.
        max_shift, border: pixels.
        iterations: Gauss-Newton steps (stops early when the update is below 1e-4 px).

    Returns:
        ``(2, 3)`` float64 matrix for :func:`warp_affine` (``gt`` sampled at ``M (x, y, 1)``).

    Example:
        >>> g = torch.rand(1, 1, 40, 48, generator=torch.Generator().manual_seed(0))
        >>> g = F.avg_pool2d(F.interpolate(g, scale_factor=4, mode="bilinear"), 2)
        >>> m = torch.tensor([[1.0, 0.0, 1.3], [0.0, 1.0, -0.6]], dtype=torch.float64)
        >>> p = warp_affine(g, m)
        >>> bool((fit_affine(p, g) - m).abs().max() < 1e-3)
        True
    """
    p64, g64 = pred.detach().cpu().double(), gt.detach().cpu().double()
    H, W = g64.shape[-2:]
    dy, dx = _best_shift(g64, p64, max_shift, border)   # gt[y + dy] ~ pred[y]
    m = torch.tensor([[1.0, 0.0, float(dx)], [0.0, 1.0, float(dy)]], dtype=torch.float64)
    gx = torch.zeros_like(g64)
    gy = torch.zeros_like(g64)
    gx[..., :, 1:-1] = (g64[..., :, 2:] - g64[..., :, :-2]) / 2
    gy[..., 1:-1, :] = (g64[..., 2:, :] - g64[..., :-2, :]) / 2
    win = (..., slice(border, H - border), slice(border, W - border))
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    xs, ys = xs[border:H - border, border:W - border].reshape(-1), ys[border:H - border, border:W - border].reshape(-1)
    target = p64[win].reshape(-1)
    for _ in range(int(iterations)):
        stack = warp_affine(torch.cat([g64, gx, gy], 1), m)[win]
        r = stack[0, 0].reshape(-1) - target
        wx, wy = stack[0, 1].reshape(-1), stack[0, 2].reshape(-1)
        J = torch.stack([wx * xs, wx * ys, wx, wy * xs, wy * ys, wy], 1)
        step = torch.linalg.lstsq(J, -r.unsqueeze(1)).solution.reshape(2, 3)
        m = m + step
        reach = step[:, :2].abs().sum(1) * max(H, W) + step[:, 2].abs()
        if float(reach.max()) < 1e-4:
            break
    return m


def _scale(x, gt, protocol: Protocol, obs_max: float, obs_mean: float):
    if protocol.scale == "raw":
        return x, gt
    if protocol.scale == "own_max":
        return x / x.max(), gt / gt.max()
    if protocol.scale == "gt_max":
        return x / gt.max(), gt / gt.max()
    if protocol.scale == "obs_max":
        return x / obs_max, gt / obs_max
    f = 0.5 / obs_mean                                                 # "obs_mean"
    return x * f, gt * f


def prepare(pred, gt, *, obs_max: float, obs_mean: float, protocol: Protocol = TABLE1,
            affine: torch.Tensor | None = None, downscale: int = 1, max_shift: int | None = None,
            border: int | None = None):
    """The two images as the protocol compares them: ``(pred, gt, info)``, both cropped.

    Steps: bilateral filter and quantisation of the estimate (if the protocol says so), the
    intensity scale of both and clipping to [0, 1], then the alignment (the ground truth warped by ``affine``, or by
    the affine fitted on this image, or the estimate shifted by the best integer translation)
    and the border crop. ``info`` holds ``shift`` (``(dy, dx)``; for an affine, its
    translation rounded) and ``affine`` (the ``(2, 3)`` matrix or None).

    Args:
        pred: ``(1, 1, H, W)`` estimate in the release's units (one view's brightness).
        gt: ``(1, 1, H, W)`` ground truth, same units.
        obs_max: maximum of both views (release units).
        obs_mean: mean of both views.
        protocol: the :class:`Protocol`.
        affine: a ``(2, 3)`` matrix found on another scene for the same method (full-resolution
            pixels; its translation is divided by ``downscale``), or None.
        downscale: box-downsampling factor of the images (sizes in pixels are divided by it).
        max_shift, border: override the protocol's sizes, in the images' own pixels.

    Returns:
        ``(pred, gt, info)``: float64 ``(1, 1, h, w)`` each, in [0, 1].
    """
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a dplab.xin.protocol.Protocol, got {type(protocol).__name__}")
    pred = require_image("pred", pred).detach().cpu()
    gt = require_image("gt", gt).detach().cpu()
    if pred.shape != gt.shape:
        raise ValueError(f"pred must have the ground truth's shape {tuple(gt.shape)}, got {tuple(pred.shape)}")
    f = require_positive("downscale", downscale, integer=True)
    m = math.ceil(protocol.max_shift / f) if max_shift is None else int(max_shift)
    b = math.ceil(protocol.border / f) if border is None else int(border)
    H, W = gt.shape[-2:]
    if H - 2 * b < 8 or W - 2 * b < 8:
        raise ValueError(f"image {H}x{W} is too small for a {b}-px border")
    x = pred.float()
    if protocol.bilateral:
        x = authors_bilateral(x, obs_mean)
    if protocol.quantize:
        x = quantize(x, protocol.quantize)
    x, g = _scale(x.double(), gt.double(), protocol, float(obs_max), float(obs_mean))
    x, g = x.clamp(0, 1), g.clamp(0, 1)                   # an image file's range
    info = {"shift": (0, 0), "affine": None}
    crop = (..., slice(b, H - b), slice(b, W - b))
    if protocol.align == "shift":
        dy, dx = _best_shift(x, g, m, b)
        info["shift"] = (dy, dx)
        return x[..., b + dy:H - b + dy, b + dx:W - b + dx], g[crop], info
    if protocol.align == "affine" and (m > 0 or affine is not None):
        if affine is None:
            mat = fit_affine(x, g, max_shift=m, border=b)
        else:
            mat = torch.as_tensor(affine, dtype=torch.float64).clone()
            mat[:, 2] /= f
        info["affine"] = mat
        info["shift"] = (-round(float(mat[1, 2])), -round(float(mat[0, 2])))
        g = warp_affine(g, mat)
    return x[crop], g[crop], info


def score_all_in_focus(pred, gt, *, obs_max: float, obs_mean: float, protocol: Protocol = TABLE1,
                       affine: torch.Tensor | None = None, downscale: int = 1) -> dict:
    """PSNR / SSIM / MAE of an all-in-focus estimate under a :class:`Protocol` (Table 1).

    Arguments as :func:`prepare`; the metrics use ``data_range = 1`` (:mod:`dplab.metrics.image`).

    Returns:
        ``{"psnr", "ssim", "mae"}`` floats.

    Example:
        >>> g = torch.rand(1, 1, 48, 64, generator=torch.Generator().manual_seed(1)) * 0.5
        >>> out = score_all_in_focus(g, g, obs_max=0.5, obs_mean=0.25)
        >>> out["mae"], out["ssim"]
        (0.0, 1.0)
    """
    p, g, _ = prepare(pred, gt, obs_max=obs_max, obs_mean=obs_mean, protocol=protocol, affine=affine,
                      downscale=downscale)
    return {"psnr": float(psnr(p, g)), "ssim": float(ssim(p, g)), "mae": float(mae(p, g))}

