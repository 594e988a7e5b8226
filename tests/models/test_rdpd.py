"""RDPD / RSPD (Abuolaim et al., ICCV 2021, Sec. 4) and the ConvLSTM of Eqs. 7-11."""

import pytest
import torch
import torch.nn.functional as F

from dplab.models import RDPD, build, count_parameters
from dplab.ops.radial import radial_distance_map
from dplab.models.convlstm import ConvLSTM, ConvLSTMCell, LSTMState

SMALL = dict(widths=(4, 4, 8, 8), lstm_channels=6)


def meta_count(name, **cfg):
    with torch.device("meta"):
        return count_parameters(build(name, **cfg))


# ----------------------------------------------------------------------------- counts

def test_parameter_count_matches_authors_code_without_peepholes():
    assert meta_count("rdpd", peephole=False) == 24_278_703       # Keras ConvLSTM2D has no peepholes


def test_peepholes_add_three_per_channel_vectors():
    assert meta_count("rdpd") == 24_278_703 + 3 * 512
    assert abs(meta_count("rdpd") / 24_278_703 - 1) < 0.005


def test_convlstm_count_matches_code():
    with torch.device("meta"):
        cell = ConvLSTMCell(512, 512, 3, peephole=False)
    assert count_parameters(cell) == 18_876_416


def test_rspd_is_one_view_plus_radial():
    net = build("rspd", **SMALL)
    assert net.in_channels == 4
    assert meta_count("rspd", peephole=False) == 24_278_703 - 3 * 9 * 32


def test_half_of_dpdnet_filters():
    with torch.device("meta"):
        net = build("rdpd")
    widths = [net.enc1[0].conv.out_channels, net.enc2[0].conv.out_channels,
              net.enc3[0].conv.out_channels, net.enc4[0].conv.out_channels, net.pre_lstm.conv.out_channels]
    assert widths == [32, 64, 128, 256, 512]
    assert net.lstm.hidden_channels == 512 and net.lstm.dropout == 0.4


# ----------------------------------------------------------------------------- ConvLSTM equations

def _random_cell(cin=2, hid=3, k=3, **kw):
    torch.manual_seed(0)
    cell = ConvLSTMCell(cin, hid, k, **kw)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return cell.eval()


def _hand_step(cell, x, h, c, mx=None, mh=None):
    """Eqs. 7-11 written gate by gate with separate convolutions."""
    hid, pad = cell.hidden_channels, cell.kernel_size // 2
    Wx, b, Wh = cell.conv_x.weight, cell.conv_x.bias, cell.conv_h.weight
    peep = cell.peep if cell.peep is not None else torch.zeros(3, hid, 1, 1)

    def gate(g):
        xs = x if mx is None else x * mx[g]
        hs = h if mh is None else h * mh[g]
        sl = slice(g * hid, (g + 1) * hid)
        return F.conv2d(xs, Wx[sl], b[sl], padding=pad) + F.conv2d(hs, Wh[sl], padding=pad)

    i = torch.sigmoid(gate(0) + peep[0] * c)                 # (7)
    f = torch.sigmoid(gate(1) + peep[1] * c)                 # (8)
    o = torch.sigmoid(gate(3) + peep[2] * c)                 # (9)
    c_new = f * c + i * torch.tanh(gate(2))                  # (10)
    h_new = o * torch.tanh(c_new)                            # (11)
    return h_new, c_new


@pytest.mark.parametrize("peephole", [True, False])
def test_convlstm_matches_hand_written_equations(peephole):
    cell = _random_cell(peephole=peephole)
    torch.manual_seed(1)
    x1, x2 = torch.randn(2, 2, 2, 5, 6)
    h0, c0 = torch.randn(2, 2, 3, 5, 6)
    s1 = cell(x1, LSTMState(h0, c0))
    h1, c1 = _hand_step(cell, x1, h0, c0)
    assert torch.allclose(s1.h, h1, atol=1e-6) and torch.allclose(s1.c, c1, atol=1e-6)
    s2 = cell(x2, s1)
    h2, c2 = _hand_step(cell, x2, h1, c1)
    assert torch.allclose(s2.h, h2, atol=1e-6) and torch.allclose(s2.c, c2, atol=1e-6)


