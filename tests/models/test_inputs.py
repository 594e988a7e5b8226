"""What the networks do with edge-case inputs: an empty batch gives an empty output, an input
of another dtype than the weights and empty images or kernels are refused with a message
naming the argument (instead of an error deep inside torch)."""

import pytest
import torch

from dplab.models import build
from dplab.models.convlstm import ConvLSTM
from dplab.models.drbnet import apply_pixel_kernels

TINY = {
    "dpdnet": {"widths": (4, 4, 4, 4)},
    "dpdnet_single": {"widths": (4, 4, 4, 4)},
    "drbnet": {"width": 4},
    "drbnet_dual": {"width": 4},
    "rdpd": {"widths": (4, 4, 4, 4), "lstm_channels": 4, "dropout": 0.2, "recurrent_dropout": 0.2},
    "rspd": {"widths": (4, 4, 4, 4), "lstm_channels": 4},
    "mdp": {"widths": (4, 4, 4, 4), "decoder_widths": (4, 4, 4, 4, 4)},
    "mdp_single_task": {"widths": (4, 4, 4, 4), "decoder_widths": (4, 4, 4, 4, 4)},
}


def _image(out):
    if isinstance(out, torch.Tensor):
        return out
    return out.sharp if out.sharp is not None else out.left


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_an_empty_batch_gives_an_empty_output(name, mode):
    torch.manual_seed(0)
    net = getattr(build(name, **TINY[name]), mode)()
    out = _image(net(torch.rand(0, net.in_channels, 20, 28)))          # 20 x 28: padded inside
    assert tuple(out.shape) == (0, 3, 20, 28)


@pytest.mark.parametrize("name", sorted(TINY))
def test_another_dtype_than_the_weights_is_refused_by_name(name):
    net = build(name, **TINY[name]).eval()
    with pytest.raises(TypeError, match=r"x is torch.float64 but the network's weights are torch.float32"):
        net(torch.rand(1, net.in_channels, 16, 16, dtype=torch.float64))
    with torch.no_grad():                                               # converted together: fine
        assert _image(net.double()(torch.rand(1, net.in_channels, 16, 16, dtype=torch.float64))).dtype == torch.float64


def test_rdpd_sequences_and_convlstm_take_empty_batches_and_check_dtypes():
    net = build("rdpd", **TINY["rdpd"]).train()
    assert tuple(net(torch.rand(0, 3, 7, 20, 28)).shape) == (0, 3, 3, 20, 28)
    lstm = ConvLSTM(3, 4, dropout=0.2).train()
    hs, state = lstm(torch.rand(0, 2, 3, 6, 6))
    assert tuple(hs.shape) == (0, 2, 4, 6, 6)
    with pytest.raises(TypeError, match="x is torch.float64"):
        lstm(torch.rand(1, 2, 3, 6, 6, dtype=torch.float64))


def test_empty_images_and_kernels_are_refused():
    net = build("dpdnet", **TINY["dpdnet"])
    with pytest.raises(ValueError, match="empty"):
        net(torch.rand(1, 6, 0, 16))
    with pytest.raises(ValueError, match="empty"):
        apply_pixel_kernels(torch.rand(1, 3, 0, 0), torch.rand(1, 9, 0, 0))
    with pytest.raises(ValueError, match="k\\*k channels"):
        apply_pixel_kernels(torch.rand(1, 3, 4, 4), torch.rand(1, 0, 4, 4))
    assert tuple(apply_pixel_kernels(torch.rand(0, 3, 4, 4), torch.rand(0, 9, 4, 4)).shape) == (0, 3, 4, 4)
