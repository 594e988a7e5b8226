"""Tests for dplab.xin.recipe (Xin et al. ICCV 2021 recipes on the Pixel 4 scenes).

Small synthetic fixtures always run; the real-data tests run when the Pixel 4 release is
under $DPLAB_DATA (CI: ../shared/data) and skip otherwise.
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dplab.xin import recipe as rx
from dplab.data import DatasetNotFoundError


def _pixel4_present():
    root = os.environ.get("DPLAB_DATA")
    return bool(root) and (Path(root) / "xin_pixel4_dp" / "001_left.png").is_file() and (
        Path(root) / "xin_pixel4_dp" / "calibration" / "blur_kernels_left.npy").is_file()


needs_data = pytest.mark.skipif(not _pixel4_present(), reason="Pixel 4 release not under $DPLAB_DATA")


@pytest.fixture(scope="module")
def syn():
    return rx.synthetic_scene((48, 64), radius_px=3.0)


# --------------------------------------------------------------------- synthetic fixture
def test_synthetic_scene_truth_is_the_mpi(syn):
    assert syn.left.shape == syn.right.shape == syn.all_in_focus.shape == (1, 1, 48, 64)
    # three planes at far, middle and near scales
    vals = sorted(set(np.round(syn.defocus.flatten().numpy(), 4).tolist()))
    assert vals == pytest.approx([0.2, 0.8, 1.4])
    # views at half brightness: left + right has the mean of the all-in-focus image x 2
    assert float((syn.left + syn.right).mean()) == pytest.approx(2 * float(syn.all_in_focus.mean()), rel=0.02)
    assert syn.view_gain == pytest.approx(0.5, abs=1e-5)


def test_synthetic_scene_validates():
    with pytest.raises(ValueError, match="near"):
        rx.synthetic_scene((48, 64), near=1.0, far=0.5)
    with pytest.raises(ValueError, match="hw"):
        rx.synthetic_scene((16, 64))


def test_score_perfect_and_shifted(syn):
    perfect = rx.score(syn, syn.all_in_focus, syn.defocus)
    assert set(perfect) == set(rx.METRIC_KEYS)
    assert perfect["psnr"] > 80 and perfect["mae"] < 1e-6 and perfect["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["aiwe1"] < 1e-6 and perfect["aiwe2"] < 1e-6 and perfect["spearman_error"] < 1e-6
    # an affine change of the defocus map leaves the affine-invariant metrics at zero
    aff = rx.score(syn, defocus=3.0 * syn.defocus - 1.0)
    assert set(aff) == {"aiwe1", "aiwe2", "spearman_error"} and aff["aiwe2"] < 1e-6
    # a translated estimate is found by the alignment search (2 px < ceil(6/1))
    moved = torch.roll(syn.all_in_focus, (2, -1), (-2, -1))
    _, _, shift = rx.align_to_gt(syn, moved)
    assert shift == (2, -1)
    assert rx.score(syn, moved)["psnr"] > 80
    assert rx.score(syn, moved, max_shift=0)["psnr"] < 40
    # PSNR agrees with a numpy computation on the aligned crop
    noisy = syn.all_in_focus + 0.01 * torch.randn(syn.all_in_focus.shape, generator=torch.Generator().manual_seed(0))
    p, g, _ = rx.align_to_gt(syn, noisy, max_shift=0)
    ref = 10 * math.log10(1 / np.mean((p.clamp(0, 1).numpy().astype(np.float64) - g.numpy()) ** 2))
    assert rx.score(syn, noisy, max_shift=0)["psnr"] == pytest.approx(ref, abs=1e-4)
    assert rx.score(syn) == {}


def test_score_validates(syn):
    with pytest.raises(TypeError, match="XinScene"):
        rx.score("001", syn.all_in_focus)
    with pytest.raises(ValueError, match="shape"):
        rx.score(syn, syn.all_in_focus[..., :40])
    with pytest.raises(ValueError, match="border"):
        rx.align_to_gt(syn, syn.all_in_focus, max_shift=4, border=2)


def test_wiener_on_synthetic(syn):
    aif, d = rx.run_wiener(syn, n_hypotheses=7)
    assert aif.shape == d.shape == (1, 1, 48, 64)
    # the chosen hypotheses lie in [near, far] and the estimate beats nothing-done on depth order
    assert float(d.min()) >= 0.2 - 1e-6 and float(d.max()) <= 1.4 + 1e-6
    with pytest.raises(ValueError, match="n_hypotheses"):
        rx.run_wiener(syn, n_hypotheses=1)


def test_mpi_on_synthetic_reduces_loss(syn):
    aif, d, res = rx.run_mpi(syn, n_layers=3, iterations=12, log_every=4)
    assert aif.shape == d.shape == (1, 1, 48, 64)
    assert res.history[-1]["total"] < res.history[0]["total"]
    assert float(d.min()) >= 0.2 - 1e-5 and float(d.max()) <= 1.4 + 1e-5
    # returned image is the MPI composite at view brightness
    assert torch.allclose(aif, res.all_in_focus * 0.5, atol=1e-6)


def test_save_results_roundtrip(tmp_path, syn):
    path = rx.save_results(tmp_path, syn, "mpi", syn.all_in_focus, syn.defocus, {"psnr": 30.0})
    payload = torch.load(path)
    assert path.name == "synthetic_mpi.pt" and payload["metrics"] == {"psnr": 30.0}
    assert torch.equal(payload["defocus"], syn.defocus.float())
    with pytest.raises(ValueError, match="method"):
        rx.save_results(tmp_path, syn, "../x", None, None, {})


# --------------------------------------------------------------------- input validation
def test_load_validates_without_data(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        rx.load_xin_scene("001", tmp_path)
    with pytest.raises(ValueError, match="downscale"):
        rx.load_xin_scene("001", tmp_path, downscale=0)
    with pytest.raises(ValueError, match="downscale"):
        rx.load_xin_scene("001", tmp_path, downscale=5)        # does not divide 168
    with pytest.raises(TypeError, match="downscale"):
        rx.load_xin_scene("001", tmp_path, downscale=2.0)
    with pytest.raises(ValueError, match="crop"):
        rx.load_xin_scene("001", tmp_path, crop=(0, 0, 2000, 100))
    with pytest.raises(ValueError, match="crop"):
        rx.load_xin_scene("001", tmp_path, crop=(0, 0, 100))
    with pytest.raises(ValueError, match="multiple"):
        rx.load_xin_scene("001", tmp_path, crop=(1, 0, 96, 96), downscale=2)


# --------------------------------------------------------------------- real data
@needs_data
def test_load_real_crop_and_downscale():
    full = rx.load_xin_scene("001", crop=(168, 336, 96, 128))
    half = rx.load_xin_scene("001", crop=(168, 336, 96, 128), downscale=2)
    assert full.left.shape == (1, 1, 96, 128) and half.left.shape == (1, 1, 48, 64)
    assert half.cell_hw == (84, 84) and half.origin == (-84, -168) and full.origin == (-168, -336)
    assert full.k_left.shape == (6, 8, 61, 61) and half.k_left.shape == (6, 8, 31, 31)
    # kernel sums kept at 1/2 after resizing; box downsampling is a 2x2 mean
    assert torch.allclose(half.k_left.sum((-2, -1)), torch.full((6, 8), 0.5), atol=1e-4)
    assert torch.allclose(half.left, torch.nn.functional.avg_pool2d(full.left, 2), atol=1e-6)
    # the right view is vignetting-corrected: its mean matches the left view's within 5 %
    assert float(full.right.mean()) == pytest.approx(float(full.left.mean()), rel=0.05)
    # ground truth at view brightness, defocus map with its invalid code 0 kept invalid
    assert full.all_in_focus.shape == full.defocus.shape == (1, 1, 96, 128)
    whole = rx.load_xin_scene("001", downscale=8)     # over the whole field: same brightness
    assert whole.left.shape == (1, 1, 126, 168) and whole.cell_hw == (21, 21)
    assert float(whole.all_in_focus.mean()) == pytest.approx(float(rx.blurred_input(whole).mean()), rel=0.05)
    assert full.settings["near"] == 0.5 and full.settings["far"] == 1.6


@needs_data
def test_unknown_scene_names_folder():
    with pytest.raises(ValueError, match="xin_pixel4_dp"):
        rx.load_xin_scene("099")


@needs_data
def test_real_methods_beat_input_on_small_crop():
    s = rx.load_xin_scene("001", crop=(168, 168, 336, 448), downscale=4)
    base = rx.score(s, rx.blurred_input(s))
    aif, d = rx.run_wiener(s)
    w = rx.score(s, aif, d)
    assert w["psnr"] > base["psnr"]
    aif, d, res = rx.run_mpi(s, n_layers=4, iterations=20, log_every=10)
    m = rx.score(s, aif, d)
    assert res.history[-1]["total"] < res.history[0]["total"]
    assert set(m) == set(rx.METRIC_KEYS) and m["psnr"] > base["psnr"]
