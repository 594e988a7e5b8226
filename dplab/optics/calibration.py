"""Calibration: targets, non-blind PSF estimation and model fitting (RDPD supplement S1-S3).

RDPD (Abuolaim et al., ICCV 2021) calibrates its dual-pixel PSF model and its radial
distortion from photographs of computer-generated targets:

* **S1** -- a grid of equal disks (Fig. S1-A, :func:`disk_grid_target`) is photographed out of
  focus; with the sharp disk ``S`` known, each view's PSF ``E`` is estimated non-blindly by
  Eq. S1 (:func:`estimate_psf`)::

      argmin_E  sum_i || D_i (S * E - B) ||_2^2 + || E ||_1   s.t.  E >= 0,
      D_i in {Dx, Dy, Dxx, Dyy, Dxy}.

* **S2** -- the Butterworth DP model (main paper Eqs. 2-4, :func:`dplab.optics.psf.butterworth_dp`)
  is fitted to an estimated PSF by brute force over the grid of Eq. S2
  (``n in 1..15``, ``alpha, beta in 0.1..1.0``, ``kappa in {0.14, 0.21, ..., 0.42}``)
  minimising Eq. S3, ``sum_i || D_i (E - H(n, alpha, beta, kappa)) ||^2``
  (:func:`fit_butterworth`; :func:`fit_punnappurath` does the same for the model of
  Punnappurath et al., ICCP 2020).

* **S3** -- a grid of squares (Fig. S3-A, :func:`square_grid_target`) photographed in focus
  gives the distortion coefficients of the division model (Eq. S5) by a brute-force search
  maximising the cross-correlation with the distorted synthetic pattern, Eq. S6
  (:func:`fit_distortion`; the supplement writes ``argmin X``, a typo for ``argmax``).

All kernels follow :func:`dplab.ops.fftconv.fft_conv2d`: true convolution, centre at index
``k // 2``. Derivative filters are the 3x3 forward differences ``Dx = [-1, 1]``,
``Dxx = [1, -2, 1]``, ``Dxy = [[1, -1], [-1, 1]]`` and their transposes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from dplab.optics import distortion as _distortion
from dplab._validate import (
    require_finite,
    require_image,
    require_kernel,
    require_number,
    require_positive,
    require_tensor,
)
from dplab.ops.fftconv import fast_len
from dplab.optics.psf import butterworth_dp, psf_bank, punnappurath_dp, xcorr

__all__ = [
    "S2_ORDERS",
    "S2_ALPHAS",
    "S2_BETAS",
    "S2_KAPPAS",
    "disk_grid_target",
    "square_grid_target",
    "derivative_filters",
    "estimate_psf",
    "PSFFit",
    "fit_butterworth",
    "fit_punnappurath",
    "DistortionFit",
    "fit_distortion",
]

#: The parameter grid of RDPD supplement Eq. S2.
S2_ORDERS: tuple[int, ...] = tuple(range(1, 16))
S2_ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
S2_BETAS: tuple[float, ...] = S2_ALPHAS
S2_KAPPAS: tuple[float, ...] = (0.14, 0.21, 0.28, 0.35, 0.42)


# ----------------------------------------------------------------------------- targets
def _grid_axis(n_px: int, spacing: float) -> torch.Tensor:
    count = int(n_px // spacing)
    return (n_px - 1) / 2.0 + (torch.arange(count, dtype=torch.float64) - (count - 1) / 2.0) * spacing


def _grid_setup(height, width, spacing_px, fraction, fraction_name):
    h = require_positive("height", height, integer=True)
    w = require_positive("width", width, integer=True)
    spacing = float(require_positive("spacing_px", spacing_px))
    frac = float(require_positive(fraction_name, fraction))
    limit, what = (0.5, "disks") if fraction_name == "radius_fraction" else (1.0, "squares")
    if frac >= limit:
        raise ValueError(f"{fraction_name} must be below {limit} ({what} would touch), got {fraction!r}")
    xs, ys = _grid_axis(w, spacing), _grid_axis(h, spacing)
    if xs.numel() == 0 or ys.numel() == 0:
        raise ValueError(
            f"spacing_px={spacing_px!r} leaves no cell in a {h}x{w} image; use spacing_px <= {min(h, w)}"
        )
    return h, w, spacing, frac, xs, ys


def _nearest(coord: torch.Tensor, centres: torch.Tensor, spacing: float) -> torch.Tensor:
    idx = torch.round((coord - centres[0]) / spacing).clamp(0, centres.numel() - 1).long()
    return coord - centres[idx]


def _finish_target(coverage, xs, ys, foreground, background, device, dtype):
    fg = float(require_number("foreground", foreground))
    bg = float(require_number("background", background))
    img = (bg + (fg - bg) * coverage).to(device=device, dtype=dtype)[None, None]
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=-1).to(device=device, dtype=dtype)
    return img, centres


def disk_grid_target(
    height: int,
    width: int,
    spacing_px: float,
    radius_fraction: float = 0.25,
    *,
    foreground: float = 1.0,
    background: float = 0.0,
    supersample: int = 4,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid of equal anti-aliased disks, the PSF calibration target of RDPD Fig. S1-A.

    Disk centres lie on a square grid of pitch ``spacing_px`` centred in the image, one disk
    per whole cell (``floor(width / spacing_px)`` columns); the radius is
    ``radius_fraction * spacing_px`` ("a known fraction of the distance between disk
    centers", supplement S1). Anti-aliasing: each pixel averages ``supersample^2``
    sub-pixel samples of a one-sub-pixel-wide linear edge ``clip((r - d) s + 1/2, 0, 1)``
    (``d`` the distance to the disk centre), so the sum over a disk is ``pi r^2`` to within
    0.25 % for ``r >= 1.5`` px at the default ``supersample=4``.

    Args:
        height: image height in pixels (> 0).
        width: image width in pixels (> 0).
        spacing_px: distance between neighbouring disk centres in pixels (> 0).
        radius_fraction: disk radius over spacing, in (0, 0.5).
        foreground: intensity inside the disks (the paper shows white disks on black).
        background: intensity between the disks.
        supersample: sub-samples per pixel and axis for the anti-aliasing (> 0).
        device: torch device of the outputs.
        dtype: floating dtype of the outputs.

    Returns:
        ``(target, centres)``: the image and the disk centres ``(x, y)`` in pixels, row-major.

    Shape:
        target: ``(1, 1, height, width)``; centres: ``(N, 2)``, ``N = rows * columns``.

    Raises:
        TypeError: non-numeric arguments.
        ValueError: non-positive sizes, ``radius_fraction`` outside (0, 0.5), or a spacing
            larger than the image.

    Example:
        >>> target, centres = disk_grid_target(64, 96, 32, 0.25)
        >>> target.shape, centres.shape
        (torch.Size([1, 1, 64, 96]), torch.Size([6, 2]))
        >>> round(target.sum().item() / 6 / (math.pi * 8 ** 2), 3)   # area per disk / (pi r^2)
        1.0
    """
    h, w, spacing, frac, xs, ys = _grid_setup(height, width, spacing_px, radius_fraction, "radius_fraction")
    r = frac * spacing
    ss = require_positive("supersample", supersample, integer=True)
    coverage = torch.zeros(h, w, dtype=torch.float64)
    offsets = (torch.arange(ss, dtype=torch.float64) + 0.5) / ss - 0.5
    for oy in offsets:
        dy = _nearest(torch.arange(h, dtype=torch.float64) + oy, ys, spacing)
        for ox in offsets:
            dx = _nearest(torch.arange(w, dtype=torch.float64) + ox, xs, spacing)
            dist = torch.hypot(dx[None, :], dy[:, None])
            coverage += ((r - dist) * ss + 0.5).clamp(0.0, 1.0)
    coverage /= ss * ss
    return _finish_target(coverage, xs, ys, foreground, background, device, dtype)


