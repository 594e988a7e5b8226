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
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dplab._io import atomic_file
from dplab._validate import require_image, require_kernel, require_positive
from dplab.optics.kernels import rescale_kernel
from dplab.xin.bias import PHI2, SIGMA2
from dplab.xin.blur import DPBlur
from dplab.xin.kernels import scales_tensor
from dplab.xin.mpi_losses import LossWeights, mpi_loss
from dplab.xin.multiplane import MPI, layer_scales, render_layers

__all__ = ["optimize", "MPIResult", "lr_schedule", "reuse_freed_memory", "PROGRESS_WORK"]


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


#: ``iterations x H x W`` (summed over the levels) from which :func:`optimize` shows a progress bar.
PROGRESS_WORK = 2e8


_MALLOC_SET = False


def reuse_freed_memory() -> bool:
    """Let this process reuse the memory of freed large tensors instead of mapping fresh pages.

    glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MB by
    default) with freshly mapped pages that the kernel zero-fills on first touch, and unmaps
    them on ``free``. An MPI iteration at full resolution allocates and frees dozens of tensors
    of 65-390 MB, so each of them pays a page fault per 4 KB: measured here, computing a fresh
    128 MB tensor takes 5x as long as writing into a reused one, and one iteration 35 % longer.
    This raises the mmap and trim thresholds to 1 GB (``mallopt``), process-wide and once: the
    freed memory stays in the heap for the next allocation (the process keeps its peak memory).
    A no-op (returning False) where the C library is not glibc.

    Returns:
        True if the thresholds were set (now or by an earlier call).
    """
    global _MALLOC_SET
    if _MALLOC_SET:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3 (malloc.h)
        _MALLOC_SET = bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, 1 << 30))
    except (OSError, AttributeError):
        _MALLOC_SET = False
    return _MALLOC_SET


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _coarse_levels(coarse, hw, cell_hw, origin) -> list[tuple[int, int]]:
    """Check ``coarse`` (``(factor, iterations)`` pairs, coarse to fine, factors > 1 decreasing)."""
    if coarse is None:
        return []
    if not isinstance(coarse, (tuple, list)):
        raise TypeError(f"coarse must be a sequence of (factor, iterations) pairs, got {type(coarse).__name__}")
    levels = []
    for item in coarse:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"coarse must hold (factor, iterations) pairs, got {item!r}")
        f = require_positive("coarse factor", item[0], integer=True)
        n = require_positive("coarse iterations", item[1], allow_zero=True, integer=True)
        if f < 2 or (levels and f >= levels[-1][0]):
            raise ValueError(f"coarse factors must be > 1 and decrease from level to level, got {coarse!r}")
        sizes = list(hw) + ([] if cell_hw is None else list(_pair(cell_hw))) + list(_pair(origin))
        if any(int(v) % f for v in sizes):
            raise ValueError(f"factor {f} must divide the image size {tuple(hw)}, the cell size "
                             f"{cell_hw} and the origin {origin}")
        levels.append((f, n))
    return levels


def _params(theta_c, theta_a):
    """Colours and alphas (the back layer opaque) from the logits."""
    one = torch.ones_like(theta_a[:1])
    return torch.sigmoid(theta_c), torch.cat([one, torch.sigmoid(theta_a)], 0)


class _Checkpoint:
    """Where :func:`optimize` saves its state every ``every`` iterations, and what it resumes from."""

    def __init__(self, path, every: int, signature: dict):
        self.path = None if path is None else Path(path)
        self.every = require_positive("checkpoint_every", every, integer=True)
        self.signature = signature
        self.state = None
        if self.path is not None and self.path.is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            if state.get("signature") != signature:
                raise ValueError(f"checkpoint {self.path} belongs to another run ({state.get('signature')}, "
                                 f"this run: {signature}); delete it or pass another path")
            self.state = state

    def resume(self, level: int):
        """The saved state if it is of ``level`` (else None; levels before it are done)."""
        return self.state if self.state is not None and self.state["level"] == level else None

    def done(self, level: int) -> bool:
        return self.state is not None and self.state["level"] > level

    def save(self, level, it, theta_c, theta_a, opt, history, seconds):
        if self.path is None:
            return
        state = {"signature": self.signature, "level": level, "iteration": it, "seconds": seconds,
                 "theta_c": theta_c.detach().cpu(), "theta_a": theta_a.detach().cpu(),
                 "adam": None if opt is None else opt.state_dict(), "history": list(history)}
        with atomic_file(self.path, fsync=True) as fh:
            torch.save(state, fh)


