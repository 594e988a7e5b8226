"""MPI compositing, DP rendering with spatially varying kernels, losses and the optimisation of
Xin et al. (ICCV 2021, Eqs. 1-2, 6-15, supplement C-D), against hand values and independent
computations."""

import math

import pytest
import torch

from dplab.data import DatasetNotFoundError, pixel4
from dplab.ops.fftconv import fft_conv2d
from dplab.xin.bias import bias_correction
from dplab.xin.blur import DPBlur
from dplab.xin.kernels import KernelGrid
from dplab.xin.mpi import lr_schedule, optimize
from dplab.xin.mpi_losses import (LossWeights, charbonnier, collision_entropy, edge_mask,
                                  local_variance)
from dplab.xin.multiplane import MPI, composite, defocus_map, layer_scales, render_mpi, transmittance
from dplab.optics.kernels import rescale_kernel
from dplab.optics.psf import butterworth_dp


pytestmark = pytest.mark.usefixtures("one_thread")


def _layers(values):
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1)


def test_compositing_of_opaque_and_transparent_layers_against_hand_values():
    colors = _layers([0.1, 0.5, 0.9])
    # back opaque, middle transparent, front opaque: only the front is seen
    assert float(composite(colors, _layers([1.0, 0.0, 1.0]))) == pytest.approx(0.9)
    # front transparent: the middle (opaque) is seen
    assert float(composite(colors, _layers([1.0, 1.0, 0.0]))) == pytest.approx(0.5)
    # half-transparent front and middle: t = (0.25, 0.25, 0.5)
    a = _layers([1.0, 0.5, 0.5])
    assert transmittance(a).flatten().tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert float(composite(colors, a)) == pytest.approx(0.25 * 0.1 + 0.25 * 0.5 + 0.5 * 0.9)
    assert float(defocus_map(a, [1.5, 1.0, 0.5])) == pytest.approx(0.25 * 1.5 + 0.25 * 1.0 + 0.5 * 0.5)
    # the code's initialisation alpha_i = 1 / (i + 1) gives every layer the same transmittance
    a = _layers([1 / (i + 1) for i in range(5)])
    assert transmittance(a).flatten().tolist() == pytest.approx([0.2] * 5)


def test_layer_scales_are_back_to_front():
    s = layer_scales(12, 0.5, 1.6)
    assert float(s[0]) == pytest.approx(1.6) and float(s[-1]) == pytest.approx(0.5)
    assert torch.allclose(s[1:] - s[:-1], torch.full((11,), -0.1))


def test_single_opaque_layer_renders_as_a_convolution():
    kl, kr = butterworth_dp(5.0, size=31)
    img = torch.rand(1, 1, 40, 56, generator=torch.Generator().manual_seed(0))
    mpi = MPI(img.expand(2, 1, 40, 56), torch.ones(2, 1, 40, 56), torch.tensor([1.3, 0.8]))
    out = render_mpi(mpi, kl, kr)
    ref_l = fft_conv2d(img, rescale_kernel(kl, 0.8), padding="replicate")
    ref_r = fft_conv2d(img, rescale_kernel(kr, 0.8), padding="replicate")
    assert torch.allclose(out.left, ref_l, atol=1e-5) and torch.allclose(out.right, ref_r, atol=1e-5)
    assert out.transmittance.shape == (2, 2, 1, 40, 56)
    assert torch.allclose(out.transmittance[0], torch.zeros(()), atol=1e-6)


def test_occlusion_front_layer_hides_the_back_layer():
    """Back layer constant 0.2, front layer an opaque square of 0.8: Eq. 2 by hand."""
    kl, kr = butterworth_dp(3.0, size=15)
    H = W = 32
    a_front = torch.zeros(1, 1, H, W)
    a_front[..., 8:24, 8:24] = 1
    colors = torch.cat([torch.full((1, 1, H, W), 0.2), torch.full((1, 1, H, W), 0.8)])
    alphas = torch.cat([torch.ones(1, 1, H, W), a_front])
    mpi = MPI(colors, alphas, torch.tensor([1.0, 0.5]))
    out = render_mpi(mpi, kl, kr)
    k = rescale_kernel(kl, 0.5)
    ka = fft_conv2d(a_front, k / k.sum(), padding="replicate")
    kb = rescale_kernel(kl, 1.0)
    back = fft_conv2d(colors[:1], kb, padding="replicate")
    expect = back * (1 - ka) + fft_conv2d(0.8 * a_front, k, padding="replicate")
    assert torch.allclose(out.left, expect, atol=1e-5)


