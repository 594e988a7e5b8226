"""MDP: multi-task dual-pixel network (Abuolaim, Afifi & Brown, WACV 2022, Sec. 3.1, Fig. 3).

One encoder maps a single image ``I_c`` to a latent space ``X`` (Eq. 4); three decoders
produce the left view, the right view and the sharp image (Eq. 5). Weights are shared at two
stages: early, at the latent space (the three decoders start from the same ``X``), and in the
middle, where the decoders are "stitched" (orange box of Fig. 3): at 1/2 resolution each
decoder's late part receives the encoder skip *and* the up-sampled features of all three
decoders. There is no late-stage sharing, so the sharp decoder's last blocks do not see the
half-PSF blur of the view features (Sec. 3.1, supplement S1).

Layer widths (authors' Keras code): encoder 64x2, 128x2, 256x2, 512x1 with 2x2 max-pooling
after each level; per decoder, early part: 3x3 conv 1024 (at 1/16), up-conv 512, concat
encoder 512, 3x3 conv 512, up-conv 256, concat encoder 256, two 3x3 conv 256, up-conv 128;
late part: concat [encoder 128, three up-convs 128] -> two 3x3 conv 128, up-conv 64, concat
encoder 64, two 3x3 conv 64, 3x3 conv to 3 (ReLU), 1x1 conv to 3 (sigmoid). ReLU, He-normal,
no dropout. Parameter count 46,860,397 in that code; dplab's default MDP has exactly this
count because it is built layer for layer the same way.

Variants (supplement Table S1), ``stitching=``:

* ``"middle"`` (default): as above.
* ``"none"``: the latent space is the only shared stage; each late part sees only its own
  up-conv and the encoder skip (fewer weights: 45,975,661).
* ``"late"``: decoders independent until the last block: at full resolution each decoder's
  last block receives the encoder skip and the three decoders' up-convs (dplab's reading of
  "late-stage stitching at the last block"; 46,196,845 weights).

Single-task baselines (Table 3): :class:`MDPSingleTask` -- the same encoder and one decoder
of the same layout with widened layers, so that the number of weights is within 0.01 % of MDP's
("approximately the same capacity", Sec. 4.3).

Values. Input is the combined image in [0, 1]. Outputs are sigmoid values in (0, 1); with
dplab's convention the predicted views should sum to the input (``L_C``, Eq. 6, in
:mod:`dplab.training.mdp`). H and W are padded to multiples of 16 (edge replication) and the
outputs cropped back.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_choice, require_image, require_positive
from dplab.models.blocks import ConvAct, DoubleConv, ImageHead, UpConv, init_keras_, pad_to_multiple, require_input_dtype

__all__ = ["MDP", "MDPSingleTask", "MDPOutput", "MDP_PARAMS", "STITCHING"]

#: Parameter count of the authors' Keras MDP.
MDP_PARAMS = 46_860_397

STITCHING = ("middle", "none", "late")
BRANCHES = ("left", "right", "sharp")


class MDPOutput(NamedTuple):
    """MDP predictions ``(left, right, sharp)``, each ``(B, 3, H, W)`` or None when a
    single-task model does not predict it."""

    left: torch.Tensor | None
    right: torch.Tensor | None
    sharp: torch.Tensor | None


def _scaled_widths(widths, decoder_widths, width: float):
    """Check the width tuples and multiply every entry by ``width`` (rounded, at least 1)."""
    width = require_positive("width", width)
    widths = tuple(require_positive("widths", w, integer=True) for w in widths)
    dw = tuple(require_positive("decoder_widths", w, integer=True) for w in decoder_widths)
    if width != 1:
        widths = tuple(max(1, round(w * width)) for w in widths)
        dw = tuple(max(1, round(w * width)) for w in dw)
    return widths, dw


class MDPEncoder(nn.Module):
    """Shared encoder ``Enc`` (Eq. 4): 64x2, 128x2, 256x2, 512x1; returns skips and latent."""

    def __init__(self, in_channels: int = 3, widths=(64, 128, 256, 512)):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.enc1 = DoubleConv(in_channels, w1)
        self.enc2 = DoubleConv(w1, w2)
        self.enc3 = DoubleConv(w2, w3)
        self.enc4 = DoubleConv(w3, w4, n=1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        return (e1, e2, e3, e4), F.max_pool2d(e4, 2)


class DecoderEarly(nn.Module):
    """Early part of one decoder: latent (1/16) -> up-conv features at 1/2 resolution."""

    def __init__(self, enc=(64, 128, 256, 512), widths=(1024, 512, 256, 128)):
        super().__init__()
        _, _, e3, e4 = enc
        b, w4, w3, w2 = widths
        self.bottleneck = ConvAct(e4, b)
        self.up4, self.dec4 = UpConv(b, w4), DoubleConv(e4 + w4, w4, n=1)
        self.up3, self.dec3 = UpConv(w4, w3), DoubleConv(e3 + w3, w3)
        self.up2 = UpConv(w3, w2)

    def forward(self, skips, latent):
        _, _, e3, e4 = skips
        d = self.dec4(torch.cat([e4, self.up4(self.bottleneck(latent))], 1))
        d = self.dec3(torch.cat([e3, self.up3(d)], 1))
        return self.up2(d)


class DecoderLate(nn.Module):
    """Late part of one decoder: 1/2 resolution -> output image, with optional stitched inputs."""

    def __init__(self, in_half: int, widths=(128, 64), skip1: int = 64, in_full_extra: int = 0,
                 out_channels: int = 3, head: str = "paper"):
        super().__init__()
        w2, w1 = widths
        self.dec2 = DoubleConv(in_half, w2)
        self.up1 = UpConv(w2, w1)
        self.dec1 = DoubleConv(skip1 + w1 + in_full_extra, w1)
        self.head = ImageHead(w1, out_channels, kind=head)

    def half(self, x_half):
        """Blocks at 1/2 resolution; returns the up-conv output at full resolution."""
        return self.up1(self.dec2(x_half))

    def full(self, x_full, base=None):
        return self.head(self.dec1(x_full), base)


class MDP(nn.Module):
    """Multi-task DP network (Fig. 3): single image in, left view, right view, sharp image out.

    Args:
        stitching: ``"middle"`` (MDP), ``"none"`` or ``"late"`` (supplement Table S1).
        in_channels: input channels (3).
        widths: the encoder's four widths (64, 128, 256, 512).
        decoder_widths: each decoder's five widths (1024, 512, 256, 128, 64).
        width: multiplies every entry of ``widths`` and ``decoder_widths`` (rounded, at
            least 1); e.g. ``width=0.125`` for a small model that trains on a CPU. The
            default 1 is the paper's network.
        head: ``"paper"`` (the authors' 3x3 ReLU -> 1x1 sigmoid heads) or ``"residual"``: each
            decoder corrects the input at its target's brightness (the views start from half
            the input, as dplab's views sum to the combined image; the sharp image from the
            input), :class:`~dplab.models.blocks.ImageHead`. The shipped weights use it.

    Attributes:
        encoder: shared encoder.
        early: ``ModuleDict`` of the three decoders' early parts (``left``, ``right``, ``sharp``).
        late: ``ModuleDict`` of their late parts.

    Shape:
        ``(B, 3, H, W)`` -> :class:`MDPOutput` of three ``(B, 3, H, W)`` tensors in (0, 1).

    Raises:
        ValueError: unknown ``stitching``, wrong channel count, NaN/inf input.

    Example:
        >>> net = MDP(widths=(4, 4, 4, 4), decoder_widths=(8, 4, 4, 4, 4)).eval()
        >>> left, right, sharp = net(torch.rand(1, 3, 18, 16))
        >>> tuple(left.shape), tuple(sharp.shape)
        ((1, 3, 18, 16), (1, 3, 18, 16))
        >>> sum(p.numel() for p in MDP(width=0.0625).parameters())   # every layer / 16
        184177
    """

    multiple = 16

    def __init__(self, stitching: str = "middle", in_channels: int = 3,
                 widths: tuple[int, ...] = (64, 128, 256, 512),
                 decoder_widths: tuple[int, ...] = (1024, 512, 256, 128, 64),
                 width: float = 1.0, head: str = "paper"):
        super().__init__()
        self.stitching = require_choice("stitching", stitching, STITCHING)
        self.in_channels = require_positive("in_channels", in_channels, integer=True)
        widths, dw = _scaled_widths(widths, decoder_widths, width)
        if len(widths) != 4 or len(dw) != 5:
            raise ValueError(f"widths needs 4 and decoder_widths 5 entries, got {widths} and {dw}")
        e1, e2 = widths[0], widths[1]
        n = len(BRANCHES)
        in_half = e2 + (n * dw[3] if self.stitching == "middle" else dw[3])
        extra_full = (n - 1) * dw[4] if self.stitching == "late" else 0
        self.encoder = MDPEncoder(in_channels, widths)
        self.early = nn.ModuleDict({b: DecoderEarly(widths, dw[:4]) for b in BRANCHES})
        self.late = nn.ModuleDict({b: DecoderLate(in_half, dw[3:], e1, extra_full, head=head) for b in BRANCHES})
        self.head = head
        init_keras_(self)

    def set_trainable(self, branch: str, trainable: bool) -> "MDP":
        """Freeze or unfreeze one decoder (Sec. 3.4: step 1 trains with ``Dec_s`` frozen,
        step 2 unfreezes it); returns ``self``.

        Example:
            >>> net = MDP(widths=(4, 4, 4, 4), decoder_widths=(4, 4, 4, 4, 4)).set_trainable("sharp", False)
            >>> any(p.requires_grad for p in net.late["sharp"].parameters())
            False
        """
        require_choice("branch", branch, BRANCHES)
        for part in (self.early[branch], self.late[branch]):
            part.requires_grad_(bool(trainable))
        return self

    def forward(self, x: torch.Tensor) -> MDPOutput:
        x = require_input_dtype("x", require_image("x", x, channels=self.in_channels), self)
        x, (h, w) = pad_to_multiple(x, self.multiple)
        skips, latent = self.encoder(x)                     # Eq. 4: X = Enc(I_c)
        e1, e2 = skips[0], skips[1]
        ups = {b: self.early[b](skips, latent) for b in BRANCHES}
        base = dict.fromkeys(BRANCHES)
        if self.head == "residual":                         # views at half brightness
            base = {"left": x / 2, "right": x / 2, "sharp": x}
        if self.stitching == "middle":                      # middle-stage stitching
            shared = torch.cat([e2] + [ups[b] for b in BRANCHES], 1)
            fulls = {b: self.late[b].half(shared) for b in BRANCHES}
        else:
            fulls = {b: self.late[b].half(torch.cat([e2, ups[b]], 1)) for b in BRANCHES}
        if self.stitching == "late":                        # late-stage stitching
            shared = torch.cat([e1] + [fulls[b] for b in BRANCHES], 1)
            outs = {b: self.late[b].full(shared, base[b]) for b in BRANCHES}
        else:
            outs = {b: self.late[b].full(torch.cat([e1, fulls[b]], 1), base[b]) for b in BRANCHES}
        return MDPOutput(*(outs[b][..., :h, :w] for b in BRANCHES))


#: Decoder widths of the single-task baselines, chosen so their weight count is within
#: 0.01 % of MDP's 46,860,397 (see :class:`MDPSingleTask`).
SINGLE_TASK_DECODER_WIDTHS = (2108, 1054, 527, 263, 132)


class MDPSingleTask(nn.Module):
    """Single-task baseline of MDP's capacity (Table 3): one encoder, one decoder.

    The encoder is MDP's; the decoder has MDP's layout (no stitching) with every width
    multiplied by about 2.06 (``decoder_widths`` default (2108, 1054, 527, 263, 132)), which
    gives 46,858,309 weights for ``task="deblur"`` (-0.004 % vs MDP's 46,860,397) and
    46,858,321 for ``task="views"`` (one decoder whose head outputs 6 channels, left and right).

    Args:
        task: ``"deblur"`` (predicts the sharp image) or ``"views"`` (predicts both DP views).
        in_channels: input channels (3).
        widths: encoder widths.
        decoder_widths: five decoder widths (bottleneck, 1/8, 1/4, 1/2, 1).
        width: multiplies every width, as in :class:`MDP`; ``MDPSingleTask(width=w)`` keeps
            roughly the capacity of ``MDP(width=w)`` (both counts scale about as ``w**2``).
        head: ``"paper"`` (the authors' 3x3 ReLU -> 1x1 sigmoid heads) or ``"residual"``: each
            decoder corrects the input at its target's brightness (the views start from half
            the input, as dplab's views sum to the combined image; the sharp image from the
            input), :class:`~dplab.models.blocks.ImageHead`. The shipped weights use it.

    Shape:
        ``(B, 3, H, W)`` -> :class:`MDPOutput` with ``sharp`` (deblur) or ``left`` and ``right``
        (views) set and the other entries None.

    Example:
        >>> net = MDPSingleTask("views", widths=(4, 4, 4, 4), decoder_widths=(4, 4, 4, 4, 4)).eval()
        >>> out = net(torch.rand(1, 3, 16, 16)); out.sharp is None, tuple(out.left.shape)
        (True, (1, 3, 16, 16))
    """

    multiple = 16

    def __init__(self, task: str = "deblur", in_channels: int = 3,
                 widths: tuple[int, ...] = (64, 128, 256, 512),
                 decoder_widths: tuple[int, ...] = SINGLE_TASK_DECODER_WIDTHS,
                 width: float = 1.0, head: str = "paper"):
        super().__init__()
        self.task = require_choice("task", task, ("deblur", "views"))
        self.in_channels = require_positive("in_channels", in_channels, integer=True)
        widths, dw = _scaled_widths(widths, decoder_widths, width)
        if len(widths) != 4 or len(dw) != 5:
            raise ValueError(f"widths needs 4 and decoder_widths 5 entries, got {widths} and {dw}")
        self.encoder = MDPEncoder(in_channels, widths)
        self.early = DecoderEarly(widths, dw[:4])
        out = 3 if self.task == "deblur" else 6
        self.late = DecoderLate(widths[1] + dw[3], dw[3:], widths[0], 0, out_channels=out, head=head)
        self.head = head
        init_keras_(self)

    def forward(self, x: torch.Tensor) -> MDPOutput:
        x = require_input_dtype("x", require_image("x", x, channels=self.in_channels), self)
        x, (h, w) = pad_to_multiple(x, self.multiple)
        skips, latent = self.encoder(x)
        up = self.early(skips, latent)
        full = self.late.half(torch.cat([skips[1], up], 1))
        base = None
        if self.head == "residual":
            base = x if self.task == "deblur" else torch.cat([x / 2, x / 2], 1)
        y = self.late.full(torch.cat([skips[0], full], 1), base)[..., :h, :w]
        if self.task == "deblur":
            return MDPOutput(None, None, y)
        return MDPOutput(y[:, :3], y[:, 3:], None)