def _adam(theta_c, theta_a, obs, blur, gain, layer_bias, w, iterations, lrs, log_every, history, tag,
          t0, bar, callback, obs_max, sc, ckpt: _Checkpoint, level: int):
    """Adam on the logits at one resolution (steps 4-5 of :func:`optimize`); appends to ``history``."""
    theta_c, theta_a = theta_c.requires_grad_(True), theta_a.requires_grad_(True)
    # fused: one pass over the parameters and moments per step (4x faster than the default on a CPU)
    opt = torch.optim.Adam([theta_c, theta_a], lr=lrs[0], betas=(0.9, 0.999), eps=1e-8,
                           fused=theta_c.dtype in (torch.float32, torch.float64))
    start = 0
    saved = ckpt.resume(level)
    if saved is not None and saved["adam"] is not None:       # resume after iteration saved["iteration"]
        with torch.no_grad():
            theta_c.copy_(saved["theta_c"])
            theta_a.copy_(saved["theta_a"])
        opt.load_state_dict(saved["adam"])
        start = saved["iteration"] + 1
        if bar is not None:
            bar.update(start)
    for it in range(start, iterations + 1):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(it, iterations, *lrs)
        log = it % log_every == 0 or it == iterations
        c, a = _params(theta_c, theta_a)
        total, terms = mpi_loss(c, a, obs, blur, gain, layer_bias, w, detail=log)
        if log:
            entry = {"iteration": it, **tag, "lr": opt.param_groups[0]["lr"], "total": float(total.detach())}
            entry.update({k: float(v) for k, v in terms.items()})
            entry["seconds"] = time.perf_counter() - t0
            history.append(entry)
            if callback is not None:
                callback(it, entry, MPI(c.detach() * obs_max / blur.gains.mean(), a.detach(), sc))
        if it == iterations:
            break                      # the last pass only evaluates (like the code's final loss)
        opt.zero_grad(set_to_none=True)
        total.backward()
        for p in (theta_c, theta_a):
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
        if bar is not None:
            bar.update(1)
        if (it + 1) % ckpt.every == 0 and it + 1 < iterations:
            ckpt.save(level, it, theta_c, theta_a, opt, history, time.perf_counter() - t0)
    ckpt.save(level + 1, -1, theta_c, theta_a, None, history, time.perf_counter() - t0)
    return theta_c.detach(), theta_a.detach()



