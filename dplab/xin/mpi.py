"""MPI optimisation of Xin et al.: a defocus map and an all-in-focus image from one DP pair.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Sec. 4.3, Sec. 5.1 and supplement D.

:func:`optimize` fits a multiplane image (:class:`dplab.xin.multiplane.MPI`) whose DP
rendering (Eq. 2, :func:`dplab.xin.multiplane.render_layers` with the spatially varying blur
:class:`dplab.xin.blur.DPBlur`) matches the two views. Intensities and alphas live in logit
space; Adam with the learning rate decaying exponentially from 0.3 to 0.1 (Sec. 5.1,
:func:`lr_schedule`); the loss of Eq. 6 with the terms and weights of the authors' code
(:mod:`dplab.xin.mpi_losses`). The result holds the all-in-focus image (Eq. 1) and the
defocus map (supp. Eq. 15).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from dplab._validate import require_image, require_kernel, require_positive
from dplab.xin.bias import PHI2, SIGMA2
from dplab.xin.blur import DPBlur
from dplab.xin.kernels import scales_tensor
from dplab.xin.mpi_losses import LossWeights, mpi_loss
from dplab.xin.multiplane import MPI, layer_scales, render_layers

__all__ = ["optimize", "MPIResult", "lr_schedule"]


def lr_schedule(iteration: int, iterations: int, lr_start: float = 0.3, lr_end: float = 0.1) -> float:
    """Learning rate decaying exponentially (log-linearly) from ``lr_start`` to ``lr_end``.

    ``lr = exp((1 - t) log lr_start + t log lr_end)``, ``t = clip(iteration / iterations, 0, 1)``
    (Xin et al. Sec. 5.1; the authors' ``_log_decay``).

    Example:
        >>> round(lr_schedule(0, 100), 6), round(lr_schedule(50, 100), 6), round(lr_schedule(100, 100), 6)
        (0.3, 0.173205, 0.1)
    """
    t = min(max(iteration / max(iterations, 1), 0.0), 1.0)
    return math.exp((1 - t) * math.log(lr_start) + t * math.log(lr_end))


@dataclass
class MPIResult:
    """Output of :func:`optimize`.

    Attributes:
        all_in_focus: ``(1, C, H, W)`` composite (Eq. 1), in the input's units with the
            brightness the kernels imply (``left + right`` for half-sum kernels).
        defocus: ``(1, 1, H, W)`` defocus map (Eq. 15), in kernel-scale units.
        mpi: the optimised :class:`dplab.xin.multiplane.MPI` (same units).
        history: one dict per logged iteration: ``iteration``, ``lr``, ``total`` and each loss
            term (``data``, ``aux``, ``intensity``, ``alpha``, ``entropy``), and ``seconds``.
        left: ``(1, C, H, W)`` rendered left view (input units).
        right: ``(1, C, H, W)`` rendered right view.
        seconds: wall time of the iterations.
    """

    all_in_focus: torch.Tensor
    defocus: torch.Tensor
    mpi: MPI
    history: list = field(default_factory=list)
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    seconds: float = 0.0


def optimize(left, right, k_left, k_right, n_layers: int = 12, iterations: int = 10_000, scales=None,
             *, weights=None, bias: bool = True, sigma2: float = SIGMA2, phi2: float = PHI2,
             lr=(0.3, 0.1), cell_hw=None, origin=(0, 0), blend_px: int = 8, kernel_size=None,
             generator: torch.Generator | None = None, seed: int | None = None,
             init_noise: float = 0.0, device=None, callback: Callable | None = None,
             log_every: int = 50, progress: bool = False) -> MPIResult:
    """Fit an MPI to a DP pair (Xin et al. Sec. 4.3, supplement D): defocus map + deblurring.

    Steps (the authors' code):

    1. Observations are divided by their common maximum; ``s = 0.5 / mean(obs)`` is the
       intensity normalisation of supplement D (applied to the smoothness terms and to the
       data-term weights, as the code does).
    2. Layers at ``scales`` (back to front; :func:`dplab.xin.multiplane.layer_scales`);
       reference kernels resized per layer and made unit-sum (:class:`dplab.xin.blur.DPBlur`);
       per-layer bias ``B(d_i)`` of Eq. 5 averaged over the grid cells and multiplied by
       ``mean(obs) / 0.5``.
    3. Parameters in logit space: intensities initialised to ``mean(obs)`` (view units), alphas
       to ``1 / (i + 1)`` so that all layers start with equal transmittance; the back layer is
       held opaque (the code reaches the same with ``logit(1) = inf``).
    4. Adam (betas 0.9/0.999, eps 1e-8), learning rate from ``lr[0]`` to ``lr[1]`` log-linearly
       over ``iterations``; non-finite gradient entries are zeroed (the code zeroes NaNs).
    5. Loss of Eq. 6 (:func:`dplab.xin.mpi_losses.mpi_loss`).

    Speed: each iteration costs one batched FFT of the layer tiles and two inverse FFTs per
    view and map (forward and backward). On a CPU shared with other jobs, PyTorch's
    intra-op threads can stall each other badly (measured here: 168x224, 8 layers, 0.13-0.27
    s/iteration with ``torch.set_num_threads(1)``, 0.5-1.7 s with 2 threads on 2 busy cores);
    set the thread count to the cores you actually have free.

    Args:
        left: left view ``(1, C, H, W)`` (vignetting-corrected; see
            :func:`dplab.data.pixel4.vignetting_gain`).
        right: right view, same shape.
        k_left: reference left kernel ``(kh, kw)`` or grid ``(R, C, kh, kw)``.
        k_right: reference right kernel(s).
        n_layers: number of layers ``N`` (paper: 12).
        iterations: Adam iterations (paper: 10,000).
        scales: a pair ``(near, far)`` (tuple or list of two numbers: ``N`` layers evenly
            spaced from ``far`` at the back to ``near`` at the front,
            :func:`dplab.xin.multiplane.layer_scales`), or a 1-D tensor (or a sequence of
            ``N != 2`` numbers) of the ``N`` scales back to front; default ``(0.5, 1.6)``
            (scenes 1-2 of the authors' settings, :func:`dplab.data.pixel4.scene_settings`).
        weights: :class:`dplab.xin.mpi_losses.LossWeights` (default: supplement D / the code).
        bias: use the bias-corrected losses (Eqs. 7-9); False for the "no B" ablation.
        sigma2: noise variance of Eq. 5.
        phi2: ``|Phi|^2`` of Eq. 5 (unit-sum views).
        lr: ``(start, end)`` learning rates.
        cell_hw: kernel-grid cell size (see :class:`dplab.xin.kernels.KernelGrid`).
        origin: kernel-grid origin.
        blend_px: cross-fade between grid cells (0: the code's hard cells).
        kernel_size: size of the resized kernels.
        generator: random generator for ``init_noise``.
        seed: seed for ``init_noise`` when no generator is given.
        init_noise: std of Gaussian noise added to the initial logits (0: the code's
            deterministic start).
        device: where to run (default: the inputs' device); CPU and CUDA alike.
        callback: called as ``callback(iteration, terms, mpi)`` at every logged iteration.
        log_every: logging period (also the period of the history).
        progress: show a tqdm progress bar.

    Returns:
        :class:`MPIResult`.

    Raises:
        TypeError / ValueError: invalid inputs (batch size other than 1, shapes, kernels,
            scales, iterations).

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(3.0, size=15)
        >>> img = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> res = optimize(img / 2, img / 2, kl, kr, n_layers=3, iterations=5, scales=(0.5, 1.5))
        >>> res.all_in_focus.shape, res.defocus.shape, len(res.history)
        (torch.Size([1, 1, 32, 32]), torch.Size([1, 1, 32, 32]), 2)
    """
    left = require_image("left", left)
    right = require_image("right", right)
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same shape, got {tuple(left.shape)} and "
                         f"{tuple(right.shape)}")
    if left.shape[0] != 1:
        raise ValueError(f"optimize fits one image at a time: left has batch size {left.shape[0]}")
    n_layers = require_positive("n_layers", n_layers, integer=True)
    if n_layers < 2:
        raise ValueError(f"n_layers must be >= 2, got {n_layers}")
    iterations = require_positive("iterations", iterations, allow_zero=True, integer=True)
    log_every = require_positive("log_every", log_every, integer=True)
    init_noise = float(require_positive("init_noise", init_noise, allow_zero=True))
    if not (isinstance(lr, (tuple, list)) and len(lr) == 2):
        raise ValueError(f"lr must be a pair (start, end), got {lr!r}")
    lr0, lr1 = (float(require_positive("lr", v)) for v in lr)
    weights = LossWeights() if weights is None else weights
    if not isinstance(weights, LossWeights):
        raise TypeError(f"weights must be a dplab.xin.mpi_losses.LossWeights, got {type(weights).__name__}")
    dev = torch.device(device) if device is not None else left.device
    left, right = left.to(dev, torch.float32), right.to(dev, torch.float32)
    k_left, k_right = require_kernel("k_left", k_left), require_kernel("k_right", k_right)
    k_left, k_right = k_left.to(dev, torch.float32), k_right.to(dev, torch.float32)

    if scales is None:
        scales = (0.5, 1.6)
    if isinstance(scales, (tuple, list)) and len(scales) == 2:
        sc = layer_scales(n_layers, scales[0], scales[1], device=dev)
    else:
        sc = scales_tensor(scales, dev).float()
        if sc.numel() != n_layers:
            raise ValueError(f"scales has {sc.numel()} entries but n_layers is {n_layers}")

    H, W = left.shape[-2:]
    C = left.shape[1]
    blur = DPBlur(k_left, k_right, sc, (H, W), cell_hw=cell_hw, origin=origin,
                  blend_px=blend_px, kernel_size=kernel_size)
    gain = blur.to_view_brightness()

    obs_max = torch.maximum(left.max(), right.max())
    if float(obs_max) <= 0:
        raise ValueError("left and right are all zero")
    obs = torch.cat([left, right], 0) / obs_max                           # (2, C, H, W)
    mean_obs = obs.mean()
    layer_bias = blur.bias(sigma2, phi2) * (mean_obs / 0.5) if bias else torch.zeros(n_layers, device=dev)
    w = weights.resolved(n_layers)

    init_c = float(mean_obs.clamp(1e-4, 1 - 1e-4))
    theta_c = torch.full((n_layers, C, H, W), math.log(init_c / (1 - init_c)), device=dev)
    a0 = 1.0 / torch.arange(2, n_layers + 1, dtype=torch.float32, device=dev)
    theta_a = torch.logit(a0).reshape(-1, 1, 1, 1).expand(n_layers - 1, 1, H, W).clone()
    if init_noise > 0:
        gen = generator if generator is not None else torch.Generator().manual_seed(
            0 if seed is None else int(seed))
        theta_c += init_noise * torch.randn(theta_c.shape, generator=gen).to(dev)
        theta_a += init_noise * torch.randn(theta_a.shape, generator=gen).to(dev)
    theta_c.requires_grad_(True)
    theta_a.requires_grad_(True)
    opt = torch.optim.Adam([theta_c, theta_a], lr=lr0, betas=(0.9, 0.999), eps=1e-8)
    one = torch.ones(1, 1, H, W, device=dev)

    def params():
        return torch.sigmoid(theta_c), torch.cat([one, torch.sigmoid(theta_a)], 0)

    def snapshot() -> MPI:
        with torch.no_grad():
            c, a = params()
            return MPI(c * obs_max / blur.gains.mean(), a, sc)

    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=iterations, desc="MPI")
    t0 = time.perf_counter()
    for it in range(iterations + 1):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(it, iterations, lr0, lr1)
        log = it % log_every == 0 or it == iterations
        c, a = params()
        total, terms = mpi_loss(c, a, obs, blur, gain, layer_bias, w, detail=log)
        if log:
            entry = {"iteration": it, "lr": opt.param_groups[0]["lr"], "total": float(total.detach())}
            entry.update({k: float(v) for k, v in terms.items()})
            entry["seconds"] = time.perf_counter() - t0
            history.append(entry)
            if callback is not None:
                callback(it, entry, snapshot())
        if it == iterations:
            break                      # the last pass only evaluates (like the code's final loss)
        opt.zero_grad(set_to_none=True)
        total.backward()
        for p in (theta_c, theta_a):
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    mpi = snapshot()
    with torch.no_grad():
        c, a = params()
        views, _, _ = render_layers(c, a, blur, gain)
        views = views * obs_max
    return MPIResult(mpi.all_in_focus(), mpi.defocus_map(), mpi, history,
                     views[0:1], views[1:2], seconds)

