"""LFDOF: the light-field generated defocus dataset of Ruan et al. (AIFNet, TCI 2021).

DRBNet (CVPR 2022, Sec. 4) trains its first stage on LFDOF. Layout
(``dplab/data/manifests/lfdof.yaml``)::

    {train_data,test_data}/input/<scene><suffix>.png    refocused light-field image with a
                                                        synthetic aperture (shallow DoF)
    {train_data,test_data}/ground_truth/<scene>.png     all-in-focus image of the scene

Several defocused inputs share one ground truth: as in DRBNet's code, the ground truth of
an input is found by cutting its name at the first ``"_ap"`` (the aperture tag) and adding
``.png``; an input name without ``"_ap"`` maps to the ground truth of the same name.
Images are 688x1008 (H x W), Lytro Illum, 8-bit RGB.
"""

from __future__ import annotations

from typing import Callable

from dplab.data.base import ImageSetDataset, list_images, manifest_hint, resolve_root
from dplab.data.manifest import DatasetNotFoundError

__all__ = ["LFDOFDataset", "lfdof_ground_truth_name"]

LFDOF_SPLITS = {"train": "train_data", "test": "test_data"}


def lfdof_ground_truth_name(input_name: str) -> str:
    """The ground-truth file name of an LFDOF input (DRBNet ``make_lf_aif_gt_dataset``).

    Example:
        >>> lfdof_ground_truth_name("IMG_2162_ap3_fd0.42.png")
        'IMG_2162.png'
        >>> lfdof_ground_truth_name("IMG_2162.png")
        'IMG_2162.png'
    """
    stem = input_name.rsplit(".", 1)[0]
    return stem.split("_ap")[0] + ".png"


class LFDOFDataset(ImageSetDataset):
    """LFDOF pairs (no DP views).

    Args:
        split: ``"train"`` (folder ``train_data``, 11,261 inputs) or ``"test"`` (``test_data``,
            725 inputs).
        data_dir: data directory holding ``lfdof/`` (default ``$DPLAB_DATA``).
        root: read this folder (holding ``train_data/`` ...) directly instead.
        target: load the all-in-focus ground truth as ``"sharp"``.
        bit_depth: required PNG bit depth, None (default) for 8 or 16.
        cache, transform: as :class:`~dplab.data.DPDDDataset`.

    Raises:
        ValueError: unknown split.
        DatasetNotFoundError: missing folders, or an input whose ground truth is absent (all
            listed; the message names ``lfdof.yaml``).
        DatasetCorruptError: unreadable or inconsistent images (when read).

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from dplab.data.pngio import write_png
        >>> root = Path(tempfile.mkdtemp())
        >>> for rel in ["test_data/input/s1_ap1.png", "test_data/input/s1_ap2.png",
        ...             "test_data/ground_truth/s1.png"]:
        ...     _ = write_png(root / rel, np.zeros((4, 6, 3), np.uint8))
        >>> [r["sharp"].name for r in LFDOFDataset("test", root=root).records]
        ['s1.png', 's1.png']
    """

    dataset = "lfdof"

    def __init__(
        self,
        split: str = "test",
        data_dir=None,
        *,
        root=None,
        target: bool = True,
        bit_depth: int | None = None,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
    ):
        super().__init__(bit_depth=bit_depth, cache=cache, transform=transform)
        if split not in LFDOF_SPLITS:
            raise ValueError(f"split must be one of {list(LFDOF_SPLITS)}, got {split!r}")
        self.split = split
        self.root = resolve_root(self.dataset, data_dir, root)
        folder = self.root / LFDOF_SPLITS[split]
        what = f"lfdof split {split!r} at {self.root}"
        inputs = list_images(folder / "input", self.dataset, what)
        gt_dir = folder / "ground_truth"
        if target and not gt_dir.is_dir():
            raise DatasetNotFoundError(f"{what}: folder {gt_dir} is missing {manifest_hint(self.dataset)}")
        for path in inputs:
            record = {"name": path.stem, "combined": path}
            if target:
                record["sharp"] = gt_dir / lfdof_ground_truth_name(path.name)
            self.records.append(record)
        self._check_present()
