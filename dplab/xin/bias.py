"""The bias-correction term ``B(d)`` of Xin et al. and the expected energy it comes from.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021; main paper Sec. 4.2 (Eqs. 4-5) and
supplement C.2 (Eqs. 28-37).

Model (supp. Eq. 20): ``I_v = K_v^{d*} C + N_v`` for the views ``v in {l, r}``, white noise of
variance ``sigma^2`` and a Gaussian prior on the latent image ``C`` with inverse power spectrum
``|Phi|^2`` (Eqs. 23-25, constant in the paper). The expected MAP energy (Eq. 26) of a defocus
hypothesis ``d`` over images and noise (Eq. 37, Eq. 4 of the main paper; :func:`expected_energy`)
has a term that depends on the noise and favours small kernels whatever the scene; Eq. 5
keeps its part that does not depend on the true kernels (:func:`bias_correction`)::

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
kernel sums (1 for the paper, 1/2 for dplab), the regulariser is ``sigma^2 |Phi|^2 s^2``
(:func:`prior_eps`). This makes ``B`` independent of the normalisation and makes the Wiener
estimate (:func:`dplab.xin.wiener.wiener_dp`) have the brightness the kernels imply.
"""

from __future__ import annotations

import math

import torch

from dplab._validate import require_choice, require_positive
from dplab.xin.kernels import kernel_pair

__all__ = ["SIGMA2", "PHI2", "CODE_C", "check_constants", "prior_eps", "bias_correction",
           "expected_energy"]

#: Noise variance of Sec. 4.3 (and the authors' code, ``(5e-3)^2 * 2``).
SIGMA2 = 5e-5
#: Constant inverse spectral power ``|Phi|^2`` of Sec. 4.3 (for unit-sum view kernels).
PHI2 = 1e2
#: The authors' code constant, ``C = sigma^2 |Phi|^2`` (5e-5 * 100).
CODE_C = 5e-3

_REDUCTIONS = ("mean", "sum")


def check_constants(sigma2, phi2):
    """``(sigma2, phi2)`` as floats, each checked to be a number >= 0.

    Example:
        >>> check_constants(5e-5, 100)
        (5e-05, 100.0)
    """
    return (float(require_positive("sigma2", sigma2, allow_zero=True)),
            float(require_positive("phi2", phi2, allow_zero=True)))


def prior_eps(k_left, k_right, sigma2, phi2):
    """``sigma^2 |Phi|^2 s^2`` with ``s`` the mean view-kernel sum, shape ``(..., 1, 1)``.

    The Wiener regulariser of supplement Eq. 27 written for unit-sum views (see the module
    docstring), so that ``sigma2`` and ``phi2`` keep the paper's meaning for any kernel sum.

    Args:
        k_left: left kernels ``(..., kh, kw)``.
        k_right: right kernels, same shape.
        sigma2: noise variance ``sigma^2``.
        phi2: ``|Phi|^2`` for unit-sum views.

    Returns:
        ``(..., 1, 1)`` tensor.

    Example:
        >>> k = torch.full((3, 3), 0.5 / 9)          # dplab's half-sum kernels
        >>> round(float(prior_eps(k, k, SIGMA2, PHI2)), 8)   # 5e-5 * 100 * 0.25
        0.00125
    """
    s = 0.5 * (k_left.sum((-2, -1), keepdim=True) + k_right.sum((-2, -1), keepdim=True))
    return sigma2 * phi2 * s.square()


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
    k_left, k_right = kernel_pair(k_left, k_right)
    sigma2, phi2 = check_constants(sigma2, phi2)
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
    eps = prior_eps(kl, kr, sigma2, phi2)
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
    kt_l, kt_r = kernel_pair(k_left_true, k_right_true)
    kl, kr = kernel_pair(k_left, k_right)
    if kt_l.shape[-2:] != kl.shape[-2:]:
        raise ValueError(f"true and hypothesis kernels must have the same size, got "
                         f"{tuple(kt_l.shape[-2:])} and {tuple(kl.shape[-2:])}")
    sigma2, phi2 = check_constants(sigma2, phi2)
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

