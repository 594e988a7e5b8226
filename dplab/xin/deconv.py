"""Two-view Wiener deconvolution, the defocus-hypothesis energy and its noise bias.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021; main paper Sec. 4.2 (Eqs. 4-5) and
supplement C.2 (Eqs. 20-37). The same machinery is the "Wiener deconvolution" baseline of the
paper's Table 1 (Zhou, Lin, Nayar, ICCV 2009 / Tang and Kutulakos, CVPR 2012): for every defocus
hypothesis ``d`` the two DP views are deconvolved jointly, the hypothesis is scored by the MAP
energy of Eq. 26, and each pixel takes the hypothesis of least (locally averaged) energy.

Model (supp. Eq. 20): ``I_v = K_v^{d*} C + N_v`` for the views ``v in {l, r}``, white noise of
variance ``sigma^2`` and a Gaussian prior on the latent image ``C`` with inverse power spectrum
``|Phi|^2`` (Eqs. 23-25, constant in the paper). Then

* Eq. 27, generalized Wiener deconvolution with two observations::

      C_hat = (I_l conj(K_l) + I_r conj(K_r)) / (|K_l|^2 + |K_r|^2 + sigma^2 |Phi|^2)

* Eq. 26, the energy of a hypothesis ``d``::

      E(d) = sum_v ||K_v^d C_hat - I_v||^2 + ||sigma Phi C_hat||^2

* Eq. 5, the bias correction (the part of the expected energy, Eq. 37, that favours small
  kernels whatever the scene)::

      B(d) = sigma^2 sum_f sigma^2 |Phi|^2 / (|K_l^d|^2 + |K_r^d|^2 + sigma^2 |Phi|^2)

Constants. The paper sets ``sigma^2 = 5e-5`` and ``|Phi|^2 = 1e2`` (Sec. 4.3), for kernels
that each sum to 1 (its calibration convention, Sec. 3). The authors' code writes the ratio as
``C / (|K_l|^2 + |K_r|^2 + C)`` with ``C = 5e-3``; that is Eq. 5 with ``C = sigma^2 |Phi|^2``,
i.e. ``|Phi|^2 = 5e-3 / 5e-5 = 100``, the paper's value. (Reading ``C`` as ``1/|Phi|^2``
instead gives ``|Phi|^2 = 200``; pass ``phi2=200.0`` to use that reading.) The
code differs from the printed Eq. 5 in two other ways, both kept here as options: it averages
over the frequencies of the 61x61 kernel grid instead of summing (``reduction="mean"``, the
per-pixel energy that the per-pixel data loss of Eq. 7 needs), and it multiplies ``B`` by
``mean(observation) / 0.5`` (done by :func:`dplab.xin.mpi.optimize`, not here).

dplab's kernels sum to 1/2 per view. So that the paper's constants keep their
meaning, the prior term is written for unit-sum views: with ``s`` the mean of the two views'
kernel sums (1 for the paper, 1/2 for dplab), the regulariser is ``sigma^2 |Phi|^2 s^2``. This
makes ``B`` independent of the normalisation and makes :func:`wiener_dp` return the latent
image at the brightness the kernels imply (``left + right`` for dplab's kernels).

Boundaries. Real images are not periodic; :func:`wiener_dp` extends the image by reflection
(``padding="reflect"``, default) by ``pad_px`` pixels (and up to the next fast FFT size)
before the circular FFT and crops the result. ``padding="circular"`` treats the image as
periodic (exact for scenes made by circular convolution, as in the tests).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dplab._validate import (require_choice, require_image, require_kernel, require_number,
                        require_positive)
from dplab.ops.fftconv import _pad_index, fast_len

__all__ = [
    "SIGMA2", "PHI2", "CODE_C", "wiener_dp", "bias_correction", "expected_energy",
    "hypothesis_energy", "wiener_defocus", "WienerDefocus", "box_mean",
]

#: Noise variance of Sec. 4.3 (and the authors' code, ``(5e-3)^2 * 2``).
SIGMA2 = 5e-5
#: Constant inverse spectral power ``|Phi|^2`` of Sec. 4.3 (for unit-sum view kernels).
PHI2 = 1e2
#: The authors' code constant, ``C = sigma^2 |Phi|^2`` (5e-5 * 100).
CODE_C = 5e-3

_PADDINGS = ("reflect", "replicate", "zero", "circular")
_REDUCTIONS = ("mean", "sum")


# ----------------------------------------------------------------------------- helpers
def _kernel_pair(k_left, k_right):
    k_left, k_right = require_kernel("k_left", k_left), require_kernel("k_right", k_right)
    if k_left.shape != k_right.shape:
        raise ValueError(f"k_left and k_right must have the same shape, got {tuple(k_left.shape)} "
                         f"and {tuple(k_right.shape)}")
    if k_left.device != k_right.device:
        raise ValueError(f"k_left is on {k_left.device} but k_right is on {k_right.device}")
    sums = torch.cat([k_left.sum((-2, -1)).reshape(-1), k_right.sum((-2, -1)).reshape(-1)])
    if bool((sums <= 0).any()):
        raise ValueError("k_left and k_right must have a positive sum (an all-zero kernel has no "
                         "spectrum to deconvolve)")
    return k_left, k_right


def _prior_eps(k_left, k_right, sigma2, phi2):
    """``sigma^2 |Phi|^2 s^2`` with ``s`` the mean view-kernel sum, shape ``(..., 1, 1)``."""
    s = 0.5 * (k_left.sum((-2, -1), keepdim=True) + k_right.sum((-2, -1), keepdim=True))
    return sigma2 * phi2 * s.square()


def _spectrum(k: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Real FFT of a kernel on an ``n1 x n2`` grid with its centre (index ``k//2``) at the origin."""
    kh, kw = k.shape[-2:]
    if kh > n1 or kw > n2:
        raise ValueError(f"the kernel ({kh}x{kw}) is larger than the FFT grid ({n1}x{n2}); "
                         "use a larger image or padding")
    grid = F.pad(k, (0, n2 - kw, 0, n1 - kh))
    grid = torch.roll(grid, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(grid)


def _pad_to(x: torch.Tensor, n1: int, n2: int, top: int, left: int, mode: str) -> torch.Tensor:
    """Extend ``(..., H, W)`` to ``(..., n1, n2)`` with the image at ``[top, left]``."""
    H, W = x.shape[-2:]
    if mode == "zero":
        return F.pad(x, (left, n2 - W - left, top, n1 - H - top))
    x = x.index_select(-2, _pad_index(H, top, n1 - H - top, mode, x.device))
    return x.index_select(-1, _pad_index(W, left, n2 - W - left, mode, x.device))


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Local mean over a ``window x window`` square (odd), borders extended by replication.

    Computed separably with cumulative sums, so the cost does not grow with the window.

    Args:
        x: ``(..., H, W)`` floating tensor.
        window: odd window size in pixels (1 returns ``x``).

    Returns:
        Tensor of the shape of ``x``.

    Raises:
        ValueError: even or non-positive window.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[..., 2, 2] = 9.0
        >>> box_mean(x, 3)[0, 0, 1:4, 1:4]
        tensor([[1., 1., 1.],
                [1., 1., 1.],
                [1., 1., 1.]])
    """
    window = require_positive("window", window, integer=True)
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    if window == 1:
        return x
    h = window // 2
    out = x
    for dim in (-2, -1):
        n = out.shape[dim]
        idx = _pad_index(n, h + 1, h, "replicate", out.device)
        p = out.index_select(dim, idx)
        c = p.double().cumsum(dim)
        hi = c.narrow(dim, window, n)
        lo = c.narrow(dim, 0, n)
        out = ((hi - lo) / window).to(x.dtype)
    return out


def _wiener_parts(left, right, k_left, k_right, sigma2, phi2, padding, pad_px):
    """Wiener estimate, re-blurred views and regulariser, cropped to the image."""
    H, W = left.shape[-2:]
    kh, kw = k_left.shape[-2:]
    if padding == "circular":
        n1, n2, top, lft = H, W, 0, 0
        xl, xr = left, right
    else:
        p = max(kh, kw) if pad_px is None else require_positive("pad_px", pad_px, allow_zero=True,
                                                                  integer=True)
        n1, n2 = fast_len(H + 2 * p), fast_len(W + 2 * p)
        top, lft = (n1 - H) // 2, (n2 - W) // 2
        xl = _pad_to(left, n1, n2, top, lft, padding)
        xr = _pad_to(right, n1, n2, top, lft, padding)
    work = torch.promote_types(left.dtype, torch.float32)
    kl, kr = k_left.to(work), k_right.to(work)
    Kl, Kr = _spectrum(kl, n1, n2), _spectrum(kr, n1, n2)
    eps = _prior_eps(kl, kr, sigma2, phi2)
    Xl, Xr = torch.fft.rfft2(xl.to(work)), torch.fft.rfft2(xr.to(work))
    C = (Xl * Kl.conj() + Xr * Kr.conj()) / (Kl.abs().square() + Kr.abs().square() + eps)
    crop = (slice(top, top + H), slice(lft, lft + W))
    c = torch.fft.irfft2(C, s=(n1, n2))[..., crop[0], crop[1]]
    bl = torch.fft.irfft2(C * Kl, s=(n1, n2))[..., crop[0], crop[1]]
    br = torch.fft.irfft2(C * Kr, s=(n1, n2))[..., crop[0], crop[1]]
    return c, bl, br, eps


def _check_views(left, right):
    left = require_image("left", left)
    right = require_image("right", right)
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same shape, got {tuple(left.shape)} and "
                         f"{tuple(right.shape)}")
    if left.device != right.device:
        raise ValueError(f"left is on {left.device} but right is on {right.device}")
    return left, right


def _check_kernels_for(left, k_left, k_right):
    k_left, k_right = _kernel_pair(k_left, k_right)
    if k_left.device != left.device:
        raise ValueError(f"kernels are on {k_left.device} but the images are on {left.device}")
    if k_left.ndim > 4:
        raise ValueError(f"kernels must have shape (kh, kw), (C, kh, kw) or (B, C, kh, kw), "
                         f"got {tuple(k_left.shape)}")
    lead = (1,) * (4 - k_left.ndim) + tuple(k_left.shape[:-2])
    try:
        torch.broadcast_shapes(tuple(left.shape[:2]), lead[:2])
    except RuntimeError:
        raise ValueError(f"kernel leading dims {tuple(k_left.shape[:-2])} do not broadcast against "
                         f"the images' (B, C) = {tuple(left.shape[:2])}") from None
    shape = lead + tuple(k_left.shape[-2:])
    return k_left.reshape(shape), k_right.reshape(shape)


def _constants(sigma2, phi2):
    return (float(require_positive("sigma2", sigma2, allow_zero=True)),
            float(require_positive("phi2", phi2, allow_zero=True)))


# ----------------------------------------------------------------------------- public API
def wiener_dp(left, right, k_left, k_right, sigma2=SIGMA2, phi2=PHI2, *, padding="reflect",
              pad_px=None):
    """Generalized Wiener deconvolution of a DP pair (Xin et al., supplement Eq. 27).

    ``C = (I_l conj(K_l) + I_r conj(K_r)) / (|K_l|^2 + |K_r|^2 + sigma^2 |Phi|^2 s^2)`` with
    ``s`` the mean view-kernel sum (see the module docstring: 1 for the paper's unit-sum
    kernels, 1/2 for dplab's), evaluated with real FFTs. With dplab's kernels the estimate has
    the brightness of ``left + right``.

    Args:
        left: left view ``(B, C, H, W)``.
        right: right view, same shape.
        k_left: left kernel ``(kh, kw)``, ``(C, kh, kw)`` or ``(B, C, kh, kw)``, centre at
            ``(kh//2, kw//2)`` (as :func:`dplab.ops.fftconv.fft_conv2d`).
        k_right: right kernel, same shape.
        sigma2: noise variance ``sigma^2`` (paper: 5e-5).
        phi2: constant inverse power spectrum ``|Phi|^2`` for unit-sum views (paper: 1e2).
        padding: ``"reflect"``, ``"replicate"``, ``"zero"`` or ``"circular"`` (periodic image).
        pad_px: extension on each side for non-circular padding (default: the kernel size).

    Returns:
        The all-in-focus estimate ``(B', C', H, W)`` (broadcast of images and kernels).

    Shape:
        left, right: ``(B, C, H, W)``; kernels ``(..., kh, kw)``; output ``(B, C, H, W)``.

    Raises:
        TypeError: non-tensor inputs.
        ValueError: mismatched shapes or devices, NaN values, negative or all-zero kernels,
            unknown padding, negative constants.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(3.0)
        >>> img = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> spec = lambda k: torch.fft.rfft2(torch.roll(F.pad(k, (0, 32 - k.shape[-1], 0, 32 - k.shape[-2])),
        ...                                             (-(k.shape[-2] // 2), -(k.shape[-1] // 2)), (-2, -1)))
        >>> blur = lambda k: torch.fft.irfft2(torch.fft.rfft2(img) * spec(k), s=(32, 32))
        >>> est = wiener_dp(blur(kl), blur(kr), kl, kr, sigma2=1e-12, padding="circular")
        >>> bool((est - img).abs().max() < 1e-3)
        True
    """
    left, right = _check_views(left, right)
    k_left, k_right = _check_kernels_for(left, k_left, k_right)
    sigma2, phi2 = _constants(sigma2, phi2)
    require_choice("padding", padding, _PADDINGS)
    c, _, _, _ = _wiener_parts(left, right, k_left, k_right, sigma2, phi2, padding, pad_px)
    return c.to(left.dtype)


def bias_correction(k_left, k_right, sigma2=SIGMA2, phi2=PHI2, *, size=None, reduction="mean"):
    """Bias correction term ``B(d)`` of Xin et al. Eq. 5 for one or many kernel pairs.

    ``B = sigma^2 R_f[ eps / (|K_l(f)|^2 + |K_r(f)|^2 + eps) ]`` with ``eps = sigma^2 |Phi|^2
    s^2`` (``s`` the mean view-kernel sum, so that the value is the same for unit-sum and
    half-sum kernels), ``K`` the unnormalised DFT of the kernel zero-padded to ``size`` and
    ``R_f`` the mean (``reduction="mean"``, per pixel, as the authors' code and the per-pixel
    losses use it) or the sum (``"sum"``, Eq. 5 as printed) over the ``size[0] x size[1]``
    frequencies.

    Args:
        k_left: left kernels ``(..., kh, kw)``.
        k_right: right kernels, same shape.
        sigma2: noise variance (paper 5e-5).
        phi2: ``|Phi|^2`` for unit-sum views (paper 1e2; 200 if the code's ``C`` is read as
            ``1/|Phi|^2``).
        size: DFT size, int or ``(h, w)``, at least the kernel size; default the kernel size
            (61x61 for the Pixel 4 calibration, as the authors' code).
        reduction: ``"mean"`` or ``"sum"`` over frequencies.

    Returns:
        ``B`` per kernel pair, float tensor of shape ``(...)`` (0-dim for 2-D kernels).

    Shape:
        ``(..., kh, kw) -> (...)``.

    Raises:
        TypeError / ValueError: invalid kernels, constants, size or reduction.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> small, large = butterworth_dp(torch.tensor([2.0, 8.0]), size=31)
        >>> b = bias_correction(small, small.flip(-1))
        >>> b.shape, bool(b[0] < b[1] < SIGMA2)   # larger blur, larger bias; below sigma^2
        (torch.Size([2]), True)
    """
    k_left, k_right = _kernel_pair(k_left, k_right)
    sigma2, phi2 = _constants(sigma2, phi2)
    require_choice("reduction", reduction, _REDUCTIONS)
    kh, kw = k_left.shape[-2:]
    if size is None:
        n1, n2 = kh, kw
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        n1, n2 = (require_positive("size", v, integer=True) for v in size)
    else:
        n1 = n2 = require_positive("size", size, integer=True)
    if n1 < kh or n2 < kw:
        raise ValueError(f"size {(n1, n2)} is smaller than the kernels ({kh}x{kw})")
    work = torch.promote_types(k_left.dtype, torch.float64)
    kl, kr = k_left.to(work), k_right.to(work)
    eps = _prior_eps(kl, kr, sigma2, phi2)
    Kl = torch.fft.fft2(kl, s=(n1, n2))
    Kr = torch.fft.fft2(kr, s=(n1, n2))
    if sigma2 * phi2 == 0:
        return torch.zeros(k_left.shape[:-2], dtype=k_left.dtype, device=k_left.device)
    ratio = eps / (Kl.abs().square() + Kr.abs().square() + eps)
    red = ratio.mean((-2, -1)) if reduction == "mean" else ratio.sum((-2, -1))
    return (sigma2 * red).to(k_left.dtype)


def expected_energy(k_left_true, k_right_true, k_left, k_right, sigma2=SIGMA2, phi2=PHI2, *,
                    size=None, reduction="mean"):
    """Expected energy of a defocus hypothesis (Xin et al. Eq. 4 / supplement Eq. 37).

    For a single fronto-parallel plane with true kernels ``K*`` and a latent image whose power
    spectrum is ``1/|Phi|^2`` (the prior's assumption), the expectation over images and
    noise of the Wiener energy (Eq. 26) of the hypothesis with kernels ``K`` is
    ``data + noise + C2`` with::

        data  = R_f (1/|Phi|^2) |K*_l K_r - K*_r K_l|^2 / D
        noise = sigma^2 R_f (|K*_l|^2 + |K*_r|^2 + eps) / D,   D = |K_l|^2 + |K_r|^2 + eps

    and ``C2 = sigma^2`` per pixel. ``R_f`` is the mean (default, per pixel) or sum over the
    frequencies; ``eps`` as in :func:`bias_correction` (kernels are rescaled to unit sum for
    the formula, so the constants are the paper's). ``noise - B`` is the part of the noise
    term that depends on the true kernels, which Eq. 5 ignores.

    Args:
        k_left_true: true left kernel ``(..., kh, kw)``.
        k_right_true: true right kernel.
        k_left: hypothesis left kernel (same size, leading dims broadcast).
        k_right: hypothesis right kernel.
        sigma2: noise variance.
        phi2: ``|Phi|^2`` for unit-sum views.
        size: DFT size (default the kernel size).
        reduction: ``"mean"`` or ``"sum"``.

    Returns:
        ``(data, noise)`` tensors of the broadcast leading shape.

    Raises:
        ValueError: kernels of different sizes; see :func:`bias_correction`.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(torch.tensor([4.0, 5.0, 6.0]), size=21)
        >>> data, noise = expected_energy(kl[1], kr[1], kl, kr)
        >>> float(data[1]) < 1e-12 and bool(noise[0] < noise[1] < noise[2])
        True
    """
    kt_l, kt_r = _kernel_pair(k_left_true, k_right_true)
    kl, kr = _kernel_pair(k_left, k_right)
    if kt_l.shape[-2:] != kl.shape[-2:]:
        raise ValueError(f"true and hypothesis kernels must have the same size, got "
                         f"{tuple(kt_l.shape[-2:])} and {tuple(kl.shape[-2:])}")
    sigma2, phi2 = _constants(sigma2, phi2)
    require_choice("reduction", reduction, _REDUCTIONS)
    kh, kw = kl.shape[-2:]
    n1, n2 = (kh, kw) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    work = torch.float64

    def unit(a, b):
        s = 0.5 * (a.sum((-2, -1), keepdim=True) + b.sum((-2, -1), keepdim=True))
        return (torch.fft.fft2((a / s).to(work), s=(n1, n2)),
                torch.fft.fft2((b / s).to(work), s=(n1, n2)))

    Tl, Tr = unit(kt_l, kt_r)
    Kl, Kr = unit(kl, kr)
    eps = sigma2 * phi2
    D = Kl.abs().square() + Kr.abs().square() + eps
    red = (lambda x: x.mean((-2, -1))) if reduction == "mean" else (lambda x: x.sum((-2, -1)))
    inv_phi2 = 1.0 / phi2 if phi2 > 0 else math.inf
    data = red(inv_phi2 * (Tl * Kr - Tr * Kl).abs().square() / D)
    noise = sigma2 * red((Tl.abs().square() + Tr.abs().square() + eps) / D)
    return data.to(kl.dtype), noise.to(kl.dtype)


def hypothesis_energy(left, right, k_left, k_right, sigma2=SIGMA2, phi2=PHI2, *, window=None,
                      bias=False, padding="reflect", pad_px=None):
    """Per-pixel MAP energy of one defocus hypothesis (Xin et al. supplement Eq. 26).

    With ``C_hat`` from :func:`wiener_dp`, the map is
    ``e(x) = sum_v sum_c (k_v * C_hat - I_v)^2(x) + eps C_hat(x)^2`` summed over channels, where
    ``eps = sigma^2 |Phi|^2 s^2``; by Parseval its sum over a periodic image is Eq. 26 (the
    prior term of a constant ``Phi`` is ``eps ||C_hat||^2``). ``window`` averages the map over a
    square window (the "patch" energy); ``bias=True`` subtracts the per-pixel ``B(d)`` of
    :func:`bias_correction` (``reduction="mean"``, times the number of channels).

    Args:
        left: left view ``(B, C, H, W)``.
        right: right view.
        k_left: hypothesis left kernel, shapes as :func:`wiener_dp`.
        k_right: hypothesis right kernel.
        sigma2: noise variance.
        phi2: ``|Phi|^2`` for unit-sum views.
        window: odd window size for the local mean, or None for the raw map.
        bias: subtract ``B(d)``.
        padding: as :func:`wiener_dp`.
        pad_px: as :func:`wiener_dp`.

    Returns:
        Energy map ``(B, 1, H, W)``.

    Shape:
        See Returns.

    Raises:
        TypeError / ValueError: as :func:`wiener_dp`; even window.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(3.0)
        >>> img = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0))
        >>> e = hypothesis_energy(img, img, kl, kr, window=9)
        >>> e.shape, bool((e >= 0).all())
        (torch.Size([1, 1, 48, 48]), True)
    """
    left, right = _check_views(left, right)
    k_left, k_right = _check_kernels_for(left, k_left, k_right)
    sigma2, phi2 = _constants(sigma2, phi2)
    require_choice("padding", padding, _PADDINGS)
    c, bl, br, eps = _wiener_parts(left, right, k_left, k_right, sigma2, phi2, padding, pad_px)
    e = ((bl - left).square() + (br - right).square() + eps * c.square()).sum(1, keepdim=True)
    if window is not None:
        e = box_mean(e, window)
    if bias:
        b = bias_correction(k_left, k_right, sigma2, phi2).to(e.dtype)   # (b1, c1)
        b = b.expand(e.shape[0], left.shape[1]).sum(1)                   # over channels
        e = e - b.reshape(-1, 1, 1, 1)
    return e.to(left.dtype)


class WienerDefocus(NamedTuple):
    """Result of :func:`wiener_defocus`.

    Attributes:
        defocus: ``(B, 1, H, W)`` chosen hypothesis (its kernel scale) per pixel.
        all_in_focus: ``(B, C, H, W)`` Wiener estimate of the chosen hypothesis per pixel.
        index: ``(B, 1, H, W)`` long index of the chosen hypothesis.
        energy: ``(D, B, 1, H, W)`` window-averaged energy of every hypothesis (bias
            subtracted when ``bias=True``).
        scales: ``(D,)`` the hypotheses.
    """

    defocus: torch.Tensor
    all_in_focus: torch.Tensor
    index: torch.Tensor
    energy: torch.Tensor
    scales: torch.Tensor


def wiener_defocus(left, right, k_left, k_right, scales, *, sigma2=SIGMA2, phi2=PHI2, window=31,
                   bias=True, cell_hw=None, origin=(0, 0), blend_px=8, pad_px=None,
                   kernel_size=None):
    """Wiener depth-from-defocus baseline: the least-energy hypothesis per pixel.

    For each scale ``d`` in ``scales`` the reference kernels are resized by ``d``
    (:func:`dplab.optics.psf.rescale_kernel`, Xin et al. Sec. 4: kernels at defocus ``d'`` are the
    calibrated ones scaled by ``d'/d``), both views are deconvolved (Eq. 27), the per-pixel
    energy (Eq. 26) is averaged over a ``window x window`` neighbourhood, ``B(d)`` (Eq. 5) is
    subtracted when ``bias`` is set, and each pixel takes the hypothesis of least energy
    (Zhou et al. 2009; the baseline of Xin et al. Table 1). The all-in-focus image takes each
    pixel from the Wiener estimate of its chosen hypothesis.

    Spatially varying kernels ``(R, C, kh, kw)`` (the Pixel 4 6x8 calibration grid) are handled
    tile by tile with :class:`dplab.xin.mpi.KernelGrid`: each grid cell (plus a ``blend_px`` margin
    and a halo of real image of about one kernel size) is deconvolved with its own kernels and
    the cells are cross-faded over ``2 blend_px`` pixels.

    Args:
        left: left view ``(B, C, H, W)``.
        right: right view.
        k_left: reference left kernel ``(kh, kw)`` or grid ``(R, C, kh, kw)``.
        k_right: reference right kernel(s), same shape.
        scales: 1-D sequence or tensor of kernel scales (the hypotheses), all > 0.
        sigma2: noise variance.
        phi2: ``|Phi|^2`` for unit-sum views.
        window: odd window of the local energy average (1 = per pixel).
        bias: subtract ``B(d)``.
        cell_hw: grid cell size ``(h, w)`` or int; default the image split evenly.
        origin: image coordinates ``(y, x)`` of the grid's top-left corner (``(-top, -left)``
            for a crop at ``(top, left)`` of the calibrated field).
        blend_px: half-width of the cross-fade between cells.
        pad_px: halo around each tile (default the kernel size).
        kernel_size: size of the rescaled kernels (default the reference size).

    Returns:
        :class:`WienerDefocus`.

    Raises:
        TypeError / ValueError: invalid images, kernels, scales or grid.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(4.0, size=21)
        >>> img = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> out = wiener_defocus(img, img, kl, kr, [0.5, 1.0, 1.5], window=15)
        >>> out.defocus.shape, out.energy.shape
        (torch.Size([1, 1, 64, 64]), torch.Size([3, 1, 1, 64, 64]))
    """
    from dplab.xin.mpi import KernelGrid, _grid_kernels, _scaled_kernels  # mpi imports this module

    left, right = _check_views(left, right)
    sigma2, phi2 = _constants(sigma2, phi2)
    window = require_positive("window", window, integer=True)
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    kl, kr, grid_shape = _grid_kernels(k_left, k_right)
    if kl.device != left.device:
        raise ValueError(f"kernels are on {kl.device} but the images are on {left.device}")
    sc = _scales_tensor(scales, left.device)
    H, W = left.shape[-2:]
    grid = KernelGrid((H, W), grid_shape, cell_hw=cell_hw, origin=origin, blend_px=blend_px)
    kls, krs = _scaled_kernels(kl, kr, sc, kernel_size)          # (D, R*C, k, k)
    ks = kls.shape[-1]
    halo = ks if pad_px is None else require_positive("pad_px", pad_px, allow_zero=True,
                                                      integer=True)
    th, tw = grid.tile_hw
    n1, n2 = fast_len(th + 2 * halo), fast_len(tw + 2 * halo)
    ht, wl = (n1 - th) // 2, (n2 - tw) // 2
    halos = (ht, n1 - th - ht, wl, n2 - tw - wl)
    B, C = left.shape[:2]
    tiles = grid.split(torch.stack([left, right]), halos, mode="reflect")  # (2, B, C, nR, nC, n1, n2)
    tiles = tiles.reshape(2, B, C, grid.n_tiles, n1, n2)
    Xl, Xr = torch.fft.rfft2(tiles[0]), torch.fft.rfft2(tiles[1])
    idx = grid.kernel_index.reshape(-1).to(left.device)
    energies, estimates = [], []
    for d in range(sc.numel()):
        kld, krd = kls[d, idx], krs[d, idx]                         # (T, k, k)
        Kl, Kr = _spectrum(kld, n1, n2), _spectrum(krd, n1, n2)    # (T, n1, n2h)
        eps = _prior_eps(kld, krd, sigma2, phi2)                    # (T, 1, 1)
        Cf = (Xl * Kl.conj() + Xr * Kr.conj()) / (Kl.abs().square() + Kr.abs().square() + eps)
        crop = (..., slice(ht, ht + th), slice(wl, wl + tw))
        c = torch.fft.irfft2(Cf, s=(n1, n2))[crop]
        rl = torch.fft.irfft2(Cf * Kl, s=(n1, n2))[crop] - tiles[0][crop]
        rr = torch.fft.irfft2(Cf * Kr, s=(n1, n2))[crop] - tiles[1][crop]
        e = (rl.square() + rr.square() + eps * c.square()).sum(1, keepdim=True)  # (B,1,T,th,tw)
        if bias:
            b = bias_correction(kld, krd, sigma2, phi2)             # (T,)
            e = e - C * b.reshape(-1, 1, 1).to(e.dtype)
        shape = grid.grid_hw + (th, tw)
        energies.append(grid.merge(e.reshape((B, 1) + shape)))
        estimates.append(grid.merge(c.reshape((B, C) + shape)))
    energy = box_mean(torch.stack(energies), window)                # (D, B, 1, H, W)
    index = energy.argmin(0)                                         # (B, 1, H, W)
    est = torch.stack(estimates)                                     # (D, B, C, H, W)
    aif = est.gather(0, index.unsqueeze(0).expand((1,) + est.shape[1:]))[0]
    return WienerDefocus(sc[index].to(left.dtype), aif.to(left.dtype), index,
                         energy.to(left.dtype), sc)


def _scales_tensor(scales, device) -> torch.Tensor:
    if isinstance(scales, torch.Tensor):
        sc = scales.detach().to(device=device, dtype=torch.float64).reshape(-1)
    else:
        try:
            sc = torch.tensor([float(require_number("scales", s)) for s in scales],
                              dtype=torch.float64, device=device)
        except TypeError:
            raise TypeError(f"scales must be a 1-D sequence or tensor of numbers, got "
                            f"{type(scales).__name__}") from None
    if sc.numel() == 0:
        raise ValueError("scales is empty")
    if not bool(torch.isfinite(sc).all()) or bool((sc <= 0).any()):
        raise ValueError(f"scales must be finite and > 0, got {sc.tolist()}")
    return sc


# ----------------------------------------------------------------------------- noise-bias study
# Helpers for the Monte Carlo check of Xin et al. supplement C.2 (book chapter "wiener_bias"):
# a single fronto-parallel plane rendered with *periodic* convolution, so that the DFT
# identities of the derivation hold exactly and the closed forms can be compared with sampling.
__all__ += ["periodic_blur", "energy_curve", "scene_expected_energy", "NoiseBiasTrials",
            "noise_bias_trials"]


def _hypothesis_stack(k_left, k_right):
    """``(D, kh, kw)`` stacks of hypothesis kernels (a single pair becomes ``D = 1``)."""
    k_left, k_right = _kernel_pair(k_left, k_right)
    if k_left.ndim == 2:
        k_left, k_right = k_left[None], k_right[None]
    if k_left.ndim != 3:
        raise ValueError(f"k_left and k_right must have shape (kh, kw) or (D, kh, kw), got "
                         f"{tuple(k_left.shape)}")
    return k_left, k_right


def _true_and_hypotheses(k_left_true, k_right_true, k_left, k_right):
    """The true pair ``(kh, kw)`` and the hypothesis stack ``(D, kh, kw)``, checked to match."""
    tl, tr = _kernel_pair(k_left_true, k_right_true)
    if tl.ndim != 2:
        raise ValueError(f"k_left_true must have shape (kh, kw), got {tuple(tl.shape)}")
    kls, krs = _hypothesis_stack(k_left, k_right)
    if tl.shape != kls.shape[-2:]:
        raise ValueError(f"true and hypothesis kernels must have the same size, got "
                         f"{tuple(tl.shape)} and {tuple(kls.shape[-2:])}")
    return tl, tr, kls, krs


def _single_scene(scene) -> torch.Tensor:
    scene = require_image("scene", scene)
    if scene.shape[:2] != (1, 1):
        raise ValueError(f"scene must be one single-channel image (1, 1, H, W), got "
                         f"{tuple(scene.shape)}")
    return scene


def periodic_blur(image, kernel):
    """Circular (periodic) convolution of images with kernels, by real FFTs.

    ``out(y) = sum_i kernel(i) image((y - i + c) mod (H, W))`` with the kernel centre
    ``c = (kh // 2, kw // 2)`` (the convention of :func:`dplab.ops.fftconv.fft_conv2d`). This is the
    image formation model of Xin et al. supplement Eq. 19 with the product of Eq. 20 holding
    exactly on the image's DFT grid, which the derivation of Eq. 37 assumes.

    Args:
        image: ``(B, C, H, W)`` floating tensor.
        kernel: ``(kh, kw)``, ``(C, kh, kw)`` or ``(B, C, kh, kw)`` non-negative kernel(s) no
            larger than the image; leading dims broadcast against ``(B, C)``.

    Returns:
        ``(B', C', H, W)`` blurred images (broadcast of the leading dims).

    Raises:
        TypeError / ValueError: non-tensor inputs, NaN values, negative kernel entries,
            kernel larger than the image, non-broadcastable shapes, mismatched devices.

    Example:
        >>> img = torch.zeros(1, 1, 8, 8); img[0, 0, 0, 0] = 1.0
        >>> k = torch.arange(9.0).reshape(3, 3)
        >>> out = periodic_blur(img, k)              # an impulse at a corner wraps around
        >>> torch.equal(out[0, 0, -1, -1].round(), k[0, 0]), torch.equal(out[0, 0, 1, 1].round(), k[2, 2])
        (True, True)
    """
    image = require_image("image", image)
    kernel = require_kernel("kernel", kernel)
    if kernel.device != image.device:
        raise ValueError(f"kernel is on {kernel.device} but image is on {image.device}")
    if kernel.ndim > 4:
        raise ValueError(f"kernel must have shape (kh, kw), (C, kh, kw) or (B, C, kh, kw), got "
                         f"{tuple(kernel.shape)}")
    H, W = image.shape[-2:]
    lead = (1,) * (4 - kernel.ndim) + tuple(kernel.shape[:-2])
    try:
        torch.broadcast_shapes(tuple(image.shape[:2]), lead[:2])
    except RuntimeError:
        raise ValueError(f"kernel leading dims {tuple(kernel.shape[:-2])} do not broadcast against "
                         f"the image's (B, C) = {tuple(image.shape[:2])}") from None
    work = torch.promote_types(image.dtype, torch.float32)
    k = kernel.to(work).reshape(lead + tuple(kernel.shape[-2:]))
    out = torch.fft.irfft2(torch.fft.rfft2(image.to(work)) * _spectrum(k, H, W), s=(H, W))
    return out.to(image.dtype)


def energy_curve(left, right, k_left, k_right, sigma2=SIGMA2, phi2=PHI2):
    """Per-pixel MAP energy (Xin et al. supplement Eq. 26) of every hypothesis, periodic images.

    For each hypothesis pair ``k_left[d], k_right[d]`` this is the mean over pixels and the sum
    over channels of :func:`hypothesis_energy` with ``padding="circular"`` (no bias
    subtracted): Eq. 26 divided by the number of pixels, for images that are periodic (as made
    by :func:`periodic_blur`).

    Args:
        left: left views ``(B, C, H, W)`` (e.g. ``B`` Monte Carlo trials).
        right: right views, same shape.
        k_left: hypothesis left kernels ``(D, kh, kw)`` (or one ``(kh, kw)``).
        k_right: hypothesis right kernels, same shape.
        sigma2: noise variance of the views, also the Wiener regulariser's ``sigma^2``.
        phi2: ``|Phi|^2`` for unit-sum views (paper 1e2).

    Returns:
        ``(B, D)`` float tensor (dtype of the views).

    Raises:
        TypeError / ValueError: as :func:`hypothesis_energy`; kernels not ``(D, kh, kw)``.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kls, krs = butterworth_dp(torch.tensor([2.0, 3.0, 4.0]), size=15)
        >>> c = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> e = energy_curve(periodic_blur(c, kls[1]), periodic_blur(c, krs[1]), kls, krs, sigma2=1e-8)
        >>> e.shape, int(e.argmin())        # noise-free: the true kernel explains the views best
        (torch.Size([1, 3]), 1)
    """
    left, right = _check_views(left, right)
    kls, krs = _hypothesis_stack(k_left, k_right)
    if kls.device != left.device:
        raise ValueError(f"kernels are on {kls.device} but the images are on {left.device}")
    out = [hypothesis_energy(left, right, kls[d], krs[d], sigma2, phi2, padding="circular")
           .mean((1, 2, 3)) for d in range(kls.shape[0])]
    return torch.stack(out, 1)


def scene_expected_energy(scene, k_left_true, k_right_true, k_left, k_right, sigma2=SIGMA2,
                          phi2=PHI2):
    """Closed-form noise expectation of :func:`energy_curve` for one known periodic scene.

    Xin et al. supplement Eqs. 28-37 average the energy over the noise *and* over latent images
    drawn from the prior (:func:`expected_energy`). Holding the latent image ``C`` fixed and
    averaging over the noise only gives, per pixel (``R_f`` the mean over the ``H x W`` DFT
    frequencies, ``P(f) = |C(f)|^2 / (H W)`` the scene's power spectrum, ``T`` the true and
    ``K`` the hypothesis kernels' spectra, ``eps = sigma^2 |Phi|^2 s^2``,
    ``D = |K_l|^2 + |K_r|^2 + eps``)::

        mismatch = R_f P |T_l K_r - T_r K_l|^2 / D          (zero at the true kernels)
        residual = R_f P eps (|T_l|^2 + |T_r|^2) / D        (the true-kernel term Eq. 5 drops)
        noise    = sigma^2 R_f (1 + eps / D) = sigma^2 + B  (B of Eq. 5 on the image's grid)

    and ``E[energy] = mismatch + residual + noise``. Derivation: per frequency the minimised
    energy of Eq. 26 is ``|I|^2 - |K^H I|^2 / D`` for the view vector ``I = (I_l, I_r)`` and
    ``K = (K_l, K_r)``; with ``I = T C + N`` and ``E[N N^H] = sigma^2 H W Id`` the noise part
    is ``sigma^2 (2 - |K|^2 / D)`` and the signal part ``P (|T|^2 - |K^H T|^2 / D)``, which
    Lagrange's identity ``|T|^2 |K|^2 - |K^H T|^2 = |T_l K_r - T_r K_l|^2`` splits as above.

    Args:
        scene: latent image ``(1, 1, H, W)`` (dplab brightness: the views are
            ``periodic_blur(scene, k)`` with kernels summing to 1/2).
        k_left_true: true left kernel ``(kh, kw)``.
        k_right_true: true right kernel ``(kh, kw)``.
        k_left: hypothesis left kernels ``(D, kh, kw)``.
        k_right: hypothesis right kernels ``(D, kh, kw)``.
        sigma2: noise variance of the views (= the regulariser's ``sigma^2``).
        phi2: ``|Phi|^2`` for unit-sum views.

    Returns:
        ``(mismatch, residual, noise)``, each a ``(D,)`` float64 tensor.

    Raises:
        TypeError / ValueError: invalid scene (not ``(1, 1, H, W)``), kernels or constants.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kls, krs = butterworth_dp(torch.tensor([2.0, 3.0, 4.0]), size=15)
        >>> c = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> m, r, n = scene_expected_energy(c, kls[1], krs[1], kls, krs)
        >>> float(m[1]) < 1e-12, bool(n[0] < n[1] < n[2])
        (True, True)
    """
    scene = _single_scene(scene)
    tl, tr, kls, krs = _true_and_hypotheses(k_left_true, k_right_true, k_left, k_right)
    sigma2, phi2 = _constants(sigma2, phi2)
    H, W = scene.shape[-2:]
    f64 = torch.float64
    C = torch.fft.fft2(scene[0, 0].to(f64))
    P = C.abs().square() / (H * W)

    def spec(k):
        kh, kw = k.shape[-2:]
        grid = F.pad(k.to(f64), (0, W - kw, 0, H - kh))
        return torch.fft.fft2(torch.roll(grid, (-(kh // 2), -(kw // 2)), (-2, -1)))

    if kls.shape[-2] > H or kls.shape[-1] > W:
        raise ValueError(f"the kernels ({tuple(kls.shape[-2:])}) are larger than the scene ({H}x{W})")
    Tl, Tr = spec(tl), spec(tr)
    Kl, Kr = spec(kls), spec(krs)
    eps = _prior_eps(kls.to(f64), krs.to(f64), sigma2, phi2)
    D = Kl.abs().square() + Kr.abs().square() + eps
    mismatch = (P * (Tl * Kr - Tr * Kl).abs().square() / D).mean((-2, -1))
    residual = (P * eps * (Tl.abs().square() + Tr.abs().square()) / D).mean((-2, -1))
    noise = sigma2 * (1 + eps / D).mean((-2, -1))
    return mismatch, residual, noise


class NoiseBiasTrials(NamedTuple):
    """Result of :func:`noise_bias_trials`.

    Attributes:
        energy: ``(T, D)`` per-pixel energy of every hypothesis in every trial (uncorrected).
        bias: ``(D,)`` ``B(d)`` of Eq. 5 on the image's DFT grid (per-pixel mean).
        index_uncorrected: ``(T,)`` argmin of ``energy`` per trial.
        index_corrected: ``(T,)`` argmin of ``energy - bias`` per trial.
    """

    energy: torch.Tensor
    bias: torch.Tensor
    index_uncorrected: torch.Tensor
    index_corrected: torch.Tensor


def noise_bias_trials(k_left_true, k_right_true, k_left, k_right, noise_sigma, trials, *,
                      generator, scene=None, size=None, phi2=PHI2, chunk=16):
    """Monte Carlo over noise of the defocus-hypothesis energy of a single plane (supp. C.2).

    Each trial renders the two views of one fronto-parallel plane with the true kernels
    (:func:`periodic_blur`, supplement Eq. 19), adds independent white Gaussian noise of
    standard deviation ``noise_sigma`` to each view (Eq. 16), and scores every hypothesis by
    :func:`energy_curve` with the regulariser ``sigma^2 = noise_sigma^2`` (the derivation's
    assumption that the model knows the noise level). ``B(d)`` (Eq. 5) is computed on the
    image's frequency grid with the same ``sigma^2``.

    Args:
        k_left_true: true left kernel ``(kh, kw)``.
        k_right_true: true right kernel ``(kh, kw)``.
        k_left: hypothesis left kernels ``(D, kh, kw)``.
        k_right: hypothesis right kernels ``(D, kh, kw)``.
        noise_sigma: noise standard deviation (> 0), in the views' units.
        trials: number of Monte Carlo trials ``T``.
        generator: ``torch.Generator`` for the noise (and for prior scenes).
        scene: fixed latent image ``(1, 1, H, W)``; None draws a new white Gaussian latent image
            per trial with the prior's flat power spectrum ``1/|Phi|^2`` (supp. Eq. 25) at
            unit-sum brightness, i.e. standard deviation ``1 / (s |Phi|)`` at the kernels'
            brightness ``s`` (0.2 for dplab's half-sum kernels).
        size: ``(H, W)`` or int of the prior scenes (required when ``scene`` is None).
        phi2: ``|Phi|^2`` for unit-sum views.
        chunk: trials evaluated together (memory bound only).

    Returns:
        :class:`NoiseBiasTrials` (float64).

    Raises:
        TypeError / ValueError: invalid kernels, scene, size, counts, or no generator.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kls, krs = butterworth_dp(torch.tensor([2.0, 3.0, 4.0]), size=15, dtype=torch.float64)
        >>> out = noise_bias_trials(kls[1], krs[1], kls, krs, 0.01, 3, size=32,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> out.energy.shape, out.bias.shape, out.index_corrected.shape
        (torch.Size([3, 3]), torch.Size([3]), torch.Size([3]))
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    tl, tr, kls, krs = _true_and_hypotheses(k_left_true, k_right_true, k_left, k_right)
    sigma = float(require_positive("noise_sigma", noise_sigma))
    trials = require_positive("trials", trials, integer=True)
    chunk = require_positive("chunk", chunk, integer=True)
    phi2 = float(require_positive("phi2", phi2))
    f64 = torch.float64
    tl, tr, kls, krs = tl.to(f64), tr.to(f64), kls.to(f64), krs.to(f64)
    if scene is None:
        if size is None:
            raise ValueError("size is required when scene is None (prior scenes)")
        if isinstance(size, (tuple, list)) and len(size) == 2:
            H, W = (require_positive("size", v, integer=True) for v in size)
        else:
            H = W = require_positive("size", size, integer=True)
        s = float(0.5 * (tl.sum() + tr.sum()))
        prior_std = 1.0 / (s * math.sqrt(phi2))
    else:
        scene = _single_scene(scene).to(f64)
        H, W = scene.shape[-2:]
    if kls.shape[-2] > H or kls.shape[-1] > W:
        raise ValueError(f"the kernels ({tuple(kls.shape[-2:])}) are larger than the scene ({H}x{W})")
    dev = kls.device
    sigma2 = sigma * sigma
    if scene is not None:
        clean_l, clean_r = periodic_blur(scene.to(dev), tl), periodic_blur(scene.to(dev), tr)
    energies = []
    for start in range(0, trials, chunk):
        t = min(chunk, trials - start)
        if scene is None:
            c = prior_std * torch.randn((t, 1, H, W), generator=generator, dtype=f64).to(dev)
            cl, cr = periodic_blur(c, tl), periodic_blur(c, tr)
        else:
            cl, cr = clean_l, clean_r
        nl = torch.randn((t, 1, H, W), generator=generator, dtype=f64).to(dev)
        nr = torch.randn((t, 1, H, W), generator=generator, dtype=f64).to(dev)
        energies.append(energy_curve(cl + sigma * nl, cr + sigma * nr, kls, krs, sigma2, phi2))
    energy = torch.cat(energies)
    bias = bias_correction(kls, krs, sigma2, phi2, size=(H, W)).to(f64)
    return NoiseBiasTrials(energy, bias, energy.argmin(1), (energy - bias).argmin(1))
