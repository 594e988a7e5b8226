"""Training losses of the deblurring networks.

* :func:`charbonnier` -- smooth L1, ``sqrt(d^2 + eps^2)``.
* RDPD (Abuolaim et al., ICCV 2021, Sec. 4, Eqs. 13-16): :func:`sobel_kernels`,
  :func:`edge_loss` and :func:`rdpd_loss` (MSE + multi-scale Sobel edge loss).
* DRBNet (Ruan et al., CVPR 2022, Sec. 4): :func:`multiscale_l1` (Eq. 6, main training) and
  :class:`VGGFeatureLoss` (Eq. 7, fine-tuning) on a VGG-19 written here
  (:class:`VGG19Features`, loaded from a local file by :func:`load_vgg19_features`).
* MDP (Abuolaim et al., WACV 2022, Sec. 3.2-3.4): :func:`combined_loss` (``L_C``, Eq. 6),
  :func:`difference_loss` (``L_D``, Eq. 7) and :func:`mdp_loss` (Eqs. 8-9).

All functions take ``(B, C, H, W)`` tensors (RDPD's also ``(B, T, C, H, W)`` sequences) and
return scalar tensors that can be back-propagated.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_choice, require_number, require_positive, require_tensor

__all__ = [
    "charbonnier",
    "sobel_kernels",
    "edge_loss",
    "rdpd_loss",
    "EDGE_SCALES",
    "multiscale_l1",
    "VGG19Features",
    "VGGFeatureLoss",
    "load_vgg19_features",
    "default_vgg19_path",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "combined_loss",
    "difference_loss",
    "mdp_loss",
    "MDP_LOSS_WEIGHTS",
]


def _pair(pred, target, pred_name="pred", target_name="target", ndims=(4,)):
    pred = require_tensor(pred_name, pred)
    target = require_tensor(target_name, target)
    if pred.ndim not in ndims:
        shapes = " or ".join("(B, C, H, W)" if n == 4 else "(B, T, C, H, W)" for n in ndims)
        raise ValueError(f"{pred_name} must have shape {shapes}, got {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"{pred_name} {tuple(pred.shape)} and {target_name} {tuple(target.shape)} "
                         "must have the same shape")
    return pred, target


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss ``mean(sqrt((pred - target)^2 + eps^2))``, a smooth L1.

    Args:
        pred: prediction, any shape.
        target: same shape as ``pred``.
        eps: smoothing constant (> 0); below ``eps`` the loss is quadratic.

    Returns:
        Scalar tensor (``eps`` for equal inputs).

    Raises:
        ValueError: shapes differ or ``eps <= 0``.

    Example:
        >>> float(charbonnier(torch.zeros(4), torch.full((4,), 3.0), eps=4.0))
        5.0
    """
    pred = require_tensor("pred", pred)
    target = require_tensor("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    eps = require_positive("eps", eps)
    return torch.sqrt((pred - target) ** 2 + eps ** 2).mean()


# --------------------------------------------------------------------------- RDPD edge loss

#: Sobel sizes for the number of edge-loss scales of supplement Table S5 (RDPD+(0/1/3)).
EDGE_SCALES = {0: (), 1: (3,), 3: (3, 7, 11)}


def sobel_kernels(size: int, *, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel kernels of odd ``size`` (RDPD Eqs. 13-14), each divided by its maximum.

    Built as in the authors' code (and OpenCV): smoothing by the binomial row of length
    ``size`` times a derivative that is the binomial row of length ``size - 2`` convolved with
    ``[-1, 0, 1]``. ``S^x = smooth^T deriv`` differentiates along x (the width axis, across
    columns), ``S^y = S^x^T`` along y. Both are divided by their maximum (2, 100 and 12,096 for
    sizes 3, 7, 11). The entries are correlation weights (``F.conv2d``), rising to the right
    and downwards.

    Args:
        size: odd kernel size >= 3.
        dtype, device: of the result.

    Returns:
        ``(S^x, S^y)``, each ``(size, size)``.

    Example:
        >>> kx, ky = sobel_kernels(3)
        >>> (kx * 2).tolist()
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
        >>> torch.equal(ky, kx.T)
        True
    """
    size = require_positive("size", size, integer=True)
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3, got {size}")
    smooth = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    inner = torch.tensor([math.comb(size - 3, k) for k in range(size - 2)], dtype=torch.float64)
    deriv = torch.zeros(size, dtype=torch.float64)
    deriv[2:] += inner      # full convolution with [-1, 0, 1] (correlation order):
    deriv[:-2] -= inner     # deriv[j] = inner[j - 2] - inner[j]
    kx = smooth[:, None] * deriv[None, :]
    kx = kx / kx.max()
    return kx.to(dtype=dtype, device=device), kx.T.contiguous().to(dtype=dtype, device=device)


def _flatten_seq(x):
    return x.flatten(0, 1) if x.ndim == 5 else x


def _sobel(x, k):
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, *k.shape), groups=c)   # 'valid', like the code


def edge_loss(pred: torch.Tensor, target: torch.Tensor,
              sizes: Sequence[int] = (3, 7, 11)) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale Sobel edge loss of RDPD, Eq. 15, per direction.

    ``L_edge^x = mean_m MSE(I_s * S^x_m, I_d * S^x_m)`` over the sizes ``m`` (and the same
    for y), each colour channel filtered separately with 'valid' borders (as in the code).

    Args:
        pred: deblurred output ``I_d``, ``(B, C, H, W)`` or ``(B, T, C, H, W)``.
        target: ground truth ``I_s``, same shape.
        sizes: Sobel sizes ``m`` (paper: 3, 7, 11); each must be <= H and W.

    Returns:
        ``(L_edge^x, L_edge^y)``; zeros if ``sizes`` is empty.

    Raises:
        ValueError: shapes differ, a size is not odd >= 3 or exceeds the image.

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> [float(v) for v in edge_loss(x, x)]
        [0.0, 0.0]
    """
    pred, target = _pair(pred, target, ndims=(4, 5))
    pred, target = _flatten_seq(pred), _flatten_seq(target)
    sizes = tuple(sizes)
    zero = pred.new_zeros(())
    if not sizes:
        return zero, zero.clone()
    lx, ly = [], []
    for m in sizes:
        kx, ky = sobel_kernels(m, dtype=pred.dtype, device=pred.device)
        if m > min(pred.shape[-2:]):
            raise ValueError(f"Sobel size {m} exceeds the image size {tuple(pred.shape[-2:])}")
        lx.append(F.mse_loss(_sobel(pred, kx), _sobel(target, kx)))
        ly.append(F.mse_loss(_sobel(pred, ky), _sobel(target, ky)))
    return torch.stack(lx).mean(), torch.stack(ly).mean()


def rdpd_loss(pred: torch.Tensor, target: torch.Tensor, scales: int | Sequence[int] = 3,
              lambda_x: float = 0.03, lambda_y: float = 0.02) -> torch.Tensor:
    """RDPD training loss, Eq. 16: ``L = MSE + lambda_x L_edge^x + lambda_y L_edge^y``.

    ``lambda_x = 0.03`` and ``lambda_y = 0.02`` as in Sec. 5; ``x`` is the horizontal (width)
    axis, along which DP disparity lies. Code differences (dplab follows the paper): the code
    multiplies the lambdas into the Sobel kernels, so they act squared; its 7x7 branch reuses
    the 3x3 kernel (a bug); and it evaluates the edge terms on the first batch element only.

    Args:
        pred: output, ``(B, C, H, W)`` or a sequence ``(B, T, C, H, W)``.
        target: ground truth, same shape.
        scales: number of edge scales, 0, 1 (3x3 only, "RDPD+(1)") or 3 (3, 7, 11) as in
            supplement Table S5; or an explicit tuple of odd Sobel sizes.
        lambda_x, lambda_y: edge-loss weights (>= 0).

    Returns:
        Scalar loss (0 for equal inputs).

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> float(rdpd_loss(x, x)), round(float(rdpd_loss(x, x + 0.1, scales=0)), 6)
        (0.0, 0.01)
    """
    pred, target = _pair(pred, target, ndims=(4, 5))
    if isinstance(scales, (tuple, list)):
        sizes = tuple(scales)
    else:
        sizes = EDGE_SCALES[require_choice("scales", scales, tuple(EDGE_SCALES))]
    lambda_x = require_positive("lambda_x", lambda_x, allow_zero=True)
    lambda_y = require_positive("lambda_y", lambda_y, allow_zero=True)
    loss = F.mse_loss(pred, target)
    if sizes:
        lx, ly = edge_loss(pred, target, sizes)
        loss = loss + lambda_x * lx + lambda_y * ly
    return loss


# --------------------------------------------------------------------------- DRBNet losses

def _as_scales(preds) -> list[torch.Tensor]:
    if isinstance(preds, torch.Tensor):
        return [preds]
    preds = list(preds)
    if not preds:
        raise ValueError("preds is an empty list")
    for i, p in enumerate(preds):
        require_tensor(f"preds[{i}]", p)
        if p.ndim != 4:
            raise ValueError(f"preds[{i}] must have shape (B, C, H, W), got {tuple(p.shape)}")
    return preds


def _resize_target(target, like):
    if target.shape[-2:] == like.shape[-2:]:
        return target
    return F.interpolate(target, size=tuple(like.shape[-2:]), mode="area")


def multiscale_l1(preds, target: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """DRBNet main-training loss, Eq. 6, applied to every scale (Sec. 4: "the losses are
    applied to all scales"): ``sum_n w_n mean|y_n - down_n(y)|``.

    The target is area-downsampled to each prediction's size (as DRBNet downsamples its
    input). Weights default to 1 per scale.

    Args:
        preds: one ``(B, C, H, W)`` tensor or a list, e.g. ``DRBNet(...)(x, return_scales=True)``.
        target: full-resolution ground truth ``(B, C, H, W)``.
        weights: optional weight per scale.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes or a weights list of the wrong length.

    Example:
        >>> y = torch.rand(1, 3, 16, 16)
        >>> preds = [F.interpolate(y, scale_factor=0.5, mode="area"), y]
        >>> float(multiscale_l1(preds, y)), float(multiscale_l1([y + 0.5], y))
        (0.0, 0.5)
    """
    preds = _as_scales(preds)
    target = require_tensor("target", target)
    if target.ndim != 4:
        raise ValueError(f"target must have shape (B, C, H, W), got {tuple(target.shape)}")
    weights = [1.0] * len(preds) if weights is None else [float(require_number("weights", w)) for w in weights]
    if len(weights) != len(preds):
        raise ValueError(f"weights has {len(weights)} entries for {len(preds)} scales")
    total = target.new_zeros(())
    for w, p in zip(weights, preds):
        if p.shape[:2] != target.shape[:2]:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(target.shape)} differ in (B, C)")
        total = total + w * F.l1_loss(p, _resize_target(target, p))
    return total


#: VGG-19 configuration "E" (Simonyan & Zisserman 2015): conv widths, "M" = 2x2 max-pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Sequential):
    """The convolutional part of VGG-19, indexed like torchvision's ``vgg19().features``.

    Modules ``0 .. 36``: Conv2d(3x3, padding 1), ReLU, ..., MaxPool2d(2); the state dict keys
    are ``"0.weight", "0.bias", "2.weight", ...``, so torchvision's ImageNet weights load
    directly (:func:`load_vgg19_features`). Index 2 is conv1_2, 7 conv2_2, 14 conv3_3.

    Args:
        num_layers: keep only modules ``0 .. num_layers - 1`` (37 = all).

    Example:
        >>> f = VGG19Features(num_layers=5)
        >>> list(f.state_dict())
        ['0.weight', '0.bias', '2.weight', '2.bias']
        >>> tuple(f(torch.rand(1, 3, 8, 8)).shape)
        (1, 64, 4, 4)
    """

    def __init__(self, num_layers: int = 37):
        num_layers = require_positive("num_layers", num_layers, integer=True)
        if num_layers > 37:
            raise ValueError(f"num_layers must be <= 37 (VGG-19 features), got {num_layers}")
        from dplab.metrics.lpips import vgg_layers  # one builder for the VGG-16 (LPIPS) and VGG-19 stacks

        super().__init__(*vgg_layers(_VGG19_CFG)[:num_layers])


def default_vgg19_path() -> Path:
    """Where :func:`load_vgg19_features` looks by default: ``$DPLAB_VGG19`` if set, else
    ``$DPLAB_DATA/weights/vgg19_features.pth``, else ``~/.cache/dplab/vgg19_features.pth``.

    Example:
        >>> default_vgg19_path().name.endswith(".pth")
        True
    """
    if os.environ.get("DPLAB_VGG19"):
        return Path(os.environ["DPLAB_VGG19"]).expanduser()
    if os.environ.get("DPLAB_DATA"):
        return Path(os.environ["DPLAB_DATA"]).expanduser() / "weights" / "vgg19_features.pth"
    return Path.home() / ".cache" / "dplab" / "vgg19_features.pth"


def load_vgg19_features(path: str | os.PathLike | None = None, num_layers: int = 37) -> VGG19Features:
    """Load ImageNet VGG-19 ``features`` weights from a local file (nothing is downloaded).

    Accepts a state dict of torchvision's ``vgg19().features`` (keys ``"0.weight"``, ...) or of
    the whole ``vgg19()`` model (keys ``"features.0.weight"``, ..., e.g. torchvision's
    ``vgg19-dcbb9e9d.pth``); classifier weights are ignored. The returned module is frozen
    (``requires_grad=False``) and in eval mode.

    Args:
        path: the ``.pth`` file; default :func:`default_vgg19_path`.
        num_layers: keep modules ``0 .. num_layers - 1``.

    Returns:
        :class:`VGG19Features` with the loaded weights.

    Raises:
        FileNotFoundError: no file at ``path``; the message says where to put it and that
            DRBNet's stage-2 fallback is the L1 loss (Table 5, row c).
        KeyError: the file lacks weights the kept layers need.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "vgg.pth")
        >>> torch.save(VGG19Features(num_layers=3).state_dict(), p)
        >>> list(load_vgg19_features(p, num_layers=3).state_dict())
        ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    path = Path(path).expanduser() if path is not None else default_vgg19_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG-19 weights not found at {path}. dplab downloads nothing: save ImageNet VGG-19 "
            "weights there once, e.g. on a machine with torchvision: "
            "torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').features.state_dict(), "
            f"'{path}') (torchvision's full 'vgg19-dcbb9e9d.pth' also works), or pass path= / set "
            "DPLAB_VGG19. Without these weights, fine-tune DRBNet with the L1 loss in stage 2 "
            "(dplab.training.losses.multiscale_l1; Table 5, row c) instead of the VGG feature loss."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, nn.Module):  # pragma: no cover - weights_only forbids modules
        state = state.state_dict()
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    net = VGG19Features(num_layers)
    need = net.state_dict().keys()
    missing = [k for k in need if k not in state]
    if missing:
        raise KeyError(f"{path} lacks VGG-19 features weights {missing[:4]}{'...' if len(missing) > 4 else ''}")
    net.load_state_dict({k: state[k] for k in need})
    net.requires_grad_(False)
    return net.eval()


class VGGFeatureLoss(nn.Module):
    """DRBNet fine-tuning loss, Eq. 7: ``sum_l mean|phi_l(y_hat) - phi_l(y)|`` on VGG-19.

    ``phi_l`` are the outputs of torchvision ``features`` modules ``layers = (2, 7, 14)``
    (conv1_2, conv2_2, conv3_3 before their ReLU): dplab's reading of "the 2nd, 7th, and 14th
    layer" (0-based module indices; the paper does not say more). Inputs in [0, 1] are
    normalised with the ImageNet mean and std. Like Eq. 6, it is applied to every scale when
    given a list of predictions (target area-downsampled).

    Args:
        features: a :class:`VGG19Features` (e.g. from :func:`load_vgg19_features`), a path to
            weights, or None for :func:`default_vgg19_path`. It is frozen and kept in eval mode.
        layers: module indices whose outputs are compared.
        weights: optional per-layer weights (default 1).

    Raises:
        FileNotFoundError: from :func:`load_vgg19_features` when the weights are missing.
        ValueError: layer indices beyond the features module.

    Example:
        >>> loss = VGGFeatureLoss(VGG19Features(num_layers=15))
        >>> y = torch.rand(1, 3, 16, 16)
        >>> float(loss(y, y)), bool(loss(y, y.flip(-1)) > 0)
        (0.0, True)
    """

    def __init__(self, features: VGG19Features | str | os.PathLike | None = None,
                 layers: Sequence[int] = (2, 7, 14), weights: Sequence[float] | None = None):
        super().__init__()
        self.layers = tuple(require_positive("layers", i, allow_zero=True, integer=True) for i in layers)
        if not self.layers:
            raise ValueError("layers must name at least one VGG-19 module index")
        if features is None or isinstance(features, (str, os.PathLike)):
            features = load_vgg19_features(features, num_layers=max(self.layers) + 1)
        if not isinstance(features, nn.Sequential):
            raise TypeError(f"features must be a VGG19Features, a path or None, got {type(features).__name__}")
        if max(self.layers) >= len(features):
            raise ValueError(f"layers {self.layers} exceed the {len(features)} modules of features")
        self.features = nn.Sequential(*list(features)[: max(self.layers) + 1])
        self.features.requires_grad_(False)
        self.weights = tuple(1.0 for _ in self.layers) if weights is None else tuple(float(w) for w in weights)
        if len(self.weights) != len(self.layers):
            raise ValueError(f"weights has {len(self.weights)} entries for {len(self.layers)} layers")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()   # a fixed feature extractor
        return self

    def _feats(self, x):
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.layers:
                out.append(x)
        return out

    def forward(self, preds, target: torch.Tensor) -> torch.Tensor:
        preds = _as_scales(preds)
        target = require_tensor("target", target)
        if target.ndim != 4 or target.shape[1] != 3:
            raise ValueError(f"target must have shape (B, 3, H, W), got {tuple(target.shape)}")
        total = target.new_zeros(())
        for p in preds:
            if p.shape[:2] != target.shape[:2]:
                raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(target.shape)} differ in (B, C)")
            t = _resize_target(target, p)
            fp, ft = self._feats(p), self._feats(t)
            for w, a, b in zip(self.weights, fp, ft):
                total = total + w * F.l1_loss(a, b)
        return total


# --------------------------------------------------------------------------- MDP losses

#: Loss weights ``(w_sharp, w_views, w_C, w_D)`` of MDP's two training steps.
#: "paper_step1": Eq. 8 (views only; Dec_s frozen); "paper_step2": Eq. 9 with
#: lambda = (0.8, 0.5, 0.5) of Sec. 4.1; "code_step1"/"code_step2": the authors' Keras code,
#: [1, 1, 0.2, 0.2] and [1, 0.2, 0.2, 0.2] (REFERENCE_FACTS.md).
MDP_LOSS_WEIGHTS = {
    "paper_step1": (0.0, 1.0, 1.0, 1.0),
    "paper_step2": (1.0, 0.8, 0.5, 0.5),
    "code_step1": (1.0, 1.0, 0.2, 0.2),
    "code_step2": (1.0, 0.2, 0.2, 0.2),
}


def combined_loss(image: torch.Tensor, left_pred: torch.Tensor, right_pred: torch.Tensor,
                  convention: str = "sum") -> torch.Tensor:
    """MDP's ``L_C`` (Eq. 6): ``mean((I_c - (L* + R*))^2)``, the predicted views must add up
    to the input combined image (DP image formation, Eq. 3).

    ``convention="sum"`` is the paper's Eq. 6 and dplab's convention (each view about half
    the brightness). ``"average"`` is the authors' code, whose views are full-brightness
    images: ``mean((I_c - (L* + R*) / 2)^2)``.

    Args:
        image: input combined image ``(B, C, H, W)``.
        left_pred, right_pred: predicted views, same shape.
        convention: ``"sum"`` or ``"average"``.

    Returns:
        Scalar loss (0 when the views sum to the image).

    Example:
        >>> img = torch.rand(1, 3, 8, 8); a = torch.rand(1, 3, 8, 8) * img
        >>> round(float(combined_loss(img, a, img - a)), 12)
        0.0
    """
    image, left_pred = _pair(image, left_pred, "image", "left_pred")
    _, right_pred = _pair(image, right_pred, "image", "right_pred")
    require_choice("convention", convention, ("sum", "average"))
    views = left_pred + right_pred
    if convention == "average":
        views = views / 2
    return F.mse_loss(views, image)


def difference_loss(left_pred: torch.Tensor, right_pred: torch.Tensor,
                    left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """MDP's ``L_D`` (Eq. 7): ``mean(((L - R) - (L* - R*))^2)``, the view difference whose
    sign tells front from back focus.

    The same formula in the paper and the code; it does not depend on the brightness
    convention as long as predictions and ground truth share it.

    Args:
        left_pred, right_pred: predicted views ``(B, C, H, W)``.
        left, right: ground-truth views, same shape.

    Returns:
        Scalar loss.

    Example:
        >>> l, r = torch.rand(2, 1, 3, 4, 4)
        >>> round(float(difference_loss(l + 0.2, r + 0.2, l, r)), 12), float(difference_loss(r, l, l, r)) > 0
        (0.0, True)
    """
    left_pred, right_pred = _pair(left_pred, right_pred, "left_pred", "right_pred")
    left, right = _pair(left, right, "left", "right")
    _pair(left_pred, left, "left_pred", "left")
    return F.mse_loss(left_pred - right_pred, left - right)


def mdp_loss(pred, image: torch.Tensor, *, left: torch.Tensor | None = None,
             right: torch.Tensor | None = None, sharp: torch.Tensor | None = None,
             weights: str | Sequence[float] = "paper_step2",
             convention: str = "sum") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MDP training loss (Eqs. 8-9): ``w_s MSE(s) + w_v MSE(l, r) + w_C L_C + w_D L_D``.

    Terms whose weight is 0, whose ground truth is None, or whose prediction is None (a
    single-task model) are skipped. ``MSE(l, r)`` is the MSE over both views together.

    Args:
        pred: :class:`~dplab.models.MDPOutput` or a ``(left, right, sharp)`` triple.
        image: the input combined image (for ``L_C``).
        left, right: ground-truth views (``MSE(l, r)`` and ``L_D``).
        sharp: ground-truth sharp image (``MSE(s)``).
        weights: a key of :data:`MDP_LOSS_WEIGHTS` or 4 numbers ``(w_s, w_v, w_C, w_D)``.
        convention: ``L_C`` convention, see :func:`combined_loss`.

    Returns:
        ``(total, terms)`` with ``terms`` the unweighted values by name
        (``"mse_sharp"``, ``"mse_views"``, ``"L_C"``, ``"L_D"``) that were computed.

    Raises:
        ValueError: bad weights, shapes, or no term left to compute.

    Example:
        >>> img = torch.rand(1, 3, 8, 8); l = img * 0.4; r = img - l
        >>> total, terms = mdp_loss((l, r, img), img, left=l, right=r, sharp=img)
        >>> round(float(total), 12), sorted(terms)
        (0.0, ['L_C', 'L_D', 'mse_sharp', 'mse_views'])
    """
    if isinstance(weights, str):
        w = MDP_LOSS_WEIGHTS[require_choice("weights", weights, tuple(MDP_LOSS_WEIGHTS))]
    else:
        w = tuple(float(require_number("weights", v)) for v in weights)
        if len(w) != 4:
            raise ValueError(f"weights must have 4 entries (w_s, w_v, w_C, w_D), got {len(w)}")
    lp, rp, sp = pred
    terms: dict[str, torch.Tensor] = {}
    if w[0] and sp is not None and sharp is not None:
        terms["mse_sharp"] = F.mse_loss(*_pair(sp, sharp, "pred.sharp", "sharp"))
    views_ok = lp is not None and rp is not None
    if w[1] and views_ok and left is not None and right is not None:
        _pair(lp, left, "pred.left", "left")
        _pair(rp, right, "pred.right", "right")
        # equal to the MSE over the 6 channels [left, right] of the code's mse_l_r
        terms["mse_views"] = (F.mse_loss(lp, left) + F.mse_loss(rp, right)) / 2
    if w[2] and views_ok:
        terms["L_C"] = combined_loss(image, lp, rp, convention)
    if w[3] and views_ok and left is not None and right is not None:
        terms["L_D"] = difference_loss(lp, rp, left, right)
    if not terms:
        raise ValueError("mdp_loss has nothing to compute: give the ground truth of a term with non-zero weight")
    names = {"mse_sharp": w[0], "mse_views": w[1], "L_C": w[2], "L_D": w[3]}
    total = sum(names[k] * v for k, v in terms.items())
    return total, terms