def test_spatially_varying_hard_cells_match_per_cell_convolution():
    kg = torch.stack([butterworth_dp(2.0 + i, size=21)[0] for i in range(6)]).reshape(2, 3, 21, 21)
    x = torch.rand(1, 1, 60, 90, generator=torch.Generator().manual_seed(0))
    blur = DPBlur(kg, kg.flip(-1), [1.0], (60, 90), blend_px=0)
    y = blur(x)[0, 0, 0]
    ref = torch.zeros(60, 90)
    for r in range(2):
        for c in range(3):
            k = kg[r, c] / kg[r, c].sum()
            full = fft_conv2d(x, k, padding="replicate")[0, 0]
            ref[r * 30:(r + 1) * 30, c * 30:(c + 1) * 30] = full[r * 30:(r + 1) * 30, c * 30:(c + 1) * 30]
    assert torch.allclose(y, ref, atol=1e-5)
    # the cross-fade changes only a band of 2 * blend_px around the cell boundaries
    y8 = DPBlur(kg, kg.flip(-1), [1.0], (60, 90), blend_px=4)(x)[0, 0, 0]
    assert torch.allclose(y8[4:26, 4:26], ref[4:26, 4:26], atol=1e-5)
    assert not torch.allclose(y8, ref, atol=1e-3)


@pytest.mark.parametrize("shape, kw", [((14, 21), dict(blend_px=0)), ((14, 21), dict(blend_px=3)),
                                       ((14, 20), dict(cell_hw=9, origin=(-4, -11), blend_px=2))])
def test_blur_backward_is_the_exact_adjoint(shape, kw):
    """DPBlur's hand-written backward (circular correlation) against finite differences."""
    kg = torch.stack([butterworth_dp(1.0 + 0.3 * i, size=7)[0] for i in range(6)]).reshape(2, 3, 7, 7).double()
    blur = DPBlur(kg, kg.flip(-1), [1.0, 0.7], shape, **kw)
    x = torch.rand(2, 1, *shape, dtype=torch.float64, requires_grad=True,
                   generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(blur, (x,))


def test_kernel_grid_crop_selects_the_right_cells_and_partitions_unity():
    g = KernelGrid((336, 448), (6, 8), cell_hw=168, origin=(-336, -448), blend_px=8)
    assert g.kernel_index.tolist() == [[18, 19, 20, 21], [26, 27, 28, 29]]
    x = torch.rand(2, 336, 448, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(g.merge(g.split(x)), x, atol=1e-6)
    assert g.cell_map()[0, 0] == 18 and g.cell_map()[-1, -1] == 29
    with pytest.raises(ValueError, match="cell_hw"):
        KernelGrid((100, 100), (6, 8))
    with pytest.raises(ValueError, match="blend_px"):
        KernelGrid((336, 448), (2, 2), cell_hw=168, blend_px=100)


def test_dpblur_bias_is_the_cell_mean_of_eq5():
    kg = torch.stack([butterworth_dp(2.0 + i, size=21)[0] for i in range(4)]).reshape(2, 2, 21, 21)
    blur = DPBlur(kg, kg.flip(-1), [1.0, 0.5], (40, 40), blend_px=0)
    expect = torch.stack([bias_correction(torch.stack([rescale_kernel(k, s) for k in kg.reshape(4, 21, 21)]),
                                          torch.stack([rescale_kernel(k.flip(-1), s) for k in kg.reshape(4, 21, 21)])).mean()
                          for s in (1.0, 0.5)])
    assert torch.allclose(blur.bias(), expect, rtol=1e-4)


def test_loss_building_blocks_against_hand_values():
    assert charbonnier(torch.tensor(0.03)).item() == pytest.approx(1.0)
    assert charbonnier(torch.tensor(0.03), bias=torch.tensor(0.03)).item() == pytest.approx(0.0)
    x = torch.zeros(1, 1, 5, 5)
    x[..., 2, 2] = 1.0
    v = local_variance(x)
    assert v[0, 0, 2, 2].item() == pytest.approx(0.25 - 0.0625)      # E[x^2] - E[x]^2 at the centre
    assert v[0, 0, 1, 1].item() == pytest.approx(1 / 16 - 1 / 256)   # corner of the 3x3 window
    assert edge_mask(torch.tensor((1 / 32) ** 2 * 2)).item() == pytest.approx(1 - math.exp(-1))
    p = torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 2.0]])           # columns: distributions
    assert collision_entropy(p, 0).tolist() == pytest.approx([0.0, 0.0, math.log(2)])
    w = LossWeights().resolved(12)
    assert w.entropy == pytest.approx(30 / math.log(12)) and w.alpha == pytest.approx(7.5e4)
    assert LossWeights().resolved(6).alpha == pytest.approx(7.5e4 / 4)
    assert lr_schedule(0, 10_000) == pytest.approx(0.3)
    assert lr_schedule(5_000, 10_000) == pytest.approx(math.sqrt(0.03))
    assert lr_schedule(10_000, 10_000) == pytest.approx(0.1)


