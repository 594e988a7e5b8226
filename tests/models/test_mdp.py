"""MDP (Abuolaim et al., WACV 2022): shared encoder, three stitched decoders, variants."""

import pytest
import torch

from dplab.models import MDP, MDPOutput, MDPSingleTask, build, count_parameters

SMALL = dict(widths=(4, 4, 8, 8), decoder_widths=(8, 8, 4, 4, 4))


def meta_count(name, **cfg):
    with torch.device("meta"):
        return count_parameters(build(name, **cfg))


def test_parameter_count_matches_authors_code():
    assert meta_count("mdp") == 46_860_397


def test_stitching_variants_change_only_the_late_inputs():
    mid, none, late = (meta_count("mdp", stitching=s) for s in ("middle", "none", "late"))
    # no stitching: each late part's first conv sees 128 + 128 instead of 128 + 3 x 128 channels
    assert mid - none == 3 * (2 * 128) * 9 * 128
    # late stitching: the full-resolution block sees 64 + 3 x 64 instead of 64 + 64 channels
    assert late - none == 3 * (2 * 64) * 9 * 64


@pytest.mark.parametrize("task", ["deblur", "views"])
def test_single_task_baselines_have_mdp_capacity(task):
    n = meta_count("mdp_single_task", task=task)
    assert abs(n / 46_860_397 - 1) < 0.005


def test_encoder_widths_and_three_decoders():
    with torch.device("meta"):
        net = build("mdp")
    enc = net.encoder
    assert [enc.enc1[0].conv.out_channels, enc.enc2[0].conv.out_channels, enc.enc3[0].conv.out_channels,
            enc.enc4[0].conv.out_channels, len(enc.enc4)] == [64, 128, 256, 512, 1]
    assert sorted(net.early) == ["left", "right", "sharp"] == sorted(net.late)
    assert net.late["sharp"].dec2[0].conv.in_channels == 128 + 3 * 128


@pytest.mark.parametrize("stitching", ["middle", "none", "late"])
@pytest.mark.parametrize("size", [(16, 16), (18, 16), (21, 35)])
def test_shapes(stitching, size):
    torch.manual_seed(0)
    net = MDP(stitching, **SMALL).eval()
    out = net(torch.rand(2, 3, *size))
    assert isinstance(out, MDPOutput)
    for y in out:
        assert y.shape == (2, 3, *size)
        assert bool(((y > 0) & (y < 1)).all())


def test_refuses_bad_input():
    net = MDP(**SMALL)
    with pytest.raises(ValueError, match="3 channel"):
        net(torch.rand(1, 6, 16, 16))
    with pytest.raises(ValueError, match="stitching"):
        MDP("early")
    with pytest.raises(ValueError, match="task"):
        MDPSingleTask("depth")


def _grads_after_sharp_loss(net):
    net.zero_grad()
    out = net(torch.rand(2, 3, 16, 16))
    out.sharp.square().mean().backward()

    def reached(module):
        return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())

    return reached


def test_middle_stitching_wiring():
    torch.manual_seed(0)
    net = MDP("middle", **SMALL)
    reached = _grads_after_sharp_loss(net)
    assert reached(net.encoder) and reached(net.early["sharp"]) and reached(net.late["sharp"])
    for view in ("left", "right"):
        assert reached(net.early[view].up2)          # the block feeding the middle stitch
        assert reached(net.early[view].bottleneck)
        assert not reached(net.late[view])           # no late-stage sharing


def test_no_stitching_wiring():
    torch.manual_seed(0)
    net = MDP("none", **SMALL)
    reached = _grads_after_sharp_loss(net)
    assert reached(net.encoder)
    for view in ("left", "right"):
        assert not reached(net.early[view]) and not reached(net.late[view])


def test_late_stitching_wiring():
    torch.manual_seed(0)
    net = MDP("late", **SMALL)
    reached = _grads_after_sharp_loss(net)
    for view in ("left", "right"):
        assert reached(net.early[view]) and reached(net.late[view].up1)
        assert not reached(net.late[view].dec1) and not reached(net.late[view].head)


def test_single_task_outputs():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    deblur = MDPSingleTask("deblur", **SMALL).eval()(x)
    assert deblur.left is None and deblur.right is None and deblur.sharp.shape == (1, 3, 16, 16)
    views = MDPSingleTask("views", **SMALL).eval()(x)
    assert views.sharp is None and views.left.shape == views.right.shape == (1, 3, 16, 16)
    assert not torch.equal(views.left, views.right)


def test_step1_freezes_the_sharp_decoder():
    net = MDP(**SMALL).set_trainable("sharp", False)
    assert not any(p.requires_grad for p in net.early["sharp"].parameters())
    assert all(p.requires_grad for p in net.early["left"].parameters())
    out = net(torch.rand(1, 3, 16, 16))
    (out.left.mean() + out.sharp.mean()).backward()
    assert all(p.grad is None for p in net.late["sharp"].parameters())
    assert any(p.grad is not None for p in net.encoder.parameters())
    net.set_trainable("sharp", True)
    assert all(p.requires_grad for p in net.late["sharp"].parameters())
    with pytest.raises(ValueError, match="branch"):
        net.set_trainable("depth", False)
