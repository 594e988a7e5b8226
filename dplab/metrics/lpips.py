"""LPIPS, the learned perceptual image patch similarity (Zhang et al., CVPR 2018), VGG variant.

The computation is that of the ``lpips`` PyPI package, ``LPIPS(net="vgg", version="0.1")``
called with ``normalize=True``: images in [0, 1] are mapped to [-1, 1], shifted and scaled by
the package's ``ScalingLayer``, passed through VGG-16 ``features`` cut after relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3; each feature map is unit-normalised over channels, the squared
differences are weighted per channel by 1x1 linear layers ``lin0 .. lin4`` (non-negative, no
bias), averaged over space and summed over the five layers.

The VGG-16 is written here (:class:`VGG16Features`, indexed like torchvision's
``vgg16().features``) and built from a layer configuration by :func:`vgg_layers`, the same
pattern as :class:`dplab.training.vgg.VGG19Features`. Nothing is downloaded: :func:`load_lpips`
reads two local files (see :func:`default_lpips_paths`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from dplab._validate import require_image, require_positive

__all__ = [
    "VGG16_CFG",
    "vgg_layers",
    "VGG16Features",
    "LPIPS",
    "LPIPS_SLICES",
    "LPIPS_CHANNELS",
    "default_lpips_paths",
    "load_lpips",
]

#: VGG-16 configuration "D" (Simonyan & Zisserman 2015): conv widths, "M" = 2x2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

#: ``(start, stop)`` module indices of the five LPIPS slices of ``vgg16().features``; each ends
#: after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
#: Channels of the five compared feature maps (the widths of ``lin0 .. lin4``).
LPIPS_CHANNELS = (64, 128, 256, 512, 512)

#: The ``lpips`` package's ScalingLayer, applied to inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
#: relu5_3 is after four 2x2 max-pools: smaller images leave it empty.
MIN_SIZE = 16

VGG16_FILENAME = "vgg16_features.pth"
LIN_FILENAME = "lpips_vgg_v0.1.pth"


def vgg_layers(cfg: Sequence[int | str], in_channels: int = 3) -> list[nn.Module]:
    """The modules of a VGG ``features`` stack from its configuration, in torchvision's order.

    Each number ``c`` gives ``Conv2d(c_in, c, 3, padding=1)`` followed by ``ReLU``; ``"M"`` gives
    ``MaxPool2d(2, 2)``. Wrapping the list in :class:`torch.nn.Sequential` yields torchvision's
    state-dict keys (``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ...).

    Args:
        cfg: conv widths and ``"M"`` entries, e.g. :data:`VGG16_CFG`.
        in_channels: input channels of the first convolution.

    Returns:
        The list of modules.

    Example:
        >>> [type(m).__name__ for m in vgg_layers((8, "M"))]
        ['Conv2d', 'ReLU', 'MaxPool2d']
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    return layers


class VGG16Features(nn.Sequential):
    """The convolutional part of VGG-16, indexed like torchvision's ``vgg16().features``.

    Modules ``0 .. 30``: Conv2d(3x3, padding 1), ReLU, ..., MaxPool2d(2). Convolutions are at
    indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, so torchvision's ImageNet weights
    load directly (:func:`load_lpips`). Weights are randomly initialised (PyTorch defaults).

    Args:
        num_layers: keep only modules ``0 .. num_layers - 1`` (31 = all; LPIPS uses 30).

    Example:
        >>> f = VGG16Features(num_layers=4)
        >>> list(f.state_dict())
        ['0.weight', '0.bias', '2.weight', '2.bias']
        >>> tuple(f(torch.rand(1, 3, 8, 8)).shape)
        (1, 64, 8, 8)
    """

    def __init__(self, num_layers: int = 31):
        num_layers = require_positive("num_layers", num_layers, integer=True)
        layers = vgg_layers(VGG16_CFG)
        if num_layers > len(layers):
            raise ValueError(f"num_layers must be <= {len(layers)} (VGG-16 features), got {num_layers}")
        super().__init__(*layers[:num_layers])


