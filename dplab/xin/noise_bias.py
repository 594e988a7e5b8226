"""Monte Carlo check of the noise bias of the defocus-hypothesis energy (Xin et al., supp. C.2).

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021; main paper Sec. 4.2 (Eqs. 4-5) and
supplement C.2 (Eqs. 16-37).

The helpers behind the book chapter "wiener_bias": a single fronto-parallel plane rendered with
*periodic* convolution (:func:`periodic_blur`), so that the DFT identities of the derivation
hold exactly and the closed forms can be compared with sampling:

* :func:`energy_curve`: the per-pixel MAP energy (Eq. 26) of every hypothesis;
* :func:`scene_expected_energy`: its closed-form expectation over the noise for one known scene
  (the prior-averaged form is :func:`dplab.xin.bias.expected_energy`, Eq. 37);
* :func:`noise_bias_trials`: the Monte Carlo over noise, with and without the bias correction
  ``B(d)`` of Eq. 5 (:func:`dplab.xin.bias.bias_correction`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dplab._validate import require_image, require_kernel, require_positive
from dplab.xin.bias import PHI2, SIGMA2, bias_correction, check_constants, prior_eps
from dplab.xin.kernels import kernel_pair, kernel_spectrum
from dplab.xin.wiener import check_views, hypothesis_energy

__all__ = ["periodic_blur", "energy_curve", "scene_expected_energy", "NoiseBiasTrials",
           "noise_bias_trials"]

#: ``trials x H x W`` above which :func:`noise_bias_trials` shows a progress bar.
PROGRESS_WORK = 5e7


def _hypothesis_stack(k_left, k_right):
    """``(D, kh, kw)`` stacks of hypothesis kernels (a single pair becomes ``D = 1``)."""
    k_left, k_right = kernel_pair(k_left, k_right)
    if k_left.ndim == 2:
        k_left, k_right = k_left[None], k_right[None]
    if k_left.ndim != 3:
        raise ValueError(f"k_left and k_right must have shape (kh, kw) or (D, kh, kw), got "
                         f"{tuple(k_left.shape)}")
    return k_left, k_right


def _true_and_hypotheses(k_left_true, k_right_true, k_left, k_right):
    """The true pair ``(kh, kw)`` and the hypothesis stack ``(D, kh, kw)``, checked to match."""
    tl, tr = kernel_pair(k_left_true, k_right_true)
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
    out = torch.fft.irfft2(torch.fft.rfft2(image.to(work)) * kernel_spectrum(k, H, W), s=(H, W))
    return out.to(image.dtype)


def energy_curve(left, right, k_left, k_right, sigma2=SIGMA2, phi2=PHI2):
    """Per-pixel MAP energy (Xin et al. supplement Eq. 26) of every hypothesis, periodic images.

    For each hypothesis pair ``k_left[d], k_right[d]`` this is the mean over pixels and the sum
    over channels of :func:`dplab.xin.wiener.hypothesis_energy` with ``padding="circular"`` (no
    bias subtracted): Eq. 26 divided by the number of pixels, for images that are periodic (as
    made by :func:`periodic_blur`).

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
        TypeError / ValueError: as :func:`dplab.xin.wiener.hypothesis_energy`; kernels not
            ``(D, kh, kw)``.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kls, krs = butterworth_dp(torch.tensor([2.0, 3.0, 4.0]), size=15)
        >>> c = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> e = energy_curve(periodic_blur(c, kls[1]), periodic_blur(c, krs[1]), kls, krs, sigma2=1e-8)
        >>> e.shape, int(e.argmin())        # noise-free: the true kernel explains the views best
        (torch.Size([1, 3]), 1)
    """
    left, right = check_views(left, right)
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
    drawn from the prior (:func:`dplab.xin.bias.expected_energy`). Holding the latent image
    ``C`` fixed and averaging over the noise only gives, per pixel (``R_f`` the mean over the
    ``H x W`` DFT frequencies, ``P(f) = |C(f)|^2 / (H W)`` the scene's power spectrum, ``T``
    the true and ``K`` the hypothesis kernels' spectra, ``eps = sigma^2 |Phi|^2 s^2``,
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
    sigma2, phi2 = check_constants(sigma2, phi2)
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
    eps = prior_eps(kls.to(f64), krs.to(f64), sigma2, phi2)
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
                      generator, scene=None, size=None, phi2=PHI2, chunk=16, progress=None):
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
        progress: show a tqdm progress bar over the trials; None (default): when
            ``trials x H x W`` exceeds :data:`PROGRESS_WORK`. ``TQDM_DISABLE=1`` in the
            environment silences it.

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
    bar = None
    if (trials * H * W > PROGRESS_WORK) if progress is None else progress:
        bar = tqdm(total=trials, desc="noise-bias trials", unit="trial")
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
        if bar is not None:
            bar.update(t)
    if bar is not None:
        bar.close()
    energy = torch.cat(energies)
    bias = bias_correction(kls, krs, sigma2, phi2, size=(H, W)).to(f64)
    return NoiseBiasTrials(energy, bias, energy.argmin(1), (energy - bias).argmin(1))