def square_grid_target(
    height: int,
    width: int,
    spacing_px: float,
    side_fraction: float = 0.5,
    *,
    foreground: float = 1.0,
    background: float = 0.0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid of equal axis-aligned squares, the distortion target of RDPD Fig. S3-A.

    Same layout as :func:`disk_grid_target`; each square has side
    ``side_fraction * spacing_px`` and is anti-aliased exactly (a pixel's value is the area
    of its unit square covered by the target square).

    Args:
        height: image height in pixels (> 0).
        width: image width in pixels (> 0).
        spacing_px: distance between neighbouring square centres in pixels (> 0).
        side_fraction: square side over spacing, in (0, 1).
        foreground: intensity inside the squares.
        background: intensity between them.
        device: torch device of the outputs.
        dtype: floating dtype of the outputs.

    Returns:
        ``(target, centres)``: the image and the square centres ``(x, y)`` in pixels.

    Shape:
        target: ``(1, 1, height, width)``; centres: ``(N, 2)``.

    Raises:
        TypeError: non-numeric arguments.
        ValueError: non-positive sizes, ``side_fraction`` outside (0, 1), or a spacing larger
            than the image.

    Example:
        >>> target, centres = square_grid_target(48, 64, 16, 0.5)
        >>> centres.shape[0], target.sum().item() / centres.shape[0]   # 12 squares of 8 x 8 px
        (12, 64.0)
    """
    h, w, spacing, frac, xs, ys = _grid_setup(height, width, spacing_px, side_fraction, "side_fraction")
    half = 0.5 * frac * spacing

    def cover(n, centres):
        d = _nearest(torch.arange(n, dtype=torch.float64), centres, spacing).abs()
        return (torch.minimum(d + 0.5, torch.full_like(d, half)) - torch.maximum(d - 0.5, -torch.full_like(d, half))).clamp(0, 1)

    coverage = cover(h, ys)[:, None] * cover(w, xs)[None, :]
    return _finish_target(coverage, xs, ys, foreground, background, device, dtype)


# ----------------------------------------------------------------------------- derivatives
def derivative_filters(device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The five derivative filters ``Dx, Dy, Dxx, Dyy, Dxy`` of RDPD supplement Eqs. S1 and S3.

    Args:
        device: torch device.
        dtype: floating dtype.

    Returns:
        The filters as 3x3 stencils (forward differences for the first derivatives).

    Shape:
        ``(5, 3, 3)``.

    Example:
        >>> derivative_filters()[2]          # Dxx
        tensor([[ 0.,  0.,  0.],
                [ 1., -2.,  1.],
                [ 0.,  0.,  0.]])
    """
    d = torch.zeros(5, 3, 3, dtype=dtype, device=device)
    d[0, 1, 1], d[0, 1, 2] = -1.0, 1.0  # Dx
    d[1, 1, 1], d[1, 2, 1] = -1.0, 1.0  # Dy
    d[2, 1] = torch.tensor([1.0, -2.0, 1.0], dtype=dtype)  # Dxx
    d[3, :, 1] = torch.tensor([1.0, -2.0, 1.0], dtype=dtype)  # Dyy
    d[4, 1, 1], d[4, 1, 2], d[4, 2, 1], d[4, 2, 2] = 1.0, -1.0, -1.0, 1.0  # Dxy
    return d


def _derivatives(x: torch.Tensor, full: bool) -> torch.Tensor:
    """Apply the five filters to ``(N, h, w)`` -> ``(N, 5, h', w')``.

    ``full``: zero-pad by 2 so every derivative touching the support is kept (h' = h + 2);
    otherwise 'same' size with zero padding.
    """
    filt = derivative_filters(x.device, x.dtype)[:, None]
    x = x[:, None]
    if full:
        return F.conv2d(F.pad(x, (2, 2, 2, 2)), filt)
    return F.conv2d(x, filt, padding=1)


# ----------------------------------------------------------------------------- S1: PSF estimation
def _leading(name: str, x: torch.Tensor) -> torch.Tensor:
    x = require_tensor(name, x)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (..., H, W), got {tuple(x.shape)}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    return require_finite(name, x)


def estimate_psf(
    sharp: torch.Tensor,
    blurred: torch.Tensor,
    size: int,
    l1_weight: float = 1e-4,
    iterations: int = 300,
    *,
    tol: float = 1e-7,
) -> torch.Tensor:
    """Non-blind PSF estimation in the derivative domain, RDPD supplement Eq. S1.

    Solves, for a ``size x size`` kernel ``E`` (centre at ``size // 2``)::

        min_{E >= 0}  sum_i || D_i (S * E - B) ||_V^2 / sum_i || D_i S ||_V^2  +  l1_weight ||E||_1

    with ``*`` true convolution, ``D_i`` the five filters of :func:`derivative_filters` and
    ``V`` the *valid* pixels, at least ``size // 2 + 1`` pixels from the border, whose
    residual depends only on pixels inside ``sharp`` and ``blurred`` (no boundary assumption).
    Eq. S1 has no normaliser; dividing by the target's derivative energy makes
    ``l1_weight`` independent of contrast and patch size. Because ``E >= 0``,
    ``||E||_1 = sum E``: the prior pulls the kernel sum down a little (noise-free, the
    default ``1e-4`` lowers it by about 0.6 % at a 6 px radius and 3 % at 10 px) and
    suppresses the positive bias that the non-negativity puts on noisy tails.

    Algorithm: FISTA (accelerated proximal gradient) with adaptive restart
    (O'Donoghue and Candes 2015). ``E -> D_i S * E`` and its adjoint are products in the
    Fourier domain (real FFTs padded to 2-3-5-smooth sizes, each view of a batch on its own);
    the step is ``1 / L`` with ``L = 2 max_w sum_i |F(D_i S)(w)|^2 / sum_i ||D_i S||_V^2``,
    a bound on the gradient's Lipschitz constant; the proximal step of
    ``l1 + (E >= 0)`` is ``max(E - step * l1_weight, 0)``. It stops after ``iterations`` or
    when the relative change of ``E`` falls below ``tol``. Noise-free data are recovered to
    float precision in about 300 iterations; two 192x192 views with a 17x17 kernel take
    about 0.5 s on a 2-core CPU.

    Args:
        sharp: the latent sharp target ``S`` (e.g. from :func:`disk_grid_target`), aligned
            with ``blurred``.
        blurred: the observed blurred patch(es) ``B``; leading dims broadcast against
            ``sharp``'s, so a left and a right view (``(2, H, W)``) are estimated together.
        size: kernel side in pixels, odd, with ``size // 2 + 1 < min(H, W) / 2``.
        l1_weight: weight of ``||E||_1`` (>= 0) against the normalised data term.
        iterations: maximum number of FISTA iterations (> 0).
        tol: relative-change stopping tolerance (>= 0).

    Returns:
        The estimated kernels (non-negative), dtype of ``blurred``.

    Shape:
        sharp: ``(..., H, W)``; blurred: ``(..., H, W)``; output ``(..., size, size)`` with
        ``...`` the broadcast leading dims.

    Raises:
        TypeError: non-tensor or non-float inputs, non-integer ``size``/``iterations``.
        ValueError: mismatched or too small spatial sizes, NaN, even or non-positive
            ``size``, negative ``l1_weight``, a ``sharp`` without edges in the valid region.

    Example:
        >>> target, _ = disk_grid_target(64, 64, 32)
        >>> k = torch.zeros(5, 5); k[2, 1:4] = 1 / 6; k[1, 2] = k[3, 2] = 1 / 4
        >>> from dplab.ops.fftconv import fft_conv2d
        >>> est = estimate_psf(target, fft_conv2d(target, k), size=5, l1_weight=0.0)
        >>> bool((est - k).abs().max() < 1e-3)
        True
    """
    sharp = _leading("sharp", sharp)
    blurred = _leading("blurred", blurred)
    size = require_positive("size", size, integer=True)
    if size % 2 == 0:
        raise ValueError(f"size must be odd (the kernel centre is the middle pixel), got {size}")
    lam = float(require_positive("l1_weight", l1_weight, allow_zero=True))
    iterations = require_positive("iterations", iterations, integer=True)
    tol = float(require_positive("tol", tol, allow_zero=True))
    if sharp.shape[-2:] != blurred.shape[-2:]:
        raise ValueError(
            f"sharp and blurred must have the same (H, W), got {tuple(sharp.shape[-2:])} and "
            f"{tuple(blurred.shape[-2:])}"
        )
    if sharp.device != blurred.device:
        raise ValueError(f"sharp is on {sharp.device} but blurred is on {blurred.device}")
    h, w = sharp.shape[-2:]
    c = size // 2
    margin = c + 1
    if h <= 2 * margin or w <= 2 * margin:
        raise ValueError(
            f"a {size}x{size} kernel leaves no valid pixels in a {h}x{w} patch; the patch needs "
            f"more than {2 * margin} pixels per side"
        )
    try:
        lead = torch.broadcast_shapes(sharp.shape[:-2], blurred.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"leading dims of sharp {tuple(sharp.shape[:-2])} and blurred "
            f"{tuple(blurred.shape[:-2])} do not broadcast"
        ) from None
    out_dtype = blurred.dtype
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    s = sharp.to(work).expand(lead + (h, w)).reshape(-1, h, w)
    b = blurred.to(work).expand(lead + (h, w)).reshape(-1, h, w)
    n = s.shape[0]

    ph, pw = fast_len(h), fast_len(w)
    s_d = _derivatives(s, full=False)  # (N, 5, H, W): D_i S
    b_d = _derivatives(b, full=False)
    mask = torch.zeros(h, w, dtype=work, device=s.device)
    mask[margin:h - margin, margin:w - margin] = 1.0
    # data-term normalisation: the derivative energy of the sharp target over V
    energy = (s_d * mask).square().sum(dim=(1, 2, 3))  # (N,)
    if bool((energy <= 0).any()):
        raise ValueError("sharp has no edges inside the valid region; the PSF is not identifiable")
    norm = energy[:, None, None]
    fs = torch.fft.rfft2(s_d, s=(ph, pw))  # (N, 5, ph, pw//2+1)
    fs_conj = fs.conj()
    # Lipschitz bound of the data-term gradient
    lip = 2.0 * fs.abs().pow(2).sum(1).amax(dim=(-2, -1)) / energy  # (N,)
    step = (1.0 / lip.clamp_min(torch.finfo(work).tiny))[:, None, None]
    b_d = b_d * mask

    def grad(e: torch.Tensor) -> torch.Tensor:
        e_pad = torch.roll(F.pad(e, (0, pw - size, 0, ph - size)), shifts=(-c, -c), dims=(-2, -1))
        fe = torch.fft.rfft2(e_pad)[:, None]  # (N, 1, ., .)
        model = torch.fft.irfft2(fs * fe, s=(ph, pw))[..., :h, :w]
        resid = (model * mask - b_d)  # masked residual, (N, 5, H, W)
        fr = torch.fft.rfft2(resid, s=(ph, pw))
        corr = torch.fft.irfft2((fs_conj * fr).sum(1), s=(ph, pw))
        corr = torch.roll(corr, shifts=(c, c), dims=(-2, -1))[..., :size, :size]
        return 2.0 * corr / norm

    x = torch.zeros(n, size, size, dtype=work, device=s.device)
    y = x.clone()
    t = torch.ones(n, 1, 1, dtype=work, device=s.device)
    thresh = step * lam
    for it in range(iterations):
        x_new = (y - step * grad(y) - thresh).clamp_min(0.0)
        # adaptive restart (O'Donoghue & Candes 2015): drop momentum where it points uphill
        uphill = ((y - x_new) * (x_new - x)).sum(dim=(-2, -1), keepdim=True) > 0
        t = torch.where(uphill, torch.ones_like(t), t)
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        check = tol > 0 and it % 10 == 9  # host sync only every 10 iterations
        change = (x_new - x).norm() / x_new.norm().clamp_min(1e-30) if check else None
        x, t = x_new, t_new
        if check and float(change) < tol:
            break
    return x.reshape(lead + (size, size)).to(out_dtype)


# ----------------------------------------------------------------------------- S2: model fitting
@dataclass(frozen=True)
class PSFFit:
    """Result of :func:`fit_butterworth` / :func:`fit_punnappurath`.

    Attributes:
        model: ``"butterworth"`` or ``"punnappurath"``.
        params: best parameters: ``radius_px`` (signed; negative swaps the views, as in
            :mod:`dplab.optics.psf`) and, for the Butterworth model, ``order``, ``alpha``, ``beta``,
            ``kappa``.
        objective: Eq. S3 at the optimum, summed over the fitted views (kernels normalised
            as described in the fitting function).
        xcorr: :func:`dplab.optics.psf.xcorr` between the (normalised) estimate and the best model,
            averaged over the fitted views (1 for a perfect fit).
        left: best model left kernel, ``(K, K)``.
        right: best model right kernel, ``(K, K)``.
        evaluated: number of (parameter, radius, sign) candidates scored.
    """

    model: str
    params: dict
    objective: float
    xcorr: float
    left: torch.Tensor = field(repr=False)
    right: torch.Tensor = field(repr=False)
    evaluated: int = 0


def _fit_kernels(kernel_left, kernel_right, normalize: bool) -> torch.Tensor:
    """Check the kernels; return a float64 stack (V, K, K), V = 1 or 2."""
    views = [("kernel_left", kernel_left)] + ([("kernel_right", kernel_right)] if kernel_right is not None else [])
    out = []
    for name, k in views:
        k = require_kernel(name, k)
        if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
            raise ValueError(f"{name} must be a square kernel of odd size (K, K), got {tuple(k.shape)}")
        out.append(k.detach().to(torch.float64))
    if len(out) == 2 and out[0].shape != out[1].shape:
        raise ValueError(f"kernel_left {tuple(out[0].shape)} and kernel_right {tuple(out[1].shape)} differ in shape")
    if len(out) == 2 and out[0].device != out[1].device:
        raise ValueError("kernel_left and kernel_right are on different devices")
    e = torch.stack(out)
    total = float(e.sum())
    if total <= 0:
        raise ValueError("kernel_left (and kernel_right) sum to 0; nothing to fit")
    if normalize:  # each view of the model sums to 1/2: scale the estimate alike, views together
        e = e * (0.5 * e.shape[0] / total)
    return e


def _candidate_radii(radius_px, radii, size: int, device) -> tuple[torch.Tensor, bool]:
    """Radii to search (magnitudes, float64) and whether the sign is searched too."""
    if radius_px is not None:
        r = float(require_number("radius_px", radius_px))
        if r == 0:
            raise ValueError("radius_px must be non-zero (its sign picks the orientation: r > 0, behind "
                             "the focal plane, puts the left view's mass on the -x side)")
        return torch.tensor([r], dtype=torch.float64, device=device), False
    if radii is None:
        radii = torch.arange(1.0, size // 2 + 1e-9, 0.5, dtype=torch.float64)
    r = torch.as_tensor(radii, dtype=torch.float64).reshape(-1).to(device)
    if r.numel() == 0 or not bool(torch.isfinite(r).all()) or bool((r <= 0).any()):
        raise ValueError(f"radii must be a non-empty sequence of positive finite radii, got {radii!r}")
    return r, True


def _score(e_d: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Eq. S3 for model left views ``h`` (P, N, K, K) -> (2, P, N): [as given, mirrored].

    ``e_d``: derivatives of the estimate, (V, 5, K+2, K+2). Mirrored = the views swapped
    (negative radius): left model ``h.flip(-1)``, right model ``h``.
    """
    p, n, k, _ = h.shape
    flat = h.reshape(p * n, k, k)
    d_h = _derivatives(flat, full=True).reshape(p, n, 5, k + 2, k + 2)
    d_f = _derivatives(flat.flip(-1), full=True).reshape(p, n, 5, k + 2, k + 2)

    def sq(a, b):
        return (a - b).square().sum(dim=(-3, -2, -1))

    pos = sq(d_h, e_d[0])
    neg = sq(d_f, e_d[0])
    if e_d.shape[0] == 2:
        pos = pos + sq(d_f, e_d[1])
        neg = neg + sq(d_h, e_d[1])
    return torch.stack((pos, neg))


def _grid_search(e, make, radii, params, signed, chunk_size, per_radius=False):
    """Best (objective, param index, radius index, mirrored) over params x radii x signs.

    ``per_radius``: make the candidates one radius at a time (the Butterworth generator sizes
    its working grid by the largest radius of a call).
    """
    e_d = _derivatives(e, full=True)
    best = (math.inf, 0, 0, False)
    n_eval = 0
    groups = [(j, radii[j:j + 1]) for j in range(radii.numel())] if per_radius else [(0, radii)]
    for r0, group in groups:
        for start in range(0, len(params), chunk_size):
            chunk = params[start:start + chunk_size]
            scores = _score(e_d, make(group, chunk))  # (2, P, N)
            if not signed:
                scores = scores[:1]
            n_eval += scores.numel()
            val, idx = scores.reshape(-1).min(0)
            if float(val) < best[0]:
                s, rest = divmod(int(idx), scores.shape[1] * scores.shape[2])
                p, r = divmod(rest, scores.shape[2])
                best = (float(val), start + p, r0 + r, bool(s))
    return best, n_eval


def _finish_fit(model, e, params_dict, objective, left, right, n_eval, dtype) -> PSFFit:
    scores = [float(xcorr(e[0], left))]
    if e.shape[0] == 2:
        scores.append(float(xcorr(e[1], right)))
    return PSFFit(model, params_dict, objective, sum(scores) / len(scores), left.to(dtype), right.to(dtype), n_eval)


def _param_list(name: str, values) -> list[float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    out = [float(require_number(name, v)) for v in values]
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def fit_butterworth(
    kernel_left: torch.Tensor,
    kernel_right: torch.Tensor | None = None,
    radius_px: float | None = None,
    orders: Sequence[float] = S2_ORDERS,
    alphas: Sequence[float] = S2_ALPHAS,
    betas: Sequence[float] = S2_BETAS,
    kappas: Sequence[float] = S2_KAPPAS,
    *,
    radii: Sequence[float] | None = None,
    normalize: bool = True,
    chunk_size: int = 1000,
) -> PSFFit:
    """Brute-force fit of the Butterworth DP PSF (RDPD supplement S2, Eqs. S2-S3).

    Minimises ``sum_i || D_i (E - H(n, alpha, beta, kappa)) ||^2`` (Eq. S3, the five
    derivative filters of :func:`derivative_filters`, full support) over every combination
    of ``orders x alphas x betas x kappas`` (default: the grid of Eq. S2, 7,500 candidates).
    ``H`` is :func:`dplab.optics.psf.butterworth_dp` at the estimate's size; with ``kernel_right``
    both views are fitted with one parameter set (right = mirrored left). Candidates are made
    in chunks of ``chunk_size`` parameter sets by :func:`dplab.optics.psf.psf_bank` (vectorised) and
    scored with one batched convolution; the mirrored pair (negative radius) is scored too
    when the radius is searched.

    Radius: with ``radius_px`` given it is used as is (its sign picks the orientation: for
    ``r > 0``, behind the focal plane, the left view's mass lies on the ``-x`` side, RDPD
    Sec. 2.2; the calibrated Pixel 4 kernels of Xin et al. fit with ``r > 0``).
    Otherwise the magnitudes ``radii`` (default ``1, 1.5, ..., size // 2``) and both signs are
    searched in two stages: all radii on a sub-grid (every 3rd order, alpha and beta, every
    2nd kappa: 240 sets for Eq. S2), then the full grid on the best radius and its two
    neighbours. Runtime on a 2-core CPU for a 17x17 pair: about 0.5 s for the full grid at a
    given radius, about 2.5 s with the radius searched (15 radii, 26,100 parameter sets).

    Args:
        kernel_left: estimated left PSF ``E`` (e.g. from :func:`estimate_psf`), odd square.
        kernel_right: estimated right PSF, same shape, or None to fit the left view alone.
        radius_px: signed CoC radius in pixels, or None to search ``radii``.
        orders: Butterworth orders ``n`` to try.
        alphas: cut-off factors to try.
        betas: lower bounds to try.
        kappas: smoothing factors to try.
        radii: radius magnitudes to search when ``radius_px`` is None.
        normalize: rescale the estimate so that each view sums to 1/2 on average (the model's
            normalisation; the views keep their relative brightness).
        chunk_size: parameter sets generated at once (memory vs. speed).

    Returns:
        A :class:`PSFFit` with ``params = {"radius_px", "order", "alpha", "beta", "kappa"}``.

    Shape:
        kernel_left, kernel_right: ``(K, K)``; fitted kernels ``(K, K)``.

    Raises:
        TypeError: non-tensor kernels, non-numeric parameters.
        ValueError: non-square, even-sized, negative or NaN kernels; mismatched shapes;
            ``radius_px == 0``; empty or out-of-range parameter lists.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> left, right = butterworth_dp(4.0, order=6, alpha=0.6, beta=0.3, kappa=0.14, size=13)
        >>> fit = fit_butterworth(left, right, radius_px=4.0, orders=(3, 6, 9), kappas=(0.14,))
        >>> [fit.params[k] for k in ("order", "alpha", "beta")], round(fit.xcorr, 4)
        ([6, 0.6, 0.3], 1.0)
    """
    out_dtype = kernel_left.dtype if isinstance(kernel_left, torch.Tensor) else torch.float32
    e = _fit_kernels(kernel_left, kernel_right, normalize)
    size = e.shape[-1]
    grid = [_param_list(n, v) for n, v in (("orders", orders), ("alphas", alphas), ("betas", betas), ("kappas", kappas))]
    params = list(itertools.product(*grid))
    chunk_size = require_positive("chunk_size", chunk_size, integer=True)
    r_all, signed = _candidate_radii(radius_px, radii, size, e.device)

    def make(r, chunk):
        return psf_bank(r, chunk, size=size, device=e.device, dtype=torch.float64)[0]

    n_eval = 0
    r_cand = r_all
    if r_all.numel() > 1:
        sub = list(itertools.product(grid[0][::3], grid[1][::3], grid[2][::3], grid[3][::2]))
        (_, _, ri, _), n_eval = _grid_search(e, make, r_all, sub, signed, chunk_size, True)
        r_cand = r_all[max(0, ri - 1):ri + 2]
    (obj, pi, ri, mirrored), n2 = _grid_search(e, make, r_cand, params, signed, chunk_size, True)
    n, a, b, k = params[pi]
    r = float(r_cand[ri]) * (-1.0 if mirrored else 1.0)
    left, right = butterworth_dp(r, n, a, b, k, size=size, device=e.device, dtype=torch.float64)
    order = int(n) if float(n).is_integer() else n
    params_dict = {"radius_px": r, "order": order, "alpha": a, "beta": b, "kappa": k}
    return _finish_fit("butterworth", e, params_dict, obj, left, right, n_eval + n2, out_dtype)


def fit_punnappurath(
    kernel_left: torch.Tensor,
    kernel_right: torch.Tensor | None = None,
    radius_px: float | None = None,
    *,
    radii: Sequence[float] | None = None,
    normalize: bool = True,
) -> PSFFit:
    """Fit the DP PSF of Punnappurath et al. (ICCP 2020) by the same Eq. S3 search.

    That model (:func:`dplab.optics.psf.punnappurath_dp`) has a single parameter, the signed
    radius (RDPD Sec. 2.2, Fig. 5 middle column), so the search runs over ``radii`` (default
    ``0.5, 0.55, ..., size // 2``) and both signs, all candidates in one batch. With
    ``radius_px`` given there is nothing to search and the result just scores that radius.
    Comparing ``fit_punnappurath(E).xcorr`` with ``fit_butterworth(E).xcorr`` reproduces the
    comparison of RDPD Fig. 5 / Fig. S2.

    Args:
        kernel_left: estimated left PSF, odd square.
        kernel_right: estimated right PSF or None.
        radius_px: signed radius in pixels, or None to search.
        radii: radius magnitudes to search.
        normalize: rescale the estimate as in :func:`fit_butterworth`.

    Returns:
        A :class:`PSFFit` with ``params = {"radius_px"}``.

    Shape:
        kernel_left, kernel_right: ``(K, K)``.

    Raises:
        TypeError: non-tensor kernels.
        ValueError: bad kernels (see :func:`fit_butterworth`), ``radius_px == 0``, bad radii.

    Example:
        >>> from dplab.optics.psf import punnappurath_dp
        >>> left, right = punnappurath_dp(-3.5, size=11)
        >>> fit = fit_punnappurath(left, right)
        >>> fit.params["radius_px"], round(fit.xcorr, 4)
        (-3.5, 1.0)
    """
    out_dtype = kernel_left.dtype if isinstance(kernel_left, torch.Tensor) else torch.float32
    e = _fit_kernels(kernel_left, kernel_right, normalize)
    size = e.shape[-1]
    if radii is None and radius_px is None:
        radii = torch.arange(10, 20 * (size // 2) + 1, dtype=torch.float64) / 20.0
    r_all, signed = _candidate_radii(radius_px, radii, size, e.device)

    def make(r, chunk):
        return punnappurath_dp(r, size=size, device=e.device, dtype=torch.float64)[0][None]

    (obj, _, ri, mirrored), n_eval = _grid_search(e, make, r_all, [()], signed, 1)
    r = float(r_all[ri]) * (-1.0 if mirrored else 1.0)
    left, right = punnappurath_dp(r, size=size, device=e.device, dtype=torch.float64)
    return _finish_fit("punnappurath", e, {"radius_px": r}, obj, left, right, n_eval, out_dtype)


# ----------------------------------------------------------------------------- S3: distortion
@dataclass(frozen=True)
class DistortionFit:
    """Result of :func:`fit_distortion`.

    Attributes:
        coeffs: best ``(c1, c2, c3)`` (division model, R normalised by the half-diagonal,
            see :mod:`dplab.optics.distortion`).
        xcorr: normalised cross-correlation (zero shift) between the observation and the
            pattern distorted with ``coeffs``; 1 for a perfect match.
        evaluated: number of coefficient sets scored (folding sets are skipped).
    """

    coeffs: tuple[float, float, float]
    xcorr: float
    evaluated: int


def _values_list(name: str, values) -> list[float]:
    out = sorted(set(_param_list(name, values)))
    return out


def _local_values(best: float, values: list[float], width: float, count: int = 5) -> list[float]:
    """``count`` values spanning ``best +- width``; a coefficient given one value stays fixed."""
    if len(values) == 1 or width == 0:
        return [best]
    return [best + width * (2 * i / (count - 1) - 1) for i in range(count)]


def fit_distortion(
    observed: torch.Tensor,
    pattern: torch.Tensor,
    c1_values: Sequence[float],
    c2_values: Sequence[float] = (0.0,),
    c3_values: Sequence[float] = (0.0,),
    *,
    center=None,
    refine: int = 2,
    chunk_size: int = 32,
) -> DistortionFit:
    """Brute-force search of the division-model coefficients, RDPD supplement Eq. S6.

    Finds ``argmax_{c1, c2, c3} X(I_f, I_d(c1, c2, c3))``: ``I_d`` is the synthetic
    ``pattern`` (e.g. :func:`square_grid_target`) warped by :func:`dplab.optics.distortion.distort`
    and ``I_f`` the ``observed`` capture, already re-centred (the paper re-centres by hand).
    ``X`` is the normalised cross-correlation at zero shift (:func:`dplab.optics.psf.xcorr` with
    ``shift=False``) over all pixels and channels: maximising over shifts would let a
    periodic pattern match one period off. (Eq. S6 is printed as ``argmin``, a typo.)

    Coarse-to-fine: every combination of the given values is scored (folding ones skipped);
    then ``refine`` times a 5 x 5 x 5 grid spanning +- one grid step (the largest gap
    between the given values of each coefficient, halved each round) is centred on the best
    set. A coefficient given a single value stays fixed. The best set found is kept, so
    refinement never lowers the score. Candidates are warped ``chunk_size`` at a time.

    Args:
        observed: the captured pattern ``I_f``.
        pattern: the undistorted synthetic pattern, same shape.
        c1_values: candidate ``c1`` values (coarse grid).
        c2_values: candidate ``c2`` values.
        c3_values: candidate ``c3`` values.
        center: distortion centre ``(x_o, y_o)`` in pixels; default the image centre.
        refine: number of refinement rounds (>= 0).
        chunk_size: candidates warped at once.

    Returns:
        A :class:`DistortionFit`.

    Shape:
        observed, pattern: ``(1, C, H, W)``.

    Raises:
        TypeError: non-tensor images, non-numeric values.
        ValueError: shape mismatch, batch size other than 1, NaN, constant images, empty
            value lists, or no candidate that leaves the image unfolded.

    Example:
        >>> pattern, _ = square_grid_target(48, 64, 12)
        >>> from dplab.optics.distortion import distort
        >>> observed = distort(pattern, (0.04, 0.0, 0.0))
        >>> fit = fit_distortion(observed, pattern, [-0.04, 0.0, 0.04], refine=0)
        >>> fit.coeffs, round(fit.xcorr, 4)
        ((0.04, 0.0, 0.0), 1.0)
    """
    observed = require_image("observed", observed)
    pattern = require_image("pattern", pattern)
    if observed.shape != pattern.shape:
        raise ValueError(f"observed {tuple(observed.shape)} and pattern {tuple(pattern.shape)} differ in shape")
    if observed.shape[0] != 1:
        raise ValueError(f"observed and pattern must hold one image (1, C, H, W), got {tuple(observed.shape)}")
    if pattern.device != observed.device:
        raise ValueError(f"pattern is on {pattern.device} but observed is on {observed.device}")
    grids = [_values_list(n, v) for n, v in (("c1_values", c1_values), ("c2_values", c2_values), ("c3_values", c3_values))]
    refine = require_positive("refine", refine, integer=True, allow_zero=True)
    chunk_size = require_positive("chunk_size", chunk_size, integer=True)
    _, c, h, w = pattern.shape
    ctr = _distortion._center(center, h, w)
    r_img = _distortion._image_radius(h, w, ctr)
    obs_flat = observed.reshape(1, c * h, w)
    for name, img in (("observed", observed), ("pattern", pattern)):
        if float(img.std()) == 0:
            raise ValueError(f"{name} is constant; its correlation is undefined")

    best = (-math.inf, None)
    n_eval = 0
    seen: set[tuple[float, float, float]] = set()

    def score(cands):
        nonlocal best, n_eval
        ok = []
        for cand in cands:
            key = tuple(round(v, 15) for v in cand)
            if key in seen:
                continue
            seen.add(key)
            r_u, r_d = _distortion.fold_radius(cand)
            if r_u > r_img and r_d > r_img:
                ok.append(cand)
        for start in range(0, len(ok), chunk_size):
            chunk = ok[start:start + chunk_size]
            coeffs = torch.tensor(chunk, dtype=torch.float64)
            warped = _distortion.distort(pattern.expand(len(chunk), c, h, w), coeffs, center=ctr)
            x = xcorr(obs_flat, warped.reshape(len(chunk), c * h, w), shift=False)
            n_eval += len(chunk)
            val, idx = x.max(0)
            if float(val) > best[0]:
                best = (float(val), tuple(chunk[int(idx)]))

    score(list(itertools.product(*grids)))
    if best[1] is None:
        raise ValueError("every (c1, c2, c3) candidate folds the image; choose values of smaller magnitude")
    widths = [max((b - a for a, b in zip(g, g[1:])), default=0.0) for g in grids]
    for _ in range(refine):
        local = [_local_values(best[1][i], grids[i], widths[i]) for i in range(3)]
        score(list(itertools.product(*local)))
        widths = [wd / 2 for wd in widths]
    return DistortionFit(tuple(float(v) for v in best[1]), best[0], n_eval)
