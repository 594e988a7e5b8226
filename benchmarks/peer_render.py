"""Layered DP rendering against a peer: the RDPD authors' generator procedure, written with numpy/scipy.

What a user would otherwise run to make DP training pairs is the RDPD authors' data generator
(Abuolaim et al., ICCV 2021, Sec. 3, Eq. 6: the image is decomposed into depth layers, each
layer is blurred with its left and right PSF, the two views are assembled from the layers).
As the issue describes that generator, for each depth layer and each view it filters the
*whole* image with that layer's kernel, keeps the layer's own pixels (a hard mask) and sums
the layers. :func:`rdpd_generator_views` does exactly that with ``scipy.signal.fftconvolve``
(written from that description, not from their code; float32, one thread, image borders
extended by replication as dplab's renderer does). It produces the same output as
``dplab.render.layered.render_views(..., composite="hard_mask")`` for the same layers and the
same kernels; :data:`TOLERANCE` is the largest difference allowed (images in [0, 1]).

:func:`side_by_side` times both on the scene of ``render.py`` (a bundled photo over a slanted
floor, CoC -30 to +12 px, cut into ``layers`` layers), interleaved, best of ``repeats``:

* ``render_views hard_mask``: the same output as the peer (the like-for-like figure);
* ``render_views alpha``: dplab's default, occlusion-aware compositing (RDPD Sec. 3, blurred
  masks as alpha): a different output, timed against the same peer.

dplab's time includes cutting the CoC map into layers and building every PSF (``layer_psfs``);
the peer gets the layer masks and kernels ready-made, so the ratio is conservative for dplab.
On CUDA dplab runs on the GPU and the peer on the CPU (it is a CPU program). :func:`rows`
returns the figures as result rows (``reference_kind="peer"``) for ``benchmarks/suite.py``.

    .venv/bin/python benchmarks/peer_render.py [--size H W] [--layers N] [--full] [--repeats R]
        [--threads T] [--device cpu|cuda] [--json PATH] [--note TEXT]

The default is a small size (280x420, 8 layers); ``--full`` is the issue's size (1120x1680 with
38 layers): the peer takes tens of seconds a run there on one core, dplab well under one.
``--note`` adds a free-text remark to the record (e.g. what else ran on the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import format_table, machine_info, make_row, synchronize  # noqa: E402
from dplab.render.layered import layer_psfs, quantize_coc, render_views  # noqa: E402

__all__ = ["TOLERANCE", "PEER_LABEL", "rdpd_generator_views", "scene_inputs", "side_by_side", "rows"]

#: Largest |difference| allowed between the peer and ``render_views(composite="hard_mask")``
#: (float32 FFTs on both sides, images in [0, 1]).
TOLERANCE = 1e-5
PEER_LABEL = "peer: RDPD generator procedure (whole-image blur per layer and view, hard mask, sum; numpy/scipy)"
FULL_SIZE, FULL_LAYERS = (1120, 1680), 38
SMALL_SIZE, SMALL_LAYERS = (280, 420), 8
# Peer time and output per (H, W, layers) measured in this process: a CUDA run reuses the CPU's.
_PEER_CACHE: dict = {}


def rdpd_generator_views(image, labels, kernels, *, border: str = "edge"):
    """Left and right DP views by the RDPD generator's procedure (RDPD Sec. 3, Eq. 6).

    For each depth layer ``i`` and each view: blur the whole image with that layer's kernel
    (true convolution, ``scipy.signal.fftconvolve``, borders extended by ``np.pad(mode=border)``),
    keep the pixels whose label is ``i`` and add them to the view.

    Args:
        image: ``(C, H, W)`` float array, finite.
        labels: ``(H, W)`` integer array, the depth layer of each pixel, in ``[0, len(kernels))``.
        kernels: one ``(left, right)`` pair of odd square 2-D arrays per layer.
        border: ``np.pad`` mode of the image border (``"edge"``: replication, as dplab's renderer).

    Returns:
        ``(left, right)``, two float32 ``(C, H, W)`` arrays.

    Raises:
        ValueError: wrong shapes, NaN/inf, labels outside the layers, even or non-square kernels.

    Example:
        >>> img = np.zeros((1, 5, 5), np.float32); img[0, 2, 2] = 1.0
        >>> k = np.arange(9, dtype=np.float32).reshape(3, 3)
        >>> left, right = rdpd_generator_views(img, np.zeros((5, 5), int), [(k, k[:, ::-1])])
        >>> close = lambda a, b: bool(np.allclose(a, b, atol=1e-5))
        >>> close(left[0, 1:4, 1:4], k), close(right[0, 1:4, 1:4], k[:, ::-1])
        (True, True)
    """
    image = np.asarray(image)
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.floating) or not np.isfinite(image).all():
        raise ValueError(f"image must be a finite float array (C, H, W), got {image.dtype} {image.shape}")
    labels = np.asarray(labels)
    if labels.shape != image.shape[1:] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array of shape {image.shape[1:]} (the image's H, W), "
                         f"got {labels.dtype} {labels.shape}")
    n = len(kernels)
    if n == 0 or labels.min() < 0 or labels.max() >= n:
        raise ValueError(f"labels must lie in [0, {n}) (one (left, right) kernel pair per layer), "
                         f"got [{labels.min()}, {labels.max()}]")
    pairs = []
    for i, pair in enumerate(kernels):
        ks = [np.asarray(k, np.float32) for k in pair]
        if len(ks) != 2 or any(k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0
                               or not np.isfinite(k).all() for k in ks):
            raise ValueError(f"kernels[{i}] must be a (left, right) pair of finite odd square 2-D arrays")
        pairs.append(ks)
    image = image.astype(np.float32, copy=False)
    out = np.zeros((2,) + image.shape, np.float32)
    for i, pair in enumerate(pairs):
        mask = labels == i
        if not mask.any():
            continue
        for view, k in enumerate(pair):
            r = k.shape[0] // 2
            padded = np.pad(image, ((0, 0), (r, r), (r, r)), mode=border)
            blurred = fftconvolve(padded, k[None], mode="valid", axes=(1, 2))  # the whole image
            out[view] += blurred * mask  # the layer's own pixels
    return out[0], out[1]


def scene_inputs(size=SMALL_SIZE, layers: int = SMALL_LAYERS):
    """The benchmark scene of ``render.py`` cut into at most ``layers`` layers, for both sides.

    Returns:
        ``(img, coc, image, labels, kernels)``: the torch image ``(1, 3, H, W)`` and quantised CoC
        map ``(1, 1, H, W)`` that ``render_views`` takes (it finds the same layers: the map holds
        exactly these values), and the peer's numpy image ``(3, H, W)``, label map ``(H, W)``
        and float32 kernel pairs (``dplab.render.layered.layer_psfs``).
    """
    import render  # benchmarks/render.py: the scene and the layering

    h, w = (int(v) for v in size)
    if h < 32 or w < 32 or int(layers) < 1:
        raise ValueError(f"size must be at least 32x32 and layers >= 1, got {size}, {layers}")
    img, coc = render.scene(h, w, "cpu")
    cq, _ = render.layered(coc, int(layers))
    levels, labels = quantize_coc(cq[0, 0], max_layers=int(layers))
    kernels = [(kl.float().numpy(), kr.float().numpy()) for kl, kr in layer_psfs(levels)]
    return img, cq, img[0].numpy(), labels.numpy(), kernels


def _timed(fn, device):
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def side_by_side(size=SMALL_SIZE, layers: int = SMALL_LAYERS, *, device="cpu", repeats: int = 1,
                 alpha: bool = True) -> dict:
    """Time the peer and ``render_views`` on the same layers and kernels, interleaved.

    Returns:
        dict: ``peer_s``, ``hard_mask_s``, ``alpha_s`` (None without ``alpha``), best of
        ``repeats`` each; ``psf_s`` (building the PSFs, inside dplab's times); ``max_abs_diff``
        (peer vs hard mask, both views); ``layers`` (found); ``size``; ``peer_cached``.
    """
    device = torch.device(device)
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    img, cq, image, labels, kernels = scene_inputs(size, layers)
    h, w = image.shape[1:]
    t0 = time.perf_counter()
    layer_psfs(quantize_coc(cq[0, 0], max_layers=int(layers))[0])
    psf_s = time.perf_counter() - t0
    dimg, dcq = img.to(device), cq.to(device)
    # warm-up both on a corner (allocators, FFT plans)
    render_views(dimg[..., :32, :32], dcq[..., :32, :32], composite="hard_mask", max_layers=int(layers))
    corner = labels[:32, :32]
    rdpd_generator_views(image[:, :32, :32], corner, kernels)
    key = (h, w, int(layers))
    cached = device.type == "cuda" and key in _PEER_CACHE
    best = {"peer": float("inf"), "hard_mask": float("inf"), "alpha": float("inf")}
    peer_out, hm = (_PEER_CACHE[key][1] if cached else None), None
    if cached:
        best["peer"] = _PEER_CACHE[key][0]
    for rep in range(int(repeats)):
        jobs = [] if cached else [("peer", lambda: rdpd_generator_views(image, labels, kernels), torch.device("cpu"))]
        jobs.append(("hard_mask", lambda: render_views(dimg, dcq, composite="hard_mask", max_layers=int(layers)),
                     device))
        if alpha:
            jobs.append(("alpha", lambda: render_views(dimg, dcq, max_layers=int(layers)), device))
        for name, fn, dev in (jobs if rep % 2 == 0 else jobs[::-1]):  # ABBA order
            t, out = _timed(fn, dev)
            best[name] = min(best[name], t)
            if name == "peer":
                peer_out = out
            elif name == "hard_mask":
                hm = out
    if device.type == "cpu":
        _PEER_CACHE[key] = (best["peer"], peer_out)
    diff = max(float(np.abs(hm[v].cpu().numpy()[0] - peer_out[v]).max()) for v in (0, 1))
    return {"peer_s": best["peer"], "hard_mask_s": best["hard_mask"], "alpha_s": best["alpha"] if alpha else None,
            "psf_s": psf_s, "max_abs_diff": diff, "layers": len(kernels), "size": (h, w), "peer_cached": cached}


def rows(device, size=FULL_SIZE, layers: int = FULL_LAYERS, *, repeats: int = 1) -> list[dict]:
    """``render_views`` (hard mask and alpha) against the RDPD generator procedure, as result rows.

    Both sides are measured at ``size`` in this run (no extrapolation). The hard-mask row's
    note says whether the outputs agreed within :data:`TOLERANCE`.
    """
    device = torch.device(device)
    r = side_by_side(size, layers, device=device, repeats=repeats)
    h, w = r["size"]
    same = r["max_abs_diff"] <= TOLERANCE
    where = "; the peer ran on the CPU" + (" (time from this run's CPU measurement)" if r["peer_cached"] else "") \
        if device.type == "cuda" else ""
    common = (f"{r['layers']} layers, same kernels and layer masks; best of {repeats}, interleaved; dplab's time "
              f"includes quantising the CoC map and building the PSFs ({r['psf_s']:.2f} s), the peer's does not{where}")
    out = [make_row(f"render_views hard_mask, {r['layers']} layers", device, "fp32", f"{w}x{h} DP pair",
                    r["hard_mask_s"], unit="pairs/s", reference=PEER_LABEL, reference_seconds=r["peer_s"],
                    reference_kind="peer",
                    note=(f"same output as the peer: max |difference| {r['max_abs_diff']:.1e} "
                          f"({'within' if same else 'ABOVE'} {TOLERANCE:g}); " + common))]
    if r["alpha_s"] is not None:
        out.append(make_row(f"render_views alpha, {r['layers']} layers", device, "fp32", f"{w}x{h} DP pair",
                            r["alpha_s"], unit="pairs/s", reference=PEER_LABEL, reference_seconds=r["peer_s"],
                            reference_kind="peer",
                            note="dplab's default compositing (occlusion-aware, RDPD Sec. 3): not the same "
                                 "output as the peer; " + common))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=list(SMALL_SIZE), metavar=("H", "W"))
    parser.add_argument("--layers", type=int, default=SMALL_LAYERS)
    parser.add_argument("--full", action="store_true",
                        help=f"the issue's size: {FULL_SIZE[0]}x{FULL_SIZE[1]}, {FULL_LAYERS} layers (a quiet machine)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each side, interleaved (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (scipy's FFT uses one)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where dplab runs")
    parser.add_argument("--json", default=None, help="write the record (rows, machine, load averages) here")
    parser.add_argument("--note", default="", help="a remark for the record, e.g. what else ran on the machine")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.layers < 1 or min(args.size) < 32:
        parser.error("--threads, --repeats and --layers must be >= 1 and --size at least 32 32")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    torch.set_num_threads(args.threads)
    size, layers = (FULL_SIZE, FULL_LAYERS) if args.full else (tuple(args.size), args.layers)
    cpus = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    started = dt.datetime.now(dt.timezone.utc)
    table = rows(args.device, size, layers, repeats=args.repeats)
    load_end = os.getloadavg()[0]
    busy = max(load_start, load_end) >= 0.5 * cpus
    conditions = (f"{'measured under load' if busy else 'quiet machine'}: load average {load_start:.2f} at the "
                  f"start and {load_end:.2f} at the end on {cpus} CPUs"
                  + ("; other processes shared the cores, so the ratios are indicative only" if busy else ""))
    print(f"# {started:%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, {args.threads} torch thread(s); {conditions}"
          + (f"; {args.note}" if args.note else ""))
    print(format_table(table))
    if args.json:
        from dplab._io import write_json_atomic

        write_json_atomic(args.json, {
            "date": started.strftime("%Y-%m-%d"), "started_utc": started.isoformat(timespec="seconds"),
            "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peer_render.py "
                       + shlex.join(sys.argv[1:] if argv is None else argv),
            "size": list(size), "layers_requested": layers, "repeats": args.repeats, "tolerance": TOLERANCE,
            "under_load": busy, "conditions": conditions, "load_average_start": load_start,
            "load_average_end": load_end, "note": args.note, **machine_info(), "rows": table})
        print(f"# record written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
