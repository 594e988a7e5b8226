"""Layered DP rendering (dplab.render.layered), checked against independently computed values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness import pixel4_folder

from dplab.optics.distortion import RDPD_DISTORTION_COEFFS, distort
from dplab.ops.fftconv import fft_conv2d
from dplab.optics.thin_lens import Camera
from dplab.optics.kernels import disk
from dplab.optics.psf import butterworth_dp, punnappurath_dp
from dplab.render.layered import (DPSample, add_dp_noise, layer_psfs, quantize_coc, render_dp,
                          render_views)
from dplab.render.reference import aperture_reference


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _direct_conv(img, k):
    """Spatial convolution (conv2d with the flipped kernel) with replicated borders."""
    r = k.shape[-1] // 2
    c = img.shape[1]
    w = k.flip(-1, -2).expand(c, 1, *k.shape).contiguous()
    return F.conv2d(F.pad(img, (r, r, r, r), mode="replicate"), w, groups=c)


def _naive(img, coc, psf_fn, mode, normalize=True):
    """Full-frame reference of the layered model, one layer at a time, in float64."""
    levels = sorted(set(coc.flatten().tolist()), reverse=True)  # back to front
    x = img.double()
    views = []
    for v in (0, 1):
        out, cov = torch.zeros_like(x), torch.zeros_like(x[:, :1])
        for lv in levels:
            k = psf_fn(lv)[v].double()
            m = (coc == lv).double()
            if mode == "alpha":
                a = fft_conv2d(m, 2 * k, padding="replicate")
                out = out * (1 - a) + fft_conv2d(x * m, k, padding="replicate")
                cov = cov * (1 - a) + a
            else:
                out = out + m * fft_conv2d(x, k, padding="replicate")
        views.append(out / cov if mode == "alpha" and normalize else out)
    return views


# ----------------------------------------------------------------------------- single depth
@pytest.mark.parametrize("radius", [3.0, -5.0, 2.5])
@pytest.mark.parametrize("model", ["butterworth", "punnappurath"])
def test_constant_depth_is_one_convolution(radius, model):
    img = _rand(1, 3, 24, 32)
    fn = butterworth_dp if model == "butterworth" else punnappurath_dp
    kl, kr = fn(radius)
    left, right, coc = render_views(img, torch.full((1, 1, 24, 32), radius), psf=model)
    for view, k in ((left, kl), (right, kr)):
        assert torch.allclose(view, fft_conv2d(img, k, padding="replicate"), atol=2e-6)
        assert torch.allclose(view, _direct_conv(img, k), atol=2e-6)
    assert torch.equal(coc, torch.full_like(coc, radius))


def test_callable_psf_and_hard_mask_mode_agree_on_constant_depth():
    img = _rand(2, 3, 20, 20, seed=1)
    box = lambda r: (torch.full((r.numel(), 5, 5), 0.5 / 25, dtype=r.dtype),) * 2  # noqa: E731
    k = torch.full((5, 5), 0.02)
    for mode in ("alpha", "hard_mask"):
        left, right, _ = render_views(img, torch.full((20, 20), 7.0), psf=box, composite=mode)
        assert torch.allclose(left, _direct_conv(img, k), atol=2e-6)
        assert torch.allclose(right, left)


def test_in_focus_reproduces_the_image_exactly():
    img = _rand(2, 3, 16, 24, seed=2)
    coc = torch.zeros(2, 1, 16, 24)
    coc[1, 0, :, :12] = 0.3  # below half a pixel: the named models give a delta
    s = render_dp(img, coc)
    assert torch.equal(s.left, img / 2) and torch.equal(s.right, img / 2)
    assert torch.equal(s.combined, img) and torch.equal(s.sharp, img)


def test_combined_is_left_plus_right_with_distortion_and_noise():
    img = _rand(2, 3, 32, 40, seed=3)
    coc = 8 * _rand(2, 1, 32, 40, seed=4) - 4
    s = render_dp(img, coc, distortion=RDPD_DISTORTION_COEFFS[1], noise_sigma=[0.05, 0.2],
                  generator=7)
    assert isinstance(s, DPSample) and torch.equal(s.combined, s.left + s.right)
    assert float(s.left.max()) <= 0.5 and float(s.right.min()) >= 0.0
    assert s.noise_sigma.tolist() == pytest.approx([0.05, 0.2])


# ----------------------------------------------------------------------------- disparity
def _centroid_x(view):
    w = view[0].sum((0, 1)).double()
    return float((w * torch.arange(w.numel(), dtype=torch.float64)).sum() / w.sum())


@pytest.mark.parametrize("radius", [4.0, -4.0, 9.0, -9.0])
def test_disparity_direction_flips_across_the_focal_plane(radius):
    img = torch.zeros(1, 1, 9, 61)
    img[..., 30] = 1.0  # a vertical line
    left, right, _ = render_views(img, torch.full((9, 61), radius))
    kl = butterworth_dp(radius)[0].double()
    kx = float((kl.sum(0) * (torch.arange(kl.shape[-1]) - kl.shape[-1] // 2)).sum() / kl.sum())
    shift_l, shift_r = _centroid_x(left) - 30, _centroid_x(right) - 30
    assert shift_l == pytest.approx(kx, abs=1e-4) and shift_r == pytest.approx(-kx, abs=1e-4)
    # behind the focal plane (r > 0) the left view moves left (-x); in front it moves right
    assert (shift_l - shift_r < -0.5) == (radius > 0) and abs(shift_l - shift_r) > 0.5


def test_disparity_from_depth_and_camera():
    cam = Camera(50.0, 2.0, 2.0, 40.0)
    img = torch.zeros(1, 1, 9, 81)
    img[..., 40] = 1.0
    shifts = []
    for depth in (1.6, 2.0, 3.0):
        s = render_dp(img, depth_m=torch.full((1, 1, 9, 81), depth), camera=cam)
        assert float(s.coc_px[0, 0, 0, 0]) == pytest.approx(float(cam.coc_px(depth)), abs=1e-5)
        shifts.append(_centroid_x(s.left) - _centroid_x(s.right))
    # in front (1.6 m): left right of right; in focus: none; behind (3 m): left of right
    assert shifts[0] > 0.5 and shifts[1] == pytest.approx(0.0, abs=1e-9) and shifts[2] < -0.5


PIXEL4 = pixel4_folder()


@pytest.mark.skipif(PIXEL4 is None, reason="needs the Pixel 4 release of Xin et al. (xin_pixel4_dp with "
                                           "calibration/blur_kernels_{left,right}.npy) under $DPLAB_DATA")
def test_point_behind_focus_has_the_orientation_of_the_pixel4_kernels():
    """dplab's renderer with psf.butterworth_dp against the phone: Xin et al. calibrated their
    kernels with every scene at or behind the focal plane (r > 0 in dplab; supplement B) and
    apply them by convolution, as dplab does; a rendered point behind focus must have its left
    view on the same side of its right view as the released left kernel of its right kernel."""
    from dplab.data.pixel4 import load_kernels

    kl, kr = load_kernels(PIXEL4.parent)
    x = torch.arange(kl.shape[-1], dtype=torch.float64) - kl.shape[-1] // 2

    def cx(k):
        k = k.double()
        return (k.sum(-2) * x).sum(-1) / k.sum((-2, -1))

    real = cx(kl) - cx(kr)                             # (48,) left minus right centroid, px
    assert bool((real < 0).all()) or bool((real > 0).all()), real   # one orientation everywhere
    real_sign = 1.0 if float(real.mean()) > 0 else -1.0

    img = torch.zeros(1, 1, 81, 81)
    img[..., 40, 40] = 1.0                             # a point light
    for radius in (3.0, 8.0, 12.0):                    # behind the focal plane
        left, right, _ = render_views(img, torch.full((81, 81), radius),
                                      psf=lambda r: butterworth_dp(r, dtype=torch.float64))
        rendered = _centroid_x(left) - _centroid_x(right)
        assert abs(rendered) > 0.5 and rendered * real_sign > 0, (radius, rendered, float(real.mean()))
    # the released kernels through the same renderer (central cell) keep their orientation
    cell = 3 * 8 + 4
    pair = lambda r: (kl[cell].double()[None].expand(r.numel(), -1, -1),  # noqa: E731
                      kr[cell].double()[None].expand(r.numel(), -1, -1))
    left, right, _ = render_views(img, torch.full((81, 81), 1.0), psf=pair)
    assert (_centroid_x(left) - _centroid_x(right)) == pytest.approx(float(real[cell]), abs=1e-3)


# ----------------------------------------------------------------------------- occlusion
def _two_layers(fg_coc, bg_coc):
    img = torch.zeros(1, 3, 40, 40)
    img[:, 0] = 1.0  # red background
    img[:, :, 12:28, 12:28] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # green square
    coc = torch.full((1, 1, 40, 40), float(bg_coc))
    coc[..., 12:28, 12:28] = float(fg_coc)
    return img, coc


def test_near_occluder_is_never_covered_by_a_far_layer():
    # in-focus square in front of a blurred background: its pixels stay exactly green
    img, coc = _two_layers(0.0, 6.0)
    for normalize in (True, False):
        left, right, _ = render_views(img, coc, normalize=normalize)
        assert torch.equal(left[..., 12:28, 12:28], img[..., 12:28, 12:28] / 2)
    # blurred square in front of an in-focus background: no red inside the square
    img, coc = _two_layers(-6.0, 0.0)
    left, right, _ = render_views(img, coc)
    assert float((left + right)[:, 0, 12:28, 12:28].abs().max()) < 1e-6
    # ... and it spreads over the background (a blurred occluder is semi-transparent)
    assert float((left + right)[0, 1, 20, 9]) > 0.2


def test_hard_mask_sum_leaks_far_colour_into_the_near_occluder():
    img, coc = _two_layers(-6.0, 0.0)
    left, right, _ = render_views(img, coc, composite="hard_mask")
    red_inside = (left + right)[0, 0, 12:28, 12:28]
    assert float(red_inside.max()) > 0.3  # the far red background bleeds into the square
    assert float((left + right)[0, 1, 20, 9]) == 0.0  # and the blurred square does not spread


def test_unnormalized_alpha_darkens_thin_layers():
    img = torch.full((1, 1, 8, 64), 0.8)
    coc = torch.linspace(-8, 8, 64).expand(1, 1, 8, 64).contiguous()  # one layer per column
    left, right, _ = render_views(img, coc, normalize=False)
    raw = (left + right)[0, 0, 4, 16:28]  # |CoC| from 3.2 to 1.7 px
    assert float(raw.max()) < 0.75  # coverage 1 - prod(1 - a_i) < 1
    left, right, _ = render_views(img, coc)
    assert torch.allclose(left + right, img, atol=1e-5)  # a flat image stays flat


@pytest.mark.parametrize("mode,normalize", [("alpha", True), ("alpha", False), ("hard_mask", True)])
def test_matches_a_naive_full_frame_reference(mode, normalize):
    img = _rand(1, 3, 40, 56, seed=5)
    coc = torch.zeros(1, 1, 40, 56)
    coc[..., :, :20] = 6.0
    coc[..., 10:30, 25:45] = -3.0
    coc[..., 30:, :] = 1.5
    coc[..., 0:5, 50:] = 12.0  # kernel wider than the layer and the border
    ref_l, ref_r = _naive(img, coc, butterworth_dp, mode, normalize)
    for backend, chunk_mb in (("fft", 512.0), ("fft", 0.02), ("direct", 0.02)):
        left, right, _ = render_views(img, coc, composite=mode, normalize=normalize,
                                      backend=backend, chunk_mb=chunk_mb)
        assert torch.allclose(left.double(), ref_l, atol=2e-6)
        assert torch.allclose(right.double(), ref_r, atol=2e-6)


def _pieces_scene():
    """Ten layers that take every path of the engine (asserted in the test below)."""
    H, W = 256, 192
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    coc = 7.0 - ((yy // 4 + xx // 4) % 2)[None, None]   # a far background of two layers
    coc[..., :6, :] = 3.0                                # a stripe along the top border ...
    coc[..., 9:110, 150:170] = 3.0                       # ... a tall block of the same layer below it
    coc[..., 200:216, 20:60] = 3.0                       # ... a block far below
    coc[..., 248:, 180:] = 3.0                           # ... and the bottom-right corner
    coc[..., 60:63, :] = -9.0                            # a thin stripe, a wide kernel
    for i, c in enumerate((-3.0, -4.0, -5.0, -6.0)):     # a floor: full-width stripes
        coc[..., 120 + 12 * i:132 + 12 * i, :] = c
    coc[..., 20:40, 10:50] = 0.0                         # in focus
    coc[0, 0][(yy - 90) ** 2 + (xx - 40) ** 2 < 15 ** 2] = -2.0   # a disc in front
    return _rand(1, 3, H, W, seed=12), coc


def test_the_engine_paths_of_the_pieces_scene():
    """The scene of the next tests cuts a layer into pieces (one at the top border, one close
    below it, so that their blurs overlap and each one's input window holds the other's pixels,
    one in the bottom-right corner) and uses the support-sized FFT length in alpha mode: the
    comparisons below cover those paths."""
    from dplab.render import engine

    _, coc = _pieces_scene()
    levels, labels = quantize_coc(coc[0, 0])
    halves = [k[0].shape[-1] // 2 for k in layer_psfs(levels)]
    first, last = engine._row_extents(labels, len(halves))
    layer_of, boxes = engine._layer_pieces(first, last, halves, 192)
    split = [i for i in set(layer_of) if layer_of.count(i) > 1]
    assert [float(levels[i]) for i in split] == [3.0]
    assert [b for i, b in zip(layer_of, boxes) if i in split] == [[0, 6, 0, 192], [9, 110, 150, 170],
                                                                 [200, 256, 20, 192]]
    # every pixel of every layer lies in exactly one of its pieces (counted two ways)
    for i in range(len(halves)):
        inside = sum(int((labels[y0:y1, x0:x1] == i).sum())
                     for j, (y0, y1, x0, x1) in zip(layer_of, boxes) if j == i)
        assert inside == int((labels == i).sum())
    plan = lambda mode: engine._windows(  # noqa: E731
        engine.plan_chunks(boxes, [halves[i] for i in layer_of], (256, 192), 3, mode, 2**29, layers=layer_of),
        boxes, (256, 192), True, mode == "alpha")
    assert any(c.half and ya[1] < ya[2] for c, ya, _ in plan("alpha"))  # support + 2r < window
    assert any(c.last - c.first > 1 for c, _, _ in plan("alpha"))  # and a chunk of several layers


@pytest.mark.parametrize("mode,normalize", [("alpha", True), ("alpha", False), ("hard_mask", True)])
def test_pieces_shared_rows_and_support_windows_match_the_naive_reference(mode, normalize):
    img, coc = _pieces_scene()
    ref_l, ref_r = _naive(img, coc, butterworth_dp, mode, normalize)
    for backend, chunk_mb in (("fft", 512.0), ("fft", 0.05), ("direct", 512.0)):
        left, right, _ = render_views(img, coc, composite=mode, normalize=normalize,
                                      backend=backend, chunk_mb=chunk_mb)
        assert float((left.double() - ref_l).abs().max()) <= 2e-6, backend
        assert float((right.double() - ref_r).abs().max()) <= 2e-6, backend
    assert float((ref_l - ref_r).abs().max()) > 0.05  # two different views


@pytest.mark.parametrize("reuse", [0, 1, 2])
def test_hard_mask_from_the_frames_passes_matches_the_naive_reference(monkeypatch, reuse):
    """Every blurred window from its own passes (0), from the frame's x pass (1) or from the
    frame's 2-D spectrum (2), whatever the cost model would pick."""
    from dplab.render import engine

    monkeypatch.setattr(engine, "_frame_passes", lambda plans, *_: [reuse if c.half else 0 for c, _, _ in plans])
    img, coc = _pieces_scene()
    ref_l, ref_r = _naive(img, coc, butterworth_dp, "hard_mask")
    left, right, _ = render_views(img, coc, composite="hard_mask")
    assert float((left.double() - ref_l).abs().max()) <= 2e-6
    assert float((right.double() - ref_r).abs().max()) <= 2e-6


