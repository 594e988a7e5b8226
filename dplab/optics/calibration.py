"""Calibration targets and non-blind PSF estimation (RDPD supplement S1).

RDPD (Abuolaim et al., ICCV 2021) calibrates its dual-pixel PSF model and its radial
distortion from photographs of computer-generated targets:

* **S1** (this module) -- a grid of equal disks (Fig. S1-A, :func:`disk_grid_target`) is
  photographed out of focus; with the sharp disk ``S`` known, each view's PSF ``E`` is
  estimated non-blindly by Eq. S1 (:func:`estimate_psf`)::

      argmin_E  sum_i || D_i (S * E - B) ||_2^2 + || E ||_1   s.t.  E >= 0,
      D_i in {Dx, Dy, Dxx, Dyy, Dxy}.

* **S2** -- the Butterworth DP model (main paper Eqs. 2-4) is fitted to an estimated PSF by
  brute force over the grid of Eq. S2 minimising Eq. S3, the same derivative-domain distance
  (:mod:`dplab.optics.psf_fit`).

* **S3** -- a grid of squares (Fig. S3-A, :func:`square_grid_target`) photographed in focus
  gives the distortion coefficients of the division model by a brute-force search, Eq. S6
  (:mod:`dplab.optics.distortion_fit`).

This module holds the two targets, the five derivative filters of Eqs. S1 and S3
(:func:`derivative_filters`, :func:`apply_derivative_filters`), the Eq. S1 solver and the
check of the candidate lists the S2 and S3 searches run over (:func:`candidate_values`).

All kernels follow :func:`dplab.ops.fftconv.fft_conv2d`: true convolution, centre at index
``k // 2``. Derivative filters are the 3x3 forward differences ``Dx = [-1, 1]``,
``Dxx = [1, -2, 1]``, ``Dxy = [[1, -1], [-1, 1]]`` and their transposes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dplab._validate import require_finite, require_number, require_positive, require_tensor
from dplab.ops.fftconv import fast_len

__all__ = [
    "disk_grid_target",
    "square_grid_target",
    "derivative_filters",
    "apply_derivative_filters",
    "estimate_psf",
    "candidate_values",
]


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
        >>> import math
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


def apply_derivative_filters(x: torch.Tensor, full: bool) -> torch.Tensor:
    """Apply the five filters of :func:`derivative_filters` to each image of a stack.

    The ``D_i`` of RDPD supplement Eqs. S1 (on the target and the blurred patch) and S3 (on
    an estimated and a model kernel).

    Args:
        x: ``(N, h, w)`` floating tensor.
        full: zero-pad by 2 so every derivative touching the support is kept (``h' = h + 2``,
            for kernels); otherwise 'same' size with zero padding (``h' = h``, for images).

    Returns:
        The derivatives, dtype and device of ``x``.

    Shape:
        ``(N, h, w)`` -> ``(N, 5, h', w')``.

    Example:
        >>> apply_derivative_filters(torch.ones(1, 4, 4), full=True).shape
        torch.Size([1, 5, 6, 6])
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
    s_d = apply_derivative_filters(s, full=False)  # (N, 5, H, W): D_i S
    b_d = apply_derivative_filters(b, full=False)
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


# ----------------------------------------------------------------------------- candidate lists
def candidate_values(name: str, values) -> list[float]:
    """The candidate values of one parameter of a brute-force search (RDPD Eqs. S2 and S6).

    Args:
        name: the argument's name, for error messages.
        values: a non-empty iterable of real numbers (not a string).

    Returns:
        The values as floats, in the given order.

    Raises:
        TypeError: not an iterable of numbers. ValueError: empty, or NaN/infinite values.

    Example:
        >>> candidate_values("alphas", (0.4, 0.6, 1))
        [0.4, 0.6, 1.0]
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    out = [float(require_number(name, v)) for v in values]
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out
