"""DRBNet: dynamic residual blocks, coarse to fine (Ruan et al., CVPR 2022, Sec. 4, Fig. 3).

Encoder (widths 32/64/128/256): three 3x3 LeakyReLU(0.1) convolutions per level, the first
of levels 2-4 with stride 2; bottleneck conv + 2 residual blocks + conv at 1/8. Decoder level:
4x4 transposed convolution (stride 2) + LeakyReLU, add the encoder feature, 2 residual blocks.

Dynamic residual block (DRB, Eqs. 3-5) at scales 1/8, 1/4, 1/2 and 1: the current image
estimate ``x_n`` passes three convolutions, is concatenated with the decoder feature ``d_n``
and feeds two branches, a kernel branch (3x3, 3x3, 1x1) producing ``k*k`` per-pixel weights
``K`` (shared by the RGB channels, not normalised) and a residual branch (3x3, 3x3, 1x1 to 3
channels, LeakyReLU) producing ``dr_n``. The block output is

    y_n = x_n + x_n (x) K + dr_n                                                   (5)

where ``(x)`` is the per-pixel filtering of Eq. 4 (:func:`apply_pixel_kernels`: replicate
padding, unfold, weighted sum). The first DRB starts from the input area-downsampled by 8;
each next one from the previous output up-sampled x2 (the code's ``interpolate(...,
mode='area')``, which for up-sampling is nearest-neighbour replication). All four outputs
are returned for the multi-scale losses (Sec. 4, "the losses are applied to all scales").

Value range. The authors' code works in [-1, 1] and clips only the final output. dplab's
models take and return [0, 1]: the input is mapped by ``2 x - 1`` inside, the estimates by
``(y + 1) / 2`` on the way out; the final image is clamped to [0, 1] (the code's clip), the
multi-scale list returned by ``return_scales=True`` is left unclamped so that training
losses keep their gradients.

Coarse-to-fine start (``pyramid=``). In the authors' code (``"code"``, the default) the first
DRB starts from the input area-downsampled by 8 and every later DRB from the previous output
up-sampled x2, so the full-resolution DRB never sees the input's own fine detail: its
residual branch must re-create every edge from the decoder features. Untrained, the network
returns an 8x-downsampled, blocky version of its input (far below the blurred input's PSNR)
and short CPU runs stay there. ``"residual"`` makes each scale a correction of the input at
that scale, as in a Laplacian pyramid: the DRB at scale ``s`` starts from ``down_s(input) +
up_2(y_{2s} - down_{2s}(input))``, and the last layer of each DRB's kernel and residual
branch starts at zero, so that the untrained network returns its input exactly and training
starts from the blurred input's PSNR. The layers and weights are the same; the shipped
weights use ``"residual"``.

Dual-pixel variant (``in_channels=6``, the code's ``DeblurNet_dual``): the encoder sees both
views, the image estimate starts from the combined image. dplab's views each carry about half
the brightness (``combined = left + right``), whereas the code reads full-brightness views;
the views are multiplied by ``view_gain = 2`` before the [-1, 1] mapping so that the encoder
sees the code's value range, and the combined image is ``left + right``. dplab's channel order
is ``[left, right]`` (the code concatenates ``[R, L]``; it matters only for loading its weights).

Parameter counts (authors' code): 11,689,616 single-image, 11,690,480 dual-pixel; dplab's
default configuration has exactly these. Table 6 ablations and Table 7 kernel sizes are
constructor options (see :data:`DRBNET_VARIANTS`).

Sizes. Three stride-2 levels need H and W to be multiples of 8 (the code crops to 16):
other sizes are padded at the bottom/right by edge replication and the output is cropped;
``return_scales=True`` requires multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_choice, require_image, require_number, require_positive, require_tensor
from dplab.models.blocks import ConvAct, ResBlock, pad_to_multiple, require_input_dtype

__all__ = ["DRBNet", "DynamicResidualBlock", "apply_pixel_kernels", "DRBNET_PARAMS", "DRBNET_VARIANTS",
           "KERNEL_SIZES", "PYRAMIDS"]

#: Coarse-to-fine starts of :class:`DRBNet`: the authors' code, or a residual pyramid.
PYRAMIDS = ("code", "residual")

#: Parameter counts of the authors' DRBNet (their PyTorch model definition, counted): single image and dual pixel.
DRBNET_PARAMS = {3: 11_689_616, 6: 11_690_480}

#: Kernel sizes of the DRB ablation (Table 7); 7 is the default.
KERNEL_SIZES = (5, 7, 9, 11)

#: Table 6 rows as constructor keyword arguments. Each row removes one DRB term
#: (``x_n``, ``x_n (x) K``, ``dr_n``) or the multi-scale cascade; "baseline" keeps only the
#: image branch ``dr_n`` (the network outputs the image directly, dplab's reading of
#: "directly outputs the restored result without DRB").
DRBNET_VARIANTS = {
    "full": dict(),
    "no_residual": dict(use_residual=False),          # (x, dx, -)
    "no_input": dict(use_input=False),                # (-, dx, dr)
    "no_dynamic": dict(use_dynamic=False),            # (x, -, dr)
    "single_drb": dict(multi_scale=False),            # only the full-resolution DRB
    "baseline": dict(use_input=False, use_dynamic=False),
}


def apply_pixel_kernels(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-pixel filtering of DRBNet (Eq. 4): ``out[b, c, y, x] = sum_{i, j}
    K[b, i * k + j, y, x] * pad(image)[b, c, y + i, x + j]``.

    The image is padded by edge replication with ``(k - 1) / 2`` pixels (the code's FAC
    layer); index ``i * k + j`` is row ``i``, column ``j`` of the ``k x k`` window
    (correlation order). One kernel per pixel is shared by all channels.

    Args:
        image: ``(B, C, H, W)``.
        kernels: ``(B, k*k, H, W)`` with odd ``k``.

    Returns:
        ``(B, C, H, W)``.

    Raises:
        ValueError: shapes that do not match, or a kernel count that is not an odd square.

    Example:
        >>> img = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> k = torch.zeros(1, 9, 4, 4); k[:, 5] = 1        # row 1, column 2: right neighbour
        >>> apply_pixel_kernels(img, k)[0, 0, 0].tolist()
        [1.0, 2.0, 3.0, 3.0]
    """
    image = require_tensor("image", image)
    kernels = require_tensor("kernels", kernels)
    if image.ndim != 4 or kernels.ndim != 4:
        raise ValueError(f"image and kernels must be 4-D, got {tuple(image.shape)} and {tuple(kernels.shape)}")
    b, c, h, w = image.shape
    k = int(round(kernels.shape[1] ** 0.5))
    if k * k != kernels.shape[1] or k % 2 == 0:
        raise ValueError(f"kernels must have k*k channels with odd k, got {kernels.shape[1]}")
    if h == 0 or w == 0:
        raise ValueError(f"image and kernels are empty: shapes {tuple(image.shape)} and {tuple(kernels.shape)}")
    if kernels.shape[0] != b or tuple(kernels.shape[-2:]) != (h, w):
        raise ValueError(f"kernels {tuple(kernels.shape)} do not match image {tuple(image.shape)}")
    p = (k - 1) // 2
    cols = F.unfold(F.pad(image, (p, p, p, p), mode="replicate"), k)     # (B, C*k*k, H*W)
    cols = cols.view(b, c, k * k, h, w)
    return (cols * kernels.unsqueeze(1)).sum(2)