def test_label_boxes_match_a_brute_force_search():
    from dplab.render.engine import label_boxes

    labels = torch.randint(0, 5, (13, 17), generator=torch.Generator().manual_seed(3))
    labels[labels == 3] = 2  # label 3 absent
    labels[0, 16] = 4
    got = label_boxes(labels, 6).tolist()
    for i in range(6):
        ys, xs = torch.nonzero(labels == i, as_tuple=True)
        expected = ([int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1]
                    if ys.numel() else [13, 0, 17, 0])
        assert got[i] == expected, i


def test_batch_equals_samples_rendered_one_by_one():
    img = _rand(2, 3, 24, 24, seed=6)
    coc = torch.stack([torch.full((1, 24, 24), 3.0), 6 * _rand(1, 24, 24, seed=7) - 3])
    left, right, coc_q = render_views(img, coc, max_layers=5)
    for b in range(2):
        l1, r1, q1 = render_views(img[b:b + 1], coc[b:b + 1], max_layers=5)
        assert torch.equal(left[b:b + 1], l1) and torch.equal(coc_q[b:b + 1], q1)


# ----------------------------------------------------------------------------- layers, PSFs
def test_quantize_coc_bounds_layers_and_keeps_focus():
    coc = torch.cat([torch.zeros(10), torch.linspace(-20, 35, 5000)])
    levels, labels = quantize_coc(coc, max_layers=50)
    assert levels.numel() <= 50 and bool((levels[:-1] > levels[1:]).all())
    assert float(levels[labels][:10].abs().max()) == 0.0  # in focus stays in focus
    step = 55 / 49
    assert float((levels[labels] - coc.double()).abs().max()) <= 1.05 ** 3 * step / 2
    levels, labels = quantize_coc(torch.tensor([1.2, 1.2, -0.7]))
    assert levels.tolist() == [1.2000000476837158, -0.699999988079071] and labels.tolist() == [0, 0, 1]
    assert quantize_coc(coc, step_px=1.0)[0].tolist() == [float(v) for v in range(35, -21, -1)]


