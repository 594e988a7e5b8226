"""Two-view Wiener deconvolution, the bias correction B(d) and the noise bias of Xin et al.
(ICCV 2021, Eqs. 4-5, supplement C.2), each checked against an independent computation."""

import numpy as np
import pytest
import torch

from dplab.optics.kernels import rescale_kernel
from dplab.optics.psf import butterworth_dp
from dplab.xin.bias import SIGMA2, bias_correction, expected_energy
from dplab.xin.kernels import kernel_spectrum
from dplab.xin.wiener import hypothesis_energy, wiener_defocus, wiener_dp


pytestmark = pytest.mark.usefixtures("one_thread")


def _texture(n=64, seed=0):
    import skimage.data

    img = skimage.data.camera()[::512 // n, ::512 // n][:n, :n].astype(np.float64) / 255
    return img


def _circular_blur_np(img, k):
    """Periodic convolution by an explicit sum of shifted copies (no FFT): out(y) = sum k(i) img(y - i + c)."""
    out = np.zeros_like(img)
    kh, kw = k.shape
    for i in range(kh):
        for j in range(kw):
            if k[i, j] != 0:
                out += k[i, j] * np.roll(img, (i - kh // 2, j - kw // 2), axis=(0, 1))
    return out


def test_wiener_inverts_a_known_blur_on_a_noise_free_image():
    img = _texture()
    kl, kr = (k.double().numpy() for k in butterworth_dp(3.0))
    left, right = _circular_blur_np(img, kl), _circular_blur_np(img, kr)
    t = lambda a: torch.from_numpy(a)[None, None]
    est = wiener_dp(t(left), t(right), torch.from_numpy(kl), torch.from_numpy(kr), sigma2=1e-14,
                    padding="circular")
    assert est.dtype == torch.float64
    assert np.abs(est[0, 0].numpy() - img).max() < 1e-6
    # the blurred input itself is far from the sharp image (the test is not vacuous)
    assert np.abs(left + right - img).max() > 0.1


def test_wiener_brightness_follows_the_kernel_normalisation():
    img = _texture(32)
    kl, kr = (k.double() for k in butterworth_dp(2.0))
    t = lambda a: torch.from_numpy(a)[None, None]
    left, right = _circular_blur_np(img, kl.numpy()), _circular_blur_np(img, kr.numpy())
    half = wiener_dp(t(left), t(right), kl, kr, padding="circular")          # dplab: sums 1/2
    unit = wiener_dp(t(left), t(right), 2 * kl, 2 * kr, padding="circular")  # paper: sums 1
    assert torch.allclose(half, 2 * unit, atol=1e-12)


def _dft_bias_numpy(kl, kr, sigma2, phi2, view_sum):
    """Eq. 5 by an explicit sum over the n1 x n2 DFT frequencies (per-pixel mean)."""
    n1, n2 = kl.shape
    y, x = np.mgrid[0:n1, 0:n2]
    total = 0.0
    eps = sigma2 * phi2 * view_sum ** 2
    for u in range(n1):
        for v in range(n2):
            phase = np.exp(-2j * np.pi * (u * y / n1 + v * x / n2))
            Kl, Kr = (kl * phase).sum(), (kr * phase).sum()
            total += eps / (abs(Kl) ** 2 + abs(Kr) ** 2 + eps)
    return sigma2 * total / (n1 * n2)


def test_bias_correction_matches_a_direct_sum_over_frequencies():
    kl, kr = butterworth_dp(3.0, size=11)
    view_sum = float(kl.double().sum() + kr.double().sum()) / 2            # 1/2 up to rounding
    expected = _dft_bias_numpy(kl.double().numpy(), kr.double().numpy(), 5e-5, 1e2, view_sum)
    got = bias_correction(kl.double(), kr.double())
    assert float(got) == pytest.approx(expected, rel=1e-10, abs=0)
    # Eq. 5 as printed sums over the frequencies
    assert float(bias_correction(kl.double(), kr.double(), reduction="sum")) == pytest.approx(
        expected * 121, rel=1e-10, abs=0)
    # independent of the kernel normalisation (the prior is written for unit-sum views) ...
    assert float(bias_correction(2 * kl.double(), 2 * kr.double())) == pytest.approx(expected, rel=1e-10)
    # ... and equal to the authors' code: sigma^2 mean(C / (|K_l|^2 + |K_r|^2 + C)), C = 5e-3
    K = np.abs(np.fft.fft2(2 * kl.double().numpy())) ** 2 + np.abs(np.fft.fft2(2 * kr.double().numpy())) ** 2
    assert expected == pytest.approx(5e-5 * np.mean(5e-3 / (K + 5e-3)), rel=1e-10)


def test_bias_correction_grows_with_defocus_and_batches():
    kl, kr = butterworth_dp(torch.tensor([1.0, 3.0, 6.0]), size=21)
    b = bias_correction(kl, kr)
    assert b.shape == (3,)
    assert bool((b[1:] > b[:-1]).all()) and bool((b < SIGMA2).all())
    for i in range(3):
        assert float(bias_correction(kl[i], kr[i])) == pytest.approx(float(b[i]), rel=1e-6)


def _periodic_blur(c, k):
    n = c.shape[-1]
    return torch.fft.irfft2(torch.fft.rfft2(c) * kernel_spectrum(k, n, n), s=(n, n))


def test_monte_carlo_noise_biases_the_energy_to_small_defocus_and_B_corrects_it():
    """Single plane at d* = 1 (scale of the reference kernel); hypotheses 0.5 ... 1.5."""
    kl, kr = (k.double() for k in butterworth_dp(6.0, size=41))
    hyp = [0.5 + 0.1 * i for i in range(11)]
    true = 5
    kls = torch.stack([rescale_kernel(kl, s) for s in hyp])
    krs = torch.stack([rescale_kernel(kr, s) for s in hyp])
    g = torch.Generator().manual_seed(0)
    n, reps, sigma = 96, 6, SIGMA2 ** 0.5
    E = torch.zeros(len(hyp), dtype=torch.float64)
    Ec = torch.zeros_like(E)
    for _ in range(reps):
        # latent image with the prior's flat power spectrum 1/|Phi|^2 (std 0.1 at unit-sum
        # brightness, 0.2 at dplab's left + right brightness)
        c = 0.2 * torch.randn(1, 1, n, n, generator=g, dtype=torch.float64)
        left = _periodic_blur(c, kls[true]) + sigma * torch.randn(c.shape, generator=g, dtype=torch.float64)
        right = _periodic_blur(c, krs[true]) + sigma * torch.randn(c.shape, generator=g, dtype=torch.float64)
        for i in range(len(hyp)):
            e = hypothesis_energy(left, right, kls[i], krs[i], padding="circular")
            ec = hypothesis_energy(left, right, kls[i], krs[i], padding="circular", bias=True)
            E[i] += e.mean() / reps
            Ec[i] += ec.mean() / reps
    assert int(E.argmin()) < true          # uncorrected: biased towards smaller kernels
    assert int(Ec.argmin()) == true        # corrected: the truth
    # the Monte Carlo energy follows the closed form of Eq. 4 / supp. Eq. 37 (+ C2 = sigma^2)
    data, noise = expected_energy(kls[true], krs[true], kls, krs)
    assert torch.allclose(E, data + noise + SIGMA2, rtol=0.03)
    b = bias_correction(kls, krs)
    assert torch.allclose(E - Ec, b, rtol=1e-6)


def test_wiener_defocus_orders_two_planes_and_sharpens():
    from dplab.ops.fftconv import fft_conv2d

    img = torch.from_numpy(_texture(96)).float()[None, None]
    kl, kr = butterworth_dp(8.0, size=33)
    near, far = [rescale_kernel(k, s) for s in (0.3, 1.0) for k in (kl, kr)][0:2], \
        [rescale_kernel(k, 1.0) for k in (kl, kr)]
    mask = torch.zeros_like(img)
    mask[..., :48] = 1
    views = [mask * fft_conv2d(img, kn, "replicate") + (1 - mask) * fft_conv2d(img, kf, "replicate")
             for kn, kf in zip(near, far)]
    out = wiener_defocus(views[0], views[1], kl, kr, [0.2, 0.4, 0.6, 0.8, 1.0, 1.2], window=15)
    d = out.defocus[0, 0]
    assert float(d[8:-8, 8:40].median()) == pytest.approx(0.4, abs=0.21)
    assert float(d[8:-8, 56:-8].median()) == pytest.approx(1.0, abs=0.21)
    assert out.energy.shape == (6, 1, 1, 96, 96)


def test_wiener_defocus_grid_of_equal_kernels_matches_the_invariant_case():
    img = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    kl, kr = butterworth_dp(3.0, size=15)
    grid_l, grid_r = kl.expand(2, 3, 15, 15), kr.expand(2, 3, 15, 15)
    a = wiener_defocus(img, img.flip(-1), kl, kr, [0.5, 1.0], window=5)
    b = wiener_defocus(img, img.flip(-1), grid_l, grid_r, [0.5, 1.0], window=5, pad_px=32)
    inner = (..., slice(16, -16), slice(16, -16))
    # same up to the ringing that the different boundaries (image vs tile halo) leave
    assert torch.allclose(a.energy[inner], b.energy[inner], rtol=1e-2)
    assert float((a.index[inner] == b.index[inner]).float().mean()) > 0.95


def test_errors_name_the_argument():
    img = torch.rand(1, 1, 16, 16)
    kl, kr = butterworth_dp(2.0)
    with pytest.raises(ValueError, match="left and right"):
        wiener_dp(img, torch.rand(1, 1, 16, 15), kl, kr)
    with pytest.raises(ValueError, match="k_left and k_right"):
        wiener_dp(img, img, kl, kr[:3])
    with pytest.raises(ValueError, match="padding"):
        wiener_dp(img, img, kl, kr, padding="wrap")
    with pytest.raises(ValueError, match="sigma2"):
        bias_correction(kl, kr, sigma2=-1.0)
    with pytest.raises(ValueError, match="scales"):
        wiener_defocus(img, img, kl, kr, [1.0, -0.5])
    with pytest.raises(TypeError, match="k_left"):
        bias_correction([[1.0]], kr)