class _LinLayer(nn.Module):
    """``lpips``'s ``NetLinLayer``: ``model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))``.

    The dropout (used only while LPIPS's linear layers were trained) is an identity here; the
    slot is kept so that the state-dict key is the package's ``model.1.weight``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))
        with torch.no_grad():  # random but non-negative, as LPIPS weights are
            self.model[1].weight.abs_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance (VGG, v0.1) between images in [0, 1]; lower is more similar.

    A fresh module has *random* weights (VGG-16 with PyTorch's default initialisation,
    non-negative random ``lin`` weights): useful for shapes and tests only. Use
    :func:`load_lpips` for the real metric. The module is frozen (``requires_grad=False``) and
    stays in eval mode, but is differentiable with respect to its inputs, so it can also serve
    as a loss.

    ``LPIPS()(x, y)`` equals ``lpips.LPIPS(net="vgg")(x, y, normalize=True).flatten()`` of the
    ``lpips`` package (same weights), i.e. ``lpips.LPIPS(net="vgg")(2 * x - 1, 2 * y - 1)``.

    State-dict keys: ``"net.0.weight", ...`` (torchvision's ``features`` keys under ``net.``)
    and ``"lin0.model.1.weight" .. "lin4.model.1.weight"`` (the ``lpips`` package's keys).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> metric = LPIPS()
        >>> x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        >>> d = metric(x, y)
        >>> tuple(d.shape), bool((d > 0).all()), float(metric(x, x).abs().max())
        ((2,), True, 0.0)
        >>> [tuple(w.shape) for k, w in metric.state_dict().items() if k.startswith("lin")]
        [(1, 64, 1, 1), (1, 128, 1, 1), (1, 256, 1, 1), (1, 512, 1, 1), (1, 512, 1, 1)]
    """

    def __init__(self):
        super().__init__()
        self.net = VGG16Features(num_layers=LPIPS_SLICES[-1][1])
        for i, c in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{i}", _LinLayer(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def lins(self) -> list[_LinLayer]:
        """The five linear layers ``lin0 .. lin4``."""
        return [getattr(self, f"lin{i}") for i in range(len(LPIPS_CHANNELS))]

    def train(self, mode: bool = True):
        # a fixed metric: nothing in it behaves differently in training mode, keep it in eval
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised VGG-16 feature maps of images ``x`` in [0, 1]."""
        x = (2 * x - 1 - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        out = []
        for start, stop in LPIPS_SLICES:
            for i in range(start, stop):
                x = self.net[i](x)
            out.append(x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + _EPS))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image.

        Args:
            x, y: images ``(B, 3, H, W)`` in [0, 1] of the same shape, ``H, W >= 16``.

        Returns:
            ``(B,)`` distances (0 for identical images).

        Raises:
            TypeError: non-tensor or integer inputs.
            ValueError: wrong or different shapes, too small images, NaN or infinite values.
        """
        x = require_image("x", x, channels=3)
        y = require_image("y", y, channels=3)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(
                f"LPIPS (VGG) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels (four 2x2 "
                f"max-pools before relu5_3), got {tuple(x.shape)}"
            )
        b = x.shape[0]
        feats = self.features(torch.cat([x, y], dim=0))
        total = x.new_zeros(b)
        for lin, f in zip(self.lins, feats):
            total = total + lin((f[:b] - f[b:]) ** 2).mean(dim=(1, 2, 3))
        return total


def default_lpips_paths() -> tuple[Path, Path]:
    """Where :func:`load_lpips` looks by default: ``(vgg16_path, lin_path)``.

    The directory is ``$DPLAB_LPIPS_DIR`` if set, else ``$DPLAB_DATA/weights``, else
    ``~/.cache/dplab``; the files are ``vgg16_features.pth`` and ``lpips_vgg_v0.1.pth``.

    Example:
        >>> [p.name for p in default_lpips_paths()]
        ['vgg16_features.pth', 'lpips_vgg_v0.1.pth']
    """
    if os.environ.get("DPLAB_LPIPS_DIR"):
        root = Path(os.environ["DPLAB_LPIPS_DIR"]).expanduser()
    elif os.environ.get("DPLAB_DATA"):
        root = Path(os.environ["DPLAB_DATA"]).expanduser() / "weights"
    else:
        root = Path.home() / ".cache" / "dplab"
    return root / VGG16_FILENAME, root / LIN_FILENAME


