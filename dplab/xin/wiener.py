"""Two-view Wiener deconvolution and the defocus-hypothesis energy of Xin et al.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021; main paper Sec. 4.2-4.3 and supplement
C.2 (Eqs. 20-27). The same machinery is the "Wiener deconvolution" baseline of the paper's
Table 1 (Zhou, Lin, Nayar, ICCV 2009 / Tang and Kutulakos, CVPR 2012): for every defocus
hypothesis ``d`` the two DP views are deconvolved jointly, the hypothesis is scored by the MAP
energy of Eq. 26, and each pixel takes the hypothesis of least (locally averaged) energy
(:func:`wiener_defocus`).

Model (supp. Eq. 20): ``I_v = K_v^{d*} C + N_v`` for the views ``v in {l, r}``, white noise of
variance ``sigma^2`` and a Gaussian prior on the latent image ``C`` with inverse power spectrum
``|Phi|^2`` (Eqs. 23-25, constant in the paper). Then

* Eq. 27, generalized Wiener deconvolution with two observations (:func:`wiener_dp`)::

      C_hat = (I_l conj(K_l) + I_r conj(K_r)) / (|K_l|^2 + |K_r|^2 + sigma^2 |Phi|^2)

* Eq. 26, the energy of a hypothesis ``d`` (:func:`hypothesis_energy`)::

      E(d) = sum_v ||K_v^d C_hat - I_v||^2 + ||sigma Phi C_hat||^2

* Eq. 5, the bias correction subtracted from it (:func:`dplab.xin.bias.bias_correction`,
  where the constants ``sigma^2 = 5e-5``, ``|Phi|^2 = 1e2`` of Sec. 4.3 and the authors'
  code's reading of them are discussed).

dplab's kernels sum to 1/2 per view; the regulariser is written for unit-sum views
(``sigma^2 |Phi|^2 s^2`` with ``s`` the mean view-kernel sum, :func:`dplab.xin.bias.prior_eps`),
so :func:`wiener_dp` returns the latent image at the brightness the kernels imply
(``left + right`` for dplab's kernels).

Boundaries. Real images are not periodic; :func:`wiener_dp` extends the image by reflection
(``padding="reflect"``, default) by ``pad_px`` pixels (and up to the next fast FFT size)
before the circular FFT and crops the result. ``padding="circular"`` treats the image as
periodic (exact for scenes made by circular convolution, as in the tests).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_image, require_positive
from dplab.ops.fftconv import fast_len, pad_index
from dplab.xin.bias import PHI2, SIGMA2, bias_correction, check_constants, prior_eps
from dplab.xin.kernels import (KernelGrid, grid_kernels, kernel_pair, kernel_spectrum, scaled_kernels,
                               scales_tensor)

__all__ = ["wiener_dp", "hypothesis_energy", "wiener_defocus", "WienerDefocus", "box_mean",
           "check_views"]

_PADDINGS = ("reflect", "replicate", "zero", "circular")


def _pad_to(x: torch.Tensor, n1: int, n2: int, top: int, left: int, mode: str) -> torch.Tensor:
    """Extend ``(..., H, W)`` to ``(..., n1, n2)`` with the image at ``[top, left]``."""
    H, W = x.shape[-2:]
    if mode == "zero":
        return F.pad(x, (left, n2 - W - left, top, n1 - H - top))
    x = x.index_select(-2, pad_index(H, top, n1 - H - top, mode, x.device))
    return x.index_select(-1, pad_index(W, left, n2 - W - left, mode, x.device))


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
        idx = pad_index(n, h + 1, h, "replicate", out.device)
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
    Kl, Kr = kernel_spectrum(kl, n1, n2), kernel_spectrum(kr, n1, n2)
    eps = prior_eps(kl, kr, sigma2, phi2)
    Xl, Xr = torch.fft.rfft2(xl.to(work)), torch.fft.rfft2(xr.to(work))
    C = (Xl * Kl.conj() + Xr * Kr.conj()) / (Kl.abs().square() + Kr.abs().square() + eps)
    crop = (slice(top, top + H), slice(lft, lft + W))
    c = torch.fft.irfft2(C, s=(n1, n2))[..., crop[0], crop[1]]
    bl = torch.fft.irfft2(C * Kl, s=(n1, n2))[..., crop[0], crop[1]]
    br = torch.fft.irfft2(C * Kr, s=(n1, n2))[..., crop[0], crop[1]]
    return c, bl, br, eps


def check_views(left, right):
    """Check a DP pair: two images ``(B, C, H, W)`` of the same shape on the same device.

    Returns:
        ``(left, right)`` unchanged.

    Raises:
        TypeError / ValueError: non-tensor or non-finite images, wrong or mismatched shapes,
            different devices.

    Example:
        >>> l, r = check_views(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    """
    left = require_image("left", left)
    right = require_image("right", right)
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same shape, got {tuple(left.shape)} and "
                         f"{tuple(right.shape)}")
    if left.device != right.device:
        raise ValueError(f"left is on {left.device} but right is on {right.device}")
    return left, right


def _check_kernels_for(left, k_left, k_right):
    k_left, k_right = kernel_pair(k_left, k_right)
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
    left, right = check_views(left, right)
    k_left, k_right = _check_kernels_for(left, k_left, k_right)
    sigma2, phi2 = check_constants(sigma2, phi2)
    require_choice("padding", padding, _PADDINGS)
    c, _, _, _ = _wiener_parts(left, right, k_left, k_right, sigma2, phi2, padding, pad_px)
    return c.to(left.dtype)


def hypothesis_energy(left, right, k_left, k_right, sigma2=SIGMA2, phi2=PHI2, *, window=None,
                      bias=False, padding="reflect", pad_px=None):
    """Per-pixel MAP energy of one defocus hypothesis (Xin et al. supplement Eq. 26).

    With ``C_hat`` from :func:`wiener_dp`, the map is
    ``e(x) = sum_v sum_c (k_v * C_hat - I_v)^2(x) + eps C_hat(x)^2`` summed over channels, where
    ``eps = sigma^2 |Phi|^2 s^2``; by Parseval its sum over a periodic image is Eq. 26 (the
    prior term of a constant ``Phi`` is ``eps ||C_hat||^2``). ``window`` averages the map over a
    square window (the "patch" energy); ``bias=True`` subtracts the per-pixel ``B(d)`` of
    :func:`dplab.xin.bias.bias_correction` (``reduction="mean"``, times the number of channels).

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
    left, right = check_views(left, right)
    k_left, k_right = _check_kernels_for(left, k_left, k_right)
    sigma2, phi2 = check_constants(sigma2, phi2)
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
    (:func:`dplab.optics.kernels.rescale_kernel`, Xin et al. Sec. 4: kernels at defocus ``d'`` are the
    calibrated ones scaled by ``d'/d``), both views are deconvolved (Eq. 27), the per-pixel
    energy (Eq. 26) is averaged over a ``window x window`` neighbourhood, ``B(d)`` (Eq. 5) is
    subtracted when ``bias`` is set, and each pixel takes the hypothesis of least energy
    (Zhou et al. 2009; the baseline of Xin et al. Table 1). The all-in-focus image takes each
    pixel from the Wiener estimate of its chosen hypothesis.

    Spatially varying kernels ``(R, C, kh, kw)`` (the Pixel 4 6x8 calibration grid) are handled
    tile by tile with :class:`dplab.xin.kernels.KernelGrid`: each grid cell (plus a ``blend_px`` margin
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
    left, right = check_views(left, right)
    sigma2, phi2 = check_constants(sigma2, phi2)
    window = require_positive("window", window, integer=True)
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    kl, kr, grid_shape = grid_kernels(k_left, k_right)
    if kl.device != left.device:
        raise ValueError(f"kernels are on {kl.device} but the images are on {left.device}")
    sc = scales_tensor(scales, left.device)
    H, W = left.shape[-2:]
    grid = KernelGrid((H, W), grid_shape, cell_hw=cell_hw, origin=origin, blend_px=blend_px)
    kls, krs = scaled_kernels(kl, kr, sc, kernel_size)           # (D, R*C, k, k)
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
        Kl, Kr = kernel_spectrum(kld, n1, n2), kernel_spectrum(krd, n1, n2)  # (T, n1, n2h)
        eps = prior_eps(kld, krd, sigma2, phi2)                     # (T, 1, 1)
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