def optimize(left, right, k_left, k_right, n_layers: int = 12, iterations: int = 10_000, scales=None,
             *, weights=None, bias: bool = True, sigma2: float = SIGMA2, phi2: float = PHI2,
             lr=(0.3, 0.1), cell_hw=None, origin=(0, 0), blend_px: int = 8, kernel_size=None,
             generator: torch.Generator | None = None, seed: int | None = None,
             init_noise: float = 0.0, device=None, callback: Callable | None = None,
             log_every: int = 50, progress: bool | None = None, coarse=None, checkpoint=None,
             checkpoint_every: int = 500, reuse_memory: bool = True) -> MPIResult:
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

    Speed: each iteration costs one FFT per layer, map and tile and two inverse FFTs per view
    (forward and backward, :mod:`dplab.xin.blur`), and the losses' elementwise passes, whose
    gradients are written by hand where autograd would keep many tensors of the size of the
    MPI (:mod:`dplab.xin.mpi_losses`), and :func:`reuse_freed_memory`. One full-resolution
    iteration (1008x1344, 12 layers, the 6x8 grid of 61-px kernels) took 5.1-5.6 s on one
    thread of a shared 2-core CPU, 4.3-4.6x less than the step it replaced, measured side by
    side (``benchmarks/mpi.py --reference``, ``benchmarks/results/xin_table1/``); 10,000
    iterations remain 15 hours, hence ``coarse`` and ``checkpoint``. On a CPU shared with
    other jobs, PyTorch's intra-op threads can stall each other badly; set the thread count
    to the cores you actually have free.

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
        coarse: coarse-to-fine schedule, ``(factor, iterations)`` pairs from coarse to fine
            (factors > 1, decreasing, dividing the image, cell size and origin), e.g.
            ``((4, 2000), (2, 1000))``: the MPI is first fitted to the views box-downsampled
            by 4 (kernels resized by 1/4, :func:`dplab.optics.kernels.rescale_kernel`; cells,
            origin and ``blend_px`` scaled) for 2,000 iterations with the learning rate decaying
            from ``lr[0]`` to ``lr[1]``, its logits are upsampled bilinearly (pixel centres) and
            fitted at 1/2 for 1,000 iterations, and so on, ending with ``iterations`` at full
            resolution; every level after the first runs at the constant rate ``lr[1]``, and
            starts a fresh Adam. None: single scale, the paper's schedule. History entries
            then carry ``level`` (the factor) and ``iteration`` counts within the level;
            ``callback`` receives the MPI at the level's resolution.
        checkpoint: a file (``.pt``) where the optimiser's state (logits, Adam's moments,
            history, elapsed time) is written atomically every ``checkpoint_every`` iterations
            and at the end of every level; if it exists when the call starts, the run resumes
            from it (a stopped run continues where it was; a finished one returns at once).
            A checkpoint of a run with other settings is refused. None: no checkpoints.
        checkpoint_every: iterations between checkpoints.
        reuse_memory: call :func:`reuse_freed_memory` first (glibc: freed large tensors are
            reused instead of being mapped and zero-filled anew; process-wide).
        progress: show a tqdm progress bar; None (default): for long runs only
            (``iterations x H x W >= 2e8``, e.g. 150 iterations at 1008x1344 or the paper's
            10,000 at 144x144). ``TQDM_DISABLE=1`` in the environment silences it (the book's
            runner sets it).

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

    if reuse_memory:
        reuse_freed_memory()
    H, W = left.shape[-2:]
    C = left.shape[1]
    levels = _coarse_levels(coarse, (H, W), cell_hw, origin) + [(1, iterations)]
    obs_max = torch.maximum(left.max(), right.max())
    if float(obs_max) <= 0:
        raise ValueError("left and right are all zero")
    w = weights.resolved(n_layers)
    ckpt = _Checkpoint(checkpoint, checkpoint_every, {
        "hw": (H, W), "n_layers": n_layers, "levels": levels, "scales": [round(float(v), 6) for v in sc],
        "lr": (lr0, lr1), "bias": bool(bias), "init_noise": init_noise, "seed": seed})
    history = [] if ckpt.state is None else list(ckpt.state["history"])
    bar = None
    work = sum(n * (H // f) * (W // f) for f, n in levels)
    if (work >= PROGRESS_WORK) if progress is None else progress:
        bar = tqdm(total=sum(n for _, n in levels), desc="MPI", unit="it")
    t0 = time.perf_counter() - (0.0 if ckpt.state is None else ckpt.state["seconds"])
    theta_c = theta_a = None
    def setup(f):
        """The blur, view gains, observations and layer bias at downsampling ``f``."""
        h, wd = H // f, W // f
        if f == 1:
            kl, kr, lcell, lorigin, lblend, lsize = k_left, k_right, cell_hw, origin, blend_px, kernel_size
        else:
            size = 2 * math.ceil(max(k_left.shape[-2:]) // 2 / f) + 1
            kl, kr = rescale_kernel(k_left, 1.0 / f, size), rescale_kernel(k_right, 1.0 / f, size)
            lcell = None if cell_hw is None else tuple(v // f for v in _pair(cell_hw))
            lorigin = tuple(v // f for v in _pair(origin))
            lblend, lsize = max(1, round(blend_px / f)) if blend_px else 0, None
        blur = DPBlur(kl, kr, sc, (h, wd), cell_hw=lcell, origin=lorigin, blend_px=lblend, kernel_size=lsize)
        obs = torch.cat([left, right], 0)
        obs = (obs if f == 1 else F.avg_pool2d(obs, f)) / obs_max         # (2, C, h, w)
        layer_bias = blur.bias(sigma2, phi2) * (obs.mean() / 0.5) if bias else torch.zeros(n_layers, device=dev)
        return blur, blur.to_view_brightness(), obs, layer_bias

    for level, (f, n_it) in enumerate(levels):
        if ckpt.done(level):                   # finished before the run was stopped
            if bar is not None:
                bar.update(n_it)
            if ckpt.state["level"] == level + 1:
                theta_c, theta_a = ckpt.state["theta_c"].to(dev), ckpt.state["theta_a"].to(dev)
            if level == len(levels) - 1:
                blur, gain, _, _ = setup(f)
            continue
        h, wd = H // f, W // f
        blur, gain, obs, layer_bias = setup(f)
        mean_obs = obs.mean()
        if theta_c is None:
            init_c = float(mean_obs.clamp(1e-4, 1 - 1e-4))
            theta_c = torch.full((n_layers, C, h, wd), math.log(init_c / (1 - init_c)), device=dev)
            a0 = 1.0 / torch.arange(2, n_layers + 1, dtype=torch.float32, device=dev)
            theta_a = torch.logit(a0).reshape(-1, 1, 1, 1).expand(n_layers - 1, 1, h, wd).clone()
            if init_noise > 0:
                gen = generator if generator is not None else torch.Generator().manual_seed(
                    0 if seed is None else int(seed))
                theta_c += init_noise * torch.randn(theta_c.shape, generator=gen).to(dev)
                theta_a += init_noise * torch.randn(theta_a.shape, generator=gen).to(dev)
        else:                          # carry the MPI up: its logits, bilinearly (pixel centres)
            theta_c, theta_a = (F.interpolate(t.detach(), size=(h, wd), mode="bilinear", align_corners=False)
                                for t in (theta_c, theta_a))
        lrs = (lr0, lr1) if level == 0 else (lr1, lr1)
        tag = {"level": f} if len(levels) > 1 else {}
        theta_c, theta_a = _adam(theta_c, theta_a, obs, blur, gain, layer_bias, w, n_it, lrs, log_every,
                                 history, tag, t0, bar, callback, obs_max, sc, ckpt, level)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        c, a = _params(theta_c, theta_a)
        mpi = MPI(c * obs_max / blur.gains.mean(), a, sc)
        views, _, _ = render_layers(c, a, blur, gain)
        views = views * obs_max
    return MPIResult(mpi.all_in_focus(), mpi.defocus_map(), mpi, history,
                     views[0:1], views[1:2], seconds)

