"""Losses: Charbonnier, RDPD edge loss (Eqs. 13-16), DRBNet L1/VGG (Eqs. 6-7), MDP L_C/L_D (Eqs. 6-7)."""

import pytest
import torch
import torch.nn.functional as F

from dplab.models import MDPOutput
from dplab.ops.filters import sobel_kernels
from dplab.training.drbnet import finetune_loss
from dplab.training.losses import EDGE_SCALES, charbonnier, edge_loss, multiscale_l1, rdpd_loss
from dplab.training.mdp import MDP_LOSS_WEIGHTS, combined_loss, difference_loss, mdp_loss
from dplab.training.vgg import VGG19Features, VGGFeatureLoss, default_vgg19_path, load_vgg19_features


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- Charbonnier

def test_charbonnier():
    a = torch.zeros(2, 3, 4, 4)
    assert float(charbonnier(a, a, eps=1e-3)) == pytest.approx(1e-3)
    assert float(charbonnier(a, a + 3, eps=4.0)) == pytest.approx(5.0)
    assert float(charbonnier(a, a + 1, eps=1e-6)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        charbonnier(a, a[0])
    with pytest.raises(ValueError, match="eps"):
        charbonnier(a, a, eps=0)


# ----------------------------------------------------------------------------- RDPD edge loss

def rdpd_kernels(m):
    """The edge loss's kernels: Sobel divided by its maximum (Eqs. 13-14), float32."""
    return sobel_kernels(m, normalize=True, dtype=torch.float32)


def test_sobel_kernels_hand_values():
    kx, ky = rdpd_kernels(3)
    assert torch.equal(kx, torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 2)
    assert torch.equal(ky, kx.T)
    smooth7 = torch.tensor([1.0, 6, 15, 20, 15, 6, 1])
    deriv7 = torch.tensor([-1.0, -4, -5, 0, 5, 4, 1])
    assert torch.allclose(rdpd_kernels(7)[0], torch.outer(smooth7, deriv7) / 100)
    smooth11 = torch.tensor([1.0, 10, 45, 120, 210, 252, 210, 120, 45, 10, 1])
    deriv11 = torch.tensor([-1.0, -8, -27, -48, -42, 0, 42, 48, 27, 8, 1])
    kx11, ky11 = rdpd_kernels(11)
    assert torch.allclose(kx11, torch.outer(smooth11, deriv11) / 12096)
    assert torch.allclose(ky11, kx11.T)
    for m in (3, 7, 11):
        kx, ky = rdpd_kernels(m)
        assert float(kx.max()) == pytest.approx(1.0) and float(kx.sum()) == pytest.approx(0.0, abs=1e-6)


def test_sobel_kernels_match_authors_arrays_up_to_sign():
    # first rows of the code's x-kernels before normalisation (rdpd_code/model.py)
    assert torch.allclose((rdpd_kernels(3)[0] * 2).abs(), torch.tensor([[1.0, 0, 1], [2, 0, 2], [1, 0, 1]]))
    assert torch.allclose(rdpd_kernels(7)[0][0] * 100, torch.tensor([-1.0, -4, -5, 0, 5, 4, 1]))
    assert torch.allclose(rdpd_kernels(11)[0][5] * 12096,
                          torch.tensor([-252.0, -2016, -6804, -12096, -10584, 0, 10584, 12096, 6804, 2016, 252]),
                          rtol=1e-6)


@pytest.mark.parametrize("m", [1, 2, 4, 0])
def test_sobel_kernels_refuse_bad_sizes(m):
    with pytest.raises(ValueError, match="size"):
        rdpd_kernels(m)


def test_edge_loss_zero_for_equal_images_and_ramp_value():
    x = torch.rand(2, 3, 16, 16)
    assert [float(v) for v in edge_loss(x, x)] == [0.0, 0.0]
    ramp = torch.arange(16.0).expand(1, 1, 16, 16)           # slope 1 per pixel along x
    lx, ly = edge_loss(ramp, torch.zeros_like(ramp), sizes=(3,))
    # G^x = sum_j (j - 1) sum_i kx[i, j] = 2 + 2 = 4 everywhere; G^y = 0
    assert float(lx) == pytest.approx(16.0) and float(ly) == pytest.approx(0.0)
    lx3, _ = edge_loss(ramp, torch.zeros_like(ramp), sizes=(3, 7, 11))
    g7 = float((rdpd_kernels(7)[0] * torch.arange(-3.0, 4)).sum())
    g11 = float((rdpd_kernels(11)[0] * torch.arange(-5.0, 6)).sum())
    assert float(lx3) == pytest.approx((16 + g7 ** 2 + g11 ** 2) / 3, rel=1e-5)     # Eq. 15: mean over scales


def test_rdpd_loss_combines_mse_and_edges():
    torch.manual_seed(0)
    a, b = torch.rand(2, 2, 3, 16, 16)
    mse = F.mse_loss(a, b)
    assert torch.allclose(rdpd_loss(a, b, scales=0), mse)
    lx, ly = edge_loss(a, b, (3,))
    assert torch.allclose(rdpd_loss(a, b, scales=1), mse + 0.03 * lx + 0.02 * ly)
    lx, ly = edge_loss(a, b, (3, 7, 11))
    assert torch.allclose(rdpd_loss(a, b), mse + 0.03 * lx + 0.02 * ly)
    assert torch.allclose(rdpd_loss(a, b, scales=(3, 7, 11), lambda_x=1, lambda_y=0), mse + lx)
    assert float(rdpd_loss(a, a)) == 0.0
    assert EDGE_SCALES == {0: (), 1: (3,), 3: (3, 7, 11)}


def test_rdpd_loss_sequences_and_validation():
    a, b = torch.rand(2, 1, 4, 3, 12, 12)
    assert torch.allclose(rdpd_loss(a, b), rdpd_loss(a.flatten(0, 1), b.flatten(0, 1)))
    with pytest.raises(ValueError, match="scales"):
        rdpd_loss(a, b, scales=2)
    with pytest.raises(ValueError, match="same shape"):
        rdpd_loss(a, b[:, :2])
    with pytest.raises(ValueError, match="exceeds"):
        edge_loss(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_rdpd_loss_has_gradient():
    a = torch.rand(1, 3, 16, 16, requires_grad=True)
    rdpd_loss(a, torch.rand(1, 3, 16, 16)).backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------- DRBNet losses

def test_multiscale_l1():
    y = torch.rand(2, 3, 16, 16)
    preds = [F.interpolate(y, scale_factor=1 / s, mode="area") for s in (8, 4, 2)] + [y]
    assert float(multiscale_l1(preds, y)) == 0.0
    off = [p + 0.25 for p in preds]
    assert float(multiscale_l1(off, y)) == pytest.approx(4 * 0.25)
    assert float(multiscale_l1(off, y, weights=[0, 0, 0, 2])) == pytest.approx(0.5)
    assert float(multiscale_l1(y + 0.5, y)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="weights"):
        multiscale_l1(preds, y, weights=[1, 1])
    with pytest.raises(ValueError, match="empty"):
        multiscale_l1([], y)


VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def test_vgg19_features_use_torchvision_key_names():
    torch.manual_seed(0)
    f = VGG19Features()
    assert len(f) == 37
    expected = [f"{i}.{k}" for i in VGG_CONV_INDICES for k in ("weight", "bias")]
    assert list(f.state_dict()) == expected
    assert tuple(f.state_dict()["34.weight"].shape) == (512, 512, 3, 3)
    assert isinstance(f[36], torch.nn.MaxPool2d) and isinstance(f[35], torch.nn.ReLU)


def test_vgg19_round_trip_through_a_file(tmp_path):
    torch.manual_seed(0)
    f = VGG19Features()
    path = tmp_path / "vgg19_features.pth"
    torch.save(f.state_dict(), path)
    g = load_vgg19_features(path)
    for k, v in f.state_dict().items():
        assert torch.equal(g.state_dict()[k], v)
    assert not any(p.requires_grad for p in g.parameters()) and not g.training
    # a whole-model state dict (torchvision's vgg19-*.pth layout) loads too
    full = {f"features.{k}": v for k, v in f.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(full, tmp_path / "vgg19_full.pth")
    h = load_vgg19_features(tmp_path / "vgg19_full.pth", num_layers=15)
    assert torch.equal(h.state_dict()["14.weight"], f.state_dict()["14.weight"])
    # and the loss can be built straight from the path
    loss = VGGFeatureLoss(path)
    assert torch.equal(loss.features[14].weight, f[14].weight)


def test_vgg19_missing_file_error_says_what_to_do(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_vgg19_features(missing)
    msg = str(info.value)
    assert str(missing) in msg and "L1" in msg and "torchvision" in msg
    monkeypatch.setenv("DPLAB_VGG19", str(missing))
    assert default_vgg19_path() == missing
    with pytest.raises(FileNotFoundError, match="multiscale_l1"):
        VGGFeatureLoss()
    with pytest.raises(KeyError):
        torch.save({"0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
        load_vgg19_features(tmp_path / "partial.pth", num_layers=3)


def test_drbnet_finetune_loss_is_vgg_with_weights_else_multiscale_l1(tmp_path, monkeypatch):
    """DRBNet stage 2: Eq. 7 when the VGG-19 file exists, else Eq. 6 (Table 5, row c)."""
    torch.manual_seed(0)
    y = torch.rand(1, 3, 16, 16)
    preds = [F.interpolate(y.flip(-1), scale_factor=0.5, mode="area"), y.flip(-1)]
    monkeypatch.setenv("DPLAB_VGG19", str(tmp_path / "missing.pth"))
    loss, kind = finetune_loss()
    assert kind == "l1" and torch.equal(loss(preds, y), multiscale_l1(preds, y))
    path = tmp_path / "vgg19_features.pth"
    torch.save(VGG19Features(num_layers=15).state_dict(), path)
    loss, kind = finetune_loss(path)
    assert kind == "vgg" and torch.allclose(loss(preds, y), VGGFeatureLoss(path)(preds, y))


def test_vgg_loss_values_and_gradients():
    torch.manual_seed(0)
    loss = VGGFeatureLoss(VGG19Features(num_layers=15))
    y = torch.rand(2, 3, 16, 16)
    assert float(loss(y, y)) == 0.0
    p = y.flip(-1).clone().requires_grad_(True)
    v = loss(p, y)
    assert float(v.detach()) > 0
    v.backward()
    assert float(p.grad.abs().sum()) > 0
    assert all(q.grad is None for q in loss.features.parameters())
    # Eq. 7 by hand: L1 between features after modules 2, 7, 14 (ImageNet-normalised input)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    a, b = (p.detach() - mean) / std, (y - mean) / std
    expect = 0.0
    for i, layer in enumerate(loss.features):
        a, b = layer(a), layer(b)
        if i in (2, 7, 14):
            expect += float(F.l1_loss(a, b))
    assert float(v.detach()) == pytest.approx(expect, rel=1e-5)
    # all scales
    scales = [F.interpolate(y, scale_factor=0.5, mode="area"), y]
    assert float(loss(scales, y)) == pytest.approx(0.0, abs=1e-6)
    loss.train()
    assert not loss.features.training
    with pytest.raises(ValueError, match="exceed"):
        VGGFeatureLoss(VGG19Features(num_layers=5))


# ----------------------------------------------------------------------------- MDP losses

def test_combined_loss_zero_when_views_sum_to_input():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 8, 8)
    left = img * torch.rand(2, 3, 8, 8)
    assert float(combined_loss(img, left, img - left)) == pytest.approx(0.0, abs=1e-12)
    assert float(combined_loss(img, left, left)) == pytest.approx(float(((img - 2 * left) ** 2).mean()), rel=1e-6)
    # the authors' code: full-brightness views average to the input
    assert float(combined_loss(img, img, img, convention="average")) == 0.0
    with pytest.raises(ValueError, match="convention"):
        combined_loss(img, left, left, convention="max")
    with pytest.raises(ValueError, match="same shape"):
        combined_loss(img, left[:1], left)


def test_difference_loss():
    torch.manual_seed(0)
    l, r = torch.rand(2, 2, 3, 8, 8)
    assert float(difference_loss(l + 0.3, r + 0.3, l, r)) == pytest.approx(0.0, abs=1e-12)
    # swapping the views flips the sign of the difference: 4 (l - r)^2
    assert float(difference_loss(r, l, l, r)) == pytest.approx(float((4 * (l - r) ** 2).mean()), rel=1e-5)


def test_mdp_loss_weights_and_terms():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 8, 8)
    l_gt = img * 0.4
    r_gt = img - l_gt
    sharp = torch.rand(1, 3, 8, 8)
    pred = MDPOutput(l_gt + 0.1, r_gt - 0.1, sharp + 0.2)
    total, terms = mdp_loss(pred, img, left=l_gt, right=r_gt, sharp=sharp, weights=(1, 2, 3, 4))
    assert terms["mse_sharp"] == pytest.approx(0.04) and terms["mse_views"] == pytest.approx(0.01)
    assert terms["L_C"] == pytest.approx(0.0, abs=1e-12) and terms["L_D"] == pytest.approx(0.04)
    assert float(total) == pytest.approx(0.04 + 2 * 0.01 + 4 * 0.04)
    # step 1 of the paper: no sharp term; single-task outputs skip missing predictions
    _, t1 = mdp_loss(pred, img, left=l_gt, right=r_gt, sharp=sharp, weights="paper_step1")
    assert "mse_sharp" not in t1
    _, t2 = mdp_loss(MDPOutput(None, None, sharp), img, sharp=sharp)
    assert list(t2) == ["mse_sharp"]
    assert MDP_LOSS_WEIGHTS["paper_step2"] == (1.0, 0.8, 0.5, 0.5)
    assert MDP_LOSS_WEIGHTS["code_step2"] == (1.0, 0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="nothing"):
        mdp_loss(MDPOutput(None, None, sharp), img)
    with pytest.raises(ValueError, match="weights"):
        mdp_loss(pred, img, weights=(1, 2))
