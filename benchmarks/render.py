"""Layered DP rendering speed: FFT renderer vs a direct spatial-convolution reference.

The scene is DPDD-sized (1680x1120): a bundled photo over a slanted floor whose CoC runs from
-30 px (near, bottom) to +12 px (far, top) with two fronto-parallel objects (-24 px and +8 px),
cut into 100 and 500 depth layers (RDPD Sec. 3). For each, `dplab.render.layered.render_views` is timed
with the FFT backend (alpha compositing, and the authors' hard-mask sum), giving DP pairs per
second. The direct reference is the same layered model with `torch.nn.functional.conv2d`
(`backend="direct"`, same windows, same PSFs); at full size it would take many minutes, so it
is timed in the same run on a full-height strip one twentieth as wide that holds every layer with
the same PSFs (100 layers), next to the FFT renderer on that strip; its full-frame times at
100 and 500 layers are extrapolated from the multiply-adds conv2d performs on each plan and
the rate measured on the strip. Then: how the FFT time grows with the number of layers and
with the resolution. :func:`rows` returns the FFT-vs-direct figures as result rows for
``benchmarks/suite.py``.

    .venv/bin/python benchmarks/render.py [--device cuda] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import torch

from bench_common import make_row
from dplab.render.layered import quantize_coc, render_views
from dplab.render.scenes import load_image


def scene(h: int, w: int, device):
    """Image and continuous CoC map (px) of the benchmark scene at size (h, w)."""
    img = load_image("astronaut", (h, w)).to(device)
    y = torch.linspace(0.0, 1.0, h).reshape(-1, 1)
    coc = (12.0 - 42.0 * y).expand(h, w).clone()  # floor: +12 px at the top, -30 at the bottom
    coc[int(0.15 * h):int(0.45 * h), int(0.55 * w):int(0.85 * w)] = 8.0  # far box
    cy, cx, r = 0.6 * h, 0.3 * w, 0.2 * h
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coc[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = -24.0  # near disc
    return img, coc.reshape(1, 1, h, w).to(device)


def layered(coc, layers):
    """CoC map quantised to at most ``layers`` layers (so crops keep exactly these values)."""
    levels, labels = quantize_coc(coc[0, 0], max_layers=layers)
    return levels.to(coc.device, torch.float32)[labels][None, None], levels.numel()


def direct_macs(coc, channels: int, chunk_mb: float) -> float:
    """Multiply-adds of the direct backend for the alpha model of this CoC map (its plan)."""
    from dplab.render import engine as _layered
    from dplab.render.layered import layer_psfs

    levels, labels = quantize_coc(coc[0, 0].cpu())
    kernels = layer_psfs(levels)
    halves = [k[0].shape[-1] // 2 for k in kernels]
    chunks = _layered.plan_chunks(_layered.label_boxes(labels, len(kernels)), halves,
                                  tuple(labels.shape), channels, "alpha", chunk_mb * 2**20)
    return float(sum((c.last - c.first) * 2 * (channels + 1) * (c.y1 - c.y0) * (c.x1 - c.x0)
                     * (2 * c.half + 1) ** 2 for c in chunks if c.half > 0))


def fft_full_half(img, coc, kw, device) -> float:
    cq, _ = layered(coc, 100)
    return timed(lambda: render_views(img, cq, **kw), device)[0]


def timed(fn, device, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rows(device, size=(1120, 1680), layers: int = 100, *, scale: float = 1.0, strip: int = 20,
         chunk_mb: float = 512.0, repeats: int = 2) -> list[dict]:
    """FFT layered renderer vs the direct-convolution reference, as result rows.

    Row 1, ``render_views FFT``: one DP pair of the benchmark scene at ``size`` with ``layers``
    layers (alpha compositing, RDPD Sec. 3). With ``scale < 1`` the scene is rendered at that
    fraction of height and width (same CoC values in px) and the time is scaled by pixel count
    (``extrapolated``). Its reference is ``backend="direct"`` (same layers, windows and PSFs)
    at the full ``size``, extrapolated from its multiply-adds and the rate measured on a strip
    one ``strip``-th as wide in this run. Row 2, ``render_views strip``: both backends measured
    on that strip, no extrapolation.
    """
    device = torch.device(device)
    h_full, w_full = (int(v) for v in size)
    if not 0 < scale <= 1 or int(strip) < 1 or int(layers) < 1:
        raise ValueError(f"scale must be in (0, 1], strip and layers >= 1; got {scale}, {strip}, {layers}")
    H, W = max(32, round(h_full * scale)), max(32, round(w_full * scale))
    img, coc = scene(H, W, device)
    render_views(img[..., :32, :32], coc[..., :32, :32])  # warm-up
    cq, got = layered(coc, layers)
    t_fft, _ = timed(lambda: render_views(img, cq, chunk_mb=chunk_mb), device, repeats=repeats)
    per_full = t_fft * (h_full * w_full) / (H * W)

    sw = max(8, W // strip)
    x0 = (W - sw) // 2
    s_img, s_coc = img[..., x0:x0 + sw], cq[..., x0:x0 + sw]
    t_sfft, a = timed(lambda: render_views(s_img, s_coc, chunk_mb=chunk_mb), device)
    t_sdir, b = timed(lambda: render_views(s_img, s_coc, backend="direct", chunk_mb=chunk_mb), device)
    diff = max(float((p - q).abs().max()) for p, q in zip(a[:2], b[:2]))
    rate = direct_macs(s_coc, img.shape[1], chunk_mb) / t_sdir
    _, coc_full = scene(h_full, w_full, "cpu")
    macs = direct_macs(layered(coc_full, layers)[0], img.shape[1], chunk_mb)
    extrapolated = (H, W) != (h_full, w_full)
    note = (f"{got} layers; direct extrapolated: {macs:.2e} MACs at {rate / 1e9:.2f} GMAC/s measured on the strip"
            + (f"; FFT measured {t_fft:.2f} s on {W}x{H}, scaled by pixel count" if extrapolated else ""))
    return [
        make_row(f"render_views FFT, {got} layers", device, "fp32", f"{w_full}x{h_full} DP pair", per_full,
                 unit="pairs/s", reference="direct conv2d renderer (MAC-extrapolated)",
                 reference_seconds=macs / rate, extrapolated=extrapolated, note=note),
        make_row(f"render_views strip, {got} layers", device, "fp32", f"{sw}x{H} DP pair", t_sfft,
                 unit="pairs/s", reference="direct conv2d renderer", reference_seconds=t_sdir,
                 note=f"both measured; max abs difference {diff:.1e}"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="half-size scene, fewer points")
    parser.add_argument("--chunk-mb", type=float, default=512.0, help="layer-chunk memory budget")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); on a CPU shared with "
                             "other jobs one thread avoids OpenMP contention")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    H, W = (560, 840) if args.quick else (1120, 1680)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.processor() or platform.machine()} "
          f"torch {torch.__version__} threads {torch.get_num_threads()} device {device} "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    img, coc = scene(H, W, device)
    render_views(img[..., :64, :64], coc[..., :64, :64])  # warm-up
    kw = dict(chunk_mb=args.chunk_mb)

    print(f"\n## {W}x{H}, FFT renderer "
          "(alpha = RDPD Sec. 3 compositing; hard_mask = authors' code)")
    print(f"{'layers':>7} {'mode':>10} {'time (s)':>9} {'pairs/s':>8}")
    fft_full = {}
    for n in (100, 500):
        cq, got = layered(coc, n)
        for mode in ("alpha", "hard_mask"):
            t, _ = timed(lambda: render_views(img, cq, composite=mode, **kw), device, repeats=2)
            fft_full[n, mode] = t
            print(f"{got:>7} {mode:>10} {t:>9.2f} {1 / t:>8.3f}")
    what = "CUDA allocated" if device.type == "cuda" else "process RSS"
    print(f"# peak memory so far: {peak_memory_mb(device):.0f} MiB ({what})")

    sw = W // 20
    x0 = (W - sw) // 2
    cq, got = layered(coc, 100)
    strip_img, strip_coc = img[..., x0:x0 + sw], cq[..., x0:x0 + sw]
    t_fft, a = timed(lambda: render_views(strip_img, strip_coc, **kw), device)
    t_dir, b = timed(lambda: render_views(strip_img, strip_coc, backend="direct", **kw), device)
    diff = max(float((p - q).abs().max()) for p, q in zip(a[:2], b[:2]))
    rate = direct_macs(strip_coc, img.shape[1], kw["chunk_mb"]) / t_dir
    print("\n## direct conv2d reference (backend='direct': same layers, windows and PSFs)")
    print(f"measured on a {sw}x{H} strip, {got} layers: direct {t_dir:.1f} s, FFT {t_fft:.2f} s,"
          f" direct/FFT {t_dir / t_fft:.0f}x, max |difference| {diff:.1e};"
          f" direct rate {rate / 1e9:.2f} GMAC/s")
    print(f"{'layers':>7} {'direct MACs':>12} {'direct (s, extrapolated)':>25} {'FFT (s)':>8}"
          f" {'direct/FFT':>11}")
    for n in (100, 500):
        cq, got = layered(coc, n)
        macs = direct_macs(cq, img.shape[1], kw["chunk_mb"])
        t = macs / rate
        t_fft = fft_full[n, "alpha"]
        print(f"{got:>7} {macs:>12.3e} {t:>25.0f} {t_fft:>8.2f} {t / t_fft:>11.0f}")
    print("# full-frame direct times are extrapolated: the multiply-adds conv2d does on this plan"
          " (layers x views x channels x window pixels x kernel area), divided by the rate"
          " measured on the strip in this run")

    print(f"\n## growth with the number of layers ({W // 2}x{H // 2}, alpha)")
    img2, coc2 = scene(H // 2, W // 2, device)
    layer_counts = (25, 100, 400) if args.quick else (25, 50, 100, 200, 500)
    for n in layer_counts:
        cq, got = layered(coc2, n)
        t, _ = timed(lambda: render_views(img2, cq, **kw), device, repeats=2)
        print(f"layers {got:>4}: {t:7.2f} s  ({1e3 * t / got:6.1f} ms per layer)")

    print("\n## growth with resolution (100 layers, alpha)")
    sizes = ((140, 210), (280, 420), (560, 840)) if args.quick else \
        ((280, 420), (560, 840), (1120, 1680))
    prev = None
    for h, w in sizes:
        if (h, w) == (H, W):
            t = fft_full[100, "alpha"]
        else:
            im, c = scene(h, w, device)
            cq, _ = layered(c, 100)
            t, _ = timed(lambda: render_views(im, cq, **kw), device, repeats=2)
        growth = f"x{t / prev:.1f} for x4 pixels" if prev else ""
        print(f"{w:>5}x{h:<5} {t:7.2f} s  {growth}")
        prev = t

    h, w = H // 2, W // 2
    noise = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    cq, got = layered(42.0 * noise - 30.0, 100)
    t, _ = timed(lambda: render_views(img2, cq, **kw), device)
    print(f"\n## worst case: per-pixel random CoC ({w}x{h}, {got} layers, no spatial locality)")
    print(f"{t:.2f} s: every layer's window is the whole frame"
          f" ({t / fft_full_half(img2, coc2, kw, device):.1f}x the structured scene above)")


if __name__ == "__main__":
    main()
