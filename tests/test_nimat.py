"""NIMAT eight-view synthesis (MDP Sec. 4.4): canvas, rotations, view alignment, GIF."""

import pytest
import torch
from PIL import Image

from dplab.models import MDP
from dplab.render.nimat import (ANGLES, VIEW_NAMES, mdp_predictor, nimat_canvas_size, nimat_views, rotate,
                         save_nimat_gif)


pytestmark = pytest.mark.usefixtures("one_thread")


def _ramp(h, w, b=1, c=3):
    """A linear image: bilinear interpolation reproduces it exactly."""
    y = torch.arange(h, dtype=torch.float64).view(h, 1)
    x = torch.arange(w, dtype=torch.float64).view(1, w)
    base = 0.2 + 0.01 * x + 0.02 * y
    return torch.stack([base + 0.05 * k for k in range(c)]).expand(b, c, h, w).to(torch.float32).clone()


def test_canvas_size():
    assert nimat_canvas_size(30, 40) == 64          # diagonal 50 -> 64
    assert nimat_canvas_size(1120, 1680) == 2032     # DPDD: ceil(2019.1) = 2020 -> 2032
    assert nimat_canvas_size(12, 16, multiple=4) == 20
    for h, w in [(7, 9), (16, 16), (1, 1), (100, 3)]:
        s = nimat_canvas_size(h, w)
        assert s % 16 == 0 and s >= (h * h + w * w) ** 0.5 and s - 16 < (h * h + w * w) ** 0.5 + 1
    with pytest.raises(ValueError, match="height"):
        nimat_canvas_size(0, 4)


def test_rotation_sense_and_consistency():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 2] = 1                                            # top centre
    assert float(rotate(x, 90)[0, 0, 2, 4]) == 1.0               # clockwise: to the right
    assert float(rotate(x, -90)[0, 0, 2, 0]) == 1.0
    r45 = rotate(x, 45)[0, 0]
    iy, ix = divmod(int(r45.argmax()), 5)
    assert iy < 2 and ix > 2                                     # towards the top right
    # two 45-degree steps agree with the exact 90-degree rotation on a smooth image
    s = 32
    yy, xx = torch.meshgrid(torch.arange(s) - 15.5, torch.arange(s) - 15.5, indexing="ij")
    img = torch.exp(-((xx - 4) ** 2 + (yy + 3) ** 2) / 40.0)[None, None]
    assert torch.allclose(rotate(rotate(img, 45), 45), rotate(img, 90), atol=0.05)   # bilinear blur only
    assert not torch.allclose(rotate(rotate(img, 45), 45), rotate(img, -90), atol=0.5)
    assert torch.allclose(rotate(img, 360), img) and torch.allclose(rotate(img, 0), img)
    with pytest.raises(ValueError, match="square"):
        rotate(torch.rand(1, 1, 4, 5), 45)


def test_identity_predictor_views_align_with_input():
    x = _ramp(14, 22, b=2)
    canvases = []

    def identity(c):
        canvases.append(tuple(c.shape))
        return c, c

    views = nimat_views(x, identity)
    assert views.shape == (2, 8, 3, 14, 22)
    assert canvases == [(2, 3, 32, 32)] * 4                       # ceil(26.1) -> 32, square
    for k, name in enumerate(VIEW_NAMES):
        if name[1:] in ("0", "90"):
            assert torch.allclose(views[:, k], x, atol=1e-6), name   # rot90: exact everywhere
        m = 3                                                     # 45/135: interior, away from the zero padding
        assert torch.allclose(views[:, k, :, m:-m, m:-m], x[..., m:-m, m:-m], atol=1e-4), name


def test_view_order_left_then_right():
    x = _ramp(10, 12)
    views = nimat_views(x, lambda c: (c * 0.25, c * 0.75))
    assert VIEW_NAMES == ("L0", "L45", "L90", "L135", "R0", "R45", "R90", "R135") and ANGLES == (0, 45, 90, 135)
    assert torch.allclose(views[:, 0], 0.25 * x, atol=1e-6) and torch.allclose(views[:, 4], 0.75 * x, atol=1e-6)


def test_views_are_rotated_back():
    # a predictor that shifts its input one pixel to the right: the back-rotated views are
    # shifted along the rotated axis (down for 90 degrees clockwise, i.e. right after rotating back)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1

    def shift_right(c):
        s = torch.roll(c, 1, dims=-1)
        return s, c

    v = nimat_views(x, shift_right, angles=(0, 90))
    assert float(v[0, 0, 0, 8, 9]) == 1.0          # L0: shifted right
    assert float(v[0, 1, 0, 7, 8]) == 1.0          # L90: shifted up in the input frame


def test_mdp_predictor_end_to_end():
    torch.manual_seed(0)
    net = MDP(widths=(4, 4, 4, 4), decoder_widths=(4, 4, 4, 4, 4)).eval()
    views = nimat_views(torch.rand(1, 3, 12, 9), mdp_predictor(net))
    assert views.shape == (1, 8, 3, 12, 9)
    assert not views.requires_grad


def test_bad_predictors_are_refused():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match="left, right"):
        nimat_views(x, lambda c: c)
    with pytest.raises(ValueError, match="left"):
        nimat_views(x, lambda c: (c[..., :8, :8], c))
    with pytest.raises(ValueError, match="image"):
        nimat_views(torch.rand(3, 8, 8), lambda c: (c, c))


def test_gif_writer(tmp_path):
    torch.manual_seed(0)
    views = torch.rand(1, 8, 3, 10, 7) * 0.5
    path = save_nimat_gif(views, tmp_path / "sub" / "nimat.gif", duration_ms=50)
    im = Image.open(path)
    assert im.n_frames == 8 and im.size == (7, 10)
    gray = save_nimat_gif([torch.rand(1, 6, 6) for _ in range(3)], tmp_path / "g.gif")
    assert Image.open(gray).n_frames == 3
    with pytest.raises(ValueError, match="views"):
        save_nimat_gif(torch.rand(8, 2, 5, 5), tmp_path / "bad.gif")
    with pytest.raises(ValueError, match="empty"):
        save_nimat_gif([], tmp_path / "bad.gif")
