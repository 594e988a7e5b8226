"""Dual-pixel (DP) point spread functions: the Butterworth model of RDPD and Punnappurath's.

Kernels follow the grid convention of :mod:`dplab.optics.kernels` (odd size ``K``, centre at
index ``K // 2``, ``x`` to the right, ``y`` down, convolution PSFs as in
:func:`dplab.ops.fftconv.fft_conv2d`). Each DP view sums to 1/2 so that ``left + right``
sums to 1.

Orientation. A positive radius ``r`` means a scene point behind the focal plane
(:mod:`dplab.optics.thin_lens`). For ``r > 0`` the *left* view's PSF has its mass on the ``-x`` side
(left) and the right view is its mirror image; a negative radius (in front of the focal plane)
swaps the two views. This is the orientation RDPD Sec. 2.2 describes (for a positive CoC,
"front focus", i.e. objects behind the focal plane, ``H_l`` is ``H`` "with a gradual
fall-off towards the right direction", Eq. 4 and Fig. 5), the one of the authors' generator
(``synthetic_dp_defocus_blur_code/generate_bw_kernel.py`` builds ``kernel_l`` with a ramp
rising along ``x``, and ``synthetic_dp_defocus_blur.py`` applies it with ``cv2.filter2D``,
a correlation, so as a convolution PSF it falls along ``x``), the one of the half-aperture
ray tracer (:mod:`dplab.optics.raytrace`: the left photodiodes see the ``x > 0`` half of the
aperture, whose rays have crossed behind focus) and the one of the calibrated Pixel 4 kernels
of Xin et al. (ICCV 2021), whose left kernel lies left of the right kernel in every cell
(:func:`dplab.data.pixel4.load_kernels`).

Contents: the Butterworth DP PSF of RDPD Eqs. 2-4 (:func:`butterworth_filter`,
:func:`butterworth_profile`, the ramp of Eq. 4 with :func:`ramp_half_width`,
:func:`butterworth_dp`, :func:`psf_bank` with the 48 parameter sets of supplement Eq. S4) and
the DP PSF of Punnappurath et al., ICCP 2020 (:func:`punnappurath_dp`). The disc
:func:`dplab.optics.kernels.disk` they are built on, the Gaussian, kernel resampling and the
cross-correlation that compares PSFs are in :mod:`dplab.optics.kernels`.
"""

from __future__ import annotations

import itertools
import math
import numbers

import torch

from dplab._validate import require_finite, require_number, require_positive, require_tensor
from dplab.ops.fftconv import fft_conv2d
from dplab.optics.kernels import (
    centred_grid,
    delta_kernels,
    disk_coverage,
    float_dtype,
    gaussian_kernels,
    kernel_size,
    parameter_batch,
    unbatch,
)

__all__ = [
    "butterworth_profile", "butterworth_filter", "butterworth_dp", "psf_bank", "ramp_half_width",
    "punnappurath_dp", "PSF_BANK_PARAMS", "RDPD_CODE_BANK_PARAMS",
]

#: RDPD supplement Eq. S4: n in {3,6,9}, alpha in {0.4,...,1.0}, beta in {0.1,...,0.4}, kappa 0.14.
PSF_BANK_PARAMS: tuple[tuple[float, float, float, float], ...] = tuple(
    (n, a, b, 0.14) for n, a, b in itertools.product(
        (3, 6, 9), (0.4, 0.6, 0.8, 1.0), (0.1, 0.2, 0.3, 0.4)))
#: The 12 sets the authors' generator cycles through (cut-off factor 2.5 or 2 -> alpha 0.4, 0.5).
RDPD_CODE_BANK_PARAMS: tuple[tuple[float, float, float, float], ...] = tuple(
    (n, a, b, 1 / 7) for n, a, b in itertools.product((3, 6, 9), (0.4, 0.5), (0.1, 0.2)))


