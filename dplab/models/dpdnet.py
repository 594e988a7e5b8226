"""DPDNet: the dual-pixel defocus deblurring U-Net of Abuolaim & Brown (ECCV 2020).

Architecture (the authors' Keras code of the ECCV 2020 paper; RDPD Sec. 4 builds on it):
four levels of two 3x3 ReLU convolutions with widths 64, 128, 256, 512, each followed by 2x2
max-pooling; a 1024-wide bottleneck of two 3x3 convolutions; dropout 0.4 after level 4 and
after the bottleneck; an up path of 2x nearest up-sampling -> 2x2 convolution (512/256/128/64)
-> concatenation with the encoder feature -> two 3x3 convolutions; a head of a 3x3
convolution to 3 channels with ReLU and a 1x1 convolution to 3 channels with sigmoid.
He-normal weights, zero biases (Keras defaults).

Parameter counts (equal to the authors' code): 31,035,151 with the 6-channel DP input
(left and right views), 31,033,423 with a 3-channel single image ("DPDNet (single)" in MDP
Table 1). The published "31.03M" (DRBNet Table 2) is this number.

Input. ``in_channels=6`` takes ``cat([left, right], dim=1)`` in dplab's convention (each view
about half the brightness of the combined image); ``in_channels=3`` takes one image. The four
poolings need H and W to be multiples of 16: other sizes are padded at the bottom/right by
edge replication and the output is cropped back (the authors' test code pads with zeros).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_image, require_number, require_positive
from dplab.models.blocks import DoubleConv, ImageHead, UpConv, init_keras_, pad_to_multiple, require_input_dtype

__all__ = ["DPDNet", "DPDNET_PARAMS"]

#: Parameter counts of the authors' Keras DPDNet (``model.summary()`` of their model definition).
DPDNET_PARAMS = {6: 31_035_151, 3: 31_033_423}


class DPDNet(nn.Module):
    """DPDNet U-Net (Abuolaim & Brown, ECCV 2020; RDPD Sec. 4 "similar to the one in [1]").

    Args:
        in_channels: 6 for the dual-pixel input ``[left, right]`` (default), 3 for a single image.
        out_channels: output channels (3).
        widths: encoder widths per level (64, 128, 256, 512); the bottleneck has twice the last.
        dropout: dropout rate after level 4 and after the bottleneck (0.4).
        head: ``"paper"`` (the authors' 3x3 ReLU -> 1x1 sigmoid head) or ``"residual"``
            (the blurred image ``left + right``, or the single input, plus a learned
            correction; see :class:`~dplab.models.blocks.ImageHead`). The shipped weights
            use ``"residual"``.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)``, values in (0, 1) (sigmoid).
        Any ``H, W >= 1``; internally padded to multiples of 16.

    Raises:
        ValueError: wrong channel count or shape; NaN/inf input.
        TypeError: non-tensor or integer input.

    Example:
        >>> net = DPDNet(widths=(4, 8, 8, 8)).eval()
        >>> y = net(torch.rand(1, 6, 20, 33)); tuple(y.shape), bool(((y > 0) & (y < 1)).all())
        ((1, 3, 20, 33), True)
    """

    multiple = 16

    def __init__(self, in_channels: int = 6, out_channels: int = 3,
                 widths: tuple[int, ...] = (64, 128, 256, 512), dropout: float = 0.4,
                 head: str = "paper"):
        super().__init__()
        self.in_channels = require_positive("in_channels", in_channels, integer=True)
        self.out_channels = require_positive("out_channels", out_channels, integer=True)
        widths = tuple(require_positive("widths", w, integer=True) for w in widths)
        if len(widths) != 4:
            raise ValueError(f"widths must list 4 encoder widths, got {widths}")
        p = float(require_number("dropout", dropout))
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        w1, w2, w3, w4 = widths
        self.enc1 = DoubleConv(in_channels, w1)
        self.enc2 = DoubleConv(w1, w2)
        self.enc3 = DoubleConv(w2, w3)
        self.enc4 = DoubleConv(w3, w4)
        self.bottleneck = DoubleConv(w4, 2 * w4)
        self.drop = nn.Dropout(p)
        self.up4, self.dec4 = UpConv(2 * w4, w4), DoubleConv(2 * w4, w4)
        self.up3, self.dec3 = UpConv(w4, w3), DoubleConv(2 * w3, w3)
        self.up2, self.dec2 = UpConv(w3, w2), DoubleConv(2 * w2, w2)
        self.up1, self.dec1 = UpConv(w2, w1), DoubleConv(2 * w1, w1)
        self.head = ImageHead(w1, out_channels, kind=head)
        if head == "residual" and in_channels not in (3, 6):
            raise ValueError(f"the residual head needs a 3-channel image or a 6-channel [left, right] "
                             f"input to start from, got in_channels={in_channels}")
        init_keras_(self)

    def base_image(self, x: torch.Tensor) -> torch.Tensor:
        """The blurred image the residual head corrects: ``left + right`` or the input."""
        return x[:, :3] + x[:, 3:6] if self.in_channels == 6 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = require_input_dtype("x", require_image("x", x, channels=self.in_channels), self)
        x, (h, w) = pad_to_multiple(x, self.multiple)
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.drop(self.enc4(F.max_pool2d(e3, 2)))
        b = self.drop(self.bottleneck(F.max_pool2d(e4, 2)))
        d = self.dec4(torch.cat([e4, self.up4(b)], 1))
        d = self.dec3(torch.cat([e3, self.up3(d)], 1))
        d = self.dec2(torch.cat([e2, self.up2(d)], 1))
        d = self.dec1(torch.cat([e1, self.up1(d)], 1))
        base = self.base_image(x) if self.head.kind == "residual" else None
        return self.head(d, base)[..., :h, :w]
