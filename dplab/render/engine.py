"""Engine of the layered dual-pixel renderer (:mod:`dplab.render.layered` holds the public API).

One sample at a time: the image ``(C, H, W)`` and an integer label map ``(H, W)`` whose label
``i`` selects the pixels of layer ``i``; layers are ordered back to front (label 0 is the
farthest). Each layer has a left/right PSF pair (RDPD Sec. 3, Eq. 6). The work per layer is
restricted to a window:

* ``"alpha"`` (RDPD Sec. 3): the blurred layer is non-zero only within ``h`` pixels of the
  layer's bounding box (``h`` = the kernel's half-width), so colour ``I * M`` and mask ``M``
  are blurred on that window only and composited *over* the running result there
  (:func:`dplab.ops.compositing.over`).
* ``"hard_mask"`` (the authors' generator): the whole image is blurred with the layer's PSF,
  but only the layer's own pixels are kept, so only the bounding box is computed, from the
  image around it.

A layer whose pixels fill little of its bounding box (a floor stripe and a far object at the
same depth) is cut into pieces, bands of rows each as wide as the layer's pixels in it
(:func:`_layer_pieces`); blurring is linear, so the pieces' blurs add up to the layer's (in
``"alpha"`` mode they are summed before the layer is composited). Consecutive layers (pieces)
are grouped into chunks that share one window and one batched FFT when that costs little more
than separate windows and fits the memory budget. Image borders are extended by replication
(same as ``fft_conv2d(..., padding="replicate")``); the frame is padded once per sample and
every window is a view of that copy.

The 2-D real FFT of a window is done as two 1-D passes, which lets work be shared and skipped:
a real FFT along ``x`` of the input rows, a complex FFT along ``y``; the spectrum is multiplied
by both views' kernel spectra at once; the inverse FFT along ``y`` is cropped to the output
rows *before* the inverse real FFT along ``x`` (which then runs on those rows only). Along
each axis the FFT length is the smaller of two that both avoid wrap-around into the kept
outputs: the input window (output window + ``2h``: "valid" convolution), or, in ``"alpha"``
mode, the layer's support + ``2h`` (colour and mask vanish outside it, so the whole linear
convolution fits; for a thin layer with a wide kernel about half the length). In
``"hard_mask"`` mode the input is the unmasked image for every layer, so the ``x`` pass of the
whole padded frame can be computed once and sliced by every layer's rows, or, for windows
about as high as the frame, the frame's whole 2-D spectrum reused by each; a cost model
(:func:`_frame_passes`) decides when that is cheaper than each layer's own narrower passes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dplab.ops.compositing import over
from dplab.ops.fftconv import fast_len, pad_index

__all__ = ["Chunk", "trim_kernels", "label_boxes", "plan_chunks", "render_sample"]

# bytes per element of one layer's FFT grid, per image channel + the mask channel (float32):
# input, half spectrum, two products, two inverse transforms, plus the kernel spectra.
_BYTES_PER_GRID_ELEM = 28
# fixed cost of one batched FFT call (Python, kernel launches), in FFT grid elements
_CALL_OVERHEAD = 16384
# rows per band when a layer's box is cut into pieces (:func:`_layer_pieces`)
_BAND = 8
_fast_len = functools.lru_cache(maxsize=None)(fast_len)


@dataclass
class Chunk:
    """Consecutive layers ``first:last`` (pieces of layers, when :func:`plan_chunks` was given
    ``layers``) sharing the output window ``[y0, y1) x [x0, x1)``."""

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


def _row_extents(labels: torch.Tensor, n: int):
    """First and last column of each layer's pixels in each row: two ``(n, H)`` long CPU
    tensors (a row without the layer: first ``W``, last ``-1``)."""
    h, w = labels.shape
    dev = labels.device
    key = (labels * h + torch.arange(h, device=dev)[:, None]).reshape(-1)
    xs = torch.arange(w, device=dev).repeat(h)
    first = torch.full((n * h,), w, dtype=torch.long, device=dev).scatter_reduce(0, key, xs, "amin")
    last = torch.full((n * h,), -1, dtype=torch.long, device=dev).scatter_reduce(0, key, xs, "amax")
    return first.reshape(n, h).cpu(), last.reshape(n, h).cpu()


def _boxes_from_extents(first: torch.Tensor, last: torch.Tensor, width: int) -> torch.Tensor:
    n, h = first.shape
    occ = last >= 0
    present = occ.any(1)
    y0 = torch.where(present, occ.int().argmax(1), h)
    y1 = torch.where(present, h - occ.flip(1).int().argmax(1), 0)
    return torch.stack((y0, y1, first.amin(1).clamp_max(width), last.amax(1) + 1), 1)


def label_boxes(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Bounding boxes ``(n, 4)`` = ``(y0, y1, x0, x1)`` (end exclusive) of each label; an absent
    label gets ``(H, 0, W, 0)``.

    Example:
        >>> label_boxes(torch.tensor([[0, 0, 1], [2, 0, 1]]), 4).tolist()
        [[0, 2, 0, 2], [0, 2, 2, 3], [1, 2, 0, 1], [2, 0, 3, 0]]
    """
    return _boxes_from_extents(*_row_extents(labels, n), labels.shape[1])


