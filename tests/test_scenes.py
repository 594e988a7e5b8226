"""Scenes (dplab.render.scenes): bundled photos, generated depth, motion; SYNTHIA-SF decoding
(dplab.render.synthia)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from dplab.render.scenes import (BUNDLED_IMAGES, COLOR_IMAGES, Scene, SceneObject, fronto_parallel_depth,
                                 load_image, objects_scene, random_scene, slanted_plane_depth)
from dplab.render.synthia import decode_synthia_depth, encode_synthia_depth, read_synthia_frame, synthia_frames


def test_every_bundled_image_loads_offline(monkeypatch):
    import socket

    from dplab.render import scenes

    def no_network(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    scenes._photo.cache_clear()
    for name in BUNDLED_IMAGES:
        img = load_image(name)
        assert img.ndim == 4 and img.shape[:2] == (1, 3) and img.dtype == torch.float32
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.std()) > 0.02
    a = load_image("coffee")  # 400 x 600: crop the centre to 1:1, then resize
    b = load_image("coffee", (40, 40))
    assert torch.allclose(b.mean((-2, -1)), a[..., :, 100:500].mean((-2, -1)), atol=2e-3)
    assert set(COLOR_IMAGES) <= set(BUNDLED_IMAGES)
    with pytest.raises(ValueError, match="name"):
        load_image("lena")


def test_fronto_parallel_bands_and_slanted_plane():
    d = fronto_parallel_depth((4, 9), [1.0, 2.0, 8.0])
    assert d.shape == (1, 1, 4, 9) and d[0, 0, 2].tolist() == [1.0] * 3 + [2.0] * 3 + [8.0] * 3
    d = fronto_parallel_depth((6, 2), [3.0, 5.0], axis="y")
    assert d[0, 0, :, 1].tolist() == [3.0] * 3 + [5.0] * 3
    floor = slanted_plane_depth((11, 3), 2.0, 10.0)  # far at the top
    inv = 1.0 / floor[0, 0, :, 0].double()
    assert float(inv[0]) == pytest.approx(0.1) and float(inv[-1]) == pytest.approx(0.5)
    assert float((inv[2:] - 2 * inv[1:-1] + inv[:-2]).abs().max()) < 1e-6  # 1/d affine in y
    wall = slanted_plane_depth((2, 5), 1.0, 4.0, far_side="right")
    assert wall[0, 0, 0].tolist() == pytest.approx([1.0, 1 / 0.8125, 1 / 0.625, 1 / 0.4375, 4.0])
    with pytest.raises(ValueError, match="near_m"):
        slanted_plane_depth((4, 4), -1.0, 3.0)


def test_objects_scene_places_objects_in_front():
    scene = objects_scene("coffee", ["astronaut", "rocket"], (40, 80), object_depths_m=[1.5, 4.0],
                          shapes=["rectangle", "ellipse"])
    img, depth = scene.render()
    assert img.shape == (1, 3, 40, 80) and depth.shape == (1, 1, 40, 80)
    assert float(depth[0, 0, 20, 20]) == 1.5 and float(depth[0, 0, 20, 60]) == 4.0
    assert float(depth[0, 0, 1, 1]) == 20.0
    bg = load_image("coffee", (40, 80))
    assert torch.allclose(img[..., 0:5, 0:5], bg[..., 0:5, 0:5], atol=1e-6)  # background as is
    # rectangle: 32 x 20 px centred at (19.5, 19.5): rows 10..29 covered, 9 and 30 not
    assert depth[0, 0, 9:31, 19].tolist() == [20.0] + [1.5] * 20 + [20.0]


def test_camera_pan_moves_near_things_more_than_far_ones():
    tex = load_image("astronaut", (64, 96))
    obj = SceneObject(torch.rand(1, 3, 8, 8), (30.0, 32.0), (12.0, 12.0), 2.0, "rectangle")
    scene = Scene((64, 96), tex, (1 / 8.0, 0.0, 0.0), [obj], camera_velocity_px=(2.0, 0.0),
                  reference_depth_m=8.0)
    f0, f2 = scene.render(0), scene.render(2)
    # background at the reference depth: 2 px per frame -> 4 px after 2 frames
    assert torch.allclose(f2.image[..., 5:15, 20:60], f0.image[..., 5:15, 16:56], atol=1e-5)
    # object at 2 m: 2 * 8 / 2 = 8 px per frame -> its centre moves 16 px
    cols = lambda d: torch.nonzero(d[0, 0, 32] == 2.0).flatten().float().mean()  # noqa: E731
    assert float(cols(f2.depth_m) - cols(f0.depth_m)) == pytest.approx(16.0, abs=0.5)


def test_object_motion_in_depth_rescales_it():
    obj = SceneObject(torch.rand(1, 3, 4, 4), (40.0, 40.0), (20.0, 20.0), 4.0, "rectangle",
                      velocity_px=(3.0, 0.0), depth_velocity_m=-1.0)
    scene = Scene((80, 80), torch.rand(1, 3, 80, 80), (0.01, 0.0, 0.0), [obj])
    seq = scene.sequence(3)
    assert seq.image.shape == (3, 3, 80, 80)
    for t, d in enumerate((4.0, 3.0, 2.0)):
        mask = seq.depth_m[t, 0] == d
        width = int(mask.any(0).sum())
        assert width == pytest.approx(20 * 4.0 / d, abs=1)
        assert float(torch.nonzero(mask)[:, 1].float().mean()) == pytest.approx(40 + 3 * t, abs=0.6)


def test_random_scene_is_deterministic_and_varied():
    a = random_scene((32, 48), torch.Generator().manual_seed(5), depth_range_m=(1.0, 100.0))
    b = random_scene((32, 48), torch.Generator().manual_seed(5), depth_range_m=(1.0, 100.0))
    c = random_scene((32, 48), torch.Generator().manual_seed(6), depth_range_m=(1.0, 100.0))
    ra, rb, rc = a.render(), b.render(), c.render()
    assert torch.equal(ra.image, rb.image) and torch.equal(ra.depth_m, rb.depth_m)
    assert not torch.equal(ra.image, rc.image)
    for r in (ra, rc):
        assert 1.0 <= float(r.depth_m.min()) and float(r.depth_m.max()) <= 250.0
    moving = random_scene((32, 48), torch.Generator().manual_seed(5), motion=True).sequence(2)
    assert not torch.equal(moving.image[0], moving.image[1])
    with pytest.raises(TypeError, match="generator"):
        random_scene((8, 8), 5)


def test_synthia_depth_decoding_matches_the_formula():
    rgb = np.array([[[0, 0, 0], [255, 0, 0], [0, 1, 0], [10, 20, 3]]], np.uint8)
    d = decode_synthia_depth(rgb, max_depth_m=None)
    expected = [0.0, 1000 * 255 / 16777215, 1000 * 256 / 16777215,
                1000 * (10 + 256 * 20 + 65536 * 3) / 16777215]
    assert d[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert float(decode_synthia_depth(np.full((1, 1, 3), 255, np.uint8))) == 250.0  # clipped
    depth = torch.tensor([[0.5, 3.25, 77.0, 249.9]])
    back = decode_synthia_depth(encode_synthia_depth(depth))
    assert float((back - depth).abs().max()) <= 1000 / (2**24 - 1)
    with pytest.raises(ValueError, match="rgb"):
        decode_synthia_depth(np.zeros((4, 4), np.uint8))


def test_synthia_reader_on_a_generated_fixture(tmp_path):
    root = tmp_path / "SYNTHIA-SF"
    rng = np.random.default_rng(0)
    depths = {}
    for seq in ("SEQ1", "SEQ2"):
        for k in range(2):
            name = f"{k:07d}.png"
            (root / seq / "RGBLeft").mkdir(parents=True, exist_ok=True)
            (root / seq / "DepthLeft").mkdir(parents=True, exist_ok=True)
            rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
            depth = rng.uniform(0.5, 400.0, (12, 20))
            iio.imwrite(root / seq / "RGBLeft" / name, rgb)
            iio.imwrite(root / seq / "DepthLeft" / name, encode_synthia_depth(depth))
            depths[seq, name] = (rgb, depth)
    (root / "SEQ2" / "RGBLeft" / "0000009.png").write_bytes(b"")  # no depth: not listed
    frames = synthia_frames(root)
    assert frames == [("SEQ1", "0000000.png"), ("SEQ1", "0000001.png"),
                      ("SEQ2", "0000000.png"), ("SEQ2", "0000001.png")]
    rgb, depth = depths["SEQ2", "0000001.png"]
    s = read_synthia_frame(root, "SEQ2", "0000001.png")
    assert s.image.shape == (1, 3, 12, 20) and s.depth_m.shape == (1, 1, 12, 20)
    assert torch.equal(s.image[0].permute(1, 2, 0), torch.from_numpy(rgb).float() / 255)
    ref = np.minimum(depth, 250.0)
    assert np.abs(s.depth_m[0, 0].numpy() - ref).max() <= 1000 / (2**24 - 1) + 1e-4
    small = read_synthia_frame(root, "SEQ2", "0000001.png", size=(6, 10))
    assert small.image.shape == (1, 3, 6, 10)
    assert set(small.depth_m.flatten().tolist()) <= set(s.depth_m.flatten().tolist())  # nearest
    with pytest.raises(FileNotFoundError):
        read_synthia_frame(root, "SEQ3", "0000000.png")
    with pytest.raises(FileNotFoundError):
        synthia_frames(tmp_path / "missing")
