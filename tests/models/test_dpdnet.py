"""DPDNet (Abuolaim & Brown, ECCV 2020), shared blocks and the model registry."""

import pytest
import torch
import torch.nn.functional as F

from dplab.models import REFERENCE_PARAMS, DPDNet, build, count_parameters, list_models
from dplab.models.blocks import ConvAct, UpConv, pad_to_multiple

SMALL = dict(widths=(4, 8, 8, 8))


def meta_count(name, **cfg):
    with torch.device("meta"):
        return count_parameters(build(name, **cfg))


# Parameter counts of the authors' Keras code (REFERENCE_FACTS.md), typed in independently.
@pytest.mark.parametrize("name, expected", [("dpdnet", 31_035_151), ("dpdnet_single", 31_033_423)])
def test_parameter_count_matches_authors_code(name, expected):
    assert meta_count(name) == expected
    assert REFERENCE_PARAMS[name] == expected


def test_registry_lists_the_design_names():
    names = list_models()
    for n in ("dpdnet", "dpdnet_single", "rdpd", "rspd", "drbnet", "drbnet_dual", "mdp"):
        assert n in names
    assert names == sorted(names)
    with pytest.raises(ValueError, match="name"):
        build("unet")
    with pytest.raises(TypeError, match="dpdnet"):
        build("dpdnet", kernel_size=3)


def test_count_parameters_trainable_only():
    net = DPDNet(**SMALL)
    total = count_parameters(net)
    net.head.requires_grad_(False)
    frozen = sum(p.numel() for p in net.head.parameters())
    assert count_parameters(net, trainable_only=True) == total - frozen
    with pytest.raises(TypeError, match="model"):
        count_parameters("dpdnet")


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (17, 23), (1, 1), (15, 40)])
@pytest.mark.parametrize("channels", [6, 3])
def test_shapes_any_size(size, channels):
    net = DPDNet(channels, **SMALL).eval()
    y = net(torch.rand(2, channels, *size))
    assert y.shape == (2, 3, *size)
    assert bool(((y >= 0) & (y <= 1)).all())      # sigmoid head (float32 rounds a saturated sigmoid to 1.0)


def test_odd_size_is_replicate_padded_then_cropped():
    net = DPDNet(**SMALL).eval()
    x = torch.rand(1, 6, 13, 21)
    xp = F.pad(x, (0, 11, 0, 3), mode="replicate")   # to 16 x 32
    assert torch.allclose(net(x), net(xp)[..., :13, :21], atol=1e-6)


@pytest.mark.parametrize("bad, err, match", [
    (torch.rand(1, 3, 16, 16), ValueError, "6 channel"),
    (torch.rand(6, 16, 16), ValueError, r"\(B, C, H, W\)"),
    (torch.zeros(1, 6, 16, 16, dtype=torch.int64), TypeError, "floating"),
    (torch.full((1, 6, 16, 16), float("nan")), ValueError, "NaN"),
])
def test_refuses_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        DPDNet(**SMALL)(bad)


def test_dropout_only_in_training():
    net = DPDNet(**SMALL)
    x = torch.rand(1, 6, 16, 16)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    assert not torch.equal(a, net(x))


def test_layer_layout_follows_keras_code():
    net = DPDNet()
    convs = [m.conv for m in net.modules() if isinstance(m, ConvAct)]
    ks = [c.kernel_size[0] for c in convs]
    assert ks.count(2) == 4 and ks.count(1) == 1 and len(convs) == 24
    assert [c.out_channels for c in convs[:10]] == [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]
    # He-normal weights, zero biases (Keras defaults)
    w = net.enc2[0].conv.weight.detach()
    assert abs(float(w.std()) - (2 / (64 * 9)) ** 0.5) < 0.01
    assert int(torch.count_nonzero(net.enc2[0].conv.bias)) == 0


def test_even_kernel_uses_tensorflow_same_padding():
    conv = ConvAct(1, 1, 2, act=None)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
        conv.conv.bias.zero_()
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    # TF 'same' for k=2 pads 0 before and 1 after: out[i, j] = sum w[a, b] x[i + a, j + b]
    xp = F.pad(x, (0, 1, 0, 1))
    expect = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):
            expect[i, j] = (xp[0, 0, i:i + 2, j:j + 2] * conv.conv.weight[0, 0]).sum()
    assert torch.equal(conv(x)[0, 0], expect)


def test_upconv_is_nearest_upsampling_then_conv():
    up = UpConv(2, 3)
    x = torch.rand(1, 2, 3, 4)
    assert torch.equal(up(x), up.conv(x.repeat_interleave(2, -2).repeat_interleave(2, -1)))


def test_pad_to_multiple():
    x = torch.rand(2, 3, 5, 16)
    y, size = pad_to_multiple(x, 16)
    assert y.shape == (2, 3, 16, 16) and size == (5, 16)
    assert torch.equal(y[..., :5, :], x) and torch.equal(y[..., 5:, :], x[..., 4:5, :].expand(2, 3, 11, 16))
    z, _ = pad_to_multiple(torch.rand(1, 2, 3, 5, 5), 4)   # sequences too
    assert z.shape == (1, 2, 3, 8, 8)
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)