# ----------------------------------------------------------------------------- Butterworth
def butterworth_profile(distance, d0, order):
    """RDPD Eq. 2 as a function of the distance from the centre.

    ``B(D) = 1 / (1 + (D0 / D)^(2n))``, a high-pass Butterworth (Gonzalez-Woods form),
    ``B(0) = 0``, rising to 1 far away. At ``D = D0``, ``B = 1/2`` exactly: the "3 dB
    point" of the paper is the half-power point (``10 log10(1/2) = -3.01 dB`` when ``B`` is
    read as a power gain, which is how the image-processing Butterworth form is defined).

    Args:
        distance: ``D >= 0`` in pixels, number or tensor.
        d0: cut-off ``D0 > 0`` in pixels.
        order: filter order ``n > 0``.

    Returns:
        ``B`` with the kind and shape of ``distance`` (float64 tensor for tensors).

    Raises:
        TypeError: wrong types.
        ValueError: negative or NaN distance, ``d0 <= 0``, ``order <= 0``.

    Example:
        >>> butterworth_profile(5.0, 5.0, 3)
        0.5
    """
    d0 = float(require_positive("d0", d0))
    n = float(require_positive("order", order))
    if isinstance(distance, torch.Tensor):
        d = require_finite("distance", require_tensor("distance", distance)).double()
        if bool((d < 0).any()):
            raise ValueError("distance must be >= 0")
        return torch.sigmoid(2 * n * (torch.log(d) - math.log(d0)))
    dist = float(require_positive("distance", distance, allow_zero=True))
    return 0.0 if dist == 0 else 1.0 / (1.0 + (d0 / dist) ** (2 * n))


def butterworth_filter(d0, order, size, *, device=None, dtype=torch.float32):
    """RDPD Eq. 2 on a ``size x size`` pixel grid centred at ``size // 2`` (before rescaling).

    Args:
        d0: cut-off distance ``D0 > 0`` in pixels (``B = 1/2`` there).
        order: filter order ``n > 0``.
        size: odd grid size.
        device: output device.
        dtype: output dtype.

    Returns:
        ``B`` on the grid.

    Shape:
        ``(size, size)``.

    Raises:
        TypeError / ValueError: as :func:`butterworth_profile`; even size.

    Example:
        >>> float(butterworth_filter(4.0, 3, 11)[5, 9])   # 4 px right of the centre
        0.5
    """
    k = kernel_size(size, 1)
    c = centred_grid(k, device)
    dist = (c.reshape(-1, 1) ** 2 + c.reshape(1, -1) ** 2).sqrt()
    return butterworth_profile(dist, d0, order).to(float_dtype(dtype))


def _dp_param(name, value, lo, hi):
    v = float(require_number(name, value))
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def _bw_params(order, alpha, beta, kappa) -> tuple[float, float, float, float]:
    return (float(require_positive("order", order)), float(require_positive("alpha", alpha)),
            _dp_param("beta", beta, 0, 1), _dp_param("kappa", kappa, 0, math.inf))


def ramp_half_width(radius_px):
    """Half-width ``w = R + p`` of the ramp mask of Eq. 4 in the authors' generator.

    ``generate_bw_kernel.py`` (RDPD repository) builds the disc on a ``k = 2R + 1`` kernel,
    pads it by ``p = g // 2`` for a Gaussian window of ``g = round(k / 7) + 1`` px (made odd)
    and ramps the left view linearly from 0 to 1 across the padded width ``k + 2p``, i.e.
    over ``[-(R + p), R + p]``. ``round`` rounds halves to even, as Python's does.

    Args:
        radius_px: ``|r|`` in pixels, a number or tensor.

    Returns:
        ``R + p`` (same type: float for a number, tensor for a tensor).

    Raises:
        TypeError: not a number or tensor. ValueError: NaN or infinite radius.

    Example:
        >>> [ramp_half_width(r) for r in (3, 8, 20, 40)]
        [4.0, 9.0, 23.0, 46.0]
    """
    if isinstance(radius_px, (str, bytes, bool)) or not isinstance(radius_px, (numbers.Real, torch.Tensor)):
        raise TypeError(f"radius_px must be a number or tensor, got {type(radius_px).__name__}")
    R = torch.as_tensor(radius_px, dtype=torch.float64).abs()
    if not bool(torch.isfinite(R).all()):
        raise ValueError(f"radius_px must be finite, got {radius_px!r}")
    g = torch.round((2 * R + 1) / 7) + 1
    g = torch.where(torch.remainder(g, 2) == 0, g + 1, g)
    w = R + (g - 1) / 2
    return float(w) if not isinstance(radius_px, torch.Tensor) else w.to(radius_px.dtype)


