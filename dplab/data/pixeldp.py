"""PixelDP: the Google Pixel 4 dual-pixel test images released with DPDD (ECCV 2020).

Layout (``dplab/data/manifests/pixeldp.yaml``), the DPDD layout with only a test split::

    test_c/source/<id>.png     combined image      16-bit RGB
    test_l/source/<id>_L.png   left DP view
    test_r/source/<id>_R.png   right DP view

The Pixel 4 has a fixed aperture, so there is no all-in-focus ground truth: DRBNet (CVPR 2022,
Sec. 5.1) and IFAN use PixelDP for qualitative results only. Its images are stored in portrait
orientation; DPDNet's test code rotates portrait images 90 degrees counter-clockwise before the
network (and back after), IFAN rotates every PixelDP image the same way. ``landscape=True``
does that rotation here.
"""

from __future__ import annotations

from typing import Callable

import torch

from dplab.data.dpdd import DPDDDataset

__all__ = ["PixelDPDataset"]


class PixelDPDataset(DPDDDataset):
    """The Pixel 4 DP test images of DPDD (no ground truth).

    Args:
        data_dir: data directory holding ``pixeldp/`` (default ``$DPLAB_DATA``).
        root: read this folder directly instead.
        views: load the left/right views.
        target: load ``test_c/target`` as ``"sharp"`` (some copies of the release carry such a
            folder; it cannot be all-in-focus ground truth, see the module docstring).
        landscape: rotate portrait images 90 degrees counter-clockwise, as DPDNet's and IFAN's
            test code do, so that the DP views differ along the width.
        bit_depth, view_scale, cache, transform: as :class:`~dplab.data.DPDDDataset`.

    Raises:
        DatasetNotFoundError: missing data or files (the message names ``pixeldp.yaml``).
        DatasetCorruptError: unreadable or inconsistent files.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from dplab.data.pngio import write_png
        >>> root = Path(tempfile.mkdtemp())
        >>> for rel in ["test_c/source/p.png", "test_l/source/p_L.png", "test_r/source/p_R.png"]:
        ...     _ = write_png(root / rel, np.zeros((12, 8, 3), np.uint16))
        >>> tuple(PixelDPDataset(root=root, landscape=True)[0]["combined"].shape)
        (3, 8, 12)
    """

    dataset = "pixeldp"
    splits = ("test",)

    def __init__(
        self,
        data_dir=None,
        *,
        root=None,
        views: bool = True,
        target: bool = False,
        landscape: bool = False,
        bit_depth: int | None = 16,
        view_scale: float = 0.5,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
    ):
        super().__init__(
            "test",
            data_dir,
            root=root,
            views=views,
            target=target,
            defocus=False,
            bit_depth=bit_depth,
            view_scale=view_scale,
            cache=cache,
            transform=transform,
        )
        self.landscape = bool(landscape)

    def load(self, index: int) -> dict:
        sample = super().load(index)
        if self.landscape and sample["combined"].shape[-2] > sample["combined"].shape[-1]:
            sample = {k: torch.rot90(v, 1, dims=(-2, -1)) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
        return sample
