"""Speed of the MPI optimisation of Xin et al. (ICCV 2021) at the paper's size, against the step it replaced.

One Adam iteration of `dplab.xin.mpi.optimize` at 1008x1344 with 12 layers and the 6x8 grid of
spatially varying 61x61 kernels (the real Pixel 4 calibration when the data directory is set,
else a synthetic grid of Butterworth DP kernels of the same size). Two references:

* the step dplab had before issue 18, frozen in this file (:class:`ReferenceBlur`,
  :func:`reference_loss`, :func:`reference_run`): every layer, map and tile in one batched
  FFT on 5-smooth grids (250 points for a 184-px tile and a 61-px kernel), autograd through the
  rendering and the losses (reversed ``cumprod`` for the visibility, ``torch.cat`` for the
  3x3 smoothing). ``--reference`` runs it side by side with dplab's step on the same inputs,
  prints the ratio of the times per iteration and checks that both give the same loss on
  the first iterations (:data:`LOSS_RTOL`, :data:`LOSS_CHECKED`);
* the paper's reported time (about 2 hours for 10,000 iterations on an Nvidia Titan RTX with
  the authors' JAX code), labelled as the paper's.

Times are the median over the timed iterations, the first iteration (setup, first touch of
memory) excluded. :func:`rows` returns the figures as result rows for ``benchmarks/suite.py``.

    .venv/bin/python benchmarks/mpi.py [--cpu-iterations 2] [--cuda-iterations 30]
        [--size 1008 1344] [--layers 12] [--threads N] [--blend 8] [--data-dir DIR]
        [--reference] [--reference-iterations 3]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch

from bench_common import make_row
from dplab.ops.fftconv import fast_len
from dplab.optics.psf import butterworth_dp
from dplab.xin.blur import DPBlur
from dplab.xin.kernels import kernel_spectrum
from dplab.xin.mpi import lr_schedule, optimize
from dplab.xin.mpi_losses import LossWeights, charbonnier, collision_entropy, edge_aware_tv, edge_mask
from dplab.xin.multiplane import layer_scales

#: Relative tolerance on the total loss of iterations 0 and 1 (the same initial MPI, and after
#: one Adam step), dplab's step vs the reference (float32; the FFT sizes differ, 256 vs 250
#: points, and so does the rounding). Later iterations drift apart by up to ~1e-3: at the
#: uniform initialisation the alpha gradients are ~1e-5 and differ by ~10 % between two float32
#: evaluations, and Adam's normalised steps (each parameter moves by about the learning rate,
#: whatever its gradient's size) amplify that; it is a property of the problem, not of either step.
LOSS_RTOL = 1e-5
#: Iterations whose losses :data:`LOSS_RTOL` applies to.
LOSS_CHECKED = 2


def kernels(data_dir):
    """Real 6x8 calibration grid if available, else a synthetic one (radii 6-13 px)."""
    try:
        from dplab.data import pixel4

        kl, kr = pixel4.load_kernel_grid(data_dir)
        return kl, kr, "Pixel 4 calibration (6x8 x 61x61)"
    except Exception:  # no data directory: synthetic kernels of the same shape
        radii = torch.linspace(6.0, 13.0, 48)
        kl, kr = butterworth_dp(radii, size=61)
        return kl.reshape(6, 8, 61, 61), kr.reshape(6, 8, 61, 61), "synthetic Butterworth grid (6x8 x 61x61)"


def scene(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, h // 8, w // 8, generator=g)
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.rand(1, 1, h, w, generator=g)
    return 0.25 * img, 0.25 * img.roll(3, -1)


# --------------------------------------------------------------------------------------------
# The step before issue 18, frozen as the reference (do not "fix": it is what the ratio is
# measured against).
# --------------------------------------------------------------------------------------------

class ReferenceBlur(DPBlur):
    """:class:`dplab.xin.blur.DPBlur` as it was: one batched FFT of all layers, maps and tiles on
    a 5-smooth grid of ``tile + kernel - 1`` points, the inverse FFT of the whole grid, the
    tiles merged with ``F.fold``; the adjoint likewise."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        kls, krs = self.kernels
        idx = self.grid.kernel_index.reshape(-1).to(kls.device)
        kh, kw = kls.shape[-2:]
        th, tw = self.grid.tile_hw
        self.ref_fft_hw = n1, n2 = fast_len(th + kh - 1), fast_len(tw + kw - 1)
        ht, hl = kh - 1 - kh // 2, kw - 1 - kw // 2
        self.ref_halo = (ht, n1 - th - ht, hl, n2 - tw - hl)
        self.ref_spectra = kernel_spectrum(torch.stack([kls[:, idx], krs[:, idx]], 1), n1, n2)
        u = torch.fft.fftfreq(n1, dtype=torch.float32).reshape(-1, 1)
        v = torch.fft.rfftfreq(n2, dtype=torch.float32).reshape(1, -1)
        phase = torch.polar(torch.ones(()), -2 * math.pi * (u * ht + v * hl))
        self.ref_adjoint = self.ref_spectra.conj() * phase.to(self.ref_spectra.device)

    def _forward(self, x):
        N, M = x.shape[:2]
        g = self.grid
        (nR, nC), (th, tw), (n1, n2) = g.grid_hw, g.tile_hw, self.ref_fft_hw
        tiles = g.split(x, self.ref_halo, "replicate")
        X = torch.fft.rfft2(tiles).reshape(N, 1, M, g.n_tiles, n1, n2 // 2 + 1)
        Y = X * self.ref_spectra.unsqueeze(2)
        ht, _, hl, _ = self.ref_halo
        y = torch.fft.irfft2(Y, s=(n1, n2))[..., ht:ht + th, hl:hl + tw]
        return g.merge(y.reshape(N, 2, M, nR, nC, th, tw))

    def _adjoint(self, grad):
        N, _, M = grad.shape[:3]
        g = self.grid
        (nR, nC), (n1, n2) = g.grid_hw, self.ref_fft_hw
        tiles = g.merge_adjoint(grad)
        G = torch.fft.rfft2(tiles, s=(n1, n2)).reshape(N, 2, M, g.n_tiles, n1, n2 // 2 + 1)
        X = (G * self.ref_adjoint.unsqueeze(2)).sum(1)
        xt = torch.fft.irfft2(X, s=(n1, n2)).reshape(N, M, nR, nC, n1, n2)
        return g.split_adjoint(xt, self.ref_halo, "replicate")


def _ref_visibility(a):
    ones = torch.ones_like(a[:1])
    if a.shape[0] == 1:
        return ones
    return torch.cat([torch.cumprod((1 - a[1:]).flip(0), 0).flip(0), ones], 0)


def _ref_smooth(x, dim):
    n = x.shape[dim]
    lo = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
    hi = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    return 0.25 * (lo + hi) + 0.5 * x


def _ref_smooth_adjoint(g, dim):
    n = g.shape[dim]
    zero = torch.zeros_like(g.narrow(dim, 0, 1))
    lo = torch.cat([g.narrow(dim, 1, n - 1), zero], dim)
    hi = torch.cat([zero, g.narrow(dim, 0, n - 1)], dim)
    out = 0.25 * (lo + hi) + 0.5 * g
    out.narrow(dim, 0, 1).add_(0.25 * g.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).add_(0.25 * g.narrow(dim, n - 1, 1))
    return out


class _RefBlur121(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _ref_smooth(_ref_smooth(x, -2), -1)

    @staticmethod
    def backward(ctx, g):
        return _ref_smooth_adjoint(_ref_smooth_adjoint(g.contiguous(), -1), -2)


def _ref_local_variance(x):
    return (_RefBlur121.apply(x * x) - _RefBlur121.apply(x).square()).abs()


def reference_loss(colors, alphas, obs, blur, gain, layer_bias, weights, gamma=0.1, beta=1 / 32):
    """``dplab.xin.mpi_losses.mpi_loss`` before issue 18 (autograd through everything)."""
    N, C = colors.shape[:2]
    s = 0.5 / obs.mean()
    B = layer_bias.to(colors.dtype).reshape(N, 1, 1, 1, 1)
    b = blur(torch.cat([colors * alphas, alphas, colors], 1))
    bca, ba, bc = b.split([C, 1, C], dim=2)
    vis = _ref_visibility(ba)
    g = gain.reshape(1, 2, 1, 1, 1).to(colors.dtype)
    views, trans_b, bc = (g * bca * vis).sum(0), ba * vis, g * bc
    l_data = s * charbonnier((views - obs).square(), gamma, (trans_b * B).sum(0)).mean()
    l_aux = s * N * (trans_b.detach() * charbonnier((bc - obs.unsqueeze(0)).square(), gamma, B)).mean()
    t = alphas * _ref_visibility(alphas)
    sharp = (t * colors).sum(0, keepdim=True).mean(1)
    var_s = _ref_local_variance(s * sharp)
    tv_s = charbonnier(var_s, gamma)
    e_s = edge_mask(var_s.detach(), beta)
    tv_l = N * (t.detach()[:, 0] * charbonnier(_ref_local_variance(s * colors.mean(1)), gamma)).mean(0, keepdim=True)
    e_l = edge_mask(((tv_l.detach() + 1).square() - 1) * gamma ** 2, beta)
    l_int = edge_aware_tv(tv_s, e_s) + edge_aware_tv(tv_l, e_l)
    ra, rt = alphas.sqrt().squeeze(1), t.sqrt().squeeze(1)
    l_alpha = edge_aware_tv(charbonnier(_ref_local_variance(torch.stack([ra, rt])), gamma).sum(0), e_s)
    l_ent = (collision_entropy(ra.narrow(0, 1, N - 1), 0) + collision_entropy(rt, 0)).mean()
    return (weights.data * l_data + weights.aux * l_aux + weights.intensity * l_int
            + weights.alpha * l_alpha + weights.entropy * l_ent)


def reference_run(left, right, kl, kr, layers, iterations, *, cell, blend, scales=(0.5, 1.6), weights=None,
                  origin=(0, 0), blur_class=None):
    """The optimisation loop of ``dplab.xin.mpi.optimize`` (defaults: bias on, no initial noise)
    with :class:`ReferenceBlur` and :func:`reference_loss`: ``(totals, stamps)`` per iteration
    (``stamps[i]``: seconds from the start to the loss of iteration ``i``)."""
    sc = layer_scales(layers, *scales, device=left.device)
    H, W = left.shape[-2:]
    blur = (blur_class or ReferenceBlur)(kl, kr, sc, (H, W), cell_hw=cell, origin=origin, blend_px=blend)
    gain = blur.to_view_brightness()
    obs = torch.cat([left, right], 0) / torch.maximum(left.max(), right.max())
    mean_obs = obs.mean()
    layer_bias = blur.bias() * (mean_obs / 0.5)
    w = (weights or LossWeights()).resolved(layers)
    init_c = float(mean_obs.clamp(1e-4, 1 - 1e-4))
    theta_c = torch.full((layers, left.shape[1], H, W), math.log(init_c / (1 - init_c)), device=left.device)
    a0 = 1.0 / torch.arange(2, layers + 1, dtype=torch.float32, device=left.device)
    theta_a = torch.logit(a0).reshape(-1, 1, 1, 1).expand(layers - 1, 1, H, W).clone()
    theta_c.requires_grad_(True)
    theta_a.requires_grad_(True)
    opt = torch.optim.Adam([theta_c, theta_a], lr=0.3, betas=(0.9, 0.999), eps=1e-8)
    one = torch.ones(1, 1, H, W, device=left.device)
    totals, stamps = [], []
    t0 = time.perf_counter()
    for it in range(iterations + 1):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(it, iterations, 0.3, 0.1)
        c, a = torch.sigmoid(theta_c), torch.cat([one, torch.sigmoid(theta_a)], 0)
        total = reference_loss(c, a, obs, blur, gain, layer_bias, w)
        totals.append(float(total.detach()))
        stamps.append(time.perf_counter() - t0)
        if it == iterations:
            break
        opt.zero_grad(set_to_none=True)
        total.backward()
        for p in (theta_c, theta_a):
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
    return totals, stamps


# --------------------------------------------------------------------------------------------


def _per_iteration(stamps):
    steps = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return statistics.median(steps[1:] if len(steps) > 1 else steps)


def time_device(device, iterations, left, right, kl, kr, layers, blend):
    """dplab's :func:`dplab.xin.mpi.optimize`: ``(seconds per iteration, wall seconds, totals)``."""
    h, w = left.shape[-2:]
    cell = h // 6
    t0 = time.perf_counter()
    res = optimize(left.to(device), right.to(device), kl.to(device), kr.to(device), n_layers=layers,
                   iterations=iterations, scales=(0.5, 1.6), cell_hw=cell, blend_px=blend, log_every=1,
                   progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return _per_iteration([e["seconds"] for e in res.history]), total, [e["total"] for e in res.history]


def side_by_side(left, right, kl, kr, layers, iterations, blend):
    """The reference and dplab's step on the same inputs, CPU, one after the other (in that order).

    Returns:
        dict: ``dplab_s``, ``reference_s`` (seconds per iteration), ``ratio``
        (reference / dplab), ``rel_loss_diff`` (per iteration), ``losses_equal`` (the first
        :data:`LOSS_CHECKED` within :data:`LOSS_RTOL`), both loss lists.
    """
    cell = left.shape[-2] // 6
    # the reference first: dplab's optimize makes glibc keep freed memory for reuse
    # (dplab.xin.mpi.reuse_freed_memory, process-wide), which the step before did not do
    tot_ref, stamps = reference_run(left, right, kl, kr, layers, iterations, cell=cell, blend=blend)
    per_ref = _per_iteration(stamps)
    per_new, _, tot_new = time_device(torch.device("cpu"), iterations, left, right, kl, kr, layers, blend)
    rel = [abs(a - b) / abs(b) for a, b in zip(tot_new, tot_ref)]
    return {"dplab_s": per_new, "reference_s": per_ref, "ratio": per_ref / per_new,
            "rel_loss_diff": rel, "losses_equal": max(rel[:LOSS_CHECKED]) <= LOSS_RTOL,
            "dplab_losses": tot_new, "reference_losses": tot_ref}


#: Xin et al. (ICCV 2021), supplement: 10,000 Adam iterations in about 2 hours on a Titan RTX.
PAPER_SECONDS_PER_ITERATION = 2 * 3600 / 10_000


def rows(device, size=(1008, 1344), layers: int = 12, iterations: int = 3, *, scale: float = 1.0,
         blend: int = 8, data_dir=None) -> list[dict]:
    """Seconds per Adam iteration of :func:`dplab.xin.mpi.optimize` (Xin et al. Sec. 4.3) as a row.

    The scene is ``size`` (split into the 6x8 kernel grid); with ``scale < 1`` it is that
    fraction of height and width (rounded to the grid) and the time is scaled by pixel count
    (``extrapolated``). The reference is the paper's time per iteration (2 h / 10,000 on a Titan
    RTX, JAX), labelled as the paper's: it is not measured in this run.
    """
    device = torch.device(device)
    h_full, w_full = (int(v) for v in size)
    if h_full % 6 or w_full % 8 or h_full // 6 != w_full // 8 or int(iterations) < 2 or not 0 < scale <= 1:
        raise ValueError(f"size must split into a 6x8 grid of square cells, iterations >= 2 and scale in "
                         f"(0, 1]; got {size}, {iterations}, {scale}")
    cell = max(2 * blend + 2, round(h_full // 6 * scale))  # square cells, as the Pixel 4 grid (168 px)
    h, w = 6 * cell, 8 * cell
    kl, kr, what = kernels(data_dir)
    left, right = scene(h, w)
    per_it, total, _ = time_device(device, iterations, left, right, kl, kr, layers, blend)
    per_full = per_it * (h_full * w_full) / (h * w)
    extrapolated = (h, w) != (h_full, w_full)
    timed = "iteration 2 (the first excluded)" if iterations == 2 else f"median of iterations 2-{iterations}"
    note = (f"{layers} layers, {what}; {timed}"
            + (f"; measured {per_it:.3f} s on {w}x{h}, scaled by pixel count" if extrapolated else ""))
    return [make_row("MPI optimize, one Adam iteration", device, "fp32", f"{w_full}x{h_full}, {layers} layers",
                     per_full, unit="iter/s", reference="paper: Titan RTX, JAX (2 h / 10k iterations)",
                     reference_seconds=PAPER_SECONDS_PER_ITERATION, extrapolated=extrapolated, note=note)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[1008, 1344], metavar=("H", "W"))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--cpu-iterations", type=int, default=2)
    parser.add_argument("--cuda-iterations", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--blend", type=int, default=8, help="cross-fade between kernel cells (px)")
    parser.add_argument("--data-dir", default=os.environ.get("DPLAB_DATA"))
    parser.add_argument("--reference", action="store_true",
                        help="also run the step before issue 18 on the CPU, side by side, and print the ratio")
    parser.add_argument("--reference-iterations", type=int, default=3,
                        help="iterations of each side in the side-by-side run (>= 2)")
    parser.add_argument("--json", default=None, help="write the side-by-side result (with --reference) here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.size
    if h % 6 or w % 8:
        parser.error("--size must split into the 6x8 kernel grid")
    kl, kr, what = kernels(args.data_dir)
    left, right = scene(h, w)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__} CPU threads {torch.get_num_threads()} load average {load:.2f}")
    print(f"# MPI optimisation, {h}x{w}, {args.layers} layers, kernels: {what}, blend {args.blend} px")
    if args.reference:
        r = side_by_side(left, right, kl, kr, args.layers, max(2, args.reference_iterations), args.blend)
        print(f"# side by side on the CPU ({max(2, args.reference_iterations)} iterations each, median "
              f"of iterations 2+): dplab {r['dplab_s']:.2f} s/iteration, reference (before issue 18) "
              f"{r['reference_s']:.2f} s/iteration, ratio {r['ratio']:.2f}x")
        print(f"# losses of iterations 0-{len(r['dplab_losses']) - 1}: dplab "
              + ", ".join(f"{v:.6g}" for v in r["dplab_losses"]) + "; reference "
              + ", ".join(f"{v:.6g}" for v in r["reference_losses"])
              + "; relative differences " + ", ".join(f"{v:.1e}" for v in r["rel_loss_diff"])
              + f"; iterations 0-{LOSS_CHECKED - 1} " + ("equal" if r["losses_equal"] else "NOT equal")
              + f" within {LOSS_RTOL:g}")
        if args.json:
            from dplab._io import write_json_atomic

            write_json_atomic(args.json, {
                "command": (f"cd {os.path.relpath(os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}"
                            " && DPLAB_DATA=... OMP_NUM_THREADS=1 python " + " ".join(sys.argv)),
                "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "load_average_start": load,
                "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                "size": [h, w], "layers": args.layers, "kernels": what, "blend_px": args.blend,
                "loss_rtol": LOSS_RTOL, "loss_checked_iterations": LOSS_CHECKED, **r})
    print(f"{'device':>8} {'s/iter':>9} {'iter/s':>8} {'10k iters':>12} {'timed':>6} {'wall (s)':>9}")
    devices = [("cpu", args.cpu_iterations)]
    if torch.cuda.is_available():
        devices.append(("cuda", args.cuda_iterations))
    for name, iters in devices:
        device = torch.device(name)
        per_it, total, _ = time_device(device, iters, left, right, kl, kr, args.layers, args.blend)
        hours = per_it * 10_000 / 3600
        label = torch.cuda.get_device_name(device) if name == "cuda" else name
        print(f"{name:>8} {per_it:>9.3f} {1 / per_it:>8.2f} {hours:>10.2f} h {iters:>6} {total:>9.1f}  ({label})")
    if not torch.cuda.is_available():
        print("    cuda   not available on this machine")
    print("# paper: 10,000 iterations in about 2 h on an Nvidia Titan RTX (JAX, spatial-domain convolution)")


if __name__ == "__main__":
    main()