def _butterworth_stack(r, params, size, supersample):
    """Left views for radii ``r`` (N,) and parameter rows (P, 4) -> (P, N, K, K) float64."""
    dev = r.device
    p = torch.tensor(params, dtype=torch.float64, device=dev).reshape(-1, 4, 1, 1, 1)
    n, alpha, beta, kappa = p.unbind(1)  # each (P, 1, 1, 1)
    R = r.abs()
    rmax, kmax = float(R.max()), float(kappa.max())
    k = max(kernel_size(size, 1), 2 * math.ceil(rmax) + 1 + 2 * math.ceil(3 * kmax * rmax))
    c = centred_grid(k, dev)
    dist = (c.reshape(-1, 1) ** 2 + c.reshape(1, -1) ** 2).sqrt()
    Rb = R.reshape(1, -1, 1, 1).clamp_min(1e-12)
    log_d0 = torch.log(2 * Rb * alpha)                                    # D0 = 2|r| alpha
    B = torch.sigmoid(2 * n * (torch.log(dist) - log_d0))                 # Eq. 2
    B_max = torch.sigmoid(2 * n * (math.log(math.sqrt(2)) + torch.log(Rb) - log_d0))
    B = (beta + (1 - beta) * B / B_max).clamp(max=1.0)                    # min-max to [beta, 1]
    H = B * disk_coverage(R, k, supersample).unsqueeze(0)                 # Eq. 3
    P, N = H.shape[:2]
    sigma = (kappa * R.reshape(1, -1, 1, 1)).expand(P, N, 1, 1).reshape(-1)
    if kmax > 0:
        g = gaussian_kernels(sigma, 2 * math.ceil(3 * float(sigma.max())) + 1, truncate=True)
        H = fft_conv2d(H.reshape(1, P * N, k, k), g).reshape(P, N, k, k).clamp_min(0)
    # Ramp mask, Eq. 4: 1 -> 0 along +x over the authors' half-width R + p, p half their Gaussian
    # window g = round((2R+1)/7) + 1 made odd (:func:`ramp_half_width`), so that as a convolution
    # kernel the left view of a point behind focus (r > 0) carries its mass on the -x side.
    w = ramp_half_width(Rb).clamp_min(1)
    M = (0.5 - c.reshape(1, 1, 1, -1) / (2 * w)).clamp(0, 1)
    left = H * M
    total = left.sum((-2, -1), keepdim=True)
    # A disc far below one pixel covers (almost) nothing; it is a point: a delta split in halves.
    point = (R.reshape(1, -1, 1, 1) == 0) | (total <= 1e-12)
    left = left / (2 * total.clamp_min(1e-300))                           # sum = 1/2
    left = torch.where(r.reshape(1, -1, 1, 1) < 0, left.flip(-1), left)    # r < 0 swaps views
    left = torch.where(point, 0.5 * delta_kernels(N, k, dev).unsqueeze(0), left)
    if size is not None and size < k:
        o = (k - size) // 2
        left = left[..., o:o + size, o:o + size]
        left = left / (2 * left.sum((-2, -1), keepdim=True))
    return left