def _union(a, b):
    return [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])]


def _split_bands(bands, r: int, overhead):
    """Boxes covering ``bands`` (occupied ``[y0, y1, x0, x1]``, top to bottom): their union,
    or, where cheaper, the best single cut into an upper and a lower group, each cut again."""
    def cost(b):
        return _fast_len(b[1] - b[0] + 2 * r) * _fast_len(b[3] - b[2] + 2 * r)

    upper, lower = [bands[0]], [bands[-1]]
    for b in bands[1:]:
        upper.append(_union(upper[-1], b))
    for b in bands[-2::-1]:
        lower.append(_union(lower[-1], b))
    lower.reverse()
    if len(bands) > 1:
        best, k = min((cost(upper[k - 1]) + cost(lower[k]), k) for k in range(1, len(bands)))
        if best + overhead < cost(upper[-1]):
            return _split_bands(bands[:k], r, overhead) + _split_bands(bands[k:], r, overhead)
    return [upper[-1]]


def _layer_pieces(first: torch.Tensor, last: torch.Tensor, halves, width: int,
                  overhead=_CALL_OVERHEAD):
    """Cut each layer's box into bands of rows where separate windows cost less.

    A layer whose pixels fill little of its bounding box (a floor stripe and a far object at
    the same depth) is blurred in pieces. The layer's rows are read in bands of ``_BAND``, each
    as wide as the layer's pixels in it; the bands are cut top-down into groups, at the cut
    that costs least, as long as the two groups' windows cost less than one (cost: the FFT
    grid of the piece + kernel width, plus ``overhead`` per call).
    Returns ``(layers, boxes)``: the layer of each piece and its box ``(y0, y1, x0, x1)``,
    pieces back to front (the layers' order), a layer's pieces top to bottom, their rows
    disjoint.
    """
    n, H = first.shape
    nb = -(-H // _BAND)
    f = F.pad(first, (0, nb * _BAND - H), value=width).reshape(n, nb, _BAND)
    la = F.pad(last, (0, nb * _BAND - H), value=-1).reshape(n, nb, _BAND)
    occ = la >= 0
    start = torch.arange(nb)[None] * _BAND
    y0 = (start + occ.int().argmax(-1)).tolist()
    y1 = (start + _BAND - occ.flip(-1).int().argmax(-1)).tolist()
    x0, x1, used = f.amin(-1).tolist(), (la.amax(-1) + 1).tolist(), occ.any(-1).tolist()
    layers, boxes = [], []
    for i in range(n):
        bands = [[y0[i][j], y1[i][j], x0[i][j], x1[i][j]] for j in range(nb) if used[i][j]]
        if bands:
            pieces = _split_bands(bands, halves[i], overhead)
            layers += [i] * len(pieces)
            boxes += pieces
    return layers, boxes


def _axis(lo: int, hi: int, o0: int, o1: int, r: int, size: int, support: bool):
    """Input range and FFT length along one axis of a window (see the module docstring).

    ``[lo, hi)``: the layers' box; ``[o0, o1)``: the output window; ``r``: kernel half-width;
    ``size``: the image's length on this axis; ``support``: the input vanishes outside the
    box (alpha mode), except beyond the image edge, where the border replicates it.

    Returns ``(a, n_in, nfft)``: the input covers ``[a, a + n_in)`` (image coordinates, at most
    ``r`` beyond the image), the FFT has length ``nfft``, and output ``y`` is at index
    ``y - a + r`` of the circular convolution.
    """
    a, n_in = o0 - r, o1 - o0 + 2 * r  # valid view: any nfft >= n_in
    nfft = _fast_len(n_in)
    if support and r > 0:
        s0 = lo if lo > 0 else o0 - r
        s1 = hi if hi < size else o1 + r
        n_sup = _fast_len(s1 - s0 + 2 * r)  # the whole linear convolution of the support
        if n_sup < nfft:
            a, n_in, nfft = s0, s1 - s0, n_sup
    return a, n_in, nfft


def plan_chunks(boxes, halves, size, channels, mode, budget_bytes, overhead=_CALL_OVERHEAD,
                layers=None):
    """Greedy grouping of consecutive layers into :class:`Chunk` s (see module docstring).

    Cost model: a chunk costs (layers x padded FFT grid of the union window) + ``overhead``
    (the fixed cost of a batched call, in grid elements). The next layer joins the current
    chunk when that is not costlier than a chunk of its own and the chunk stays within
    ``budget_bytes``; a layer larger than the budget on its own still gets a chunk. In-focus
    layers (1x1 kernels, no FFT) are never grouped with blurred ones, so they stay exact.
    With ``layers`` (the layer of each box, for layers cut into pieces), the chunks index the
    boxes, and two pieces of one layer never share a chunk.
    """
    H, W = size
    per_elem = _BYTES_PER_GRID_ELEM * (channels + 1)
    support = mode == "alpha"

    def window(box, h):
        y0, y1, x0, x1 = box
        if mode == "alpha":  # the blurred layer reaches h pixels beyond its box
            return max(y0 - h, 0), min(y1 + h, H), max(x0 - h, 0), min(x1 + h, W)
        return y0, y1, x0, x1

    def grid(box, h):
        y0, y1, x0, x1 = window(box, h)
        return (_axis(box[0], box[1], y0, y1, h, H, support)[2]
                * _axis(box[2], box[3], x0, x1, h, W, support)[2])

    groups = []  # [first, last, union box, half, grid of the union]
    boxes = boxes.tolist() if isinstance(boxes, torch.Tensor) else boxes
    for i, (box, h) in enumerate(zip(boxes, halves)):
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
            if layers is not None and layers[i] == layers[i - 1]:
                same_kind = False
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


def _fft_blur(xt: torch.Tensor, k: torch.Tensor, n1: int, n2: int, rows, cols,
              spectrum: bool = False) -> torch.Tensor:
    """Both views of a blur, from the input's real FFT along ``x``, transposed.

    ``xt``: ``(Lx, Cx, n2 // 2 + 1, n_in)``, ``rfft(x, n=n2)`` of the ``n_in <= n1`` input
    rows with ``y`` last (``Lx`` is 1, one input shared by the chunk's layers, or ``L``);
    ``k``: ``(L, 2, 2r+1, 2r+1)``. Returns ``(L, 2, Cx, len(rows), len(cols))``: indices
    ``rows`` x ``cols`` of the circular convolution of size ``(n1, n2)``, the kernel's centre
    at index ``(r, r)``. The ``y`` passes run along the contiguous last axis, and the inverse
    ``x`` pass on the kept rows only. With ``spectrum``, ``xt`` is already transformed along
    ``y`` too (``n_in = n1``).
    """
    xf = xt if spectrum else torch.fft.fft(xt, n=n1, dim=-1)  # zero rows up to n1
    kf = torch.fft.fft(torch.fft.rfft(k, n=n2, dim=-1).transpose(-1, -2), n=n1, dim=-1)
    z = torch.fft.ifft(xf[:, None] * kf[:, :, None], dim=-1)[..., rows.start:rows.stop]
    return torch.fft.irfft(z.transpose(-1, -2), n=n2, dim=-1)[..., cols.start:cols.stop]


def _direct_blur(x: torch.Tensor, k: torch.Tensor, out_hw) -> torch.Tensor:
    """Valid-region blur of ``x`` ``(Lx, Cx, h + 2r, w + 2r)`` by ``k`` with ``conv2d``."""
    L, Cx, ks = k.shape[0], x.shape[1], k.shape[-1]
    xx = x.expand(L, -1, -1, -1).reshape(1, L * Cx, *x.shape[-2:])
    wgt = k.flip(-1, -2)[:, None].expand(L, Cx, 2, ks, ks).reshape(L * Cx * 2, 1, ks, ks)
    y = F.conv2d(xx, wgt, groups=L * Cx)  # (1, L*Cx*2, oh, ow)
    return y.reshape(L, Cx, 2, *out_hw).transpose(1, 2)


def _log_cost(n: int) -> float:
    return n * math.log2(max(n, 2))


def _frame_passes(plans, size, C, R):
    """Per hard-mask chunk, which passes of the whole padded frame it reuses (computed once).

    0: none (its own ``x`` and ``y`` passes on its window); 1: the frame's ``x`` pass, sliced by
    the chunk's rows (``n2f = fast_len(W + 2R)`` wide, ``R`` the largest half-width, where the
    chunk's own is ``n2``: worth it when most layers span most of the width, as the layers of
    a slanted floor do); 2: the frame's 2-D spectrum (``n1f = fast_len(H + 2R)`` high: for
    windows about as high as the frame, the forward transform is then shared by all of them).
    A cost model in FFT work (``n log n`` per transform) picks the cheapest plan overall.
    """
    H, W = size
    n1f, n2f = fast_len(H + 2 * R), fast_len(W + 2 * R)
    f = _log_cost
    costs = []
    for c, (_, ny, n1), (_, _, n2) in plans:
        L, oh = c.last - c.first, c.y1 - c.y0
        if not c.half:  # in focus: no FFT
            costs.append((0.0, math.inf, math.inf))
            continue
        inverse_x = L * C * oh  # rows of the inverse x pass (two views, half a complex FFT each)
        costs.append((C * ny * f(n2) / 2 + C * (n2 // 2 + 1) * f(n1) * (1 + 2 * L) + inverse_x * f(n2),
                      C * (n2f // 2 + 1) * f(n1) * (1 + 2 * L) + inverse_x * f(n2f),
                      C * (n2f // 2 + 1) * f(n1f) * 2 * L + inverse_x * f(n2f)))
    frame_x, frame_y = C * n1f * f(n2f) / 2, C * (n2f // 2 + 1) * f(n1f)
    options = [(sum(c[0] for c in costs), 1), (frame_x + sum(min(c[:2]) for c in costs), 2),
               (frame_x + frame_y + sum(min(c) for c in costs), 3)]
    allowed = min(options)[1]
    return [min(range(allowed), key=lambda m: c[m]) for c in costs]


def _windows(chunks, boxes, size, fft: bool, alpha: bool):
    """Per chunk ``(chunk, (ay, ny, n1), (ax, nx, n2))``: the input rows ``[ay, ay + ny)``, the
    FFT length ``n1`` along ``y``, likewise along ``x`` (:func:`_axis`). Where the input window
    is the output window + ``2r`` ("valid"), ``n1`` rows are read instead of zero-padding."""
    H, W = size
    plans = []
    for ch in chunks:
        b, r = boxes[ch.first:ch.last], ch.half
        ya = _axis(min(v[0] for v in b), max(v[1] for v in b), ch.y0, ch.y1, r, H, fft and alpha)
        xa = _axis(min(v[2] for v in b), max(v[3] for v in b), ch.x0, ch.x1, r, W, fft and alpha)
        if fft and r:
            ya = (ya[0], ya[2], ya[2]) if ya[:2] == (ch.y0 - r, ch.y1 - ch.y0 + 2 * r) else ya
            xa = (xa[0], xa[2], xa[2]) if xa[:2] == (ch.x0 - r, ch.x1 - ch.x0 + 2 * r) else xa
        plans.append((ch, ya, xa))
    return plans


def render_sample(image, labels, kernels, *, mode, normalize, backend, budget_bytes):
    """Left and right views ``(2, C, H, W)`` of one sample (see module docstring).

    ``image``: ``(C, H, W)``; ``labels``: ``(H, W)`` int64 in ``[0, L)``, 0 = farthest layer;
    ``kernels``: ``L`` pairs ``(left, right)`` of odd square kernels (CPU tensors).
    """
    C, H, W = image.shape
    dev, dt = image.device, image.dtype
    halves = [kl.shape[-1] // 2 for kl, _ in kernels]
    first, last = _row_extents(labels, len(kernels))
    lboxes = _boxes_from_extents(first, last, W).tolist()
    layer_of, boxes = _layer_pieces(first, last, halves, W)
    pieces = [layer_of.count(i) for i in range(len(kernels))]
    chunks = plan_chunks(boxes, [halves[i] for i in layer_of], (H, W), C, mode, budget_bytes,
                         layers=layer_of)
    fft, alpha = backend == "fft", mode == "alpha"
    plans = _windows(chunks, boxes, (H, W), fft, alpha)
    R = max(halves)
    n1f, n2f = fast_len(H + 2 * R), fast_len(W + 2 * R)
    reuse = _frame_passes(plans, (H, W), C, R) if fft and not alpha else [0] * len(plans)
    # one replicate-padded copy of the frame, deep enough for every window (and the frame's passes)
    pads = (R, max([R] + [ax + nx - W for _, _, (ax, nx, _) in plans] + [n2f - W - R] * (max(reuse) > 0)),
            R, max([R] + [ay + ny - H for _, (ay, ny, _), _ in plans] + [n1f - H - R] * (max(reuse) > 1)))
    img_p = F.pad(image[None], pads, mode="replicate")[0]
    out = torch.zeros(2, C, H, W, device=dev, dtype=dt)
    if alpha:  # labels as float32 (exact below 2**24 layers) to pad them the same way
        lab_p = F.pad(labels[None, None].to(torch.float32), pads, mode="replicate")[0, 0]
        pad_y = pad_index(H, R, pads[3], "replicate", dev)
        pad_x = pad_index(W, R, pads[1], "replicate", dev)
        cover = torch.zeros(2, 1, H, W, device=dev, dtype=dt)
        acc = {}  # layer cut in pieces -> the sum of its pieces' blurred colour and mask
    frame_t = frame_f = None
    if max(reuse) > 0:  # the frame's x pass, y last: (C, n2f // 2 + 1, rows of img_p)
        frame_t = torch.fft.rfft(img_p[:, :, :n2f], dim=-1).transpose(-1, -2).contiguous()
    if max(reuse) > 1:  # and its y pass: (C, n2f // 2 + 1, n1f), rows [-R, n1f - R)
        frame_f = torch.fft.fft(frame_t[..., :n1f], dim=-1)
    for (ch, (ay, ny, n1), (ax, nx, n2)), use_frame in zip(plans, reuse):
        r = ch.half
        ids = layer_of[ch.first:ch.last]
        k = _pad_kernels([kernels[i] for i in ids], r, dev, dt)
        rows = slice(ch.y0 - ay + r, ch.y1 - ay + r)
        sy, sx = slice(ay + R, ay + R + ny), slice(ax + R, ax + R + nx)
        if alpha:
            masks = lab_p[sy, sx][None] == torch.tensor(ids, device=dev, dtype=torch.float32)[:, None, None]
            for j, i in enumerate(ids):  # a piece: the layer's pixels inside the piece's box
                if pieces[i] > 1:
                    y0, y1, x0, x1 = boxes[ch.first + j]
                    masks[j] &= (((pad_y[sy] >= y0) & (pad_y[sy] < y1))[:, None]
                                 & ((pad_x[sx] >= x0) & (pad_x[sx] < x1))[None])
            masks = masks.to(dt)[:, None]  # (Lc, 1, ny, nx)
            x = torch.cat((img_p[:, sy, sx][None] * masks, masks), 1)  # premultiplied colour + mask
        else:
            x = img_p[None, :, sy, sx]
        if r == 0:  # in-focus layers: a scalar per view, exact
            y = x[:, None] * k[:, :, None]
        elif not fft:
            y = _direct_blur(x, k, (ch.y1 - ch.y0, ch.x1 - ch.x0))
        elif use_frame == 1:  # the frame's x pass: columns [-R, n2f - R)
            y = _fft_blur(frame_t[None, :, :, sy], k, n1, n2f, rows, slice(ch.x0 + R + r, ch.x1 + R + r))
        elif use_frame == 2:  # the frame's spectrum: rows [-R, n1f - R) too
            y = _fft_blur(frame_f[None], k, n1f, n2f, slice(ch.y0 + R + r, ch.y1 + R + r),
                          slice(ch.x0 + R + r, ch.x1 + R + r), spectrum=True)
        else:
            xt = torch.fft.rfft(x, n=n2, dim=-1).transpose(-1, -2)
            y = _fft_blur(xt, k, n1, n2, rows, slice(ch.x0 - ax + r, ch.x1 - ax + r))
        for j, i in enumerate(ids):  # back to front
            if not alpha:  # hard mask: keep the layer's own pixels in the piece's box
                y0, y1, x0, x1 = boxes[ch.first + j]
                yj = y[j, ..., y0 - ch.y0:y1 - ch.y0, x0 - ch.x0:x1 - ch.x0]
                out[..., y0:y1, x0:x1].addcmul_(yj, (labels[y0:y1, x0:x1] == i).to(dt))
                continue
            win, yj = (ch.y0, ch.y1, ch.x0, ch.x1), y[j]
            if pieces[i] > 1:  # add the piece to its layer's sum; composite after the last piece
                b, h = lboxes[i], halves[i]
                win = (max(b[0] - h, 0), min(b[1] + h, H), max(b[2] - h, 0), min(b[3] + h, W))
                if i not in acc:
                    acc[i] = torch.zeros(2, C + 1, win[1] - win[0], win[3] - win[2], device=dev, dtype=dt)
                v = (max(ch.y0, win[0]), min(ch.y1, win[1]), max(ch.x0, win[2]), min(ch.x1, win[3]))
                acc[i][..., v[0] - win[0]:v[1] - win[0], v[2] - win[2]:v[3] - win[2]] += \
                    yj[..., v[0] - ch.y0:v[1] - ch.y0, v[2] - ch.x0:v[3] - ch.x0]
                if ch.first + j + 1 < len(layer_of) and layer_of[ch.first + j + 1] == i:
                    continue
                yj = acc.pop(i)
            o, cov = out[..., win[0]:win[1], win[2]:win[3]], cover[..., win[0]:win[1], win[2]:win[3]]
            a = (2.0 * yj[:, C:]).clamp(0.0, 1.0)  # "over", the blurred mask as alpha; PSFs sum to 1/2
            over(o, yj[:, :C], a, inplace=True)
            over(cov, a, a, inplace=True)
    if alpha and normalize:
        out = out / cover.clamp_min(1e-6)
    return out
