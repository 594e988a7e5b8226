"""Engine of the layered dual-pixel renderer (:mod:`dplab.render.layered` holds the public API).

One sample at a time: the image ``(C, H, W)`` and an integer label map ``(H, W)`` whose label
``i`` selects the pixels of layer ``i``; layers are ordered back to front (label 0 is the
farthest). Each layer has a left/right PSF pair. The work per layer is restricted to a window:

* ``"alpha"`` (RDPD Sec. 3): the blurred layer is non-zero only within ``h`` pixels of the
  layer's bounding box (``h`` = the kernel's half-width), so colour ``I * M`` and mask ``M``
  are blurred on that window only and composited *over* the running result there
  (:func:`dplab.ops.compositing.over`).
* ``"hard_mask"`` (the authors' generator): the whole image is blurred with the layer's PSF,
  but only the layer's own pixels are kept, so only the bounding box is computed, from the
  image around it.

Consecutive layers are grouped into chunks that share one window and one batched FFT when
that costs little more than separate windows and fits the memory budget. Image borders are
extended by replication (same as ``fft_conv2d(..., padding="replicate")``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dplab.ops.compositing import over
from dplab.ops.fftconv import fast_len

__all__ = ["Chunk", "trim_kernels", "label_boxes", "plan_chunks", "render_sample"]

# bytes per element of one layer's FFT grid, per image channel + the mask channel (float32):
# input, half spectrum, two products, two inverse transforms, plus the kernel spectra.
_BYTES_PER_GRID_ELEM = 28
# fixed cost of one batched FFT call (Python, kernel launches), in FFT grid elements
_CALL_OVERHEAD = 16384


@dataclass
class Chunk:
    """Consecutive layers ``first:last`` sharing the output window ``[y0, y1) x [x0, x1)``."""

    first: int
    last: int
    y0: int
    y1: int
    x0: int
    x1: int
    half: int  # largest kernel half-width in the chunk


def trim_kernels(left: torch.Tensor, right: torch.Tensor, rel_tol: float = 1e-9):
    """Split ``(N, K, K)`` stacks into per-layer kernels cropped to their support.

    Entries below ``rel_tol`` times the kernel's maximum are treated as zero when finding the
    (centred, square) support; what lies outside it is dropped. Returns a list of
    ``(left_i, right_i)`` with odd sizes.
    """
    k = left.shape[-1]
    c = k // 2
    both = torch.maximum(left, right)
    peak = both.amax((-2, -1), keepdim=True).clamp_min(torch.finfo(both.dtype).tiny)
    nz = both > rel_tol * peak
    off = (torch.arange(k) - c).abs()
    dist = torch.maximum(off.reshape(-1, 1), off.reshape(1, -1))  # Chebyshev distance
    half = torch.where(nz, dist, torch.zeros_like(dist)).amax((-2, -1)).tolist()
    return [(left[i, c - h:c + h + 1, c - h:c + h + 1], right[i, c - h:c + h + 1, c - h:c + h + 1])
            for i, h in enumerate(half)]


def label_boxes(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Bounding boxes ``(n, 4)`` = ``(y0, y1, x0, x1)`` (end exclusive) of each label."""
    h, w = labels.shape
    flat = labels.reshape(-1)
    ys = torch.arange(h, device=labels.device).repeat_interleave(w)
    xs = torch.arange(w, device=labels.device).repeat(h)
    out = []
    for coord, size in ((ys, h), (xs, w)):
        lo = torch.full((n,), size, dtype=torch.long, device=labels.device)
        hi = torch.full((n,), -1, dtype=torch.long, device=labels.device)
        lo = lo.scatter_reduce(0, flat, coord, "amin")
        hi = hi.scatter_reduce(0, flat, coord, "amax")
        out += [lo, hi + 1]
    return torch.stack(out, 1).cpu()


def plan_chunks(boxes, halves, size, channels, mode, budget_bytes, overhead=_CALL_OVERHEAD):
    """Greedy grouping of consecutive layers into :class:`Chunk` s (see module docstring).

    Cost model: a chunk costs (layers x padded FFT grid of the union window) + ``overhead``
    (the fixed cost of a batched call, in grid elements). The next layer joins the current
    chunk when that is not costlier than a chunk of its own and the chunk stays within
    ``budget_bytes``; a layer larger than the budget on its own still gets a chunk. In-focus
    layers (1x1 kernels, no FFT) are never grouped with blurred ones, so they stay exact.
    """
    H, W = size
    per_elem = _BYTES_PER_GRID_ELEM * (channels + 1)

    def window(box, h):
        y0, y1, x0, x1 = box
        if mode == "alpha":  # the blurred layer reaches h pixels beyond its box
            return max(y0 - h, 0), min(y1 + h, H), max(x0 - h, 0), min(x1 + h, W)
        return y0, y1, x0, x1

    def grid(box, h):
        y0, y1, x0, x1 = window(box, h)
        return fast_len(y1 - y0 + 2 * h) * fast_len(x1 - x0 + 2 * h)

    groups = []  # [first, last, union box, half, grid of the union]
    for i, (box, h) in enumerate(zip(boxes.tolist(), halves)):
        alone = grid(box, h)
        if groups:
            first, last, gbox, gh, ggrid = groups[-1]
            hh = max(gh, h)
            ubox = (min(gbox[0], box[0]), max(gbox[1], box[1]),
                    min(gbox[2], box[2]), max(gbox[3], box[3]))
            ugrid = grid(ubox, hh)
            merged = (i + 1 - first) * ugrid
            separate = (last - first) * ggrid + alone + overhead
            same_kind = (h == 0) == (gh == 0)  # in-focus layers skip the FFT: exact
            if same_kind and merged <= separate and merged * per_elem <= budget_bytes:
                groups[-1] = [first, i + 1, ubox, hh, ugrid]
                continue
        groups.append([i, i + 1, tuple(box), h, alone])
    return [Chunk(first, last, *window(box, h), h) for first, last, box, h, _ in groups]


