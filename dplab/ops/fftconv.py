"""2-D convolution through FFTs, for the large blur kernels of defocus rendering.

A direct ``conv2d`` with a 61x61 kernel costs ``61^2`` multiply-adds per pixel; an FFT costs
``O(log N)`` per pixel whatever the kernel size. :func:`fft_conv2d`
computes a true convolution (the kernel is *not* used as a correlation template, unlike
``torch.nn.functional.conv2d``) with 'same' output size, with the image extended by zero,
replicate or reflect padding, and FFT sizes rounded up to 2-3-5-smooth lengths
(:func:`fast_len`).

Kernel centre. For a kernel of size ``k`` along an axis the centre is the element at index
``k // 2``: the middle element for odd ``k``; for even ``k`` the element just after the
geometric centre (below/right of it), i.e. an even kernel behaves like the odd kernel of size
``k + 1`` obtained by appending a zero row/column at the end. This matches
``F.conv2d(image, kernel.flip(-1, -2), padding="same")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_finite, require_image, require_positive, require_tensor

__all__ = ["fast_len", "pad_index", "fft_conv2d", "PADDING_MODES"]

PADDING_MODES = ("zero", "replicate", "reflect")


def fast_len(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are only 2, 3 and 5.

    FFTs of such lengths are fast in every FFT library (pocketfft on CPU, cuFFT on CUDA).

    Args:
        n: required length (integer >= 1).

    Returns:
        The 5-smooth length ``m >= n``.

    Raises:
        TypeError: ``n`` is not an integer.
        ValueError: ``n < 1``.

    Example:
        >>> [fast_len(n) for n in (1, 7, 11, 97, 1000, 1001)]
        [1, 8, 12, 100, 1000, 1024]
    """
    n = require_positive("n", n, integer=True)
    best = 1 << max(0, (n - 1).bit_length())  # a power of two is always an answer
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two times p35 that reaches n
            q = -(-n // p35)
            m = p35 * (1 << max(0, (q - 1).bit_length()))
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def pad_index(size: int, before: int, after: int, mode: str, device=None) -> torch.Tensor:
    """Source indices of a padded axis (any pad width, also wider than the axis).

    ``x.index_select(dim, pad_index(n, before, after, mode))`` extends an axis of length ``n``
    by ``before`` and ``after`` samples: ``"replicate"`` repeats the edge sample, ``"reflect"``
    mirrors about the edge samples without repeating them (numpy/torch 'reflect'), and pads
    wider than the axis keep mirroring.

    Args:
        size: length of the axis (>= 1).
        before: samples added before the first one (>= 0).
        after: samples added after the last one (>= 0).
        mode: ``"replicate"`` or ``"reflect"`` (any other value reads as ``"reflect"``).
        device: device of the returned index.

    Returns:
        ``(before + size + after,)`` long tensor of indices into the axis.

    Example:
        >>> pad_index(4, 2, 3, "reflect").tolist()
        [2, 1, 0, 1, 2, 3, 2, 1, 0]
        >>> pad_index(4, 2, 3, "replicate").tolist()
        [0, 0, 0, 1, 2, 3, 3, 3, 3]
    """
    idx = torch.arange(-before, size + after, device=device)
    if mode == "replicate" or size == 1:
        return idx.clamp(0, size - 1)
    period = 2 * (size - 1)  # 'reflect': mirror about the edge samples, edges not repeated
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def fft_conv2d(image: torch.Tensor, kernel: torch.Tensor, padding: str = "zero") -> torch.Tensor:
    """Convolve images with kernels via real FFTs; output has the input's size.

    ``out[b, c, y, x] = sum_{i, j} kernel[b, c, i, j] * ext[b, c, y - i + ci, x - j + cj]``
    with centre ``(ci, cj) = (kh // 2, kw // 2)`` (see the module docstring for even sizes)
    and ``ext`` the image extended by ``padding``. The FFT size per axis is
    ``fast_len(n + k - 1)``, enough for no wrap-around to reach the kept outputs.

    Args:
        image: ``(B, C, H, W)`` floating-point tensor, finite.
        kernel: ``(kh, kw)``, ``(C, kh, kw)`` or ``(B, C, kh, kw)``; leading dims broadcast
            against ``(B, C)`` (size-1 dims allowed), finite. Negative entries are allowed.
        padding: ``"zero"``, ``"replicate"`` (edge value repeated) or ``"reflect"`` (mirror
            about the edge sample, numpy/torch 'reflect'); pads wider than the image wrap
            around by repeated mirroring.

    Returns:
        The convolved image, dtype of ``image`` (float16/bfloat16 are computed in float32).

    Shape:
        image: ``(B, C, H, W)``; kernel: ``(kh, kw)``, ``(C, kh, kw)``, ``(B, C, kh, kw)``;
        output: ``(B', C', H, W)`` with ``(B', C')`` the broadcast of ``(B, C)`` and the
        kernel's leading dims.

    Raises:
        TypeError: non-tensor or non-floating inputs.
        ValueError: wrong shapes, non-broadcastable leading dims, NaN/inf values,
            mismatched devices, unknown ``padding``.

    Example:
        >>> img = torch.zeros(1, 1, 5, 5); img[0, 0, 2, 2] = 1.0
        >>> k = torch.arange(9.0).reshape(3, 3)
        >>> torch.equal(fft_conv2d(img, k)[0, 0, 1:4, 1:4].round(), k)   # impulse -> kernel
        True
    """
    image = require_image("image", image)
    kernel = require_tensor("kernel", kernel)
    require_choice("padding", padding, PADDING_MODES)
    if kernel.ndim not in (2, 3, 4):
        raise ValueError(f"kernel must have shape (kh, kw), (C, kh, kw) or (B, C, kh, kw), "
                         f"got {tuple(kernel.shape)}")
    if kernel.shape[-1] == 0 or kernel.shape[-2] == 0:
        raise ValueError(f"kernel is empty: shape {tuple(kernel.shape)}")
    require_finite("kernel", kernel)
    if kernel.device != image.device:
        raise ValueError(f"kernel is on {kernel.device} but image is on {image.device}")
    lead_k = (1,) * (4 - kernel.ndim) + tuple(kernel.shape[:-2])
    try:
        lead = torch.broadcast_shapes(tuple(image.shape[:2]), lead_k[:2])
    except RuntimeError:
        raise ValueError(f"kernel leading dims {tuple(kernel.shape[:-2])} do not broadcast "
                         f"against image (B, C) = {tuple(image.shape[:2])}") from None
    out_dtype = image.dtype
    work = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    x = image.to(work)
    k = kernel.to(work).reshape(lead_k + tuple(kernel.shape[-2:]))

    H, W = x.shape[-2:]
    kh, kw = k.shape[-2:]
    ci, cj = kh // 2, kw // 2
    top, bottom, left, right = kh - 1 - ci, ci, kw - 1 - cj, cj
    if padding == "zero":
        x = F.pad(x, (left, right, top, bottom))
    else:
        mode = padding
        x = x.index_select(-2, pad_index(H, top, bottom, mode, x.device))
        x = x.index_select(-1, pad_index(W, left, right, mode, x.device))
    hp, wp = x.shape[-2:]  # H + kh - 1, W + kw - 1
    n1, n2 = fast_len(hp), fast_len(wp)
    spec = torch.fft.rfft2(x, s=(n1, n2)) * torch.fft.rfft2(k, s=(n1, n2))
    full = torch.fft.irfft2(spec, s=(n1, n2))
    out = full[..., kh - 1:kh - 1 + H, kw - 1:kw - 1 + W]
    out = out.expand(lead + (H, W)) if tuple(out.shape[:2]) != lead else out
    return out.to(out_dtype).contiguous()