class DynamicResidualBlock(nn.Module):
    """One DRB (Fig. 3, green inset; Eqs. 3-5), with Table 6's switches.

    Args:
        feat_channels: channels of the decoder feature ``d_n``.
        img_feat: widths of the three convolutions on the image estimate.
        kernel_mid: widths of the kernel branch's two 3x3 convolutions.
        res_mid: widths of the residual branch's two 3x3 convolutions.
        kernel_size: per-pixel kernel size ``k`` (odd).
        use_input, use_dynamic, use_residual: keep the terms ``x_n``, ``x_n (x) K``, ``dr_n``.

    Shape:
        ``forward(x, d)``: ``x`` ``(B, 3, H, W)``, ``d`` ``(B, feat_channels, H, W)`` -> ``(B, 3, H, W)``.

    Example:
        >>> drb = DynamicResidualBlock(4, (4, 4, 4), (4, 4), (4, 4), kernel_size=3)
        >>> for p in drb.parameters(): _ = nn.init.zeros_(p)
        >>> x = torch.rand(1, 3, 6, 6); torch.equal(drb(x, torch.rand(1, 4, 6, 6)), x)
        True
    """

    def __init__(self, feat_channels: int, img_feat: tuple[int, int, int], kernel_mid: tuple[int, int],
                 res_mid: tuple[int, int], kernel_size: int = 7, *, use_input: bool = True,
                 use_dynamic: bool = True, use_residual: bool = True):
        super().__init__()
        kernel_size = require_positive("kernel_size", kernel_size, integer=True)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if not (use_dynamic or use_residual):
            raise ValueError("a DRB needs use_dynamic or use_residual; without both it adds nothing")
        self.kernel_size = kernel_size
        self.use_input, self.use_dynamic, self.use_residual = bool(use_input), bool(use_dynamic), bool(use_residual)
        a, b, c = img_feat
        self.img_feat = nn.Sequential(ConvAct(3, a, act="lrelu"), ConvAct(a, b, act="lrelu"),
                                      ConvAct(b, c, act="lrelu"))
        cat = feat_channels + c
        self.kernel_branch = None
        if self.use_dynamic:
            k1, k2 = kernel_mid
            self.kernel_branch = nn.Sequential(ConvAct(cat, k1, act="lrelu"), ConvAct(k1, k2, act="lrelu"),
                                               ConvAct(k2, kernel_size ** 2, 1, act=None))
        self.res_branch = None
        if self.use_residual:
            r1, r2 = res_mid
            self.res_branch = nn.Sequential(ConvAct(cat, r1, act="lrelu"), ConvAct(r1, r2, act="lrelu"),
                                            ConvAct(r2, 3, 1, act="lrelu"))

    def forward(self, x: torch.Tensor, d: torch.Tensor, return_terms: bool = False):
        """``y = x + x (x) K + dr`` (Eq. 5); with ``return_terms`` also a dict of the terms
        ``"input"`` (x, zeros when ``use_input=False``), ``"dynamic"`` (x (x) K),
        ``"residual"`` (dr), ``"kernels"`` (K, ``(B, k*k, H, W)``) and ``"output"``; a term a
        switch removes is None."""
        f = torch.cat([d, self.img_feat(x)], 1)
        out = x if self.use_input else torch.zeros_like(x)
        terms = {"input": out, "dynamic": None, "residual": None, "kernels": None}
        if self.kernel_branch is not None:
            terms["kernels"] = self.kernel_branch(f)
            terms["dynamic"] = apply_pixel_kernels(x, terms["kernels"])   # Eq. 4
            out = out + terms["dynamic"]
        if self.res_branch is not None:
            terms["residual"] = self.res_branch(f)
            out = out + terms["residual"]
        if return_terms:
            terms["output"] = out
            return out, terms
        return out                                                      # Eq. 5