def test_layer_psfs_trim_and_sum_to_half():
    pairs = layer_psfs(torch.tensor([10.0, 0.2, -3.0]), "punnappurath")
    assert [tuple(p[0].shape) for p in pairs] == [(21, 21), (1, 1), (7, 7)]
    for left, right in pairs:
        assert float(left.sum()) == pytest.approx(0.5) and float(right.sum()) == pytest.approx(0.5)
    left, right = layer_psfs(torch.tensor([3.0]), "disk")[0]
    assert torch.equal(left, right) and torch.allclose(left, 0.5 * disk(3.0, dtype=torch.float64))


# ----------------------------------------------------------------------------- noise, distortion
def test_noise_is_signal_dependent_and_independent_between_views():
    base = torch.full((1, 3, 64, 64), 0.25)
    left, right = add_dp_noise(base, base.clone(), 0.1, generator=3)
    nl, nr = (left - base) / base, (right - base) / base
    assert float(nl.std()) == pytest.approx(0.1, abs=0.004)
    assert float(nl.mean()) == pytest.approx(0.0, abs=0.004)
    rho = float(((nl - nl.mean()) * (nr - nr.mean())).mean() / (nl.std() * nr.std()))
    assert abs(rho) < 0.05
    dark = torch.zeros(1, 3, 8, 8)
    assert torch.equal(add_dp_noise(dark, dark, 0.5, generator=0)[0], dark)  # I + I N, I = 0