def butterworth_dp(radius_px, order=3, alpha=0.6, beta=0.2, kappa=0.14, size=None, *,
                   supersample: int = 16, device=None, dtype=torch.float32):
    """Butterworth dual-pixel PSF pair of RDPD Sec. 2.2, Eqs. 2-4.

    For ``R = |r|``: ``B`` of Eq. 2 with ``D0 = 2 R alpha`` (the authors' code), min-max
    rescaled to ``[beta, 1]`` over the square ``[-R, R]^2`` (min 0 at the centre, max at the
    corner distance ``sqrt(2) R``, as the code does on its ``(2R+1)^2`` kernel); times the
    anti-aliased disc of radius ``R`` (Eq. 3); convolved with a Gaussian of standard deviation
    ``kappa * R`` (the paper; the authors' code uses an OpenCV window of about
    ``(2R+1)/7 + 1`` px with OpenCV's default sigma ``0.3((w-1)/2 - 1) + 0.8``, roughly
    ``0.043 R + 0.5`` px, i.e. less smoothing); times the ramp mask of Eq. 4,
    ``M(x) = clamp(1/2 - x / (2 w), 0, 1)`` with the authors' half-width ``w = R + p`` (at
    least 1 px, :func:`ramp_half_width`; about ``1.14 R``): 1 at ``x = -w``, 1/2 on the
    centre column, 0 from ``x = w`` on (the authors' generator ramps linearly across its
    ``2R + 1`` kernel padded by ``p`` on each side for its Gaussian window). The left view is
    normalised to sum 1/2 and the right view is its horizontal mirror, so ``left + right`` is
    the normalised smoothed ``H``.

    Orientation (RDPD Sec. 2.2, Eq. 4: for a positive CoC the left PSF falls off towards the
    right; and the authors' generator code, which applies its rising ramp ``kernel_l`` with
    ``cv2.filter2D``, a correlation): for ``r > 0`` (behind the focal plane) the left view,
    read as a convolution PSF, has its mass on the ``-x`` side and the right view on the
    ``+x`` side; ``r < 0`` swaps the views. ``r = 0`` gives a delta split in halves (the code
    uses radius 1 instead).

    Args:
        radius_px: signed CoC radius in pixels, number or 1-D tensor.
        order: Butterworth order ``n > 0`` (paper bank: 3, 6, 9).
        alpha: cut-off factor ``> 0`` (``D0 = 2 |r| alpha``).
        beta: lower bound of the rescaled filter, in [0, 1].
        kappa: Gaussian smoothing factor ``>= 0`` (sigma = kappa |r|).
        size: odd kernel size; default ``2 ceil(max|r|) + 1 + 2 ceil(3 kappa max|r|)``. A
            smaller size crops and renormalises.
        supersample: sub-rows per pixel for the disc's anti-aliasing.
        device: output device.
        dtype: output dtype.

    Returns:
        ``(left, right)``, each summing to 1/2.

    Shape:
        ``(K, K)`` each for a number, ``(N, K, K)`` for ``N`` radii.

    Raises:
        TypeError: radius of a wrong type (string, list), bad dtype.
        ValueError: NaN radius or parameters out of range, even size.

    Example:
        >>> left, right = butterworth_dp(6.0)      # behind the focal plane
        >>> left.shape, round(float(left.sum()), 6), torch.equal(right, left.flip(-1))
        (torch.Size([19, 19]), 0.5, True)
        >>> bool(left[9, 5] > left[9, 13])          # left view: mass on the -x side
        True
    """
    r, batched, _ = parameter_batch("radius_px", radius_px, signed=True, device=device)
    dtype = float_dtype(dtype)
    params = [_bw_params(order, alpha, beta, kappa)]
    s = require_positive("supersample", supersample, integer=True)
    left = _butterworth_stack(r, params, None if size is None else kernel_size(size, 1), s)[0]
    return unbatch(left, batched, dtype), unbatch(left.flip(-1), batched, dtype)


def psf_bank(radius_px, params=None, *, size=None, supersample: int = 16, device=None,
             dtype=torch.float32):
    """The RDPD bank of Butterworth DP PSFs for one radius (supplement S2, Eq. S4).

    Args:
        radius_px: signed CoC radius in pixels, number or 1-D tensor.
        params: sequence of ``(order, alpha, beta, kappa)``; default :data:`PSF_BANK_PARAMS`
            (the 48 combinations of Eq. S4). :data:`RDPD_CODE_BANK_PARAMS` holds the 12 the
            authors' generator uses.
        size: odd kernel size (default as :func:`butterworth_dp` with the largest kappa).
        supersample: sub-rows per pixel for the disc.
        device: output device.
        dtype: output dtype.

    Returns:
        ``(left, right, params)``: stacks of views and the list of parameter tuples.

    Note:
        With ``D0 = 2 |r| alpha`` (the authors' code), for ``alpha >= 0.8`` and ``n = 9`` the
        filter stays far below its corner value inside the disc, so after the rescale to
        ``[beta, 1]`` those PSFs are nearly flat discs whatever ``beta``: the 48 entries are
        distinct but a few are near-duplicates (e.g. (9, 0.8, b) vs (9, 1.0, b)).

    Shape:
        ``(P, K, K)`` each for a number, ``(P, N, K, K)`` for ``N`` radii.

    Raises:
        TypeError / ValueError: as :func:`butterworth_dp`; malformed ``params``.

    Example:
        >>> left, right, p = psf_bank(5.0)
        >>> left.shape, p[0]
        (torch.Size([48, 17, 17]), (3, 0.4, 0.1, 0.14))
    """
    r, batched, _ = parameter_batch("radius_px", radius_px, signed=True, device=device)
    dtype = float_dtype(dtype)
    params = list(PSF_BANK_PARAMS if params is None else params)
    if not params or any(not isinstance(q, (tuple, list)) or len(q) != 4 for q in params):
        raise ValueError("params must be a non-empty sequence of (order, alpha, beta, kappa)")
    checked = [_bw_params(*q) for q in params]
    s = require_positive("supersample", supersample, integer=True)
    left = _butterworth_stack(r, checked, None if size is None else kernel_size(size, 1), s)
    left = left if batched else left[:, 0]
    return left.to(dtype), left.flip(-1).to(dtype), [tuple(q) for q in params]


