"""dplab.eval.zoo: the book's methods behind one interface; the benchmark's brief training
(dplab.training.brief) and chapter checkpoints (dplab.book.networks). Tiny sizes."""

from __future__ import annotations

import json

import pytest
import torch

from dplab.render import synth

from dplab.eval import zoo
from dplab.data import DPDDDataset
from dplab.xin.wiener import wiener_dp
from dplab.book import networks as book_networks
from dplab.eval.evaluate import evaluate, method_parameters
from dplab.models import build, model_spec
from dplab.render.layered import render_dp
from dplab.training.brief import NETWORKS, train_brief

TINY = {"dpdnet": {"widths": (4, 4, 4, 4)}, "rdpd": {"widths": (4, 4, 4, 4), "lstm_channels": 4},
        "drbnet": {"width": 4}, "mdp": {"width": 0.0625}}


def _batch(h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    return {"left": x / 2, "right": x / 2, "combined": x, "sharp": x, "name": "a"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo_synth")
    synth.synthesize(root, synth.SynthConfig(count=4, seed=3, size=(32, 48), split_fractions=(0.5, 0.0, 0.5),
                                             psf="butterworth", coc_gain=12.0, max_layers=8), progress=False)
    return root, DPDDDataset("train", root=root), DPDDDataset("test", root=root)


@pytest.mark.parametrize("name", ["dpdnet", "dpdnet_single", "rdpd", "rspd", "drbnet", "drbnet_dual", "mdp"])
def test_network_method_feeds_each_kind_its_input(name):
    opts = {"dpdnet": TINY["dpdnet"], "dpdnet_single": TINY["dpdnet"], "rdpd": TINY["rdpd"], "rspd": TINY["rdpd"],
            "drbnet": TINY["drbnet"], "drbnet_dual": TINY["drbnet"], "mdp": TINY["mdp"]}[name]
    net = build(name, **opts).eval()
    method = zoo.NetworkMethod(net)
    b = _batch(24, 40)
    with torch.no_grad():
        out = method(b)
    assert out.shape == (1, 3, 24, 40) and torch.isfinite(out).all()
    assert method.__name__ == name and method_parameters(method) == method_parameters(net)


def test_network_method_refuses_models_without_spec_or_sharp_output():
    with pytest.raises(ValueError, match="no dplab spec"):
        zoo.NetworkMethod(torch.nn.Conv2d(6, 3, 1))
    with pytest.raises(ValueError, match="no sharp output"):
        zoo.NetworkMethod(build("mdp_single_task", task="views", width=0.0625))


def test_dpdnet_method_concatenates_left_then_right():
    net = build("dpdnet", **TINY["dpdnet"]).eval()
    b = _batch()
    swapped = {**b, "left": b["right"] * 0.3, "right": b["left"]}
    with torch.no_grad():
        direct = net(torch.cat([swapped["left"], swapped["right"]], 1))
        assert torch.equal(zoo.NetworkMethod(net)(swapped), direct)


def test_deblur_gray_replicates_and_averages():
    v = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    seen = {}

    def probe(batch):
        seen.update(batch)
        out = batch["combined"].clone()
        out[:, 0] += 0.3                      # a channel-dependent change is averaged away
        out[:, 1] -= 0.3
        return out

    out = zoo.deblur_gray(probe, v, v)
    assert seen["left"].shape == (1, 3, 16, 16) and torch.equal(seen["left"][:, 0], seen["left"][:, 2])
    assert torch.allclose(out, 2 * v, atol=1e-5)
    # the networks see left + right scaled so that its 99.5th percentile is 0.9
    assert abs(float(torch.quantile(seen["combined"][:, :1].flatten(), 0.995)) - 0.9) < 1e-4
    with pytest.raises(ValueError, match="left"):
        zoo.deblur_gray(probe, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_true_kernels_match_the_renderer():
    # the renderer's constant-CoC output is reproduced by convolving with true_kernels
    img = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    s = render_dp(img, torch.full((1, 1, 40, 40), -3.0), psf="butterworth", clip=False)
    kl, kr = zoo.true_kernels("butterworth", -3.0)
    assert abs(float(kl.sum()) - 0.5) < 1e-5 and abs(float(kr.sum()) - 0.5) < 1e-5
    est_true = wiener_dp(s.left, s.right, kl, kr)
    est_flip = wiener_dp(s.left, s.right, kr, kl)
    core = (..., slice(8, -8), slice(8, -8))
    err = lambda e: float((e[core] - s.sharp[core]).square().mean())
    assert err(est_true) < err(est_flip) and err(est_true) < float((s.combined[core] - s.sharp[core]).square().mean())


def test_wiener_known_psf_picks_the_true_radius_on_a_uniform_blur():
    img = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    s = render_dp(img, torch.full((1, 1, 48, 48), 3.0), psf="butterworth", clip=False)
    w = zoo.WienerKnownPSF("butterworth", [-3.0, 0.0, 1.0, 3.0, 5.0], window=15)
    out = w({"left": s.left, "right": s.right})
    core = (..., slice(10, -10), slice(10, -10))
    assert float((w.last_radius[core] == 3.0).float().mean()) > 0.9
    assert out.shape == img.shape
    with pytest.raises(ValueError, match="window"):
        zoo.WienerKnownPSF(window=4)
    with pytest.raises(ValueError, match="radii"):
        zoo.WienerKnownPSF(radii=[])


def test_mpi_known_psf_runs_under_no_grad_and_validates():
    b = _batch(32, 32)
    m = zoo.MPIKnownPSF("butterworth", 4.0, n_layers=3, iterations=3)
    with torch.no_grad():                    # evaluate() calls methods under no_grad
        out = m(b)
    assert out.shape == (1, 3, 32, 32) and m.last_result is not None
    with pytest.raises(ValueError, match="r_min"):
        zoo.MPIKnownPSF(r_max=1.0, r_min=2.0)


def test_synthetic_psf_reads_the_renderer_metadata(tiny_data):
    root, _, test = tiny_data
    name = test[0]["name"]
    meta = json.loads((root / "test_c" / "meta" / f"{name}.json").read_text())
    assert zoo.synthetic_psf(root)({"name": name}) == meta["psf"] == "butterworth"
    with pytest.raises(FileNotFoundError):
        zoo.synthetic_psf(root)({"name": "nope"})


def test_keep_outputs_keeps_clipped_outputs_and_the_model():
    net = build("dpdnet", **TINY["dpdnet"]).eval()
    keep = zoo.KeepOutputs(zoo.NetworkMethod(net))
    table = evaluate(keep, [{k: v[0] for k, v in _batch().items() if torch.is_tensor(v)} | {"name": "x"}])
    assert "x" in keep.outputs and table.params == method_parameters(net)


@pytest.mark.parametrize("method", list(NETWORKS))
def test_train_brief_then_load_or_train_reuses_the_checkpoint(method, tiny_data, tmp_path):
    _, train, test = tiny_data
    out = tmp_path / "outputs" / "bench" / f"train_{method}"
    net = train_brief(method, train, out, options=TINY[method], steps=2, patch=16, batch_size=2)
    assert not net.training and model_spec(net)["name"] == NETWORKS[method].registry
    # put the checkpoint where the chapter would save it, with the chapter's metrics.json
    rel = book_networks.CHAPTER_CHECKPOINTS[method][0]
    target = tmp_path / "outputs" / rel
    target.parent.mkdir(parents=True)
    target.write_bytes((out / "checkpoints" / "last.pt").read_bytes())
    chapter = tmp_path / "outputs" / rel.split("/")[0]
    (chapter / "metrics.json").write_text(json.dumps({"profile": "book", "metrics": {}}))
    calls = []
    got = book_networks.load_or_train(method, [tmp_path / "outputs"], lambda m: calls.append(m) or net, profile="book")
    assert got.source == "chapter" and got.checkpoint == target and not calls
    for k, v in net.state_dict().items():
        assert torch.equal(got.model.state_dict()[k], v)
    # a chapter run in another profile is skipped (and says why), and training is used
    got = book_networks.load_or_train(method, [tmp_path / "outputs"], lambda m: net, profile="full")
    assert got.source == "trained" and "profile" in got.skipped[0][1]
    with torch.no_grad():
        res = zoo.NetworkMethod(got.model)({k: v[None] for k, v in test[0].items() if torch.is_tensor(v)})
    assert res.shape == (1, 3, 32, 48)


def test_load_or_train_skips_checkpoints_without_spec(tmp_path):
    path = tmp_path / "outputs" / book_networks.CHAPTER_CHECKPOINTS["dpdnet"][0]
    path.parent.mkdir(parents=True)
    torch.save({"model": build("dpdnet", **TINY["dpdnet"]).state_dict()}, path)
    got = book_networks.load_or_train("dpdnet", [tmp_path / "outputs"], lambda m: build("dpdnet", **TINY["dpdnet"]))
    assert got.source == "trained" and "model_spec" in got.skipped[0][1] and "book/dpdnet.ipynb" in got.skipped[0][1]
    with pytest.raises(TypeError, match="train_fn"):
        book_networks.load_or_train("dpdnet", [], None)
    with pytest.raises(ValueError, match="method"):
        book_networks.find_checkpoint("unet", [])


def test_train_brief_validates(tiny_data, tmp_path):
    _, train, _ = tiny_data
    with pytest.raises(ValueError, match="patch"):
        train_brief("dpdnet", train, tmp_path, options=TINY["dpdnet"], steps=1, patch=20)
    with pytest.raises(ValueError, match="method"):
        train_brief("unet", train, tmp_path)


@pytest.mark.parametrize("method", list(NETWORKS))
def test_train_brief_with_residual_output_starts_at_the_input(method, tiny_data, tmp_path):
    """With a residual head (pyramid for DRBNet) a network starts as the blurred input; the
    brief training must not shift its output (RDPD's mid-grey bias is for the paper head only)."""
    _, train, test = tiny_data
    residual = {"pyramid": "residual"} if method == "drbnet" else {"head": "residual"}
    net = train_brief(method, train, tmp_path, options={**TINY[method], **residual}, steps=1, patch=16,
                          batch_size=2, lr=1e-12)
    b = {k: v[None] for k, v in test[0].items() if torch.is_tensor(v)}
    with torch.no_grad():
        out = zoo.NetworkMethod(net)(b)
    assert torch.allclose(out, b["combined"].clamp(0, 1), atol=1e-3), float((out - b["combined"]).abs().max())