def test_same_seed_same_bytes_and_different_seed_differs():
    img = _rand(1, 3, 24, 32, seed=8)
    coc = 10 * _rand(1, 1, 24, 32, seed=9) - 5
    kw = dict(noise_sigma=0.1, distortion=RDPD_DISTORTION_COEFFS[3], max_layers=24)
    a = render_dp(img, coc, generator=11, **kw)
    b = render_dp(img, coc, generator=torch.Generator().manual_seed(11), **kw)
    c = render_dp(img, coc, generator=12, **kw)
    for name in ("left", "right", "combined", "sharp", "coc_px"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.numpy().tobytes() == y.numpy().tobytes()
    assert not torch.equal(a.left, c.left) and torch.equal(a.sharp, c.sharp)


def test_distortion_applies_to_views_sharp_and_defocus_map():
    img = _rand(1, 3, 30, 40, seed=10)
    coc = torch.full((1, 1, 30, 40), 2.0)
    coeffs = RDPD_DISTORTION_COEFFS[0]
    plain = render_dp(img, coc, clip=False)
    warped = render_dp(img, coc, distortion=coeffs, clip=False)
    assert torch.equal(warped.sharp, distort(img, coeffs))
    assert torch.equal(warped.left, distort(plain.left, coeffs))
    assert torch.equal(warped.coc_px, distort(plain.coc_px, coeffs))
    assert float(warped.sharp[0, :, 0, 0].abs().max()) == 0.0  # barrel: black corners


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    img = _rand(1, 3, 16, 16)
    cam = Camera(50.0, 2.0, 2.0, 5.0)
    depth = torch.full((1, 1, 16, 16), 3.0)
    cases = [
        (dict(depth_m=torch.full((1, 1, 16, 15), 3.0), camera=cam), ValueError, "depth_m must have shape"),
        (dict(depth_m=-depth, camera=cam), ValueError, "depth_m must be > 0"),
        (dict(depth_m=depth.where(depth > 5, torch.nan), camera=cam), ValueError, "depth_m contains"),
        (dict(depth_m=depth), TypeError, "camera"),
        (dict(coc_px=torch.zeros(16, 16), depth_m=depth, camera=cam), ValueError, "exactly one"),
        (dict(), ValueError, "exactly one"),
        (dict(coc_px=torch.zeros(2, 1, 16, 16)), ValueError, "coc_px must have shape"),
        (dict(coc_px=torch.zeros(16, 16), noise_sigma=-0.1), ValueError, "noise_sigma"),
        (dict(coc_px=torch.zeros(16, 16), composite="over"), ValueError, "composite"),
        (dict(coc_px=torch.zeros(16, 16), psf="gauss"), ValueError, "psf"),
    ]
    for kwargs, err, msg in cases:
        with pytest.raises(err, match=msg):
            render_dp(img, **kwargs)
    coc = torch.zeros(16, 16)
    with pytest.raises(ValueError, match="image contains"):
        render_dp(img.where(img > 0.5, torch.inf), coc)
    with pytest.raises(ValueError, match="image must have 1 or 3 channel"):
        render_dp(img[:, :2], coc)
    with pytest.raises(ValueError, match=r"image must have shape \(B, C, H, W\)"):
        render_dp(img[0], coc)
    with pytest.raises(ValueError, match="psf callable"):
        render_dp(img, coc + 3, psf=lambda r: (torch.ones(r.numel(), 4, 4),) * 2)


def test_aperture_reference_in_focus_and_occlusion():
    bg, fg = _rand(1, 3, 24, 32, seed=1), _rand(1, 3, 24, 32, seed=2)
    # one full-frame layer in focus: every pinhole view is the image itself
    assert torch.allclose(aperture_reference([(bg, None, 0.0)]), bg, atol=1e-6)
    # an opaque near layer in focus hides the blurred background inside its mask
    mask = torch.zeros(1, 1, 24, 32)
    mask[..., 6:18, 8:24] = 1
    out = aperture_reference([(bg, None, 3.0), (fg, mask, 0.0)])
    assert torch.equal(out[..., 6:18, 8:24], fg[..., 6:18, 8:24])
    far = aperture_reference([(bg, None, 3.0)])
    assert torch.allclose(out[..., :2, :], far[..., :2, :], atol=1e-6)  # rows the mask never reaches