class DRBNet(nn.Module):
    """DRBNet (Fig. 3), single-image (``in_channels=3``) or dual-pixel (``in_channels=6``).

    Args:
        in_channels: 3 (single image) or 6 (``[left, right]``, dplab brightness convention).
        kernel_size: dynamic kernel size, one of 5, 7, 9, 11 (Table 7; default 7).
        use_input, use_dynamic, use_residual: Table 6 switches for the DRB terms.
        multi_scale: four DRBs at 1/8, 1/4, 1/2, 1 (True) or only the full-resolution one.
        width: base width ``ch1`` (32); levels use ``ch1, 2 ch1, 4 ch1, 8 ch1``.
        view_gain: factor applied to each DP view before the [-1, 1] mapping (dual only).
        pyramid: ``"code"`` (each DRB starts from the previous output up-sampled; the authors'
            code) or ``"residual"`` (each scale corrects the input at that scale, branch heads
            start at zero; see the module docstring).

    Forward:
        ``forward(x, return_scales=False)`` with ``x`` ``(B, in_channels, H, W)`` in [0, 1].
        Returns the deblurred image ``(B, 3, H, W)`` clamped to [0, 1]; with
        ``return_scales=True`` the list of DRB outputs from coarse (1/8) to fine (1), in [0, 1]
        units and unclamped (one element if ``multi_scale=False``). With ``return_terms=True``
        (Fig. 4) a list, coarse to fine, of dicts per DRB: ``"scale"`` (8, 4, 2, 1),
        ``"estimate_in"`` (x_n), ``"input"``, ``"dynamic"`` (x_n (x) K), ``"residual"``
        (dr_n), ``"output"`` (y_n) in [0, 1] units, so that ``output = input + dynamic +
        residual`` up to the missing terms' None and the ``-1/2`` offset of [-1, 1] -> [0, 1]
        when ``use_input=False``; and ``"kernels"`` (K, unitless).

    Raises:
        ValueError: wrong channel count, bad option, or ``return_scales`` with H or W not a
            multiple of 8.

    Example:
        >>> net = DRBNet(width=4).eval()
        >>> y = net(torch.rand(1, 3, 20, 27)); tuple(y.shape)
        (1, 3, 20, 27)
        >>> [tuple(s.shape[-2:]) for s in net(torch.rand(1, 3, 16, 24), return_scales=True)]
        [(2, 3), (4, 6), (8, 12), (16, 24)]
    """

    multiple = 8

    def __init__(self, in_channels: int = 3, kernel_size: int = 7, *, use_input: bool = True,
                 use_dynamic: bool = True, use_residual: bool = True, multi_scale: bool = True,
                 width: int = 32, view_gain: float = 2.0, pyramid: str = "code"):
        super().__init__()
        self.pyramid = require_choice("pyramid", pyramid, PYRAMIDS)
        self.in_channels = require_choice("in_channels", in_channels, (3, 6))
        kernel_size = require_positive("kernel_size", kernel_size, integer=True)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (Table 7 uses 5, 7, 9, 11), got {kernel_size}")
        self.kernel_size = kernel_size
        self.multi_scale = bool(multi_scale)
        self.view_gain = float(require_number("view_gain", view_gain))
        c1 = require_positive("width", width, integer=True)
        c2, c3, c4 = 2 * c1, 4 * c1, 8 * c1

        def level(cin, cout, stride):
            return nn.Sequential(ConvAct(cin, cout, stride=stride, act="lrelu"),
                                 ConvAct(cout, cout, act="lrelu"), ConvAct(cout, cout, act="lrelu"))

        self.enc1 = level(in_channels, c1, 1)
        self.enc2 = level(c1, c2, 2)
        self.enc3 = level(c2, c3, 2)
        self.enc4 = level(c3, c4, 2)
        self.bottleneck = nn.Sequential(ConvAct(c4, c4, act="lrelu"), ResBlock(c4), ResBlock(c4),
                                        ConvAct(c4, c4, act="lrelu"))

        def up(cin, cout):
            return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True))

        self.up3, self.dec3 = up(c4, c3), nn.Sequential(ResBlock(c3), ResBlock(c3))
        self.up2, self.dec2 = up(c3, c2), nn.Sequential(ResBlock(c2), ResBlock(c2))
        self.up1, self.dec1 = up(c2, c1), nn.Sequential(ResBlock(c1), ResBlock(c1))
        opts = dict(kernel_size=kernel_size, use_input=use_input, use_dynamic=use_dynamic,
                    use_residual=use_residual)
        # Widths of the four DRBs as in the authors' code (scale 1/8, 1/4, 1/2, 1).
        specs = {
            8: (c4, (c2, c3, c4), (c4, c3), (c4, c2)),
            4: (c3, (c2, c3, c3), (c3, c3), (c3, c2)),
            2: (c2, (c2, c2, c2), (c2, c2), (c2, c2)),
            1: (c1, (c2, c2, c1), (c2, c2), (c2, c2)),
        }
        scales = (8, 4, 2, 1) if self.multi_scale else (1,)
        self.scales = scales
        self.drbs = nn.ModuleDict({f"d{s}": DynamicResidualBlock(*specs[s], **opts) for s in scales})
        if self.pyramid == "residual":
            with torch.no_grad():
                for drb in self.drbs.values():
                    for branch in (drb.kernel_branch, drb.res_branch):
                        if branch is not None and not branch[-1].conv.weight.is_meta:
                            branch[-1].conv.weight.zero_()
                            branch[-1].conv.bias.zero_()

    def forward(self, x: torch.Tensor, return_scales: bool = False, return_terms: bool = False):
        x = require_input_dtype("x", require_image("x", x, channels=self.in_channels), self)
        h, w = x.shape[-2:]
        if (return_scales or return_terms) and (h % self.multiple or w % self.multiple):
            raise ValueError(f"return_scales/return_terms need H and W that are multiples of {self.multiple}, "
                             f"got {h}x{w}; crop the input (the authors crop to multiples of 16)")
        x, _ = pad_to_multiple(x, self.multiple)
        if self.in_channels == 6:
            views = self.view_gain * x
            img = 2 * (x[:, :3] + x[:, 3:]) - 1           # combined = left + right, to [-1, 1]
            feats_in = 2 * views - 1
        else:
            img = feats_in = 2 * x - 1
        f1 = self.enc1(feats_in)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        f = self.bottleneck(self.enc4(f3))
        decoded = {8: f}
        f = self.dec3(self.up3(f) + f3); decoded[4] = f
        f = self.dec2(self.up2(f) + f2); decoded[2] = f
        f = self.dec1(self.up1(f) + f1); decoded[1] = f
        def at_scale(s):
            return F.interpolate(img, scale_factor=1 / s, mode="area") if s > 1 else img

        est = at_scale(self.scales[0])
        outs, terms = [], []
        for i, s in enumerate(self.scales):
            if i > 0 and self.pyramid == "residual":      # the input at this scale + the coarser correction
                correction = est - at_scale(2 * s)
                est = at_scale(s) + F.interpolate(correction, scale_factor=2, mode="bilinear", align_corners=False)
            elif i > 0:
                est = F.interpolate(est, scale_factor=2, mode="nearest")
            if return_terms:
                x_n = est
                est, t = self.drbs[f"d{s}"](est, decoded[s], return_terms=True)
                # to [0, 1] units: images map by (v + 1) / 2, additive terms by v / 2
                terms.append({"scale": s, "estimate_in": (x_n + 1) / 2, "input": (t["input"] + 1) / 2
                              if self.drbs[f"d{s}"].use_input else t["input"],
                              "dynamic": None if t["dynamic"] is None else t["dynamic"] / 2,
                              "residual": None if t["residual"] is None else t["residual"] / 2,
                              "kernels": t["kernels"], "output": (est + 1) / 2})
            else:
                est = self.drbs[f"d{s}"](est, decoded[s])
            outs.append(est)
        if return_terms:
            return terms
        if return_scales:
            return [(o + 1) / 2 for o in outs]
        return ((outs[-1][..., :h, :w] + 1) / 2).clamp(0.0, 1.0)
