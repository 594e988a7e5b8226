"""DRBNet's perceptual loss (Ruan et al., CVPR 2022, Sec. 4, Eq. 7) on a VGG-19 written here.

:class:`VGG19Features` is the convolutional part of VGG-19 (Simonyan & Zisserman 2015),
indexed like torchvision's ``vgg19().features`` so that its ImageNet weights load directly
from a local file (:func:`load_vgg19_features`; nothing is downloaded). :class:`VGGFeatureLoss`
compares features of prediction and target on every output scale, like Eq. 6
(:func:`dplab.training.losses.multiscale_l1`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_positive, require_tensor
from dplab.training.losses import as_scales, resize_target

__all__ = [
    "VGG19Features",
    "VGGFeatureLoss",
    "load_vgg19_features",
    "default_vgg19_path",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


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
        preds = as_scales(preds)
        target = require_tensor("target", target)
        if target.ndim != 4 or target.shape[1] != 3:
            raise ValueError(f"target must have shape (B, 3, H, W), got {tuple(target.shape)}")
        total = target.new_zeros(())
        for p in preds:
            if p.shape[:2] != target.shape[:2]:
                raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(target.shape)} differ in (B, C)")
            t = resize_target(target, p)
            fp, ft = self._feats(p), self._feats(t)
            for w, a, b in zip(self.weights, fp, ft):
                total = total + w * F.l1_loss(a, b)
        return total
