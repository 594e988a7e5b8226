"""The dual-pixel blur operator of Xin et al. (ICCV 2021, Eq. 2), dplab.xin.blur.DPBlur, and its
adjoint: <A x, y> = <x, A^T y> for random x and y, the defining identity of the transpose, checked
on single kernels and on spatially varying grids (hard cells, cross-faded cells, a cropped grid)."""

import pytest
import torch

from dplab.optics.psf import butterworth_dp
from dplab.xin.blur import DPBlur


pytestmark = pytest.mark.usefixtures("one_thread")


def _grid(rows, cols, size, dtype):
    k = torch.stack([butterworth_dp(1.0 + 0.4 * i, size=size)[0] for i in range(rows * cols)])
    return k.reshape(rows, cols, size, size).to(dtype)


CASES = [
    # (kernel grid (R, C) or None for one pair, image (H, W), DPBlur keywords)
    (None, (24, 31), {}),
    ((2, 3), (30, 45), dict(blend_px=0)),
    ((2, 3), (30, 45), dict(blend_px=4)),
    ((2, 3), (20, 26), dict(cell_hw=9, origin=(-4, -11), blend_px=2)),
]


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("grid, hw, kw", CASES)
def test_adjoint_satisfies_the_inner_product_identity(grid, hw, kw, dtype, rtol):
    if grid is None:
        kl = butterworth_dp(2.5, size=9)[0].to(dtype)
    else:
        kl = _grid(*grid, 9, dtype)
    blur = DPBlur(kl, kl.flip(-1), [1.3, 1.0, 0.6], hw, **kw)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, *hw, generator=g, dtype=dtype)          # N = 3 layers, M = 2 maps
    y = torch.randn(3, 2, 2, *hw, generator=g, dtype=dtype)       # (N, views, M, H, W)
    ax, aty = blur(x), blur.adjoint(y)
    assert ax.shape == y.shape and aty.shape == x.shape
    lhs = float((ax.double() * y.double()).sum())
    rhs = float((x.double() * aty.double()).sum())
    scale = float(ax.double().norm() * y.double().norm())
    assert abs(lhs - rhs) <= rtol * scale, (lhs, rhs)


def test_autograd_backward_is_the_adjoint():
    kl = _grid(2, 2, 7, torch.float64)
    blur = DPBlur(kl, kl.flip(-1), [1.0, 0.5], (22, 30), blend_px=3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 22, 30, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 2, 1, 22, 30, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((blur(x) * y).sum(), x)
    assert torch.allclose(grad, blur.adjoint(y), rtol=0, atol=1e-12)


def test_adjoint_refuses_the_wrong_shape():
    kl = butterworth_dp(2.0, size=7)[0]
    blur = DPBlur(kl, kl.flip(-1), [1.0, 0.5], (16, 16))
    with pytest.raises(ValueError, match="y must have shape"):
        blur.adjoint(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="y must have shape"):
        blur.adjoint(torch.zeros(3, 2, 1, 16, 16))
    with pytest.raises(TypeError):
        blur.adjoint([[0.0]])


def test_even_kernels_and_impossible_alphas_are_refused():
    """An even kernel has no centre pixel (wiener_dp and DPBlur took one and shifted the result by
    half a pixel); an alpha of 3 gave a transmittance of -24 and NaN passed through."""
    from dplab.xin.blur import DPBlur
    from dplab.xin.multiplane import transmittance
    from dplab.xin.wiener import wiener_dp

    k = torch.ones(4, 4) / 32
    with pytest.raises(ValueError, match="odd height and width"):
        wiener_dp(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), k, k)
    with pytest.raises(ValueError, match="odd height and width"):
        DPBlur(k, k, [1.0], (16, 16))
    for bad in (3.0, -0.5, float("nan")):
        a = torch.tensor([1.0, bad]).reshape(2, 1, 1, 1)
        with pytest.raises(ValueError, match=r"alphas must lie in \[0, 1\]"):
            transmittance(a)
