"""LPIPS (VGG, v0.1): metric properties, weight files, an independent re-implementation, evaluate hook."""

import pytest
import torch
import torch.nn.functional as F

from dplab.eval.evaluate import compare, evaluate
from dplab.metrics.lpips import LPIPS, VGG16Features, default_lpips_paths, load_lpips


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def metric():
    torch.manual_seed(0)
    return LPIPS()


def images(n=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


# torchvision's vgg16().features: conv indices by block; a ReLU follows each conv, a max-pool each block
_TV_BLOCKS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))


def reference_lpips(x, y, vgg: dict, lins: list) -> torch.Tensor:
    """Straightforward LPIPS: the lpips package's steps written out with F.conv2d."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    hx, hy = (2 * x - 1 - shift) / scale, (2 * y - 1 - shift) / scale
    for block, convs in enumerate(_TV_BLOCKS):
        if block > 0:
            hx, hy = F.max_pool2d(hx, 2, 2), F.max_pool2d(hy, 2, 2)
        for i in convs:
            w, b = vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"]
            hx = F.relu(F.conv2d(hx, w, b, padding=1))
            hy = F.relu(F.conv2d(hy, w, b, padding=1))
        nx = hx / (hx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = hy / (hy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = F.conv2d((nx - ny) ** 2, lins[block])  # (B, 1, h, w)
        total = total + d.mean(dim=(1, 2, 3))
    return total


def save_torchvision_style(model: LPIPS, tmp_path, whole_model=True):
    """Weight files with torchvision's and the lpips package's key names."""
    net = {k[len("net."):]: v.clone() for k, v in model.state_dict().items() if k.startswith("net.")}
    if whole_model:  # like vgg16-397923af.pth: features.* plus a classifier
        vgg = {f"features.{k}": v for k, v in net.items()}
        vgg["classifier.0.weight"] = torch.zeros(4, 4)
    else:
        vgg = net
    lin = {f"lin{i}.model.1.weight": getattr(model, f"lin{i}").model[1].weight.clone() for i in range(5)}
    vp, lp = tmp_path / "vgg16.pth", tmp_path / "vgg.pth"
    torch.save(vgg, vp)
    torch.save(lin, lp)
    return vp, lp, vgg, lin


# ----------------------------------------------------------------------------- metric properties

def test_identical_images_have_distance_zero(metric):
    x, _ = images()
    d = metric(x, x.clone())
    assert d.shape == (2,) and torch.equal(d, torch.zeros(2))


def test_symmetric_and_non_negative(metric):
    x, y = images(3)
    dxy, dyx = metric(x, y), metric(y, x)
    assert torch.allclose(dxy, dyx, rtol=1e-5, atol=1e-7)
    assert bool((dxy > 0).all())
    # closer images are closer in LPIPS too (for these random weights, a sanity check)
    assert bool((metric(x, (x + 0.01 * (y - x))) < dxy).all())


def test_batch_items_are_independent(metric):
    x, y = images(3)
    full = metric(x, y)
    for i in range(3):
        assert torch.allclose(metric(x[i:i + 1], y[i:i + 1]), full[i:i + 1], rtol=1e-5, atol=1e-7)


def test_differentiable_wrt_inputs_but_frozen(metric):
    x, y = images(1)
    x.requires_grad_(True)
    metric(x, y).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in metric.parameters())
    metric.train()
    assert not metric.training and not metric.net.training


# ----------------------------------------------------------------------------- against a re-implementation

def test_matches_an_independent_reimplementation(metric, tmp_path):
    x, y = images(2)
    _, _, vgg, lin = save_torchvision_style(metric, tmp_path)
    lins = [lin[f"lin{i}.model.1.weight"] for i in range(5)]
    expected = reference_lpips(x.double(), y.double(), {k: v.double() for k, v in vgg.items()},
                               [w.double() for w in lins])
    got = metric(x, y)
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-7), (got, expected)
    # and at a non-square, non-power-of-two size (odd pooled sizes are floored)
    x2, y2 = torch.rand(1, 3, 20, 36), torch.rand(1, 3, 20, 36)
    expected2 = reference_lpips(x2.double(), y2.double(), {k: v.double() for k, v in vgg.items()},
                                [w.double() for w in lins])
    assert torch.allclose(metric(x2, y2).double(), expected2, rtol=1e-4, atol=1e-7)


def test_vgg16_features_layout_matches_torchvision():
    f = VGG16Features()
    convs = [int(k.split(".")[0]) for k in f.state_dict() if k.endswith(".weight")]
    assert convs == [i for block in _TV_BLOCKS for i in block]
    assert len(f) == 31 and type(f[30]).__name__ == "MaxPool2d" and type(f[29]).__name__ == "ReLU"
    assert tuple(f.state_dict()["28.weight"].shape) == (512, 512, 3, 3)
    with pytest.raises(ValueError, match="num_layers"):
        VGG16Features(32)


# ----------------------------------------------------------------------------- weight files

@pytest.mark.parametrize("whole_model", [True, False])
def test_round_trip_of_torchvision_and_lpips_files(metric, tmp_path, whole_model):
    vp, lp, _, _ = save_torchvision_style(metric, tmp_path, whole_model)
    loaded = load_lpips(vp, lp)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    ref = metric.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k
    x, y = images(1)
    assert torch.equal(loaded(x, y), metric(x, y))


def test_default_paths_follow_the_environment(monkeypatch, tmp_path, metric):
    monkeypatch.delenv("DPLAB_LPIPS_DIR", raising=False)
    monkeypatch.setenv("DPLAB_DATA", str(tmp_path / "data"))
    assert default_lpips_paths() == (tmp_path / "data/weights/vgg16_features.pth",
                                     tmp_path / "data/weights/lpips_vgg_v0.1.pth")
    monkeypatch.setenv("DPLAB_LPIPS_DIR", str(tmp_path))
    vgg_default, lin_default = default_lpips_paths()
    assert vgg_default.parent == tmp_path == lin_default.parent
    vp, lp, _, _ = save_torchvision_style(metric, tmp_path)
    vp.rename(vgg_default)
    lp.rename(lin_default)
    x, y = images(1)
    assert torch.equal(load_lpips()(x, y), metric(x, y))


def test_missing_files_say_how_to_get_them(tmp_path, metric):
    vp, lp, _, _ = save_torchvision_style(metric, tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_lpips(tmp_path / "nope.pth", lp)
    msg = str(err.value)
    assert "nope.pth" in msg and "torchvision" in msg and "vgg16(weights='DEFAULT')" in msg
    with pytest.raises(FileNotFoundError) as err:
        load_lpips(vp, tmp_path / "none.pth")
    msg = str(err.value)
    assert "none.pth" in msg and "weights/v0.1/vgg.pth" in msg and "lpips" in msg


def test_bad_weight_files_are_refused(tmp_path, metric):
    vp, lp, vgg, lin = save_torchvision_style(metric, tmp_path)
    bad = dict(lin)
    bad["lin2.model.1.weight"] = torch.ones(1, 128, 1, 1)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"lin2\.model\.1\.weight.*\(1, 128, 1, 1\).*\(1, 256, 1, 1\)"):
        load_lpips(vp, tmp_path / "shape.pth")
    bad = dict(lin)
    bad["lin0.model.1.weight"] = -lin["lin0.model.1.weight"] - 1
    torch.save(bad, tmp_path / "neg.pth")
    with pytest.raises(ValueError, match="negative"):
        load_lpips(vp, tmp_path / "neg.pth")
    bad = {k: v for k, v in lin.items() if not k.startswith("lin4")}
    torch.save(bad, tmp_path / "short.pth")
    with pytest.raises(KeyError, match="lin4"):
        load_lpips(vp, tmp_path / "short.pth")
    bad = dict(vgg)
    bad["features.0.weight"] = torch.full_like(vgg["features.0.weight"], float("nan"))
    torch.save(bad, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="NaN"):
        load_lpips(tmp_path / "nan.pth", lp)
    bad = {k: v for k, v in vgg.items() if k != "features.28.bias"}
    torch.save(bad, tmp_path / "short_vgg.pth")
    with pytest.raises(KeyError, match="28.bias"):
        load_lpips(tmp_path / "short_vgg.pth", lp)


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_clear_errors(metric):
    x, y = images(1)
    with pytest.raises(ValueError, match="same shape"):
        metric(x, y[..., :-1])
    with pytest.raises(ValueError, match="3 channel"):
        metric(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        metric(x[0], y[0])
    with pytest.raises(ValueError, match="at least 16x16"):
        metric(x[..., :8, :8], y[..., :8, :8])
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric(nan, y)
    with pytest.raises(TypeError, match="floating-point"):
        metric((x * 255).to(torch.uint8), (y * 255).to(torch.uint8))


# ----------------------------------------------------------------------------- evaluate hook

def _data(n=2, size=32):
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        sharp = torch.rand(3, size, size, generator=g)
        out.append({"name": f"im{i}", "sharp": sharp,
                    "combined": (sharp + 0.1 * torch.randn(3, size, size, generator=g)).clamp(0, 1)})
    return out


def test_evaluate_and_compare_add_an_lpips_column(metric):
    data = _data()
    plain = evaluate(lambda b: b["combined"], data, warmup=0)
    assert "lpips" not in plain.columns and "lpips" not in plain[0]
    table = evaluate(lambda b: b["combined"], data, warmup=0, lpips=metric)
    assert table.columns == ["image", "psnr", "ssim", "mae", "lpips", "time_s"]
    for row, base, sample in zip(table[:-1], plain, data):
        assert row["lpips"] == pytest.approx(float(metric(sample["combined"][None], sample["sharp"][None])[0]))
        assert all(row[k] == base[k] for k in ("image", "psnr", "ssim", "mae"))
    assert table.mean["lpips"] == pytest.approx(sum(r["lpips"] for r in table[:-1]) / 2)
    assert "lpips" in str(table)
    cmp = compare({"identity": lambda b: b["combined"], "truth": lambda b: b["sharp"]}, data, warmup=0, lpips=metric)
    assert cmp.columns == ["method", "psnr", "ssim", "mae", "lpips", "time_s", "params"]
    assert cmp[1]["lpips"] == 0.0 < cmp[0]["lpips"]
    assert cmp.details["identity"].mean["lpips"] == pytest.approx(cmp[0]["lpips"])
    assert "lpips" not in compare({"identity": lambda b: b["combined"]}, data, warmup=0).columns