def test_peepholes_are_per_channel_and_size_free():
    cell = _random_cell()
    assert cell.peep.shape == (3, 3, 1, 1)
    for size in [(4, 4), (7, 9)]:                       # fully convolutional: any H, W
        assert cell(torch.rand(1, 2, *size)).h.shape == (1, 3, *size)


def test_zero_state_default_and_keras_initialisation():
    cell = ConvLSTMCell(2, 3).eval()
    x = torch.rand(1, 2, 4, 4)
    z = torch.zeros(1, 3, 4, 4)
    assert torch.equal(cell(x).h, cell(x, LSTMState(z, z)).h)
    bias = cell.conv_x.bias.detach()
    assert torch.equal(bias[3:6], torch.ones(3)) and int(torch.count_nonzero(bias[:3])) == 0
    assert int(torch.count_nonzero(cell.peep.detach())) == 0


def test_dropout_masks_follow_keras():
    cell = _random_cell(dropout=0.4, recurrent_dropout=0.25).train()
    x, h, c = torch.rand(2, 2, 5, 6), torch.rand(2, 3, 5, 6), torch.rand(2, 3, 5, 6)
    torch.manual_seed(3)
    mx, mh = cell.dropout_masks(x)
    assert mx.shape == (4, 2, 2, 5, 6) and mh.shape == (4, 2, 3, 5, 6)
    assert torch.equal(torch.unique(mx), torch.tensor([0.0, 1 / 0.6]))
    assert torch.equal(torch.unique(mh), torch.tensor([0.0, 1 / 0.75]))
    assert not torch.equal(mx[0], mx[1])                       # one mask per gate
    s = cell(x, LSTMState(h, c), (mx, mh))
    h1, c1 = _hand_step(cell, x, h, c, mx, mh)
    assert torch.allclose(s.h, h1, atol=1e-6) and torch.allclose(s.c, c1, atol=1e-6)
    assert cell.eval().dropout_masks(x) == (None, None)


def test_convlstm_sequence_reuses_one_mask():
    lstm = ConvLSTM(2, 3, dropout=0.5).train()
    x = torch.rand(1, 4, 2, 5, 5)
    torch.manual_seed(5)
    hs, _ = lstm(x)
    torch.manual_seed(5)
    masks = lstm.cell.dropout_masks(x[:, 0])
    state = None
    for t in range(4):
        state = lstm.cell(x[:, t], state, masks)
        assert torch.allclose(hs[:, t], state.h, atol=1e-6)


def test_convlstm_refuses_bad_input():
    cell = ConvLSTMCell(2, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        cell(torch.rand(1, 4, 5, 5))
    with pytest.raises(ValueError, match="state"):
        cell(torch.rand(1, 2, 5, 5), LSTMState(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)))
    with pytest.raises(ValueError, match="dropout"):
        ConvLSTMCell(2, 3, dropout=1.0)
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(2, 3, 4)
    with pytest.raises(ValueError, match="T = 0"):
        ConvLSTM(2, 3)(torch.rand(1, 0, 2, 4, 4))


# ----------------------------------------------------------------------------- RDPD

def _net(**kw):
    torch.manual_seed(0)
    return RDPD(**{**SMALL, **kw}).eval().requires_grad_(False)