def _pad_kernels(kernels, half, device, dtype):
    """Stack per-layer ``(left, right)`` pairs into ``(L, 2, 2h+1, 2h+1)``, zero-padded."""
    out = []
    for kl, kr in kernels:
        p = half - kl.shape[-1] // 2
        out.append(F.pad(torch.stack((kl, kr)), (p, p, p, p)))
    return torch.stack(out).to(device=device, dtype=dtype)


def _blur_valid(x: torch.Tensor, k: torch.Tensor, out_hw, backend: str) -> torch.Tensor:
    """Valid-region blur of ``x`` ``(Lx, Cx, h + 2r, w + 2r)`` by ``k`` ``(L, 2, 2r+1, 2r+1)``.

    ``Lx`` is 1 (shared input) or ``L``. Returns ``(L, 2, Cx, h, w)``: true convolution, the
    output pixel ``(y, x)`` centred on input pixel ``(y + r, x + r)``.
    """
    L, Cx = k.shape[0], x.shape[1]
    oh, ow = out_hw
    ks = k.shape[-1]
    r = ks // 2
    if ks == 1:  # in-focus layers: a scalar per view, exact
        return x[:, None] * k[:, :, None]
    if backend == "direct":
        xx = x.expand(L, -1, -1, -1).reshape(1, L * Cx, *x.shape[-2:])
        wgt = k.flip(-1, -2)[:, None].expand(L, Cx, 2, ks, ks).reshape(L * Cx * 2, 1, ks, ks)
        y = F.conv2d(xx, wgt, groups=L * Cx)  # (1, L*Cx*2, oh, ow)
        return y.reshape(L, Cx, 2, oh, ow).transpose(1, 2)
    n1, n2 = fast_len(x.shape[-2]), fast_len(x.shape[-1])
    xf = torch.fft.rfft2(x, s=(n1, n2))  # (Lx, Cx, n1, n2 // 2 + 1)
    # kernel spectrum: short rfft along x on the kernel rows, then the zero-padded fft along y
    kf = torch.fft.fft(torch.fft.rfft(k, n=n2, dim=-1), n=n1, dim=-2)  # (L, 2, n1, n2 // 2 + 1)
    y = torch.fft.irfft2(xf[:, None] * kf[:, :, None], s=(n1, n2))
    return y[..., 2 * r:2 * r + oh, 2 * r:2 * r + ow]


def render_sample(image, labels, kernels, *, mode, normalize, backend, budget_bytes):
    """Left and right views ``(2, C, H, W)`` of one sample (see module docstring).

    ``image``: ``(C, H, W)``; ``labels``: ``(H, W)`` int64 in ``[0, L)``, 0 = farthest layer;
    ``kernels``: ``L`` pairs ``(left, right)`` of odd square kernels (CPU tensors).
    """
    C, H, W = image.shape
    dev, dt = image.device, image.dtype
    n = len(kernels)
    halves = [kl.shape[-1] // 2 for kl, _ in kernels]
    boxes = label_boxes(labels, n)
    chunks = plan_chunks(boxes, halves, (H, W), C, mode, budget_bytes)
    out = torch.zeros(2, C, H, W, device=dev, dtype=dt)
    cover = torch.zeros(2, 1, H, W, device=dev, dtype=dt) if mode == "alpha" else None
    for ch in chunks:
        r = ch.half
        rows = torch.arange(ch.y0 - r, ch.y1 + r, device=dev).clamp(0, H - 1)
        cols = torch.arange(ch.x0 - r, ch.x1 + r, device=dev).clamp(0, W - 1)
        lab = labels.index_select(0, rows).index_select(1, cols)
        img = image.index_select(1, rows).index_select(2, cols)
        ids = torch.arange(ch.first, ch.last, device=dev)
        k = _pad_kernels(kernels[ch.first:ch.last], r, dev, dt)
        oh, ow = ch.y1 - ch.y0, ch.x1 - ch.x0
        win = (slice(None), slice(None), slice(ch.y0, ch.y1), slice(ch.x0, ch.x1))
        if mode == "alpha":
            masks = (lab[None] == ids[:, None, None]).to(dt)[:, None]  # (Lc, 1, h, w)
            x = torch.cat((img[None] * masks, masks), 1)  # premultiplied colour + mask
            y = _blur_valid(x, k, (oh, ow), backend)  # (Lc, 2, C + 1, oh, ow)
            o, cov = out[win], cover[win]
            for j in range(y.shape[0]):  # back to front: "over" with the blurred mask as alpha
                a = (2.0 * y[j, :, C:]).clamp(0.0, 1.0)  # each view's PSF sums to 1/2
                over(o, y[j, :, :C], a, inplace=True)
                over(cov, a, a, inplace=True)
        else:
            y = _blur_valid(img[None], k, (oh, ow), backend)  # (Lc, 2, C, oh, ow)
            inner = lab[r:r + oh, r:r + ow]
            masks = (inner[None] == ids[:, None, None]).to(dt)  # (Lc, oh, ow)
            out[win] += torch.einsum("lvchw,lhw->vchw", y, masks)
    if mode == "alpha" and normalize:
        out = out / cover.clamp_min(1e-6)
    return out
