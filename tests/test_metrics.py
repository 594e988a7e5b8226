"""PSNR, SSIM and MAE against scikit-image and values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from dplab.metrics.image import mae, mse, psnr, ssim


def pair(seed: int, shape=(2, 3, 20, 27), noise=0.08):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g)
    pred = (target + noise * torch.randn(shape, generator=g)).clamp(0, 1)
    return pred, target


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).double().numpy()


def test_psnr_by_hand_and_against_skimage():
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)
    assert psnr(a, b).item() == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(a, b, data_range=2.0).item() == pytest.approx(10 * math.log10(4 / 0.01))
    pred, target = pair(0)
    ours = psnr(pred, target)
    assert ours.shape == (2,) and ours.dtype == torch.float64
    for i in range(2):
        ref = peak_signal_noise_ratio(hwc(target[i]), hwc(pred[i]), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, rel=1e-12)
        assert mse(pred, target)[i].item() == pytest.approx(mean_squared_error(hwc(target[i]), hwc(pred[i])), rel=1e-12)
    assert psnr(a, a).item() == math.inf


@pytest.mark.parametrize("shape", [(2, 3, 20, 27), (1, 1, 7, 7), (1, 3, 64, 9)])
def test_ssim_matches_skimage_defaults(shape):
    pred, target = pair(shape[-1], shape)
    ours = ssim(pred, target)
    for i in range(shape[0]):
        ref = structural_similarity(hwc(pred[i]), hwc(target[i]), data_range=1.0, channel_axis=-1)
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)


def test_ssim_data_range_and_identity():
    pred, target = pair(3)
    ref = structural_similarity(hwc(2 * pred[0]), hwc(2 * target[0]), data_range=2.0, channel_axis=-1)
    assert ssim(2 * pred, 2 * target, data_range=2.0)[0].item() == pytest.approx(ref, abs=1e-12)
    assert torch.allclose(ssim(target, target), torch.ones(2, dtype=torch.float64))
    # per-image values do not depend on the rest of the batch
    assert ssim(pred[1:], target[1:])[0].item() == pytest.approx(ssim(pred, target)[1].item(), abs=1e-15)


def test_mae_by_hand():
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    target[0, 0, 0, 0] = 0.6  # one pixel of 12 off by 0.6
    target[1] = 0.25
    assert mae(pred, target).tolist() == pytest.approx([0.05, 0.25])


def test_metrics_validate_their_inputs():
    a = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="smaller"):
        ssim(torch.zeros(1, 3, 6, 8), torch.zeros(1, 3, 6, 8))
    with pytest.raises(ValueError, match="odd"):
        ssim(a, a, win_size=4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        mae(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        mae(a, torch.full_like(a, float("nan")))
    with pytest.raises(TypeError, match="floating"):
        mae(a.long(), a.long())
