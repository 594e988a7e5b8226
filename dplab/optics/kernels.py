"""Kernels on a pixel grid: the conventions, the disc and the Gaussian, resampling, comparison.

These are the single-view building blocks of chapters 1-2; the dual-pixel PSF models built
from them live in :mod:`dplab.optics.psf`.

Grid convention: a kernel of odd size ``K`` has its centre at index ``K // 2``; ``x`` grows
with the column index (to the right) and ``y`` with the row index (down). Kernels are
convolution kernels (PSFs), as in :func:`dplab.ops.fftconv.fft_conv2d`.

Contents: the anti-aliased uniform disc, the thin-lens circle of confusion (RDPD Eq. 3's
``C``; :func:`disk`), the sampled Gaussian (:func:`gaussian`), kernel resampling with defocus
size (Xin et al., ICCV 2021, Sec. 4; :func:`rescale_kernel`) and the normalised 2-D
cross-correlation used to compare PSFs (RDPD Fig. 5 and S2; :func:`xcorr`). The helpers of
the first section (argument checks, float64 kernel stacks) are shared with the PSF models.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from dplab._validate import require_finite, require_kernel, require_number, require_positive, require_tensor
from dplab.ops.fftconv import fft_conv2d

__all__ = [
    "disk", "gaussian", "rescale_kernel", "xcorr",
    "parameter_batch", "float_dtype", "kernel_size", "centred_grid", "disk_coverage",
    "delta_kernels", "gaussian_kernels", "unbatch",
]


# ----------------------------------------------------------------------------- kernel stacks
def parameter_batch(name: str, value, *, signed: bool, device):
    """Read a kernel parameter (a radius, a sigma) given as a number or a 1-D tensor.

    Args:
        name: the argument's name, for error messages.
        value: a real number, or a 0-D or 1-D finite tensor.
        signed: whether negative values are allowed.
        device: device of the result; default the tensor's, else CPU.

    Returns:
        ``(values, batched, device)``: the values as a float64 1-D tensor, whether ``value``
        was a 1-D tensor (a batch of kernels) and the device used.

    Raises:
        TypeError: not a real number or tensor. ValueError: NaN, a 2-D or empty tensor, or
        a negative value when ``signed`` is False.

    Example:
        >>> parameter_batch("radius_px", 2.5, signed=False, device=None)
        (tensor([2.5000], dtype=torch.float64), False, device(type='cpu'))
    """
    if isinstance(value, torch.Tensor):
        require_finite(name, require_tensor(name, value))
        if value.ndim > 1:
            raise ValueError(f"{name} must be a number or a 1-D tensor, got shape {tuple(value.shape)}")
        batched, dev = value.ndim == 1, device if device is not None else value.device
        if batched and value.numel() == 0:
            raise ValueError(f"{name} is an empty tensor")
        v = value.detach().to(device=dev, dtype=torch.float64).reshape(-1)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or a 1-D floating tensor, "
                        f"got {type(value).__name__} {value!r}")
    else:
        batched, dev = False, device if device is not None else torch.device("cpu")
        v = torch.tensor([float(require_number(name, value))], dtype=torch.float64, device=dev)
    if not signed and bool((v < 0).any()):
        raise ValueError(f"{name} must be >= 0, got min {float(v.min())!r}")
    return v, batched, dev


def float_dtype(dtype) -> torch.dtype:
    """Return ``dtype`` if it is a floating torch dtype; raise ``TypeError`` otherwise."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def kernel_size(size, minimum: int) -> int:
    """An odd kernel size: ``size`` checked (positive, odd), or ``minimum`` when it is None.

    Example:
        >>> kernel_size(None, 7), kernel_size(5, 7)
        (7, 5)
    """
    if size is None:
        return minimum
    size = require_positive("size", size, integer=True)
    if size % 2 == 0:
        raise ValueError(f"size must be odd (the centre is the middle pixel), got {size}")
    return size


def centred_grid(k: int, device) -> torch.Tensor:
    """Offsets ``-(k // 2) .. k // 2`` of the pixel centres from a ``k``-kernel's centre (float64).

    Example:
        >>> centred_grid(5, None)
        tensor([-2., -1.,  0.,  1.,  2.], dtype=torch.float64)
    """
    return torch.arange(k, dtype=torch.float64, device=device) - k // 2


