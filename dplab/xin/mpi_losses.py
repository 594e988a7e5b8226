"""Loss terms of the MPI optimisation of Xin et al., ICCV 2021 (Sec. 4.3, supplement C.3, D).

``L = w1 L_data + w2 L_aux + w3 L_intensity + w4 L_alpha + w5 L_entropy`` (Eqs. 6 and 42):

* :func:`charbonnier` ``l(x) = sqrt(x^2 / gamma^2 + 1) - 1`` with ``gamma = 0.1``, and its
  bias-corrected form ``l_B(x, B) = sqrt((x^2 - B) / gamma^2 + 1) - 1`` (Eq. 7; the ``- 1``
  of the authors' code only shifts the value). Both take the *squared* argument.
* :func:`local_variance` ``V(I)^2 = I^2 * g - (I * g)^2`` with ``g = [1,2,1] x [1,2,1] / 16``
  (supplement Eqs. 38-39), borders replicated; the total variation used by the priors is
  ``l(V(I))`` and the edge mask ``E = 1 - exp(-V^2 / (2 beta^2))``, ``beta = 1/32`` (Eq. 40);
  ``V_E(I, E) = l(V(I)) + (1 - E) l(V(I))`` (Eq. 41).
* :func:`collision_entropy` ``S(x) = -log(||x||_2^2 / ||x||_1^2)`` (Eq. 13).

Where the printed equations and the authors' code differ, dplab follows the code (its weights
were tuned with it) and says so:

* data and auxiliary losses are means over pixels (and views), scaled by the intensity
  normalisation ``s = 0.5 / mean(obs)``; the auxiliary loss (Eq. 9) weighs each layer by the
  stop-gradient *blurred transmittance* of the rendering (Eq. 8's weights) and is multiplied
  by ``N``;
* the per-layer intensity prior of Eq. 11 is ``N mean_i(sg(t_i) l(V(s c_i)))`` (the code
  multiplies the TV of ``c_i`` by the transmittance instead of taking the TV of ``t_i c_i``),
  with its own edge mask;
* the alpha prior (Eq. 12) uses the all-in-focus image's edge mask; the back layer's alpha
  is skipped in the entropy of alphas but not of transmittances;
* loss weights (supplement D, code): ``w1 = w2 = 2.5e4``, ``w3 = 30``,
  ``w4 = 7.5e4 (N/12)^2`` (1.5e4 for scenes 1-4), ``w5 = 30 / log N`` (20 for scenes 1-4 and
  13-17); ``30 / log 12 = 12.07``, the paper's ``lambda_5 = 12``.

Speed: the heavy terms have hand-written gradients (one autograd node each instead of a graph
of tensors of the size of the MPI): the rendering with the data and auxiliary losses (Eqs. 2,
7-9, the gradient through the visibility products as one pass over the layers), the
Charbonnier total variation ``l(V(x))`` (Eqs. 38-39) and the collision entropy (Eq. 13,
``dS/dx_i = (2 / sum x)(1 - p_i / sum p^2)``); the ``[1,2,1]`` smoothing writes into one buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from dplab._validate import require_positive, require_tensor
from dplab.xin.multiplane import blur_layers, visibility

__all__ = ["LossWeights", "charbonnier", "local_variance", "edge_mask", "edge_aware_tv",
           "collision_entropy", "mpi_loss", "GAMMA", "BETA"]

#: Charbonnier scale (Sec. 4.3).
GAMMA = 0.1
#: Edge-mask scale (supplement C.3), for intensities in [0, 1].
BETA = 1.0 / 32.0


@dataclass(frozen=True)
class LossWeights:
    """Weights of Eq. 42, as the authors' code sets them for ``N = 12`` layers.

    ``alpha`` is multiplied by ``(N / 12)^2`` and ``entropy`` divided by ``log N`` in
    :meth:`resolved` (the code's scaling with the number of layers).

    Attributes:
        data: ``lambda_1`` (2.5e4).
        aux: ``lambda_2`` (2.5e4).
        intensity: ``lambda_3`` (30).
        alpha: ``lambda_4`` for 12 layers (7.5e4; 1.5e4 for scenes 1-4).
        entropy: ``lambda_5 log N`` (30; 20 for scenes 1-4 and 13-17).

    Example:
        >>> w = LossWeights().resolved(12)
        >>> round(w.entropy, 2), w.alpha
        (12.07, 75000.0)
    """

    data: float = 2.5e4
    aux: float = 2.5e4
    intensity: float = 30.0
    alpha: float = 7.5e4
    entropy: float = 30.0

    def resolved(self, n_layers: int) -> "LossWeights":
        """The weights actually used for ``n_layers`` layers."""
        n = require_positive("n_layers", n_layers, integer=True)
        return replace(self, alpha=self.alpha * (n / 12) ** 2,
                       entropy=self.entropy / math.log(n) if n > 1 else 0.0)


def charbonnier(x2: torch.Tensor, gamma: float = GAMMA, bias=None) -> torch.Tensor:
    """Charbonnier loss of a *squared* residual, optionally bias-corrected (Eq. 7).

    ``sqrt((x2 - bias) / gamma^2 + 1) - 1``; the argument of the root is clamped at 0.

    Args:
        x2: squared residual (any shape).
        gamma: scale (0.1 in the paper).
        bias: optional ``B`` broadcastable to ``x2``.

    Returns:
        Tensor of the shape of ``x2``.

    Example:
        >>> charbonnier(torch.tensor([0.0, 0.03])).tolist()   # sqrt(0.03/0.01 + 1) - 1 = 1
        [0.0, 1.0]
    """
    if bias is not None:
        x2 = x2 - bias
    return (x2 / gamma ** 2 + 1).clamp_min(0).sqrt() - 1


def _smooth4(x: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[i-1] + 2 x[i] + x[i+1]`` along ``dim`` (length >= 2) with the edge sample replicated:
    four times the ``[1, 2, 1] / 4`` smoothing, in two passes over one buffer (no shifted
    copies; the factor is left to the caller, who can often fold it into a later operation)."""
    n = x.shape[dim]
    s = torch.empty_like(x) if out is None else out
    torch.add(x.narrow(dim, 0, n - 2), x.narrow(dim, 2, n - 2), out=s.narrow(dim, 1, n - 2))
    torch.add(x.narrow(dim, 0, 1), x.narrow(dim, 1, 1), out=s.narrow(dim, 0, 1))
    torch.add(x.narrow(dim, n - 2, 1), x.narrow(dim, n - 1, 1), out=s.narrow(dim, n - 1, 1))
    return s.add_(x, alpha=2)


def _smooth4_adjoint(g: torch.Tensor, dim: int) -> torch.Tensor:
    """Adjoint of :func:`_smooth4`: ``g[i+1] + 2 g[i] + g[i-1]``, the missing neighbours zero,
    and the edge samples (which also stand for ``x[-1]`` and ``x[n]``) once more."""
    n = g.shape[dim]
    s = torch.empty_like(g)
    torch.add(g.narrow(dim, 2, n - 2), g.narrow(dim, 0, n - 2), out=s.narrow(dim, 1, n - 2))
    s.narrow(dim, 0, 1).copy_(g.narrow(dim, 1, 1))
    s.narrow(dim, n - 1, 1).copy_(g.narrow(dim, n - 2, 1))
    s.add_(g, alpha=2)
    s.narrow(dim, 0, 1).add_(g.narrow(dim, 0, 1))
    s.narrow(dim, n - 1, 1).add_(g.narrow(dim, n - 1, 1))
    return s


def _smooth(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``[1, 2, 1] / 4`` along ``dim`` (length >= 2) with the edge sample replicated."""
    return _smooth4(x, dim).mul_(0.25)


def _smooth_adjoint(g: torch.Tensor, dim: int) -> torch.Tensor:
    """Adjoint of :func:`_smooth`."""
    return _smooth4_adjoint(g, dim).mul_(0.25)


def _s16(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``16 (x * g)`` (:func:`_s` without its factor 1/16), written into ``out`` if given."""
    return _smooth4(_smooth4(x, -2), -1, out=out)


def _s16_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_s16`."""
    return _smooth4_adjoint(_smooth4_adjoint(g.contiguous(), -1), -2)


def _s(x: torch.Tensor) -> torch.Tensor:
    """``x * g``, ``g = [1,2,1]^T [1,2,1] / 16``, borders replicated (last two dims >= 2)."""
    return _smooth(_smooth(x, -2), -1)


def _s_adjoint(g: torch.Tensor) -> torch.Tensor:
    return _smooth_adjoint(_smooth_adjoint(g.contiguous(), -1), -2)


class _LocalVariance(torch.autograd.Function):
    """``|S(x^2) - S(x)^2|`` with its hand-written gradient ``2 (x S^T(e) - S^T(S(x) e))``,
    ``e = sign(.) grad``: two smoothings forward, two adjoint smoothings backward, and no
    autograd graph of intermediate tensors."""

    @staticmethod
    def forward(ctx, x):
        bx = _s(x)
        d = _s(x * x) - bx.square()
        ctx.save_for_backward(x, bx, d)
        return d.abs()

    @staticmethod
    def backward(ctx, g):
        x, bx, d = ctx.saved_tensors
        e = g * torch.sign(d)
        return 2 * (x * _s_adjoint(e) - _s_adjoint(bx * e))


class _TotalVariation(torch.autograd.Function):
    """``l(V(x))``: the Charbonnier penalty of the local variance (the total variation of
    supplement Eqs. 38-41), in one function with its gradient
    ``dl/dV = 1 / (2 gamma^2 (l + 1))`` passed on as in :class:`_LocalVariance`; one image of
    the batch at a time (it stays in the caches through the chain).

    It is the largest cost of an MPI step after the blur (three calls on ``N`` full-resolution
    maps), so it is written for few passes over memory (measured: 1.5x faster than the plain
    chain, forward and backward): the smoothing's factors ``1/16`` are folded into later
    operations (``d' = S'(x^2) - S'(x)^2 / 16`` with ``S' = 16 S``; the factors are powers of
    two, so ``d'`` is exactly ``16 d``), ``l + 1 = sqrt(|d| / gamma^2 + 1) >= 1`` needs no clamp
    and no guard in the gradient, and the gradient ``2 (x S^T(e) - S^T(S(x) e))`` is one
    ``addcmul`` and one scaling.
    """

    @staticmethod
    def forward(ctx, x, gamma):
        xs = x.reshape((-1,) + x.shape[-2:])
        sx, d, y = torch.empty_like(xs), torch.empty_like(xs), torch.empty_like(xs)
        one = xs.new_ones(())
        c = 1 / (16 * gamma ** 2)
        for i in range(xs.shape[0]):
            _s16(xs[i], out=sx[i])                                        # 16 S(x)
            # 16 d = S'(x^2) - S'(x)^2 / 16, with S'(x)^2 rounded on its own as in S(x^2) - S(x)^2:
            # a fused multiply-add (addcmul) rounds differently, and in flat regions, where d is
            # rounding noise, the sign that the gradient takes from it would then differ
            torch.mul(sx[i], sx[i], out=d[i])
            torch.sub(_s16(xs[i] * xs[i]), d[i], alpha=1 / 16, out=d[i])
            torch.add(one, torch.abs(d[i], out=y[i]), alpha=c, out=y[i]).sqrt_()       # l + 1
        ctx.gamma, ctx.shape = gamma, x.shape
        ctx.save_for_backward(xs, sx, d, y)
        return (y - 1).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xs, sx, d, y = ctx.saved_tensors
        g = g.reshape(xs.shape)
        out = torch.empty_like(xs)
        # dl/dd = sign(d) / (2 gamma^2 y); with S' = 16 S and sx = S'(x):
        # 2 (x S^T(e) - S^T(S(x) e)) = -(1 / (256 gamma^2)) (S'^T(sx e') - 16 x S'^T(e')),
        # e' = g sign(d) / y
        k = -1 / (256 * ctx.gamma ** 2)
        for i in range(xs.shape[0]):
            e = torch.sign(d[i]).mul_(g[i]).div_(y[i])
            torch.addcmul(_s16_adjoint(sx[i] * e), xs[i], _s16_adjoint(e), value=-16, out=out[i]).mul_(k)
        return out.reshape(ctx.shape), None


def _tv(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """``charbonnier(local_variance(x), gamma)`` (one autograd node for images of 2x2 or more)."""
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        return charbonnier(local_variance(x), gamma)
    return _TotalVariation.apply(x, gamma)


def _blur121(x: torch.Tensor) -> torch.Tensor:
    """``x * g`` for a single row or column (the plain convolution; :func:`_s` needs two)."""
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, *shape[-2:]), (1, 1, 1, 1), mode="replicate")
    g1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    return F.conv2d(y, (g1[:, None] * g1[None, :]).reshape(1, 1, 3, 3)).reshape(shape)


def local_variance(x: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted 3x3 local variance ``|I^2 * g - (I * g)^2|`` (supplement Eqs. 38-39).

    The square root of this is ``V(I)``; the absolute value guards against rounding (as the
    authors' code).

    Args:
        x: ``(..., H, W)`` tensor.

    Returns:
        Tensor of the shape of ``x``.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[..., 2, 2] = 1.0
        >>> round(float(local_variance(x)[0, 0, 2, 2]), 6)   # 1/4 - (1/4)^2
        0.1875
    """
    x = require_tensor("x", x)
    if x.shape[-1] < 2 or x.shape[-2] < 2:       # a single row or column
        return (_blur121(x * x) - _blur121(x).square()).abs()
    return _LocalVariance.apply(x)


def edge_mask(variance: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Bilateral edge mask ``E = 1 - exp(-V^2 / (2 beta^2))`` (supplement Eq. 40).

    Example:
        >>> edge_mask(torch.tensor([0.0, 1.0])).tolist()
        [0.0, 1.0]
    """
    return 1 - torch.exp(-variance / (2 * beta ** 2))


def edge_aware_tv(tv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``V_E = l(V) + (1 - E) l(V)`` averaged over all entries (supplement Eq. 41).

    Args:
        tv: ``l(V(I))`` (Charbonnier of the local standard deviation).
        mask: edge mask ``E`` broadcastable to ``tv`` (treated as a constant).

    Returns:
        0-dim tensor ``mean(tv (1 - E)) + mean(tv)``.

    Example:
        >>> float(edge_aware_tv(torch.ones(4), torch.zeros(4)))
        2.0
    """
    return (tv * (1 - mask)).mean() + tv.mean()


def collision_entropy(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Collision (Renyi-2) entropy ``-log(sum p^2)`` with ``p = x / sum x`` along ``dim`` (Eq. 13).

    Minimal (0) when one entry is non-zero, ``log n`` when all are equal. Where all entries
    are 0 the value is ``log n`` (the authors' code replaces the NaN by it), with zero gradient.

    Args:
        x: non-negative tensor.
        dim: the dimension of the distribution.

    Returns:
        Tensor with ``dim`` removed.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
        >>> [round(v, 4) + 0.0 for v in collision_entropy(x, 0).tolist()]   # log 3 and 0
        [1.0986, 0.0]
    """
    x = require_tensor("x", x)
    return _CollisionEntropy.apply(x, dim % x.ndim if x.ndim else dim)


class _CollisionEntropy(torch.autograd.Function):
    """:func:`collision_entropy` with its closed-form gradient
    ``dS/dx_i = (2 / sum x) (1 - p_i / sum p^2)`` (0 where ``sum x = 0``)."""

    @staticmethod
    def forward(ctx, x, dim):
        s1 = x.sum(dim, keepdim=True)
        ok = s1 > 0
        s1 = torch.where(ok, s1, torch.ones_like(s1))
        p = x / s1
        s2 = torch.where(ok, p.square().sum(dim, keepdim=True), torch.ones_like(s1))
        okd = ok.squeeze(dim)
        ctx.dim = dim
        ctx.save_for_backward(p, s1, s2, ok)
        return torch.where(okd, -torch.log(s2.squeeze(dim)), torch.full_like(okd, math.log(x.shape[dim]), dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        p, s1, s2, ok = ctx.saved_tensors
        k = torch.where(ok, 2 * g.unsqueeze(ctx.dim) / s1, torch.zeros_like(s1))
        return k * (1 - p / s2), None


class _DataAux(torch.autograd.Function):
    """Eq. 2 (the views), Eqs. 7-8 (data loss) and Eq. 9 (auxiliary loss) from the blurred
    layers ``b = [k * (c alpha), k * alpha, k * c]`` (:func:`dplab.xin.multiplane.blur_layers`),
    with a hand-written gradient with respect to ``b``.

    Forward (per view, ``vis_i = prod_{j>i} (1 - k * alpha_j)``, ``t_i = (k * alpha_i) vis_i``):
    ``I_v = sum_i g_v (k * c_i alpha_i) vis_i``; ``L_data = s mean l_B(I_v - I_o, sum_i t_i B_i)``;
    ``L_aux = s N mean_i sg(t_i) l_B(g_v k * c_i - I_o, B_i)``. Backward: ``dL/dvis_i = Q_i``
    gives ``dL/d(k * alpha_j) = B_j vis_j dL/db_all - vis_j R_j`` with
    ``R_{j+1} = R_j (1 - k * alpha_j) + Q_j`` (one pass over the layers, front to back), instead
    of autograd's graph of some twenty tensors of the size of ``b``.
    """

    @staticmethod
    def forward(ctx, b, obs, gain, bias, s, gamma):
        # one layer at a time: a layer's maps (a few MB at full resolution) stay in the caches
        # through the chain of elementwise operations, and no tensor of the size of b is made
        N, C = b.shape[0], (b.shape[2] - 1) // 2
        bca, ba, bc = b[:, :, :C], b[:, :, C:C + 1], b[:, :, C + 1:]
        g = gain.reshape(2, 1, 1, 1)
        B = [float(v) for v in bias]
        g2 = gamma ** 2
        vis = torch.empty_like(ba)                                   # (N, 2, 1, H, W)
        vis[N - 1] = 1
        for i in range(N - 2, -1, -1):
            torch.mul(vis[i + 1], 1 - ba[i + 1], out=vis[i])
        views, b_all = torch.zeros_like(obs), torch.zeros_like(ba[0])
        aux = torch.zeros((), dtype=b.dtype, device=b.device)
        fac = torch.empty_like(bc)                                   # t_i g (g bc_i - I_o) / sqrt(.)
        for i in range(N):
            tb = ba[i] * vis[i]
            views.addcmul_(bca[i], vis[i])
            b_all.add_(tb, alpha=B[i])
            r = g * bc[i] - obs
            z = r.square().sub_(B[i]).div_(g2).add_(1).clamp_min_(0).sqrt_()
            aux += (tb * (z - 1)).sum()
            torch.mul(torch.where(z > 0, r / z, torch.zeros_like(z)).mul_(tb), g, out=fac[i])
        D = g * views - obs                                          # rendered - observed
        y = (D.square() - b_all).div_(g2).add_(1).clamp_min_(0).sqrt_()
        ctx.gamma = gamma
        ctx.save_for_backward(b, vis, D, y, fac, gain, bias, s)
        return s * (y - 1).mean(), s * N * aux / (N * D.numel())

    @staticmethod
    def backward(ctx, g_data, g_aux):
        b, vis, D, y, fac, gain, bias, s = ctx.saved_tensors
        N, C = b.shape[0], (b.shape[2] - 1) // 2
        bca, ba = b[:, :, :C], b[:, :, C:C + 1]
        g = gain.reshape(2, 1, 1, 1)
        B = [float(v) for v in bias]
        g2 = ctx.gamma ** 2
        grad = torch.empty_like(b)
        # data: d sqrt(u / gamma^2 + 1) / du = 1 / (2 gamma^2 sqrt(.)) (0 where clamped)
        kp = (g_data * s / D.numel()) * torch.where(y > 0, 0.5 / (g2 * y), torch.zeros_like(y))
        g_views = g * (2 * kp * D)                                  # dL/d(k * c_i alpha_i vis_i)
        g_ball = -kp.sum(1, keepdim=True)                           # dL/d(sum_i t_i B_i)
        k_aux = g_aux * s / (D.numel() * g2)                        # aux: the weights t_i are constants
        R = torch.zeros_like(g_ball)
        for j in range(N):
            torch.mul(g_views, vis[j], out=grad[j, :, :C])
            Q = (g_views * bca[j]).sum(1, keepdim=True).add_(ba[j] * g_ball, alpha=B[j])   # dL/dvis_j
            torch.sub(vis[j] * g_ball * B[j], vis[j] * R, out=grad[j, :, C:C + 1])
            R = R.mul_(1 - ba[j]).add_(Q)
            torch.mul(fac[j], k_aux, out=grad[j, :, C + 1:])
        return grad, None, None, None, None, None


def mpi_loss(colors, alphas, obs, blur, gain, layer_bias, weights: LossWeights, *,
             gamma: float = GAMMA, beta: float = BETA, detail: bool = False):
    """Total loss of Eq. 6 for an MPI in the optimiser's internal units.

    Args:
        colors: ``(N, C, H, W)`` intensities in view units (observations divided by their max).
        alphas: ``(N, 1, H, W)`` alphas, ``alphas[0] = 1``.
        obs: ``(2, C, H, W)`` left and right observations, divided by their max.
        blur: :class:`dplab.xin.blur.DPBlur` for the layers.
        gain: ``(2,)`` per-view factor on the colour term (1 for equal view sums).
        layer_bias: ``(N,)`` bias ``B(d_i)`` (already scaled by ``mean(obs) / 0.5``; zeros to
            disable).
        weights: resolved :class:`LossWeights` (see :meth:`LossWeights.resolved`).
        gamma: Charbonnier scale.
        beta: edge-mask scale.
        detail: also return the weighted terms as floats-to-be (detached tensors).

    Returns:
        ``(total, terms)``: 0-dim tensor and a dict ``data, aux, intensity, alpha, entropy``
        (empty unless ``detail``).

    Example:
        >>> from dplab.xin.blur import DPBlur
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(2.0, size=9)
        >>> blur = DPBlur(kl, kr, [1.0, 0.5], (16, 16))
        >>> c, a = torch.full((2, 1, 16, 16), 0.5), torch.ones(2, 1, 16, 16)
        >>> obs = torch.full((2, 1, 16, 16), 0.5)
        >>> total, _ = mpi_loss(c, a, obs, blur, torch.ones(2), torch.zeros(2), LossWeights().resolved(2))
        >>> round(float(total), 4)   # perfect fit, flat, opaque front layer: zero loss
        0.0
    """
    N = colors.shape[0]
    s = 0.5 / obs.mean()
    # Eqs. 7-9: the DP rendering (Eq. 2), bias-corrected data loss and auxiliary loss
    b = blur_layers(colors, alphas, blur)                         # (N, 2, 2C+1, H, W)
    l_data, l_aux = _DataAux.apply(b, obs, gain.to(colors.dtype), layer_bias.to(colors.dtype), s, gamma)

    # Eq. 11: intensity smoothness on the all-in-focus image and the layers
    t = alphas * visibility(alphas)                               # (N, 1, H, W)
    sharp = (t * colors).sum(0, keepdim=True).mean(1)             # (1, H, W), channel mean
    var_s = local_variance(s * sharp)                              # (1, H, W): small
    tv_s = charbonnier(var_s, gamma)
    e_s = edge_mask(var_s.detach(), beta)
    tv_l = N * (t.detach()[:, 0] * _tv(s * colors.mean(1), gamma)).mean(0, keepdim=True)
    e_l = edge_mask(((tv_l.detach() + 1).square() - 1) * gamma ** 2, beta)
    l_int = edge_aware_tv(tv_s, e_s) + edge_aware_tv(tv_l, e_l)

    # Eq. 12: alpha and transmittance smoothness, with the all-in-focus edge mask
    ra, rt = alphas.sqrt().squeeze(1), t.sqrt().squeeze(1)        # (N, H, W)
    tv_a = _tv(ra, gamma) + _tv(rt, gamma)
    l_alpha = edge_aware_tv(tv_a, e_s)

    # Eq. 13: collision entropy of sqrt(alpha) (back layer skipped) and sqrt(t)
    l_ent = (collision_entropy(ra.narrow(0, 1, N - 1), 0) + collision_entropy(rt, 0)).mean()

    terms = {"data": weights.data * l_data, "aux": weights.aux * l_aux,
             "intensity": weights.intensity * l_int, "alpha": weights.alpha * l_alpha,
             "entropy": weights.entropy * l_ent}
    total = sum(terms.values())
    return total, ({k: v.detach() for k, v in terms.items()} if detail else {})
