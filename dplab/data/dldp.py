"""DLDP: the dual-pixel view-synthesis dataset of MDP (Abuolaim et al., WACV 2022, Sec. 3.3).

2,353 Canon EOS 5D scenes, each a combined image and its two DP views (7,059 images) at
apertures f/4 to f/22, without all-in-focus ground truth; MDP's first training step learns
DP-view synthesis from it. Layout, as MDP's code reads it (``dplab/data/manifests/dldp.yaml``)::

    {split}/c/<name>.png   combined image
    {split}/l/<name>.png   left DP view
    {split}/r/<name>.png   right DP view

with the same file name in the three folders.
"""

from __future__ import annotations

from typing import Callable

from dplab.data.base import ImageSetDataset, list_images, reject_orphans, resolve_root

__all__ = ["DLDPDataset"]

DLDP_SPLITS = ("train", "val", "test")


class DLDPDataset(ImageSetDataset):
    """DLDP combined images with their DP views (no ground truth).

    Args:
        split: ``"train"`` (2,090 scenes in the paper), ``"test"`` (263), or ``"val"``.
        data_dir: data directory holding ``dldp/`` (default ``$DPLAB_DATA``).
        root: read this folder directly instead.
        bit_depth: required PNG bit depth, None (default) for 8 or 16.
        view_scale: factor on the stored full-brightness views (0.5: ``combined = left + right``).
        cache, transform: as :class:`~dplab.data.DPDDDataset`.

    Raises:
        ValueError: unknown split.
        DatasetNotFoundError: missing folders or views (the message names ``dldp.yaml``).
        DatasetCorruptError: a view without a combined image, or unreadable images.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from dplab.data.pngio import write_png
        >>> root = Path(tempfile.mkdtemp())
        >>> for sub in "clr":
        ...     _ = write_png(root / "train" / sub / "x.png", np.zeros((4, 4, 3), np.uint8))
        >>> sorted(k for k in DLDPDataset("train", root=root)[0] if k != "name")
        ['combined', 'left', 'right']
    """

    dataset = "dldp"

    def __init__(
        self,
        split: str = "train",
        data_dir=None,
        *,
        root=None,
        bit_depth: int | None = None,
        view_scale: float = 0.5,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
    ):
        super().__init__(bit_depth=bit_depth, view_scale=view_scale, cache=cache, transform=transform)
        if split not in DLDP_SPLITS:
            raise ValueError(f"split must be one of {list(DLDP_SPLITS)}, got {split!r}")
        self.split = split
        self.root = resolve_root(self.dataset, data_dir, root)
        what = f"dldp split {split!r} at {self.root}"
        combined = list_images(self.root / split / "c", self.dataset, what)
        names = {p.name for p in combined}
        for sub in "lr":
            list_images(self.root / split / sub, self.dataset, what)
            reject_orphans(self.root / split / sub, names, self.dataset, what)
        for path in combined:
            self.records.append(
                {
                    "name": path.stem,
                    "combined": path,
                    "left": self.root / split / "l" / path.name,
                    "right": self.root / split / "r" / path.name,
                }
            )
        self._check_present()
