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
    # float64: a float32 sum of 1.35 M values differs in its 6th digit with the thread count
    assert scene["left"].double().mean().item() == pytest.approx(8192 / 16383)
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


# --- bad files are refused with the file's name, not passed through -------------------------
def _write(path, array):
    import imageio.v3 as iio

    iio.imwrite(path, array)


@pytest.mark.parametrize("name, array, match", [
    ("001_left.png", np.full((1512, 2016), 200, np.uint8), "16-bit"),                 # decoded to all zeros before
    ("001_left.png", np.full((1512, 2016), 1024 + 16384, np.uint16), "decode above 1"),
    ("001_left.png", np.zeros((1512, 2016), np.uint16), "all zero"),
    ("001_right.png", np.full((1500, 2016), 9000, np.uint16), "2016x1512"),          # was cropped about another centre
    ("gt_all_in_focus_im/001_gt.png", np.full((1008, 1344), 255, np.uint8), "16-bit"),  # was divided by 65535
    ("gt_all_in_focus_im/001_gt.png", np.full((1000, 1344), 9, np.uint16), "1344x1008"),  # was returned as is
    ("gt_defocus_map/001_gt.png", np.full((1008, 1344), 9, np.uint16), "8-bit"),
])
def test_scene_files_of_the_wrong_kind_are_refused(fixture_release, name, array, match):
    from dplab.data.base import DatasetCorruptError

    path = fixture_release / "xin_pixel4_dp" / name
    path.parent.mkdir(exist_ok=True)
    _write(path, array)
    with pytest.raises(DatasetCorruptError, match=match) as err:
        pixel4.load_scene("001", fixture_release)
    assert str(path) in str(err.value)


def test_truncated_png_is_refused_with_its_name(fixture_release):
    from dplab.data.base import DatasetCorruptError

    path = fixture_release / "xin_pixel4_dp" / "002_left.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetCorruptError, match="cannot be decoded") as err:
        pixel4.load_scene("002", fixture_release)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage, match", [
    (lambda k: k.__setitem__((3, 30, 30), np.nan), r"cells \[3\]"),
    (lambda k: k.__setitem__(7, 0.0), r"cells \[7\]"),
    (lambda k: k.__setitem__((5, 0, 0), -1.0), r"cells \[5\]"),
])
def test_broken_kernels_are_refused(fixture_release, damage, match):
    from dplab.data.base import DatasetCorruptError

    path = fixture_release / "xin_pixel4_dp" / "calibration" / "blur_kernels_right.npy"
    k = np.load(path)
    damage(k)
    np.save(path, k)
    with pytest.raises(DatasetCorruptError, match=match) as err:
        pixel4.load_kernels(fixture_release)      # became NaN before
    assert str(path) in str(err.value)
    np.save(path, np.zeros((48, 61, 60), np.float32))
    with pytest.raises(DatasetCorruptError, match="shape"):
        pixel4.load_kernels(fixture_release)
    path.write_bytes(b"not an array")
    with pytest.raises(DatasetCorruptError, match="cannot be read"):
        pixel4.load_kernels(fixture_release)
    with pytest.raises(ValueError, match="view_sum"):
        pixel4.load_kernels(fixture_release, view_sum=0)