def disk_coverage(radius: torch.Tensor, k: int, supersample: int) -> torch.Tensor:
    """Fraction of each pixel of a ``k x k`` grid covered by a centred disc, per radius.

    Exact along one axis, ``supersample`` sub-lines along the other, averaged over the two
    choices of axis so that the result has the disc's 8-fold symmetry. Not normalised
    (:func:`disk` is).

    Args:
        radius: radii in pixels, a float64 1-D tensor.
        k: grid size.
        supersample: sub-lines per pixel.

    Returns:
        Coverage in [0, 1], float64, shape ``(N, k, k)``.
    """
    uniq, inverse = torch.unique(radius, return_inverse=True)
    c = centred_grid(k, radius.device)
    r2 = uniq.reshape(-1, 1, 1) ** 2
    ax = c.abs().reshape(1, 1, -1) - 0.5
    cov = torch.zeros(uniq.numel(), k, k, dtype=torch.float64, device=radius.device)
    for s in range(supersample):
        yy = c.reshape(1, -1, 1) + (s + 0.5) / supersample - 0.5
        h = (r2 - yy ** 2).clamp_min(0).sqrt()  # half chord of the disc at height yy
        # length of [x - 1/2, x + 1/2] inside [-h, h] for integer x
        cov += torch.minimum((h - ax).clamp(0, 1), 2 * h)
    cov = 0.5 * (cov + cov.transpose(-1, -2)) / supersample  # same treatment of x and y
    return cov[inverse]


