"""dplab.eval.pixel4 and ``python -m dplab evaluate --pixel4``: a network on the real Pixel 4
scenes of Xin et al. (ICCV 2021), scored like Table 1 beside the blurred input.

Always run: the CLI's argument errors, the refusal of a ground-truth window without variance
(:func:`dplab.xin.recipe.score`, on windows built here) and the tiles (against the whole-field
forward of a network whose receptive field is known). With the release under ``$DPLAB_DATA``
(CI: ../shared/data), on one scene cropped and downscaled to stay fast: a method returning the
blurred input must reproduce the blurred-input row, and one returning the ground truth must
score far above it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from dplab.cli.main import main
from dplab.eval.pixel4 import PROTOCOLS, TiledMethod, method_affine, score_network_pixel4
from dplab.ops.radial import radial_distance_map
from dplab.xin import recipe as rx

pytestmark = pytest.mark.usefixtures("one_thread")


def _pixel4_present() -> bool:
    root = os.environ.get("DPLAB_DATA")
    return bool(root) and (Path(root) / "xin_pixel4_dp" / "001_left.png").is_file() and (
        Path(root) / "xin_pixel4_dp" / "calibration" / "blur_kernels_left.npy").is_file()


needs_data = pytest.mark.skipif(not _pixel4_present(),
                                reason="the Pixel 4 release (xin_pixel4_dp/) is not under $DPLAB_DATA; "
                                       "set DPLAB_DATA to the folder holding it (CI: ../shared/data)")
#: One scene, a central crop, downscaled by 2: a few seconds per run.
QUICK = {"scenes": ["001"], "crop": (336, 448, 336, 448), "downscale": 2}


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m dplab evaluate: error: "), err
    return err


# --------------------------------------------------------------------- CLI argument errors
def test_cli_needs_exactly_one_of_data_and_pixel4(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--pretrained", "dpdnet"])
    assert exit_info.value.code == 2
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--data", "somewhere"])
    assert exit_info.value.code == 2
    assert "not allowed" in capsys.readouterr().err


def test_cli_refuses_options_of_the_other_mode(capsys, tmp_path):
    assert main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--split", "test"]) == 2
    assert "--split" in _error(capsys)
    assert main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--limit", "3"]) == 2
    assert "--limit" in _error(capsys)
    assert main(["evaluate", "--pretrained", "dpdnet", "--data", str(tmp_path), "--scenes", "001"]) == 2
    assert "--scenes" in _error(capsys)
    assert main(["evaluate", "--pretrained", "dpdnet", "--data", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir" in _error(capsys)
    assert main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--downscale", "0"]) == 2
    assert "--downscale" in _error(capsys)
    assert main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--tile", "-16"]) == 2
    assert "--tile" in _error(capsys)


def test_cli_missing_data_dir_names_the_path(capsys, tmp_path):
    missing = tmp_path / "no_data_here"
    assert main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--data-dir", str(missing)]) == 2
    err = _error(capsys)
    assert str(missing / "xin_pixel4_dp") in err and "--data-dir" in err


# --------------------------------------------------------------------- no-variance refusal
@pytest.fixture(scope="module")
def syn():
    return rx.synthetic_scene((48, 64), radius_px=3.0)


def test_score_refuses_a_constant_ground_truth_defocus(syn):
    b = 8                                             # TABLE1's border at full resolution
    const = torch.full_like(syn.defocus, 0.7)
    with pytest.raises(ValueError, match=r"scene 'synthetic'.*whole image.*defocus.*no variance.*crop"):
        rx.score(dataclasses.replace(syn, defocus=const), None, syn.defocus)
    # constant inside the scored window, varying only in the cropped border: still refused
    ring = const.clone()
    ring[..., :b, :] = 1.3
    with pytest.raises(ValueError, match="no variance"):
        rx.score(dataclasses.replace(syn, defocus=ring), None, syn.defocus)
    # constant over the confident pixels (ground truth > 0) only: the zeros are no data
    holes = const.clone()
    holes[..., 20:30, 20:40] = 0.0
    with pytest.raises(ValueError, match="confident"):
        rx.score(dataclasses.replace(syn, defocus=holes), None, syn.defocus)
    # one pixel of another depth inside the window: scored; the truth against itself is perfect
    holes[..., 24, 10] = 0.9
    m = rx.score(dataclasses.replace(syn, defocus=holes), None, holes)
    assert m["aiwe1"] == pytest.approx(0.0, abs=1e-12) and m["spearman_error"] == pytest.approx(0.0, abs=1e-12)


def test_score_refuses_a_constant_ground_truth_image(syn):
    flat = dataclasses.replace(syn, all_in_focus=torch.full_like(syn.all_in_focus, 0.25))
    with pytest.raises(ValueError, match=r"scene 'synthetic'.*all-in-focus.*no variance"):
        rx.score(flat, syn.all_in_focus)
    assert rx.score(syn, syn.all_in_focus)["mae"] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------- tiles
def _conv_stack(seed=0):
    """Three 3x3 convolutions (receptive-field radius 3 px) on the combined image."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(3))).eval()
    return lambda batch: net(batch["combined"])