# ----------------------------------------------------------------------------- Punnappurath
def punnappurath_dp(radius_px, size=None, *, supersample: int = 16, device=None,
                    dtype=torch.float32):
    """DP PSF pair of Punnappurath, Abuolaim, Afifi, Brown, ICCP 2020 (RDPD ref. [34]).

    The model has a single parameter, the signed blur radius (RDPD Sec. 2.2). Source: the
    authors' MATLAB code (``functions/solver_translating_disk_kernel.m``, ``ker_disk``, in
    abhijithpunnappurath/dual-pixel-defocus-disparity, the "translating disk kernel"); the
    paper's text was not available here. It sums products of the disc ``C`` with copies of
    itself translated by 0, 1, ..., 2R+1 px along ``x`` in the direction of the parameter's
    sign, which equals ``C`` times its running sum along each row. dplab's left view for
    ``r > 0`` is the kernel whose running sum starts at the disc's right boundary,
    ``h(x, y) ~ C(x, y) * sum_{x' >= x} C(x', y)``, i.e. for a hard disc intensity grows
    linearly from 0 at the right rim towards ``-x``, ``h ~ sqrt(R^2 - y^2) - x`` (the code's
    kernel for a negative parameter; the code fits the sign per patch and does not tie it to
    front or back focus). The right view is the mirror image; each is normalised to 1/2.
    dplab's disc is the anti-aliased coverage of :func:`dplab.optics.kernels.disk` (the code
    uses MATLAB's ``fspecial('disk')``). Sign: as :func:`butterworth_dp` (RDPD Sec. 2.2), ``r > 0`` (behind
    the focal plane) puts the left view's mass on the ``-x`` side; ``r < 0`` swaps the views;
    ``r = 0`` is a delta split in halves.

    Args:
        radius_px: signed radius in pixels, number or 1-D tensor.
        size: odd kernel size; default ``2 ceil(max|r|) + 1``.
        supersample: sub-rows per pixel for the disc.
        device: output device.
        dtype: output dtype.

    Returns:
        ``(left, right)``, each summing to 1/2.

    Shape:
        ``(K, K)`` each, or ``(N, K, K)`` for ``N`` radii.

    Raises:
        TypeError: wrong radius type, bad dtype.
        ValueError: NaN radius, even size.

    Example:
        >>> left, right = punnappurath_dp(3.0)
        >>> round(float(left.sum()), 6), bool(left[3, 1] > left[3, 5])   # mass on -x
        (0.5, True)
    """
    r, batched, dev = parameter_batch("radius_px", radius_px, signed=True, device=device)
    dtype = float_dtype(dtype)
    s = require_positive("supersample", supersample, integer=True)
    k = kernel_size(size, 2 * math.ceil(float(r.abs().max())) + 1)
    c = disk_coverage(r.abs(), k, s)
    left = c * c.flip(-1).cumsum(-1).flip(-1)       # grows towards -x: left view behind focus
    total = left.sum((-2, -1), keepdim=True)
    point = 0.5 * delta_kernels(r.numel(), k, dev)
    left = torch.where(total > 0, left / (2 * total.clamp_min(1e-300)), point)
    left = torch.where(r.reshape(-1, 1, 1) < 0, left.flip(-1), left)
    return unbatch(left, batched, dtype), unbatch(left.flip(-1), batched, dtype)