@pytest.mark.parametrize("size", [(16, 16), (17, 30), (5, 3)])
def test_frame_and_sequence_shapes(size):
    net = _net()
    y = net(torch.rand(2, 7, *size))
    assert y.shape == (2, 3, *size)
    ys = net(torch.rand(2, 3, 7, *size))
    assert ys.shape == (2, 3, 3, *size)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_sequence_equals_frame_by_frame_with_carried_state():
    net = _net()
    seq = torch.rand(2, 5, 7, 16, 32)
    y_seq, s_seq = net(seq, return_state=True)
    state, frames = None, []
    for t in range(5):
        y, state = net(seq[:, t], state, return_state=True)
        frames.append(y)
    assert torch.allclose(y_seq, torch.stack(frames, 1), atol=1e-5)
    assert torch.allclose(s_seq.h, state.h, atol=1e-5) and torch.allclose(s_seq.c, state.c, atol=1e-5)
    # a sequence split in two calls, passing the state, gives the same frames
    a, st = net(seq[:, :2], return_state=True)
    b = net(seq[:, 2:], st)
    assert torch.allclose(torch.cat([a, b], 1), y_seq, atol=1e-5)


def test_state_carries_information():
    net = _net()
    with torch.no_grad():
        net.lstm.conv_h.weight.mul_(5)          # make the memory matter
    x = torch.rand(1, 7, 16, 16)
    _, st = net(torch.rand(1, 7, 16, 16), return_state=True)
    assert not torch.allclose(net(x), net(x, st))


def test_linear_head_is_clamped():
    net = _net()
    with torch.no_grad():
        net.head.body[1].conv.bias.fill_(5.0)
    assert torch.equal(net(torch.rand(1, 7, 16, 16)), torch.ones(1, 3, 16, 16))
    with torch.no_grad():
        net.head.body[1].conv.bias.fill_(-5.0)
    assert torch.equal(net(torch.rand(1, 7, 16, 16)), torch.zeros(1, 3, 16, 16))
    sig = _net(head="sigmoid")
    y = sig(torch.rand(1, 7, 16, 16))
    assert bool(((y > 0) & (y < 1)).all())


def test_rdpd_refuses_bad_input():
    net = _net()
    with pytest.raises(ValueError, match="7"):
        net(torch.rand(1, 6, 16, 16))
    with pytest.raises(ValueError, match="7"):
        net(torch.rand(16, 16))
    with pytest.raises(ValueError, match="T = 0"):
        net(torch.rand(1, 0, 7, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        net(torch.full((1, 7, 16, 16), float("inf")))
    _, st = net(torch.rand(1, 7, 16, 16), return_state=True)
    with pytest.raises(ValueError, match="state"):
        net(torch.rand(1, 7, 32, 32), st)
    with pytest.raises(ValueError, match="head"):
        RDPD(head="relu")
    with pytest.raises(ValueError, match="4 channel|, 4,"):
        build("rspd", **SMALL)(torch.rand(1, 7, 16, 16))


def test_training_mode_uses_lstm_dropout():
    net = _net().train()
    x = torch.rand(1, 2, 7, 16, 16)
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    assert not torch.equal(a, net(x))


def test_radial_distance_map():
    r = radial_distance_map(5, 7, quantize=False)
    assert r.shape == (1, 5, 7) and r.dtype == torch.float32
    assert float(r[0, 2, 3]) == 0.0 and float(r.max()) == 1.0
    for corner in [(0, 0), (0, 6), (4, 0), (4, 6)]:
        assert float(r[0, corner[0], corner[1]]) == pytest.approx(1.0)
    assert torch.allclose(r, r.flip(-1)) and torch.allclose(r, r.flip(-2))
    expect = (1 ** 2 + 2 ** 2) ** 0.5 / (2 ** 2 + 3 ** 2) ** 0.5
    assert float(r[0, 1, 1]) == pytest.approx(expect, abs=1e-6)
    assert radial_distance_map(5, 7, dtype=torch.float64).dtype == torch.float64
    q = radial_distance_map(5, 7)
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-4)
    assert float((q - r).abs().max()) <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="height"):
        radial_distance_map(0, 4)
