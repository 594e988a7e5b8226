"""Convolution blocks shared by dplab's networks (DPDNet, RDPD, DRBNet, MDP).

The Keras networks of Abuolaim et al. (DPDNet, RDPD, MDP) are built from ``Conv2D(...,
padding='same')`` layers with ReLU and He-normal initialisation, 2x2 max-pooling and an
"up-convolution" made of 2x nearest up-sampling followed by a 2x2 'same' convolution.
TensorFlow pads an even kernel asymmetrically (nothing before, ``k - 1`` after), which
:class:`ConvAct` reproduces, so the layer shapes and parameter counts equal the authors'.
DRBNet (Ruan et al., CVPR 2022, Fig. 3) uses LeakyReLU(0.1) convolutions, residual blocks and
4x4 transposed convolutions.

Sizes. Every U-Net here halves the resolution ``L`` times, so it needs ``H`` and ``W`` to be
multiples of ``2**L``. :func:`pad_to_multiple` pads an input by replicating its last row and
column (bottom/right) and the models crop their outputs back, so any size is accepted.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_choice, require_positive

__all__ = [
    "ConvAct",
    "DoubleConv",
    "UpConv",
    "ResBlock",
    "he_normal_",
    "init_keras_",
    "pad_to_multiple",
    "ImageHead",
    "straight_through_clamp",
    "require_input_dtype",
    "ACTIVATIONS",
    "HEADS",
]

ACTIVATIONS = ("relu", "lrelu", "sigmoid", "tanh", None)
#: Output heads of the U-Nets (:class:`ImageHead`): the authors' layers, or a residual head.
HEADS = ("paper", "residual")


def _activation(name: str | None) -> nn.Module:
    require_choice("act", name, ACTIVATIONS)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    return nn.Identity()


class ConvAct(nn.Module):
    """``Conv2d`` with TensorFlow 'same' padding, followed by an activation.

    For odd ``kernel_size`` the padding is symmetric; for even sizes it is ``0`` before and
    ``k - 1`` after on each axis, as TensorFlow/Keras pad (the 2x2 up-convolutions of DPDNet,
    RDPD and MDP). With ``stride=2`` and an odd kernel the output has ``ceil(n / 2)`` samples.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (>= 1).
        stride: convolution stride.
        act: ``"relu"``, ``"lrelu"`` (LeakyReLU 0.1), ``"sigmoid"``, ``"tanh"`` or None.
        bias: learn a bias.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> ConvAct(6, 8, 2)(torch.zeros(1, 6, 5, 7)).shape
        torch.Size([1, 8, 5, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 act: str | None = "relu", bias: bool = True):
        super().__init__()
        in_channels = require_positive("in_channels", in_channels, integer=True)
        out_channels = require_positive("out_channels", out_channels, integer=True)
        kernel_size = require_positive("kernel_size", kernel_size, integer=True)
        stride = require_positive("stride", stride, integer=True)
        self.kernel_size = kernel_size
        sym = (kernel_size - 1) // 2 if kernel_size % 2 == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=sym, bias=bias)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size % 2 == 0:
            x = F.pad(x, (0, self.kernel_size - 1, 0, self.kernel_size - 1))
        return self.act(self.conv(x))


class DoubleConv(nn.Sequential):
    """Two 3x3 'same' convolutions with ReLU (one U-Net level of DPDNet/RDPD/MDP).

    Example:
        >>> DoubleConv(3, 4)(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, n: int = 2, act: str = "relu"):
        layers = [ConvAct(in_channels if i == 0 else out_channels, out_channels, 3, act=act) for i in range(n)]
        super().__init__(*layers)


class UpConv(nn.Module):
    """Keras-style up-convolution: 2x nearest up-sampling, then a 2x2 'same' conv with ReLU.

    This is ``Conv2D(c, 2)(UpSampling2D((2, 2))(x))`` of the DPDNet/RDPD/MDP code.

    Example:
        >>> UpConv(8, 4)(torch.zeros(1, 8, 3, 5)).shape
        torch.Size([1, 4, 6, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, act: str = "relu"):
        super().__init__()
        self.conv = ConvAct(in_channels, out_channels, 2, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block of DRBNet: ``x + conv(lrelu(conv(x)))`` with 3x3 kernels.

    Example:
        >>> blk = ResBlock(4)
        >>> _ = [nn.init.zeros_(p) for p in blk.parameters()]
        >>> x = torch.rand(1, 4, 5, 5); torch.equal(blk(x), x)
        True
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            ConvAct(channels, channels, kernel_size, act="lrelu"),
            ConvAct(channels, channels, kernel_size, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def straight_through_clamp(y: torch.Tensor) -> torch.Tensor:
    """``y`` clamped to [0, 1] in the forward pass, with the identity's gradient.

    A plain ``clamp`` passes no gradient where the prediction is outside [0, 1], so a pixel
    that overshoots once can never be pulled back; this keeps the output range of a clamp
    and the gradient of the unclamped value.

    Example:
        >>> y = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
        >>> out = straight_through_clamp(y); out.sum().backward()
        >>> out.tolist(), y.grad.tolist()
        ([0.0, 0.5, 1.0], [1.0, 1.0, 1.0])
    """
    return y + (y.clamp(0.0, 1.0) - y).detach()


class ImageHead(nn.Module):
    """The last layers of a U-Net: decoder features -> image.

    ``kind="paper"`` is the authors' head of DPDNet, RDPD and MDP: a 3x3 convolution to 3
    channels with ReLU, then a 1x1 convolution with a sigmoid (``last="sigmoid"``) or linear
    and clamped to [0, 1] (``last=None``, RDPD's change 5). Three ReLU channels are a narrow
    gate: a channel whose pre-activation turns negative everywhere passes no gradient again,
    and a sigmoid far from 0.5 hardly moves, so the whole output can freeze at a constant
    (what MDP's left view did in the book's first runs).

    ``kind="residual"`` predicts a correction to an image the network is given, ``base`` (the
    blurred input at the output's brightness): ``base + conv3x3(features)``, the convolution
    initialised to zero so that an untrained network returns its input, clamped to [0, 1]
    with :func:`straight_through_clamp`. Learning the residual (the image minus its blurred
    version) is the formulation of DRBNet's dynamic residual blocks and of most deblurring
    networks since; it makes the network start at the blurred input's PSNR instead of below
    it.

    Args:
        in_channels: decoder feature channels.
        out_channels: image channels.
        kind: ``"paper"`` or ``"residual"`` (:data:`HEADS`).
        last: activation of the paper head's 1x1 layer: ``"sigmoid"`` or None (linear, clamped).

    Shape:
        ``(B, in_channels, H, W)`` (and ``base`` ``(B, out_channels, H, W)`` for the residual
        head) -> ``(B, out_channels, H, W)``.

    Example:
        >>> head = init_keras_(ImageHead(8, 3, kind="residual"))
        >>> base = torch.rand(1, 3, 4, 4)
        >>> torch.equal(head(torch.rand(1, 8, 4, 4), base), base)
        True
    """

    def __init__(self, in_channels: int, out_channels: int = 3, kind: str = "paper",
                 last: str | None = "sigmoid"):
        super().__init__()
        self.kind = require_choice("head", kind, HEADS)
        self.last = require_choice("last", last, ("sigmoid", None))
        if self.kind == "paper":
            self.body = nn.Sequential(ConvAct(in_channels, 3, 3, act="relu"),
                                      ConvAct(3, out_channels, 1, act=last))
        else:
            self.body = ConvAct(in_channels, out_channels, 3, act=None)

    def zero_init_(self) -> None:
        """Zero the residual head's convolution (an untrained network returns its base)."""
        if self.kind == "residual" and not self.body.conv.weight.is_meta:
            nn.init.zeros_(self.body.conv.weight)
            nn.init.zeros_(self.body.conv.bias)

    def forward(self, features: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        y = self.body(features)
        if self.kind == "paper":
            return y if self.last == "sigmoid" else y.clamp(0.0, 1.0)
        if base is None:
            raise ValueError("the residual head needs the base image it corrects")
        return straight_through_clamp(base + y)


def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras ``he_normal`` in place: truncated normal (+-2 std), std ``sqrt(2 / fan_in)``.

    Keras divides the standard deviation by 0.87962566 so that the *truncated* distribution
    has variance ``2 / fan_in`` (He et al. 2015), as in the authors' Keras code.

    Example:
        >>> w = he_normal_(torch.empty(64, 32, 3, 3))
        >>> bool(abs(w.std() - (2 / (32 * 9)) ** 0.5) < 0.01)
        True
    """
    if weight.is_meta:
        return weight
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    # Inverse-CDF sampling of N(0, std) truncated to +-2 std (what nn.init.trunc_normal_
    # does, written out because it is several times faster for the 10^7-weight layers).
    bound = math.erf(2.0 / math.sqrt(2.0))          # 2 Phi(2) - 1
    with torch.no_grad():
        weight.uniform_(-bound, bound).erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-2 * std, 2 * std)
    return weight


def init_keras_(module: nn.Module) -> nn.Module:
    """He-normal weights and zero biases for every ``Conv2d`` of ``module`` (Keras defaults
    used by DPDNet, RDPD and MDP); returns ``module``.

    Example:
        >>> m = init_keras_(nn.Conv2d(2, 3, 3)); int(torch.count_nonzero(m.bias))
        0
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            he_normal_(m.weight)
            if m.bias is not None and not m.bias.is_meta:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, ImageHead):
            m.zero_init_()
    return module


def require_input_dtype(name: str, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Return ``x`` if its dtype is that of ``module``'s weights (or autocast is on), else raise a
    ``TypeError`` saying how to convert (rather than fail deep inside a convolution).

    Example:
        >>> net = nn.Conv2d(3, 3, 1)
        >>> require_input_dtype("x", torch.zeros(1, 3, 2, 2), net).dtype
        torch.float32
        >>> require_input_dtype("x", torch.zeros(1, 3, 2, 2, dtype=torch.float64), net)
        Traceback (most recent call last):
        ...
        TypeError: x is torch.float64 but the network's weights are torch.float32: pass x.to(torch.float32), or convert the network with .to(torch.float64)
    """
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    if weight is None or x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return x
    raise TypeError(f"{name} is {x.dtype} but the network's weights are {weight.dtype}: pass x.to({weight.dtype}), "
                    f"or convert the network with .to({x.dtype})")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` at the bottom/right by edge replication so H and W are multiples of ``multiple``.

    Args:
        x: ``(..., H, W)`` tensor.
        multiple: required divisor (e.g. 16 for four 2x poolings).

    Returns:
        ``(padded, (H, W))``: the padded tensor and the original size, to crop outputs with
        ``out[..., :H, :W]``.

    Example:
        >>> y, size = pad_to_multiple(torch.rand(1, 3, 17, 32), 16)
        >>> tuple(y.shape), size
        ((1, 3, 32, 32), (17, 32))
    """
    multiple = require_positive("multiple", multiple, integer=True)
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        lead = x.shape[:-2]
        flat = x.reshape(math.prod(lead), 1, h, w) if x.ndim != 4 else x   # (explicit: B may be 0)
        flat = F.pad(flat, (0, pw, 0, ph), mode="replicate")
        x = flat.reshape(*lead, h + ph, w + pw)
    return x, (h, w)
