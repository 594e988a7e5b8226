"""RealDOF: the real defocus test set of Lee et al. (IFAN, CVPR 2021), as DRBNet evaluates it.

Layout (``dplab/data/manifests/realdof.yaml``)::

    source/<name>.png   defocused image (wide aperture)         RGB PNG
    target/<name>.png   all-in-focus image (narrow aperture), captured at the same time
                        through a beam splitter by a second camera and aligned

50 pairs of about 1536x2320 pixels (H x W; sizes vary slightly), Sony a7R IV. A defocused image
and its ground truth share their file name. RealDOF has no DP views: the sample's
``"combined"`` is the conventional defocused image.
"""

from __future__ import annotations

from typing import Callable

from dplab.data.base import DatasetCorruptError, ImageSetDataset, list_images, manifest_hint, resolve_root

__all__ = ["RealDOFDataset"]


class RealDOFDataset(ImageSetDataset):
    """RealDOF test pairs (no DP views).

    Args:
        data_dir: data directory holding ``realdof/`` (default ``$DPLAB_DATA``).
        root: read this folder directly instead.
        target: load the ground truth as ``"sharp"``.
        bit_depth: required PNG bit depth, None (default) for 8 or 16.
        cache, transform: as :class:`~dplab.data.DPDDDataset`.

    Returns:
        Items with ``"name"``, ``"combined"`` and ``"sharp"``, each ``(3, H, W)`` in [0, 1].

    Raises:
        DatasetNotFoundError: missing folders or files (the message names ``realdof.yaml``).
        DatasetCorruptError: a file without a partner, an unreadable file, or a size mismatch.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from dplab.data.pngio import write_png
        >>> root = Path(tempfile.mkdtemp())
        >>> for sub in ["source", "target"]:
        ...     _ = write_png(root / sub / "001.png", np.zeros((6, 9, 3), np.uint8))
        >>> RealDOFDataset(root=root).names
        ['001']
    """

    dataset = "realdof"

    def __init__(
        self,
        data_dir=None,
        *,
        root=None,
        target: bool = True,
        bit_depth: int | None = None,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
    ):
        super().__init__(bit_depth=bit_depth, cache=cache, transform=transform)
        self.root = resolve_root(self.dataset, data_dir, root)
        what = f"realdof at {self.root}"
        sources = list_images(self.root / "source", self.dataset, what)
        targets = {p.name: p for p in list_images(self.root / "target", self.dataset, what)} if target else {}
        if target:
            names = {p.name for p in sources}
            unpaired = sorted(set(targets) ^ names)
            if unpaired:
                raise DatasetCorruptError(
                    f"{what}: source/ and target/ must hold the same file names; unpaired: "
                    f"{', '.join(unpaired[:10])} {manifest_hint(self.dataset)}"
                )
        for src in sources:
            record = {"name": src.stem, "combined": src}
            if target:
                record["sharp"] = targets[src.name]
            self.records.append(record)
        self._check_present()
