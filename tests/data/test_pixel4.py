"""The Pixel 4 reader: decoding by hand, kernel normalisation, on a fixture in the release's layout
and, when present, on the real release in ../shared/data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dplab.data import DatasetNotFoundError, pixel4

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def fixture_release(tmp_path):
    """A two-scene release in the real layout with small synthetic content."""
    import imageio.v3 as iio

    root = tmp_path / "xin_pixel4_dp"
    (root / "calibration").mkdir(parents=True)
    (root / "gt_all_in_focus_im").mkdir()
    rng = np.random.default_rng(0)
    for name in ("left", "right"):
        k = rng.random((48, 61, 61)).astype(np.float32)
        np.save(root / "calibration" / f"blur_kernels_{name}.npy", k / k.sum(axis=(1, 2), keepdims=True))
        iio.imwrite(root / "calibration" / f"white_sheet_{name}.png", np.full((1512, 2016), 5000, np.uint16))
    for scene in ("001", "002"):
        for name in ("left", "right"):
            iio.imwrite(root / f"{scene}_{name}.png", np.full((1512, 2016), 1024 + 8192, np.uint16))
    iio.imwrite(root / "gt_all_in_focus_im" / "001_gt.png", np.full((1008, 1344), 65535, np.uint16))
    return tmp_path


def test_decoding_matches_the_release_convention():
    raw = np.array([0, 1024, 1025, 1024 + 16383, 65535])
    expected = np.clip(raw - 1024, 0, None) / 16383
    assert np.allclose(pixel4.decode_raw(raw), expected)


def test_kernels_follow_the_half_sum_convention(fixture_release):
    left, right = pixel4.load_kernels(fixture_release)
    assert left.shape == right.shape == (48, 61, 61)
    assert torch.allclose(left.sum((-2, -1)), torch.full((48,), 0.5))
    raw, _ = pixel4.load_kernels(fixture_release, view_sum=1.0)
    assert torch.allclose(raw.sum((-2, -1)), torch.ones(48))


def test_scene_loading_crops_to_the_calibrated_field(fixture_release):
    assert pixel4.list_scenes(fixture_release) == ["001", "002"]
    scene = pixel4.load_scene("001", fixture_release)
    assert scene["left"].shape == (1, 1, 1008, 1344)
    assert scene["left"].mean().item() == pytest.approx(8192 / 16383)
    assert scene["all_in_focus"].max().item() == 1.0 and scene["defocus"] is None
    with pytest.raises(ValueError, match="scene"):
        pixel4.load_scene("1", fixture_release)


def test_cell_centres_tile_the_crop():
    c = pixel4.cell_centres()
    assert c.shape == (48, 2)
    assert c[0].tolist() == [84.0, 84.0] and c[-1].tolist() == [1008 - 84.0, 1344 - 84.0]


def test_missing_release_is_reported(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="xin_pixel4_dp"):
        pixel4.load_kernels(tmp_path)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared real-data folder is not beside the repository")
def test_real_kernels_load():
    left, right = pixel4.load_kernels(SHARED)
    assert left.shape == (48, 61, 61) and bool((left >= 0).all())
    assert torch.allclose(left.sum((-2, -1)) + right.sum((-2, -1)), torch.ones(48), atol=1e-5)
