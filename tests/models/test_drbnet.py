"""DRBNet (Ruan et al., CVPR 2022): dynamic residual blocks, variants and counts."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab.models import DRBNET_VARIANTS, DRBNet, DynamicResidualBlock, apply_pixel_kernels, build, count_parameters


def meta_count(name, **cfg):
    with torch.device("meta"):
        return count_parameters(build(name, **cfg))


def _small(**kw):
    torch.manual_seed(0)
    return DRBNet(width=4, **kw).eval().requires_grad_(False)


def _zero_last(seq):
    for p in seq[-1].parameters():
        nn.init.zeros_(p)


def _identity_drbs(net):
    for drb in net.drbs.values():
        if drb.kernel_branch is not None:
            _zero_last(drb.kernel_branch)
        if drb.res_branch is not None:
            _zero_last(drb.res_branch)


# ----------------------------------------------------------------------------- counts

@pytest.mark.parametrize("name, expected", [("drbnet", 11_689_616), ("drbnet_dual", 11_690_480)])
def test_parameter_count_matches_authors_code(name, expected):
    n = meta_count(name)
    assert abs(n - expected) <= 0.005 * expected
    assert n == expected


@pytest.mark.parametrize("k", [5, 7, 9, 11])
def test_table7_kernel_sizes(k):
    with torch.device("meta"):
        net = build("drbnet", kernel_size=k)
    for drb in net.drbs.values():
        assert drb.kernel_branch[-1].conv.out_channels == k * k
    # only the 1x1 kernel convs change: 4 layers with 128/128/64/64 inputs
    assert count_parameters(net) - 11_689_616 == (k * k - 49) * (128 + 1 + 128 + 1 + 64 + 1 + 64 + 1)


def test_table6_variants():
    counts = {}
    for name, kw in DRBNET_VARIANTS.items():
        with torch.device("meta"):
            net = build("drbnet", variant=name)
        counts[name] = count_parameters(net)
        drb = net.drbs["d1"]
        assert (drb.kernel_branch is None) == (kw.get("use_dynamic", True) is False)
        assert (drb.res_branch is None) == (kw.get("use_residual", True) is False)
        assert drb.use_input == kw.get("use_input", True)
    assert counts["no_input"] == counts["full"]          # no weights, only the skip term
    assert counts["no_dynamic"] < counts["full"] and counts["no_residual"] < counts["full"]
    assert counts["single_drb"] < counts["full"]
    with pytest.raises(ValueError, match="variant"):
        build("drbnet", variant="tiny")
    with pytest.raises(ValueError, match="odd"):
        DRBNet(kernel_size=6)
    with pytest.raises(ValueError, match="use_dynamic or use_residual"):
        DRBNet(use_dynamic=False, use_residual=False)


# ----------------------------------------------------------------------------- per-pixel kernels

@pytest.mark.parametrize("k", [3, 5])
def test_pixel_kernels_equal_python_loop(k):
    torch.manual_seed(0)
    img = torch.rand(2, 3, 5, 6)
    ker = torch.randn(2, k * k, 5, 6)
    out = apply_pixel_kernels(img, ker)
    p = k // 2
    expect = torch.zeros_like(img)
    for b in range(2):
        for c in range(3):
            for y in range(5):
                for x in range(6):
                    acc = 0.0
                    for i in range(k):
                        for j in range(k):
                            yy = min(max(y + i - p, 0), 4)      # replicate padding
                            xx = min(max(x + j - p, 0), 5)
                            acc += float(ker[b, i * k + j, y, x]) * float(img[b, c, yy, xx])
                    expect[b, c, y, x] = acc
    assert torch.allclose(out, expect, atol=1e-5)


def test_pixel_kernels_delta_is_identity_and_validation():
    img = torch.rand(1, 3, 4, 5)
    ker = torch.zeros(1, 49, 4, 5)
    ker[:, 24] = 1                                   # centre tap of a 7x7 window
    assert torch.equal(apply_pixel_kernels(img, ker), img)
    with pytest.raises(ValueError, match="odd"):
        apply_pixel_kernels(img, torch.zeros(1, 16, 4, 5))
    with pytest.raises(ValueError, match="match"):
        apply_pixel_kernels(img, torch.zeros(1, 9, 4, 4))


def test_drb_is_identity_with_zero_kernels_and_residual():
    torch.manual_seed(0)
    drb = DynamicResidualBlock(8, (4, 4, 4), (4, 4), (4, 4), kernel_size=7)
    _zero_last(drb.kernel_branch)
    _zero_last(drb.res_branch)
    x = torch.rand(2, 3, 6, 7)
    assert torch.equal(drb(x, torch.rand(2, 8, 6, 7)), x)


def test_drb_output_is_input_plus_dynamic_plus_residual():
    torch.manual_seed(0)
    drb = DynamicResidualBlock(8, (4, 4, 4), (4, 4), (4, 4), kernel_size=3)
    x, d = torch.rand(1, 3, 6, 7), torch.rand(1, 8, 6, 7)
    f = torch.cat([d, drb.img_feat(x)], 1)
    expect = x + apply_pixel_kernels(x, drb.kernel_branch(f)) + drb.res_branch(f)   # Eq. 5
    assert torch.allclose(drb(x, d), expect, atol=1e-6)


# ----------------------------------------------------------------------------- network

def test_identity_drbs_return_coarse_to_fine_input():
    net = _small()
    _identity_drbs(net)
    x = torch.rand(1, 3, 16, 24)
    scales = net(x, return_scales=True)
    assert [tuple(s.shape[-2:]) for s in scales] == [(2, 3), (4, 6), (8, 12), (16, 24)]
    down8 = F.avg_pool2d(x, 8)
    assert torch.allclose(scales[0], down8, atol=1e-6)          # [-1, 1] round trip
    assert torch.allclose(scales[3], F.interpolate(down8, scale_factor=8, mode="nearest"), atol=1e-6)
    # an image constant on 8x8 blocks passes through unchanged
    blocks = F.interpolate(torch.rand(1, 3, 2, 3), scale_factor=8, mode="nearest")
    assert torch.allclose(net(blocks), blocks, atol=1e-6)


def test_dual_pixel_starts_from_combined_image():
    net = _small(in_channels=6)
    _identity_drbs(net)
    combined = F.interpolate(torch.rand(1, 3, 2, 2), scale_factor=8, mode="nearest")
    left = combined * 0.3
    x = torch.cat([left, combined - left], 1)
    assert torch.allclose(net(x), combined, atol=1e-6)


@pytest.mark.parametrize("size", [(16, 16), (13, 21), (8, 40), (3, 5)])
@pytest.mark.parametrize("channels", [3, 6])
def test_shapes_any_size(size, channels):
    y = _small(in_channels=channels)(torch.rand(2, channels, *size))
    assert y.shape == (2, 3, *size)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_variants_run():
    x = torch.rand(1, 3, 16, 16)
    for name, kw in DRBNET_VARIANTS.items():
        net = _small(**kw)
        out = net(x, return_scales=True)
        assert len(out) == (1 if name == "single_drb" else 4)
        assert out[-1].shape == (1, 3, 16, 16)
        assert net(x).shape == (1, 3, 16, 16)


def test_refuses_bad_input():
    net = _small()
    with pytest.raises(ValueError, match="3 channel"):
        net(torch.rand(1, 6, 16, 16))
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 3, 12, 16), return_scales=True)
    with pytest.raises(ValueError, match="in_channels"):
        DRBNet(in_channels=4)
    with pytest.raises(ValueError, match="6 channel"):
        build("drbnet_dual", width=4)(torch.rand(1, 3, 16, 16))


def test_multiscale_outputs_carry_gradients():
    net = DRBNet(width=4)
    x = torch.rand(1, 3, 16, 16)
    loss = sum(s.mean() for s in net(x, return_scales=True))
    loss.backward()
    assert all(p.grad is not None for p in net.drbs["d8"].parameters())
