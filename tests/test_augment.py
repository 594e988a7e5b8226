"""dplab.data.augment: DRBNet's Gaussian noise, gray-scale and scaling augmentations."""

import pytest
import torch

from dplab.data.augment import LUMA, Augmented, augment


def _sample(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"combined": torch.rand(3, 16, 20, generator=g), "sharp": torch.rand(3, 16, 20, generator=g),
            "name": "x"}


def test_identity_when_everything_is_off():
    s = _sample()
    out = augment(s, torch.Generator().manual_seed(0), noise_sigma=(0, 0), gray_prob=0.0, scale_range=(1, 1))
    assert torch.equal(out["combined"], s["combined"]) and torch.equal(out["sharp"], s["sharp"])
    assert out["name"] == "x"


def test_gray_is_luminance_on_input_and_target():
    s = _sample()
    out = augment(s, torch.Generator().manual_seed(0), noise_sigma=(0, 0), gray_prob=1.0, scale_range=(1, 1))
    y = sum(c * s["sharp"][i] for i, c in enumerate(LUMA))
    for i in range(3):
        assert torch.allclose(out["sharp"][i], y, atol=1e-6)
    assert bool(out["aug_gray"])


def test_noise_only_on_inputs_with_the_drawn_sigma():
    s = {"combined": torch.full((3, 64, 64), 0.5), "sharp": torch.full((3, 64, 64), 0.5)}
    out = augment(s, torch.Generator().manual_seed(1), noise_sigma=(0.05, 0.05), gray_prob=0.0,
                  scale_range=(1, 1))
    assert torch.equal(out["sharp"], s["sharp"])
    assert abs(float((out["combined"] - 0.5).std()) - 0.05) < 0.005


def test_scaling_keeps_size_and_alignment():
    x = torch.zeros(3, 33, 33)
    x[:, 16, 16] = 1.0
    s = {"combined": x.clone(), "sharp": x.clone()}
    out = augment(s, torch.Generator().manual_seed(2), noise_sigma=(0, 0), gray_prob=0.0, scale_range=(1.5, 1.5))
    assert out["combined"].shape == x.shape
    assert torch.equal(out["combined"], out["sharp"])
    # a centred dot stays centred (to within the half pixel of an integer crop)
    w = out["sharp"][0]
    yy, xx = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    assert abs(float((w * yy).sum() / w.sum()) - 16) <= 0.75 and abs(float((w * xx).sum() / w.sum()) - 16) <= 0.75
    small = augment(s, torch.Generator().manual_seed(2), noise_sigma=(0, 0), gray_prob=0.0, scale_range=(0.6, 0.6))
    assert small["combined"].shape == x.shape


def test_wrapper_is_deterministic_per_epoch():
    ds = Augmented([_sample(0), _sample(1)], seed=5)
    a = ds[1]["combined"]
    assert torch.equal(a, ds[1]["combined"])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[1]["combined"])


def test_bad_arguments():
    with pytest.raises(ValueError):
        augment(_sample(), torch.Generator(), gray_prob=2.0)
    with pytest.raises(TypeError):
        augment(_sample(), None)
