"""Patch sampling (dplab.data.patches): grid and random windows, DP flips; DPDNet's Sobel filter
(dplab.data.sharpness, dplab.ops.filters); the radial channel (dplab.ops.radial)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from dplab.data.patches import (
    GridPatches,
    RandomPatches,
    SequencePatches,
    crop,
    flip_dp,
    grid_positions,
    item_generator,
    random_flip,
    random_positions,
)
from dplab.data.sharpness import keep_sharpest, sharpness_scores, sobel_energy, to_gray
from dplab.ops.filters import sobel_kernels
from dplab.ops.radial import radial_distance_map, radial_patch


# --- radial channel -------------------------------------------------------------------------
def test_radial_values_at_known_positions():
    # 6 x 10 image: centre (2.5, 4.5), corner distance sqrt(2.5^2 + 4.5^2) = sqrt(26.5).
    m = radial_distance_map(6, 10, quantize=False)[0]
    corner = math.sqrt(26.5)
    assert m.shape == (6, 10)
    for y, x in [(0, 0), (0, 9), (5, 0), (5, 9)]:
        assert m[y, x].item() == pytest.approx(1.0)
    assert m[2, 4].item() == pytest.approx(math.sqrt(0.5) / corner, rel=1e-6)
    assert m[0, 4].item() == pytest.approx(math.sqrt(2.5**2 + 0.5**2) / corner, rel=1e-6)
    assert m[3, 9].item() == pytest.approx(math.sqrt(0.5**2 + 4.5**2) / corner, rel=1e-6)
    q = radial_distance_map(6, 10)[0]  # RDPD stores round(255 d) in an 8-bit mask
    assert q[2, 4].item() == pytest.approx(35 / 255)  # 255 * 0.13736 = 35.03
    assert q[0, 4].item() == pytest.approx(126 / 255)  # 255 * 0.49526 = 126.29


def test_radial_patch_is_cropped_from_the_full_image_not_the_patch():
    patch = radial_patch((6, 10), 1, 2, (3, 4), quantize=False)[0]
    corner = math.sqrt(26.5)
    for i in range(3):
        for j in range(4):
            y, x = 1 + i, 2 + j
            assert patch[i, j].item() == pytest.approx(math.hypot(y - 2.5, x - 4.5) / corner, rel=1e-6)
    # a centred patch of an odd image is zero at its centre; an off-centre one is not
    assert radial_patch((7, 7), 2, 2, 3)[0, 1, 1].item() == 0.0
    assert radial_patch((7, 7), 0, 0, 3)[0, 1, 1].item() > 0.5
    with pytest.raises(ValueError, match="does not fit"):
        radial_patch((6, 10), 4, 0, 3)


def test_random_patches_radial_channel_matches_its_position():
    base = [{"combined": torch.rand(3, 20, 30), "sharp": torch.rand(3, 20, 30), "name": "a"}]
    ds = RandomPatches(base, (8, 6), patches_per_image=4, radial=True, flip=False, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        top, left = item["position"].tolist()
        assert torch.equal(item["radial"], radial_patch((20, 30), top, left, (8, 6)))
        assert torch.equal(item["combined"], base[0]["combined"][:, top : top + 8, left : left + 6])


# --- flips ----------------------------------------------------------------------------------
def test_horizontal_flip_swaps_and_mirrors_views():
    g = torch.Generator().manual_seed(0)
    left, right, sharp = (torch.rand(3, 4, 5, generator=g) for _ in range(3))
    out = flip_dp({"left": left, "right": right, "sharp": sharp, "name": "x"}, horizontal=True)
    assert torch.equal(out["left"], right.flip(-1)) and torch.equal(out["right"], left.flip(-1))
    assert torch.equal(out["sharp"], sharp.flip(-1)) and out["name"] == "x"
    vert = flip_dp({"left": left, "right": right}, vertical=True)
    assert torch.equal(vert["left"], left.flip(-2)) and torch.equal(vert["right"], right.flip(-2))
    twice = flip_dp(flip_dp({"left": left, "right": right}, horizontal=True), horizontal=True)
    assert torch.equal(twice["left"], left) and torch.equal(twice["right"], right)
    with pytest.raises(ValueError, match="both"):
        flip_dp({"left": left}, horizontal=True)


def test_flipped_pair_is_the_dp_pair_of_the_flipped_scene():
    # Toy DP formation: the left view sees the scene shifted by +d, the right by -d (a
    # constant defocus disparity). Flipping the pair must give the pair of the flipped scene.
    g = torch.Generator().manual_seed(1)
    scene = torch.rand(3, 6, 11, generator=g)

    def dp_pair(image, d=2):
        return {"left": torch.roll(image, d, dims=-1), "right": torch.roll(image, -d, dims=-1), "sharp": image}

    flipped = flip_dp(dp_pair(scene), horizontal=True)
    expected = dp_pair(scene.flip(-1))
    for key in ("left", "right", "sharp"):
        assert torch.equal(flipped[key], expected[key]), key
    # the naive flip (mirror without the swap) would reverse the disparity
    assert not torch.equal(dp_pair(scene)["left"].flip(-1), expected["left"])


def test_random_flip_and_patch_flip_keep_views_consistent():
    scene = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    base = [{"left": torch.roll(scene, 1, -1), "right": torch.roll(scene, -1, -1), "sharp": scene, "combined": scene}]
    ds = RandomPatches(base, 16, patches_per_image=12, flip=True, seed=0)
    horizontal = set()
    for i in range(len(ds)):
        item = ds[i]
        # whatever the flips, the pair still has the left view shifted by +1 from the scene
        assert torch.equal(item["left"], torch.roll(item["sharp"], 1, -1))
        assert torch.equal(item["right"], torch.roll(item["sharp"], -1, -1))
        horizontal.add(any(torch.equal(item["sharp"], f) for f in (scene.flip(-1), scene.flip(-1).flip(-2))))
    assert horizontal == {True, False}
    out = random_flip({"combined": scene}, torch.Generator().manual_seed(5), horizontal=1.0, vertical=0.0)
    assert torch.equal(out["combined"], scene.flip(-1))


# --- positions ------------------------------------------------------------------------------
def test_grid_positions_follow_dpdnet_on_dpdd_images():
    positions = grid_positions(1120, 1680, 512, overlap=0.6)
    tops = sorted({t for t, _ in positions})
    lefts = sorted({l for _, l in positions})
    assert tops == [0, 204, 408, 608]  # 612 would cross the border: moved to 1120 - 512
    assert lefts == [0, 204, 408, 612, 816, 1020, 1168]
    assert len(positions) == 28 and positions[0] == (0, 0) and positions[-1] == (608, 1168)
    assert grid_positions(1120, 1680, 512, overlap=0.01)[:2] == [(0, 0), (0, 506)]
    with pytest.raises(ValueError, match="larger"):
        grid_positions(100, 100, 200)


def test_random_positions_are_reproducible_and_in_range():
    a = random_positions(20, 30, (5, 7), 50, torch.Generator().manual_seed(4))
    b = random_positions(20, 30, (5, 7), 50, torch.Generator().manual_seed(4))
    assert a == b
    assert all(0 <= t <= 15 and 0 <= l <= 23 for t, l in a)
    assert len({t for t, _ in a}) > 5
    with pytest.raises(TypeError, match="generator"):
        random_positions(20, 30, 5, 1, 0)


def test_items_depend_only_on_seed_epoch_and_index():
    base = [{"combined": torch.rand(3, 32, 32), "name": str(i)} for i in range(3)]
    ds = RandomPatches(base, 8, patches_per_image=2, seed=7)
    first = [ds[i]["position"].tolist() for i in range(len(ds))]
    assert first == [ds[i]["position"].tolist() for i in reversed(range(len(ds)))][::-1]
    ds.set_epoch(1)
    assert [ds[i]["position"].tolist() for i in range(len(ds))] != first
    ds.set_epoch(0)
    assert [ds[i]["position"].tolist() for i in range(len(ds))] == first
    assert torch.equal(torch.rand(3, generator=item_generator(7, 0, 1)), torch.rand(3, generator=item_generator(7, 0, 1)))


# --- Sobel filter ---------------------------------------------------------------------------
def test_sobel_kernels_are_opencvs():
    gx, gy = sobel_kernels(5)
    smooth = torch.tensor([1.0, 4, 6, 4, 1], dtype=torch.float64)
    deriv = torch.tensor([-1.0, -2, 0, 2, 1], dtype=torch.float64)
    assert torch.equal(gx, torch.outer(smooth, deriv)) and torch.equal(gy, gx.T)
    assert sobel_kernels(7)[0][3].tolist() == [-20.0 * v for v in (1, 4, 5, 0, -5, -4, -1)]
    with pytest.raises(ValueError, match="odd"):
        sobel_kernels(4)


@pytest.mark.parametrize("ksize", [3, 5, 7, 11, 15])
def test_sobel_energy_matches_direct_2d_correlation_with_reflect_101(ksize):
    rng = np.random.default_rng(ksize)
    gray = rng.random((2, 1, 19, 23))
    gx, gy = (k.numpy() for k in sobel_kernels(ksize))
    expected = []
    for img in gray[:, 0]:
        ex = ndimage.correlate(img, gx, mode="mirror")  # scipy "mirror" = OpenCV BORDER_REFLECT_101
        ey = ndimage.correlate(img, gy, mode="mirror")
        expected.append(np.sqrt(ex**2 + ey**2).sum())
    got = sobel_energy(torch.from_numpy(gray), ksize).numpy()
    assert np.allclose(got, expected, rtol=1e-10)


def test_sharpness_scores_and_keep_sharpest_follow_dpdnet():
    flat = torch.zeros(1, 1, 16, 16)
    weak = torch.arange(16.0).repeat(16, 1)[None, None] * 0.01
    strong = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    scores = sharpness_scores(torch.cat([weak, flat, strong]))
    assert scores[1] == 0 and scores[2] == 1 and 0 < scores[0] < 1
    assert keep_sharpest(scores, 1) == [0, 2]
    assert keep_sharpest(torch.tensor([0.2, 0.1, 0.1, 0.3]), 1) == [0, 2, 3]  # ties: earlier index first
    assert torch.equal(to_gray(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)), torch.tensor([[[0.299]]]))


def test_grid_patches_drop_the_flattest_thirty_percent():
    g = torch.Generator().manual_seed(0)
    sharp = torch.zeros(3, 40, 40)
    sharp[:, :, 20:] = torch.rand(3, 40, 20, generator=g)  # right half textured, left half flat
    base = [{"combined": sharp.clone(), "sharp": sharp, "name": "a"}]
    all_positions = grid_positions(40, 40, 10, overlap=0.0)
    ds = GridPatches(base, 10, overlap=0.0, drop_fraction=0.3, radial=True)
    assert len(ds) == len(all_positions) - int(0.3 * len(all_positions)) == 12
    kept = {tuple(ds.windows[i][1:]) for i in range(len(ds))}
    flat_dropped = [p for p in all_positions if p[1] < 20 and p not in kept]
    assert len(flat_dropped) == 4  # 4 of the 8 flat patches go (ties: earliest first)
    assert all(p in kept for p in all_positions if p[1] >= 20)
    item = ds[0]
    assert item["combined"].shape == (3, 10, 10) and item["radial"].shape == (1, 10, 10)


def test_random_patch_filter_prefers_texture():
    sharp = torch.zeros(3, 64, 64)
    sharp[:, 40:, 40:] = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(2))
    base = [{"combined": sharp, "sharp": sharp, "name": "a"}]
    plain = RandomPatches(base, 16, patches_per_image=20, flip=False, seed=1)
    filtered = RandomPatches(base, 16, patches_per_image=20, flip=False, seed=1, filter_extra=30)
    energy = [float(filtered[i]["sharp"].abs().sum()) for i in range(20)]
    assert all(e > 0 for e in energy)  # the sharpest of 31 candidates always overlaps the texture
    assert sum(float(plain[i]["sharp"].abs().sum()) == 0 for i in range(20)) > 0


# --- sequences ------------------------------------------------------------------------------
def test_sequence_patches_share_one_window_across_frames():
    frames = []
    for f in range(6):
        img = torch.full((3, 20, 24), float(f))
        img[:, 5:15, 5:15] += torch.rand(3, 10, 10)
        frames.append({"combined": img, "sharp": img, "left": 0.5 * img, "right": 0.5 * img, "name": f"s/{f}"})
    ds = SequencePatches(frames, 4, 8, sequences={"s": list(range(6))}, radial=True, flip=False, filter_extra=2, clips_per_epoch=5)
    assert len(ds) == 5
    clip = ds[3]
    top, left = clip["position"].tolist()
    start = clip["start"]
    assert clip["combined"].shape == (4, 3, 8, 8) and clip["radial"].shape == (4, 1, 8, 8)
    for t in range(4):
        expected = frames[start + t]["combined"][:, top : top + 8, left : left + 8]
        assert torch.equal(clip["combined"][t], expected)
    assert clip["names"] == [f"s/{start + t}" for t in range(4)]
    with pytest.raises(ValueError, match="fewer"):
        SequencePatches(frames, 7, 8, sequences={"s": list(range(6))})


def test_crop_checks_the_window():
    with pytest.raises(ValueError, match="does not fit"):
        crop({"x": torch.zeros(1, 4, 4)}, 2, 2, 3)
