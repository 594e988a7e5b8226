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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from dplab._validate import require_positive, require_tensor
from dplab.xin.multiplane import render_layers, visibility

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


def _smooth(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``[1, 2, 1] / 4`` along ``dim`` with the edge sample replicated."""
    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    lo = torch.cat([first, x.narrow(dim, 0, n - 1)], dim)      # x[i - 1]
    hi = torch.cat([x.narrow(dim, 1, n - 1), last], dim)       # x[i + 1]
    return 0.25 * (lo + hi) + 0.5 * x


def _smooth_adjoint(g: torch.Tensor, dim: int) -> torch.Tensor:
    n = g.shape[dim]
    zero = torch.zeros_like(g.narrow(dim, 0, 1))
    lo = torch.cat([g.narrow(dim, 1, n - 1), zero], dim)        # g[i + 1] feeds x[i] through x[i+1-1]
    hi = torch.cat([zero, g.narrow(dim, 0, n - 1)], dim)
    out = 0.25 * (lo + hi) + 0.5 * g
    # the replicated edge samples: x[0] also stands for x[-1], x[n-1] for x[n]
    out.narrow(dim, 0, 1).add_(0.25 * g.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).add_(0.25 * g.narrow(dim, n - 1, 1))
    return out


class _Blur121(torch.autograd.Function):
    """Separable ``[1,2,1] x [1,2,1] / 16`` blur with an explicit adjoint (no zero-filled
    slice gradients, no slow single-channel convolution backward)."""

    @staticmethod
    def forward(ctx, x):
        return _smooth(_smooth(x, -2), -1)

    @staticmethod
    def backward(ctx, g):
        return _smooth_adjoint(_smooth_adjoint(g.contiguous(), -1), -2)


def _blur121(x: torch.Tensor) -> torch.Tensor:
    """``x * g`` with ``g = [1,2,1]^T [1,2,1] / 16``, borders replicated (last two dims)."""
    if x.shape[-1] < 2 or x.shape[-2] < 2:       # a single row or column: plain convolution
        shape = x.shape
        y = F.pad(x.reshape(-1, 1, *shape[-2:]), (1, 1, 1, 1), mode="replicate")
        g1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
        return F.conv2d(y, (g1[:, None] * g1[None, :]).reshape(1, 1, 3, 3)).reshape(shape)
    return _Blur121.apply(x)


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
    return (_blur121(x * x) - _blur121(x).square()).abs()


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
    s1 = x.sum(dim, keepdim=True)
    ok = s1 > 0
    p = x / torch.where(ok, s1, torch.ones_like(s1))
    s2 = p.square().sum(dim)
    okd = ok.squeeze(dim)
    n = x.shape[dim]
    return torch.where(okd, -torch.log(torch.where(okd, s2, torch.ones_like(s2))),
                       torch.full_like(s2, math.log(n)))


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
    B = layer_bias.to(colors.dtype).reshape(N, 1, 1, 1, 1)
    views, trans_b, bc = render_layers(colors, alphas, blur, gain)  # (2,C,H,W), (N,2,1,H,W), (N,2,C,H,W)

    # Eqs. 7-8: bias-corrected data loss
    b_all = (trans_b * B).sum(0)                                  # (2, 1, H, W)
    l_data = s * charbonnier((views - obs).square(), gamma, b_all).mean()
    # Eq. 9: auxiliary per-layer loss, weighted by the (constant) blurred transmittance
    l_aux = s * N * (trans_b.detach() * charbonnier((bc - obs.unsqueeze(0)).square(), gamma, B)).mean()

    # Eq. 11: intensity smoothness on the all-in-focus image and the layers
    t = alphas * visibility(alphas)                               # (N, 1, H, W)
    sharp = (t * colors).sum(0, keepdim=True).mean(1)             # (1, H, W), channel mean
    var_s = local_variance(s * sharp)
    tv_s = charbonnier(var_s, gamma)
    e_s = edge_mask(var_s.detach(), beta)
    tv_l = N * (t.detach()[:, 0] * charbonnier(local_variance(s * colors.mean(1)), gamma)).mean(0, keepdim=True)
    e_l = edge_mask(((tv_l.detach() + 1).square() - 1) * gamma ** 2, beta)
    l_int = edge_aware_tv(tv_s, e_s) + edge_aware_tv(tv_l, e_l)

    # Eq. 12: alpha and transmittance smoothness, with the all-in-focus edge mask
    ra, rt = alphas.sqrt().squeeze(1), t.sqrt().squeeze(1)        # (N, H, W)
    tv_a = charbonnier(local_variance(torch.stack([ra, rt])), gamma).sum(0)
    l_alpha = edge_aware_tv(tv_a, e_s)

    # Eq. 13: collision entropy of sqrt(alpha) (back layer skipped) and sqrt(t)
    l_ent = (collision_entropy(ra.narrow(0, 1, N - 1), 0) + collision_entropy(rt, 0)).mean()

    terms = {"data": weights.data * l_data, "aux": weights.aux * l_aux,
             "intensity": weights.intensity * l_int, "alpha": weights.alpha * l_alpha,
             "entropy": weights.entropy * l_ent}
    total = sum(terms.values())
    return total, ({k: v.detach() for k, v in terms.items()} if detail else {})