def _two_plane_scene(H=96, W=128, noise=0.003):
    import skimage.data

    img = torch.from_numpy(skimage.data.camera()[::4, ::4][:H, :W].astype("float32") / 255)[None, None]
    kl, kr = butterworth_dp(8.0, size=33)
    views = []
    mask = torch.zeros(1, 1, H, W)
    mask[..., : W // 2] = 1                                   # left half near, right half far
    g = torch.Generator().manual_seed(0)
    for radius_near, radius_far, side in ((2.0, 8.0, 0), (2.0, 8.0, 1)):
        kn = butterworth_dp(radius_near, size=33)[side]
        kf = butterworth_dp(radius_far, size=33)[side]
        v = mask * fft_conv2d(img, kn, "replicate") + (1 - mask) * fft_conv2d(img, kf, "replicate")
        views.append(v + noise * torch.randn(v.shape, generator=g))
    return img, views[0], views[1], kl, kr


def test_short_mpi_run_recovers_the_plane_order():
    img, left, right, kl, kr = _two_plane_scene(64, 96)
    seen = []
    res = optimize(left, right, kl, kr, n_layers=5, iterations=100, scales=(0.2, 1.2), log_every=50,
                   callback=lambda it, terms, mpi: seen.append(it))
    d = res.defocus[0, 0]
    near, far = float(d[8:-8, 8:40].mean()), float(d[8:-8, 56:-8].mean())
    assert near < 0.5 < far                                    # truth 0.25 and 1.0
    assert seen == [0, 50, 100] and [h["iteration"] for h in res.history] == seen
    assert res.history[-1]["total"] < 0.05 * res.history[0]["total"]
    # the rendered views explain the input, and the composite is sharper than the input
    inner = (..., slice(8, -8), slice(8, -8))
    assert float((res.left - left)[inner].abs().mean()) < 0.01
    err_aif = float((res.all_in_focus - img)[inner].abs().mean())
    err_in = float((left + right - img)[inner].abs().mean())
    assert err_aif < err_in
    assert res.mpi.colors.shape == (5, 1, 64, 96) and bool((res.mpi.alphas[0] == 1).all())


def test_optimize_is_deterministic_and_validates_inputs():
    img, left, right, kl, kr = _two_plane_scene(32, 32)
    a = optimize(left, right, kl, kr, n_layers=3, iterations=3, scales=(0.2, 1.2))
    b = optimize(left, right, kl, kr, n_layers=3, iterations=3, scales=(0.2, 1.2))
    assert torch.equal(a.all_in_focus, b.all_in_focus)
    g = torch.Generator().manual_seed(3)
    c = optimize(left, right, kl, kr, n_layers=3, iterations=3, scales=(0.2, 1.2), init_noise=0.1, generator=g)
    assert not torch.equal(a.all_in_focus, c.all_in_focus)
    with pytest.raises(ValueError, match="batch size"):
        optimize(left.expand(2, 1, 32, 32), right.expand(2, 1, 32, 32), kl, kr, iterations=1)
    with pytest.raises(ValueError, match="scales"):
        optimize(left, right, kl, kr, n_layers=3, iterations=1, scales=torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="kernels"):
        optimize(left, right, kl[None], kr[None], n_layers=3, iterations=1)


def test_missing_data_directory_gives_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="xin_pixel4_dp"):
        pixel4.load_kernel_grid(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="xin_pixel4_dp"):
        pixel4.vignetting_gain(tmp_path)


def test_vignetting_gain_on_a_fixture_release(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    root = tmp_path / "xin_pixel4_dp"
    (root / "calibration").mkdir(parents=True)
    (root / "gt_all_in_focus_im").mkdir()
    (root / "gt_defocus_map").mkdir()
    for name in ("left", "right"):
        np.save(root / "calibration" / f"blur_kernels_{name}.npy", np.ones((48, 61, 61), np.float32))
    iio.imwrite(root / "calibration" / "white_sheet_left.png", np.full((1512, 2016), 1024 + 6000, np.uint16))
    iio.imwrite(root / "calibration" / "white_sheet_right.png", np.full((1512, 2016), 1024 + 4000, np.uint16))
    for name in ("left", "right"):
        iio.imwrite(root / f"001_{name}.png", np.full((8, 8), 1024, np.uint16))
    gain = pixel4.vignetting_gain(tmp_path)
    assert gain.shape == (1, 1, 1008, 1344)
    assert torch.allclose(gain, torch.full((), 1.5))
    kl, kr = pixel4.load_kernel_grid(tmp_path)
    assert kl.shape == (6, 8, 61, 61) and float(kl[2, 3].sum()) == pytest.approx(0.5)


def test_scene_settings_follow_the_authors_code():
    s = pixel4.scene_settings("005")
    assert (s["near"], s["far"], s["alpha"], s["entropy"]) == (0.1, 1.3, 7.5e4, 30.0)
    with pytest.raises(ValueError, match="scene"):
        pixel4.scene_settings("018")