def _read_state(path: Path, what: str, how: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found at {path}. dplab downloads nothing: {how} Pass the path to "
            "dplab.metrics.lpips.load_lpips, or put the file under $DPLAB_LPIPS_DIR (or $DPLAB_DATA/weights) "
            f"with that name."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, nn.Module):  # pragma: no cover - weights_only forbids modules
        state = state.state_dict()
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _check(path: Path, state: dict, need: dict, what: str) -> dict:
    missing = [k for k in need if k not in state]
    if missing:
        raise KeyError(f"{path} lacks {what} weights {missing[:4]}{'...' if len(missing) > 4 else ''}")
    out = {}
    for key, ref in need.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{path}: {what} weight {key!r} has shape {shape}, expected {tuple(ref.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{path}: {what} weight {key!r} contains NaN or infinite values")
        out[key] = value
    return out


def load_lpips(
    vgg16_path: str | os.PathLike | None = None,
    lin_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """The LPIPS (VGG, v0.1) metric with weights from two local files (nothing is downloaded).

    Args:
        vgg16_path: ImageNet VGG-16 weights in torchvision's format: a state dict of
            ``vgg16().features`` (keys ``"0.weight"``, ...) or of the whole ``vgg16()`` (keys
            ``"features.0.weight"``, ..., e.g. torchvision's ``vgg16-397923af.pth``; the
            classifier is ignored). Default: first of :func:`default_lpips_paths`.
        lin_path: the ``lpips`` package's ``lpips/weights/v0.1/vgg.pth`` (keys
            ``"lin0.model.1.weight"`` .. ``"lin4.model.1.weight"``, shapes ``(1, C, 1, 1)``).
            Default: second of :func:`default_lpips_paths`.
        device: where the module is put.

    Returns:
        A frozen :class:`LPIPS` in eval mode.

    Raises:
        FileNotFoundError: a file is missing; the message names it and says how to obtain it.
        KeyError: a file lacks weights.
        ValueError: a weight has the wrong shape, non-finite values, or (``lin``) negative values.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> m = LPIPS()
        >>> torch.save({k[4:]: v for k, v in m.state_dict().items() if k.startswith("net.")}, os.path.join(d, "v.pth"))
        >>> torch.save({k: v for k, v in m.state_dict().items() if k.startswith("lin")}, os.path.join(d, "l.pth"))
        >>> x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
        >>> bool(torch.allclose(load_lpips(os.path.join(d, "v.pth"), os.path.join(d, "l.pth"))(x, y), m(x, y)))
        True
    """
    default_vgg, default_lin = default_lpips_paths()
    vgg16_path = Path(vgg16_path).expanduser() if vgg16_path is not None else default_vgg
    lin_path = Path(lin_path).expanduser() if lin_path is not None else default_lin
    vgg_state = _read_state(
        vgg16_path,
        "VGG-16 weights",
        "save ImageNet VGG-16 weights there once, on a machine with torchvision: "
        "python -c \"import torch, torchvision; torch.save(torchvision.models.vgg16(weights='DEFAULT')"
        f".features.state_dict(), '{vgg16_path}')\" (torchvision's full 'vgg16-397923af.pth' also works).",
    )
    lin_state = _read_state(
        lin_path,
        "LPIPS linear-layer weights",
        "copy 'lpips/weights/v0.1/vgg.pth' from the lpips package "
        "(pip install lpips, or https://github.com/richzhang/PerceptualSimilarity) to that path.",
    )
    if any(k.startswith("features.") for k in vgg_state):
        vgg_state = {k[len("features."):]: v for k, v in vgg_state.items() if k.startswith("features.")}
    if any(k.startswith("net.") for k in vgg_state):  # a state dict of dplab's LPIPS itself
        vgg_state = {k[len("net."):]: v for k, v in vgg_state.items() if k.startswith("net.")}
    model = LPIPS()
    net_state = _check(vgg16_path, vgg_state, model.net.state_dict(), "VGG-16 features")
    lin_need = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
    lins = _check(lin_path, lin_state, lin_need, "LPIPS lin")
    for key, value in lins.items():
        if bool((value < 0).any()):
            raise ValueError(f"{lin_path}: LPIPS lin weight {key!r} has negative entries; LPIPS weights are >= 0")
    model.load_state_dict({**{f"net.{k}": v for k, v in net_state.items()}, **lins})
    return model.to(device).eval()
