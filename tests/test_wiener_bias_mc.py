"""The noise-bias helpers of dplab.xin.noise_bias (Xin et al. ICCV 2021, supplement C.2): periodic
blur, per-hypothesis energy curves, the closed-form noise expectation for a known scene, and
the Monte Carlo driver. Each is checked against an independent numpy computation."""

import numpy as np
import pytest
import torch

from dplab.xin.bias import bias_correction, expected_energy
from dplab.xin.noise_bias import energy_curve, noise_bias_trials, periodic_blur, scene_expected_energy
from dplab.optics.psf import butterworth_dp


pytestmark = pytest.mark.usefixtures("one_thread")


def _roll_blur_np(img, k):
    """Periodic convolution as an explicit sum of shifted copies (no FFT)."""
    out = np.zeros_like(img)
    kh, kw = k.shape
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * np.roll(img, (i - kh // 2, j - kw // 2), axis=(0, 1))
    return out


def _spectra_np(k, n):
    pad = np.zeros(k.shape[:-2] + (n, n))
    pad[..., :k.shape[-2], :k.shape[-1]] = k
    return np.fft.fft2(np.roll(pad, (-(k.shape[-2] // 2), -(k.shape[-1] // 2)), axis=(-2, -1)))


def _texture(n=32, seed=0):
    g = np.random.default_rng(seed)
    x = g.random((n, n))
    return 0.5 * x + 0.25 * np.roll(x, 1, 0) + 0.25 * np.roll(x, 1, 1)   # correlated, non-white


def test_periodic_blur_is_a_sum_of_wrapped_shifts():
    img = _texture(24)
    kl, _ = butterworth_dp(3.0, dtype=torch.float64)
    got = periodic_blur(torch.from_numpy(img)[None, None], kl)[0, 0].numpy()
    assert np.allclose(got, _roll_blur_np(img, kl.numpy()), atol=1e-12)
    # a batch of kernels broadcasts over the channel dim
    kls, _ = butterworth_dp(torch.tensor([1.0, 2.0]), size=7, dtype=torch.float64)
    out = periodic_blur(torch.from_numpy(img)[None, None], kls)
    assert out.shape == (1, 2, 24, 24)
    assert np.allclose(out[0, 1].numpy(), _roll_blur_np(img, kls[1].numpy()), atol=1e-12)


def test_energy_curve_equals_the_per_frequency_minimum_of_eq26():
    """e_min(f) = |I_l|^2 + |I_r|^2 - |conj(K_l) I_l + conj(K_r) I_r|^2 / D, per pixel: / n^2."""
    n = 32
    g = np.random.default_rng(1)
    left, right = g.random((n, n)), g.random((n, n))
    kls, krs = butterworth_dp(torch.tensor([1.5, 3.0, 4.5]), size=11, dtype=torch.float64)
    sigma2 = 1e-3
    got = energy_curve(torch.from_numpy(left)[None, None], torch.from_numpy(right)[None, None],
                       kls, krs, sigma2=sigma2)[0].numpy()
    Kl, Kr = _spectra_np(kls.numpy(), n), _spectra_np(krs.numpy(), n)
    Il, Ir = np.fft.fft2(left), np.fft.fft2(right)
    eps = sigma2 * 100 * 0.25                          # sigma^2 |Phi|^2 s^2, kernels sum to 1/2
    D = np.abs(Kl) ** 2 + np.abs(Kr) ** 2 + eps
    e = np.abs(Il) ** 2 + np.abs(Ir) ** 2 - np.abs(np.conj(Kl) * Il + np.conj(Kr) * Ir) ** 2 / D
    assert np.allclose(got, e.sum((-2, -1)) / n ** 4, rtol=1e-10)


def test_scene_expected_energy_is_exact_without_noise_and_matches_sampling_with_it():
    n = 32
    img = torch.from_numpy(_texture(n))[None, None]
    kls, krs = butterworth_dp(torch.tensor([2.0, 3.0, 4.0, 5.0]), size=13, dtype=torch.float64)
    t = 2
    sigma2 = 4e-4
    mis, res, noise = scene_expected_energy(img, kls[t], krs[t], kls, krs, sigma2=sigma2)
    # noise-free views: the energy is deterministic and equals mismatch + residual
    clean = energy_curve(periodic_blur(img, kls[t]), periodic_blur(img, krs[t]), kls, krs, sigma2)[0]
    assert torch.allclose(clean, mis + res, rtol=1e-10)
    assert float(mis[t]) < 1e-15 and bool((mis[[0, 1, 3]] > 0).all())
    # noise term = sigma^2 + B(d) on the image grid
    assert torch.allclose(noise, sigma2 + bias_correction(kls, krs, sigma2, size=n), rtol=1e-12)
    # sampling the noise reproduces the total
    out = noise_bias_trials(kls[t], krs[t], kls, krs, sigma2 ** 0.5, 400, scene=img,
                            generator=torch.Generator().manual_seed(0), chunk=100)
    mc = out.energy.mean(0)
    se = out.energy.std(0) / 20
    assert bool(((mc - (mis + res + noise)).abs() < 4 * se).all())


def test_prior_scenes_follow_eq37():
    """Latent images drawn from the flat prior: the mean energy approaches Eq. 37 + C2."""
    kls, krs = butterworth_dp(torch.tensor([2.0, 3.0, 4.0]), size=13, dtype=torch.float64)
    sigma2 = 1e-4
    out = noise_bias_trials(kls[1], krs[1], kls, krs, sigma2 ** 0.5, 60, size=48,
                            generator=torch.Generator().manual_seed(3))
    data, noise = expected_energy(kls[1], krs[1], kls, krs, sigma2=sigma2, size=48)
    assert torch.allclose(out.energy.mean(0), data + noise + sigma2, rtol=0.02)


def test_noise_bias_trials_bookkeeping_and_determinism():
    kls, krs = butterworth_dp(torch.tensor([1.0, 3.0, 5.0]), size=13, dtype=torch.float64)
    img = torch.from_numpy(_texture(32))[None, None]
    run = lambda: noise_bias_trials(kls[2], krs[2], kls, krs, 0.01, 5, scene=img, chunk=2,
                                    generator=torch.Generator().manual_seed(7))
    a, b = run(), run()
    assert torch.equal(a.energy, b.energy)
    assert a.energy.shape == (5, 3) and a.bias.shape == (3,)
    assert torch.allclose(a.bias, bias_correction(kls, krs, 1e-4, size=32), rtol=1e-12)
    assert torch.equal(a.index_uncorrected, a.energy.argmin(1))
    assert torch.equal(a.index_corrected, (a.energy - a.bias).argmin(1))
    # B(d) grows with the kernel, so the correction can only move minima to larger kernels
    assert bool((a.index_corrected >= a.index_uncorrected).all())


def test_errors_name_the_argument():
    kls, krs = butterworth_dp(torch.tensor([1.0, 2.0]), size=9)
    img = torch.rand(1, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="kernel"):
        periodic_blur(img, -torch.ones(3, 3))
    with pytest.raises(ValueError, match="scene"):
        scene_expected_energy(torch.rand(1, 2, 16, 16), kls[0], krs[0], kls, krs)
    with pytest.raises(ValueError, match="same size"):
        scene_expected_energy(img, kls[0][:7, :7], krs[0][:7, :7], kls, krs)
    with pytest.raises(ValueError, match="larger than the scene"):
        scene_expected_energy(torch.rand(1, 1, 8, 8), kls[0], krs[0], kls, krs)
    with pytest.raises(ValueError, match="noise_sigma"):
        noise_bias_trials(kls[0], krs[0], kls, krs, 0.0, 2, size=16, generator=g)
    with pytest.raises(ValueError, match="size is required"):
        noise_bias_trials(kls[0], krs[0], kls, krs, 0.01, 2, generator=g)
    with pytest.raises(TypeError, match="generator"):
        noise_bias_trials(kls[0], krs[0], kls, krs, 0.01, 2, size=16, generator=0)
    with pytest.raises(TypeError, match="trials"):
        noise_bias_trials(kls[0], krs[0], kls, krs, 0.01, 2.5, size=16, generator=g)
    with pytest.raises(ValueError, match="k_left and k_right"):
        energy_curve(img, img, kls[None], krs[None])
