"""Tests for dplab.ops.fftconv against direct convolution (conv2d with a flipped kernel, numpy)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dplab.ops.fftconv import fast_len, fft_conv2d


def _smooth(m: int) -> bool:
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    return m == 1


def test_fast_len_brute_force():
    for n in range(1, 2001):
        m = n
        while not _smooth(m):
            m += 1
        assert fast_len(n) == m, n


@pytest.mark.parametrize("n, bad", [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("8", TypeError)])
def test_fast_len_validation(n, bad):
    with pytest.raises(bad, match="n"):
        fast_len(n)


def _direct(image, kernel, mode):
    """Reference: pad like the documented centring (kh//2, kw//2), then conv2d of the flipped kernel."""
    kh, kw = kernel.shape[-2:]
    ci, cj = kh // 2, kw // 2
    pads = ((0, 0), (0, 0), (kh - 1 - ci, ci), (kw - 1 - cj, cj))
    np_mode = {"zero": "constant", "replicate": "edge", "reflect": "reflect"}[mode]
    x = torch.from_numpy(np.pad(image.numpy(), pads, mode=np_mode))
    b, c = image.shape[:2]
    k = kernel.expand(b, c, kh, kw).flip(-1, -2).reshape(b * c, 1, kh, kw)
    return F.conv2d(x.reshape(1, b * c, *x.shape[-2:]), k, groups=b * c).reshape(b, c, *image.shape[-2:])


@pytest.mark.parametrize("ksize", [(1, 1), (3, 3), (5, 3), (2, 2), (4, 5), (6, 7)])
@pytest.mark.parametrize("mode", ["zero", "replicate", "reflect"])
def test_matches_direct_convolution_float64(ksize, mode):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    kernel = torch.randn(2, 3, *ksize, generator=g, dtype=torch.float64)
    out = fft_conv2d(image, kernel, mode)
    torch.testing.assert_close(out, _direct(image, kernel, mode), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_zero_padding_equals_conv2d_same_with_flipped_kernel():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 2, 12, 10, generator=g, dtype=torch.float64)
    for ks in [(3, 3), (4, 4), (5, 2)]:
        kernel = torch.rand(2, *ks, generator=g, dtype=torch.float64)
        ref = F.conv2d(image, kernel.flip(-1, -2)[:, None], padding="same", groups=2)
        torch.testing.assert_close(fft_conv2d(image, kernel), ref, rtol=1e-10, atol=1e-10)


def test_float32_accuracy_and_dtype():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 32, 40, generator=g)
    kernel = torch.rand(9, 9, generator=g)
    out = fft_conv2d(image, kernel, "reflect")
    assert out.dtype == torch.float32
    ref = _direct(image.double(), kernel.double(), "reflect")
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    assert fft_conv2d(image.half(), kernel).dtype == torch.float16


def test_kernel_larger_than_image_all_modes():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)
    kernel = torch.rand(15, 13, generator=g, dtype=torch.float64)
    for mode in ("zero", "replicate", "reflect"):  # numpy 'reflect' also mirrors repeatedly
        torch.testing.assert_close(fft_conv2d(image, kernel, mode), _direct(image, kernel, mode))


def test_is_convolution_not_correlation():
    image = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    image[0, 0, 3, 3] = 1.0
    kernel = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(3, 3)  # asymmetric
    out = fft_conv2d(image, kernel)
    torch.testing.assert_close(out[0, 0, 2:5, 2:5], kernel)  # impulse response is the kernel itself
    # even kernel: the element at (kh//2, kw//2) lands on the impulse
    k2 = torch.zeros(4, 4, dtype=torch.float64)
    k2[2, 2] = 1.0
    torch.testing.assert_close(fft_conv2d(image, k2), image)


@pytest.mark.parametrize("kshape", [(3, 3), (2, 3, 3), (1, 2, 3, 3), (3, 1, 3, 3), (3, 2, 3, 3)])
def test_kernel_broadcasting(kshape):
    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.float64)
    kernel = torch.rand(kshape, generator=g, dtype=torch.float64)
    out = fft_conv2d(image, kernel)
    full = kernel.reshape((1,) * (4 - kernel.ndim) + kshape).expand(3, 2, 3, 3)
    assert out.shape == image.shape
    torch.testing.assert_close(out, _direct(image, full, "zero"))


def test_kernel_batch_broadcasts_single_image():
    image = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    kernel = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    out = fft_conv2d(image, kernel)
    assert out.shape == (4, 1, 8, 8)
    torch.testing.assert_close(out[2:3], fft_conv2d(image, kernel[2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image = torch.rand(2, 3, 30, 31)
    kernel = torch.rand(3, 7, 6)
    torch.testing.assert_close(fft_conv2d(image.cuda(), kernel.cuda(), "reflect").cpu(),
                               fft_conv2d(image, kernel, "reflect"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image, kernel, padding, exc, name", [
    (torch.rand(3, 8, 8), torch.rand(3, 3), "zero", ValueError, "image"),
    (torch.rand(1, 1, 8, 8), torch.rand(3), "zero", ValueError, "kernel"),
    (torch.rand(1, 1, 8, 8), torch.full((3, 3), float("nan")), "zero", ValueError, "kernel"),
    (torch.full((1, 1, 8, 8), float("inf")), torch.rand(3, 3), "zero", ValueError, "image"),
    (torch.rand(1, 1, 8, 8), torch.rand(3, 3), "circular", ValueError, "padding"),
    (torch.rand(1, 2, 8, 8), torch.rand(3, 3, 3), "zero", ValueError, "kernel"),
    (torch.ones(1, 1, 8, 8, dtype=torch.int64), torch.rand(3, 3), "zero", TypeError, "image"),
    (torch.rand(1, 1, 8, 8), [[1.0]], "zero", TypeError, "kernel"),
])
def test_validation(image, kernel, padding, exc, name):
    with pytest.raises(exc, match=name):
        fft_conv2d(image, kernel, padding)