@torch.no_grad()
def test_tiles_equal_the_whole_field_where_the_overlap_covers_the_receptive_field():
    f = _conv_stack()
    x = torch.rand(1, 3, 72, 104)
    batch = {"left": x / 2, "right": x / 2, "combined": x}
    whole = f(batch)
    tiled = TiledMethod(f, tile=32, overlap=16)(batch)           # 3 x 4 tiles, margins of 16 >= 3 px
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-5
    plain = TiledMethod(f, tile=32, overlap=0)(batch)             # no margin: seams differ
    assert float((plain - whole).abs().max()) > 1e-3


@torch.no_grad()
def test_tiles_feed_the_radial_map_of_the_whole_frame():
    class Radial:                                     # an RDPD-like method returning its radial input
        kind, model = "rdpd", type("M", (), {"in_channels": 7, "multiple": 16})()

        def __call__(self, batch):
            assert "radial" in batch                  # the whole network would compute it itself
            return batch["radial"].expand(-1, 3, -1, -1)

    x = torch.rand(1, 3, 48, 80)
    out = TiledMethod(Radial(), tile=16, overlap=16)({"left": x, "right": x, "combined": 2 * x})
    assert torch.allclose(out[:, :1], radial_distance_map(48, 80)[None, None], atol=1e-7)


def test_tiles_and_protocols_refuse_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 16"):
        TiledMethod(_conv_stack(), tile=30)
    with pytest.raises(ValueError, match="overlap"):
        TiledMethod(_conv_stack(), tile=32, overlap=8)
    with pytest.raises(ValueError, match="protocols"):
        score_network_pixel4(_conv_stack(), protocols=("Table 2",), data_dir="/nonexistent")
    with pytest.raises(TypeError, match="method"):
        score_network_pixel4(42, data_dir="/nonexistent")


# --------------------------------------------------------------------- real scenes
@needs_data
def test_a_method_returning_the_blurred_input_scores_the_blurred_input_row():
    r = score_network_pixel4(lambda batch: batch["combined"], name="identity", **QUICK)
    assert r["scenes"] == ["001"] and r["image_hw"] == [168, 224] and set(r["protocols"]) == set(PROTOCOLS)
    # independently: the blurred input scored directly by rx.score, with its own affine map
    s = rx.load_xin_scene("001", crop=QUICK["crop"], downscale=QUICK["downscale"])
    x = (s.left + s.right) / 2
    for name, proto in PROTOCOLS.items():
        direct = rx.score(s, x, protocol=proto, affine=method_affine(s, x, proto))
        for k in ("psnr", "ssim", "mae"):
            assert r["network"]["per_scene"]["001"][name][k] == pytest.approx(direct[k], rel=1e-6)
            assert r["input"]["mean"][name][k] == pytest.approx(direct[k], rel=1e-6)
            assert r["gain"][name][k] == pytest.approx(0.0, abs=1e-5)
    assert r["network"]["affine"]["TABLE1"] is None and len(r["network"]["affine"]["affine"]) == 2


@needs_data
def test_a_method_returning_the_ground_truth_scores_far_above_the_blurred_input():
    s = rx.load_xin_scene("001", crop=QUICK["crop"], downscale=QUICK["downscale"])
    truth = s.all_in_focus / s.view_gain             # at the brightness of left + right

    def oracle(batch):                               # undo deblur_gray's gain: it divides it out again
        gain = batch["combined"][:, :1].sum() / (s.left + s.right).sum()
        return (gain * truth).expand(-1, 3, -1, -1)

    r = score_network_pixel4(oracle, name="oracle", progress=False, **QUICK)
    for name in PROTOCOLS:
        net, inp = r["network"]["mean"][name], r["input"]["mean"][name]
        assert net["psnr"] > 40 and net["ssim"] > 0.99 and net["mae"] < 0.005
        assert inp["psnr"] < 32 and net["psnr"] - inp["psnr"] > 10
    assert r["network"]["seconds"]["001"] >= 0 and r["network"]["seconds_per_scene"] >= 0


@needs_data
def test_cli_pixel4_prints_both_rows_and_writes_the_record(tmp_path, capsys):
    out = tmp_path / "p4.json"
    assert main(["evaluate", "--pretrained", "dpdnet", "--pixel4", "--scenes", "001", "--downscale", "4",
                 "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "blurred input" in text and "PSNR TABLE1" in text and "PSNR affine" in text and "s/scene" in text
    rec = json.loads(out.read_text())
    assert rec["scenes"] == ["001"] and rec["pretrained"] == "dpdnet" and rec["image_hw"] == [252, 336]
    assert "--pixel4" in rec["command"] and rec["machine"]["cores"] >= 1 and len(rec["machine"]["load_average"]) == 3
    assert rec["model_spec"]["name"] == "dpdnet"
    # the record's input row is the blurred input scored directly
    s = rx.load_xin_scene("001", downscale=4)
    assert rec["input"]["mean"]["TABLE1"]["psnr"] == pytest.approx(rx.score(s, rx.blurred_input(s))["psnr"], rel=1e-9)
    for p in PROTOCOLS:
        gain = rec["network"]["mean"][p]["psnr"] - rec["input"]["mean"][p]["psnr"]
        assert rec["gain"][p]["psnr"] == pytest.approx(gain, abs=1e-9)