def delta_kernels(n: int, k: int, device) -> torch.Tensor:
    """``n`` float64 ``k x k`` deltas (1 at the centre pixel), shape ``(n, k, k)``."""
    d = torch.zeros(n, k, k, dtype=torch.float64, device=device)
    d[:, k // 2, k // 2] = 1.0
    return d


def unbatch(x: torch.Tensor, batched: bool, dtype) -> torch.Tensor:
    """A kernel stack ``(N, K, K)`` in ``dtype``, or its only kernel when not ``batched``."""
    return (x if batched else x[0]).to(dtype)


def gaussian_kernels(sigma: torch.Tensor, k: int, *, truncate: bool = False) -> torch.Tensor:
    """Sampled Gaussians on a ``k x k`` grid, one per sigma, each normalised to sum 1.

    ``truncate`` cuts each to its own ``(2 ceil(3 sigma) + 1)^2`` square so that a batch with
    a common size gives the same kernels as one-by-one calls. Sigma 0 gives a delta.

    Args:
        sigma: standard deviations in pixels, a float64 1-D tensor.
        k: grid size.
        truncate: cut each Gaussian to its own support.

    Returns:
        float64 kernels, shape ``(N, k, k)``.
    """
    c = centred_grid(k, sigma.device)
    r2 = c.reshape(1, -1, 1) ** 2 + c.reshape(1, 1, -1) ** 2
    s = sigma.reshape(-1, 1, 1)
    g = torch.exp(-r2 / (2 * s.clamp_min(1e-300) ** 2))
    if truncate:
        half = torch.ceil(3 * s)
        g = g * ((c.abs().reshape(1, -1, 1) <= half) & (c.abs().reshape(1, 1, -1) <= half))
    g = torch.where(s > 0, g, delta_kernels(sigma.numel(), k, sigma.device))
    return g / g.sum((-2, -1), keepdim=True)


# ----------------------------------------------------------------------------- basic PSFs
def disk(radius_px, size=None, *, supersample: int = 16, device=None, dtype=torch.float32):
    """Anti-aliased uniform disc (pillbox) PSF, the thin-lens CoC (RDPD Eq. 3's ``C``).

    Each pixel holds the fraction of its area inside the circle of radius ``radius_px``
    (integrated exactly along one axis and with ``supersample`` sub-lines along the other,
    averaged over both axis choices), normalised to sum 1. Radius 0 gives a delta.

    Args:
        radius_px: radius in pixels (>= 0), a number or a 1-D tensor of radii.
        size: odd kernel size; default ``2 * ceil(max radius) + 1``.
        supersample: sub-lines per pixel for the anti-aliasing (integer >= 1).
        device: device of the output (default: the radius tensor's, else CPU).
        dtype: floating dtype of the output.

    Returns:
        The normalised disc.

    Shape:
        ``(K, K)`` for a number, ``(N, K, K)`` for ``N`` radii.

    Raises:
        TypeError: radius not a number/tensor (e.g. a string or list), bad dtype.
        ValueError: negative or NaN radius, even or non-positive size.

    Example:
        >>> d = disk(1.5)
        >>> d.shape, round(float(d.sum()), 6)
        (torch.Size([5, 5]), 1.0)
    """
    r, batched, dev = parameter_batch("radius_px", radius_px, signed=False, device=device)
    dtype = float_dtype(dtype)
    s = require_positive("supersample", supersample, integer=True)
    k = kernel_size(size, 2 * math.ceil(float(r.max())) + 1)
    cov = disk_coverage(r, k, s)
    total = cov.sum((-2, -1), keepdim=True)
    out = torch.where(total > 0, cov / total.clamp_min(1e-300), delta_kernels(r.numel(), k, dev))
    return unbatch(out, batched, dtype)


def gaussian(sigma_px, size=None, *, device=None, dtype=torch.float32):
    """Isotropic Gaussian PSF sampled at pixel centres, normalised to sum 1.

    Args:
        sigma_px: standard deviation in pixels (>= 0; 0 gives a delta), number or 1-D tensor.
        size: odd kernel size; default ``2 * ceil(3 * max sigma) + 1``.
        device: device of the output.
        dtype: floating dtype of the output.

    Returns:
        The normalised Gaussian.

    Shape:
        ``(K, K)`` for a number, ``(N, K, K)`` for ``N`` sigmas.

    Raises:
        TypeError: wrong type of ``sigma_px`` or ``dtype``.
        ValueError: negative or NaN sigma, even size.

    Example:
        >>> g = gaussian(1.0)
        >>> g.shape, bool(g[3, 3] == g.max())
        (torch.Size([7, 7]), True)
    """
    s, batched, _ = parameter_batch("sigma_px", sigma_px, signed=False, device=device)
    dtype = float_dtype(dtype)
    k = kernel_size(size, 2 * math.ceil(3 * float(s.max())) + 1)
    return unbatch(gaussian_kernels(s, k), batched, dtype)



# ----------------------------------------------------------------------------- resampling
def rescale_kernel(kernel, scale, size=None):
    """Resample a calibrated kernel to another defocus size (Xin et al. Sec. 4, supp. D).

    Xin et al. assume kernels at defocus ``d'`` are the calibrated kernel at ``d`` scaled by
    ``d'/d``. The output is ``k(u / scale)`` about the centre pixel (index ``size // 2`` on
    each axis, as :func:`dplab.ops.fftconv.fft_conv2d`), bilinearly interpolated, zero outside,
    then multiplied so that its sum equals the input's. For a strong shrink (``scale < 0.5``)
    the kernel is first blurred by a Gaussian of ``0.5 sqrt(1/scale^2 - 1)`` input pixels so
    that the samples do not alias (the authors' code likewise switches from bilinear to a
    Gaussian-weighted resampling beyond 2x). If everything falls between samples the sum is
    put on the centre pixel. Mass pushed beyond the output window is lost before the sum is
    restored.

    Args:
        kernel: ``(..., kh, kw)`` non-negative finite floating tensor.
        scale: magnification ``> 0`` (> 1 enlarges the blur, < 1 shrinks it).
        size: output size, an int or ``(h, w)``; default the input's.

    Returns:
        The resampled kernel, same dtype and leading dims.

    Shape:
        ``(..., kh, kw)`` -> ``(..., h, w)``.

    Raises:
        TypeError: non-tensor kernel or non-numeric scale.
        ValueError: NaN or negative kernel entries, ``scale <= 0``, bad size.

    Example:
        >>> k = disk(4.0, size=21)
        >>> k2 = rescale_kernel(k, 2.0)
        >>> round(float(k2.sum()), 5), int((k2 > 0).sum()) > int((k > 0).sum())
        (1.0, True)
    """
    kernel = require_kernel("kernel", kernel)
    scale = float(require_positive("scale", scale))
    kh, kw = kernel.shape[-2:]
    if size is None:
        ho, wo = kh, kw
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        ho, wo = (require_positive("size", v, integer=True) for v in size)
    else:
        ho = wo = require_positive("size", size, integer=True)
    lead = kernel.shape[:-2]
    work = kernel.dtype if kernel.dtype in (torch.float32, torch.float64) else torch.float32
    x = kernel.reshape(-1, 1, kh, kw).to(work)
    total = x.sum((-2, -1), keepdim=True)
    if scale < 0.5:
        sig = 0.5 * math.sqrt(1.0 / scale ** 2 - 1.0)
        x = fft_conv2d(x, gaussian(sig, device=x.device, dtype=work)).clamp_min(0)
    dev = x.device
    uy = (torch.arange(ho, device=dev, dtype=work) - ho // 2) / scale + kh // 2
    ux = (torch.arange(wo, device=dev, dtype=work) - wo // 2) / scale + kw // 2
    gy, gx = (2 * uy + 1) / kh - 1, (2 * ux + 1) / kw - 1     # align_corners=False coordinates
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).expand(x.shape[0], ho, wo, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    s = out.sum((-2, -1), keepdim=True)
    centre = torch.zeros_like(out)
    centre[..., ho // 2, wo // 2] = 1.0
    out = torch.where(s > 0, out * (total / s.clamp_min(torch.finfo(work).tiny)), centre * total)
    return out.reshape(lead + (ho, wo)).to(kernel.dtype)


# ----------------------------------------------------------------------------- similarity
def xcorr(a, b, *, shift: bool = True):
    """Normalised 2-D cross-correlation of two kernels, maximised over integer shifts.

    RDPD compares PSFs by "the 2D cross correlation" (Fig. 5, supplement Fig. S2) without
    giving a formula. dplab uses the zero-mean normalised (Pearson) correlation between
    ``a`` and every cyclic shift of ``b``,
    ``max_t sum_x (a(x) - mean a)(b(x + t) - mean b) / (||a - mean a|| ||b - mean b||)``,
    computed for all shifts with one FFT. It is 1 for identical kernels and for a copy
    shifted within the window (cyclic shifts keep the zero-mean energy, unlike zero-padded
    shifts), lies in [-1, 1] (Cauchy-Schwarz), and ignores a positive gain and an offset.
    Kernels of different sizes are zero-padded (centred) to the larger size first. MATLAB's
    ``normxcorr2`` agrees at zero shift and differs at other shifts (partial overlaps).

    Args:
        a: ``(..., H, W)`` floating tensor, finite, not constant.
        b: ``(..., H', W')`` floating tensor; leading dims broadcast with ``a``'s.
        shift: if False, return the zero-shift correlation only.

    Returns:
        Correlation per leading index (0-dim tensor for 2-D inputs), dtype of the inputs.

    Shape:
        ``(..., H, W), (..., H', W') -> (...)``.

    Raises:
        TypeError: non-tensor inputs.
        ValueError: fewer than 2 dims, NaN/inf, constant inputs, non-broadcastable dims.

    Example:
        >>> k = disk(5.0) * torch.linspace(1.0, 2.0, 11)     # a disc with a ramp
        >>> round(float(xcorr(k, k)), 6), round(float(xcorr(k, torch.roll(k, 2, -1))), 6)
        (1.0, 1.0)
    """
    a, b = require_tensor("a", a), require_tensor("b", b)
    for name, t in (("a", a), ("b", b)):
        if t.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dims (..., H, W), got {tuple(t.shape)}")
        require_finite(name, t)
    h, w = max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1])

    def _prep(t):
        dh, dw = h - t.shape[-2], w - t.shape[-1]
        t = F.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        t = t - t.mean((-2, -1), keepdim=True)
        return t, t.square().sum((-2, -1)).sqrt()

    dtype = torch.promote_types(a.dtype, b.dtype)
    (a0, na), (b0, nb) = _prep(a.to(dtype)), _prep(b.to(dtype))
    for name, nrm in (("a", na), ("b", nb)):
        if bool((nrm == 0).any()):
            raise ValueError(f"{name} is constant over (H, W); its correlation is undefined")
    try:
        torch.broadcast_shapes(a0.shape, b0.shape)
    except RuntimeError:
        raise ValueError(f"leading dims of a {tuple(a.shape)} and b {tuple(b.shape)} "
                         "do not broadcast") from None
    if shift:
        spec = torch.fft.rfft2(a0).conj() * torch.fft.rfft2(b0)
        num = torch.fft.irfft2(spec, s=(h, w)).amax((-2, -1))
    else:
        num = (a0 * b0).sum((-2, -1))
    return (num / (na * nb)).clamp(-1.0, 1.0)
