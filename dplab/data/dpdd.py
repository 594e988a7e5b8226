"""The DPDD layout (Abuolaim and Brown, ECCV 2020), real or synthetic, and its video variant.

DPDD (``dplab/data/manifests/dpdd.yaml``) stores, per split ``{train,val,test}``::

    {split}_c/source/<id>.png     blurred combined image (wide aperture)  16-bit RGB
    {split}_c/target/<id>.png     all-in-focus ground truth (narrow aperture)
    {split}_l/source/<id>_L.png   left DP view
    {split}_r/source/<id>_R.png   right DP view

``python -m dplab synth`` writes the same layout (optionally adding ``{split}_c/defocus/``,
one defocus map per image: ``<id>.png``, ``<id>.npy`` or ``<id>.tif``), so
:class:`DPDDDataset` reads both; point it at synthetic data with ``root=``.

RDPD's data generator (Abuolaim et al., ICCV 2021, Sec. 3; ``dplab/data/manifests/synthia_sf.yaml``)
writes image *sequences* in the same folders, one sub-folder per sequence, with the same
frame name in every folder::

    {split}_c/source/<seq>/<frame>.png   {split}_c/target/<seq>/<frame>.png
    {split}_l/source/<seq>/<frame>.png   {split}_r/source/<seq>/<frame>.png

``python -m dplab synth`` writes its sequences the same way under ``<out>/sequences/`` but
with DPDD's view names (``<frame>_L.png``). :class:`DPSequenceDataset` reads both (one item
per frame, grouped by sequence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dplab.data.base import DatasetCorruptError, ImageSetDataset, list_images, manifest_hint, reject_orphans, resolve_root
from dplab.data.manifest import DatasetNotFoundError, load_manifest

__all__ = ["DPDDDataset", "DPSequenceDataset", "DPDD_SPLITS"]

DPDD_SPLITS = ("train", "val", "test")
_MAP_SUFFIXES = (".png", ".npy", ".tif", ".tiff")


def _check_split(split: str, splits=DPDD_SPLITS) -> str:
    if split not in splits:
        raise ValueError(f"split must be one of {list(splits)}, got {split!r}")
    return split


class DPDDDataset(ImageSetDataset):
    """DPDD-layout dual-pixel data: the Canon release or ``python -m dplab synth`` output.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (350 / 74 / 76 images in the release).
        data_dir: data directory holding ``dpdd/`` (default ``$DPLAB_DATA``).
        root: read this folder instead (it holds ``{split}_c/`` etc. directly), e.g. synthetic
            data; the manifest's completeness check is then skipped.
        views: load the left/right views (``{split}_l``, ``{split}_r``).
        target: load the all-in-focus ``"sharp"`` image (``{split}_c/target``).
        defocus: ``"auto"`` loads ``{split}_c/defocus/`` maps when that folder exists, True
            requires them, False ignores them.
        bit_depth: required PNG bit depth (16 for the release), None to accept 8 or 16.
        view_scale: factor on the stored views; 0.5 gives dplab's ``combined = left + right``
            for the release's full-brightness views (see :mod:`dplab.data.base`).
        check_count: require the manifest's image count for the split (release only).
        cache: keep decoded samples in memory.
        transform: applied to every sample dict (e.g. patch sampling).
        defocus_decode: converts stored defocus codes to values (default: codes / max).

    Returns:
        Items are dicts with ``"name"``, ``"combined"``, and where loaded ``"left"``,
        ``"right"``, ``"sharp"`` (each ``(3, H, W)`` float32 in [0, 1]) and ``"defocus"``
        (``(1, H, W)``).

    Raises:
        ValueError: unknown split.
        DatasetNotFoundError: the data, a split folder, or any image of an item is missing
            (all missing files are listed; the message names ``dpdd.yaml``).
        DatasetCorruptError: a folder holds unmatched files, or (when read) an image is
            corrupt, has the wrong bit depth, channel count, or size.

    Example:
        >>> import tempfile, numpy as np
        >>> from dplab.data.pngio import write_png
        >>> root = Path(tempfile.mkdtemp())
        >>> img = np.full((8, 12, 3), 30000, np.uint16)
        >>> for rel in ["test_c/source/a.png", "test_c/target/a.png", "test_l/source/a_L.png",
        ...             "test_r/source/a_R.png"]:
        ...     _ = write_png(root / rel, img)
        >>> ds = DPDDDataset("test", root=root)
        >>> sample = ds[0]
        >>> sample["name"], tuple(sample["left"].shape)
        ('a', (3, 8, 12))
        >>> round(float(sample["left"].mean() / sample["combined"].mean()), 3)
        0.5
    """

    dataset = "dpdd"
    splits = DPDD_SPLITS

    def __init__(
        self,
        split: str = "test",
        data_dir=None,
        *,
        root=None,
        views: bool = True,
        target: bool = True,
        defocus: bool | str = "auto",
        bit_depth: int | None = 16,
        view_scale: float = 0.5,
        check_count: bool = False,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
        defocus_decode: Callable | None = None,
    ):
        super().__init__(
            bit_depth=bit_depth, view_scale=view_scale, cache=cache, transform=transform, defocus_decode=defocus_decode
        )
        self.split = _check_split(split, self.splits)
        if defocus not in (True, False, "auto"):
            raise ValueError(f"defocus must be True, False or 'auto', got {defocus!r}")
        self.root = resolve_root(self.dataset, data_dir, root)
        what = f"{self.dataset} split {split!r} at {self.root}"
        sources = list_images(self.root / f"{split}_c" / "source", self.dataset, what)
        ids = [p.stem for p in sources]
        folders = {}
        if views:
            folders["left"] = (self.root / f"{split}_l" / "source", "{}_L.png")
            folders["right"] = (self.root / f"{split}_r" / "source", "{}_R.png")
        if target:
            folders["sharp"] = (self.root / f"{split}_c" / "target", "{}.png")
        for key, (folder, pattern) in folders.items():
            if not folder.is_dir():
                raise DatasetNotFoundError(f"{what}: folder {folder} ({key}) is missing {manifest_hint(self.dataset)}")
            reject_orphans(folder, {pattern.format(i) for i in ids}, self.dataset, what)
        defocus_dir = self.root / f"{split}_c" / "defocus"
        if defocus is True and not defocus_dir.is_dir():
            raise DatasetNotFoundError(f"{what}: defocus=True but {defocus_dir} is missing {manifest_hint(self.dataset)}")
        use_defocus = defocus is True or (defocus == "auto" and defocus_dir.is_dir())
        for source, image_id in zip(sources, ids):
            record = {"name": image_id, "combined": source}
            for key, (folder, pattern) in folders.items():
                record[key] = folder / pattern.format(image_id)
            if use_defocus:
                found = [defocus_dir / f"{image_id}{s}" for s in _MAP_SUFFIXES if (defocus_dir / f"{image_id}{s}").is_file()]
                record["defocus"] = found[0] if found else defocus_dir / f"{image_id}.png"
            self.records.append(record)
        self._check_present()
        if check_count and root is None:
            expected = load_manifest(self.dataset).splits.get(split)
            if expected is not None and expected != len(self.records):
                kind = DatasetNotFoundError if len(self.records) < expected else DatasetCorruptError
                raise kind(
                    f"{what} has {len(self.records)} images, the release has {expected} {manifest_hint(self.dataset)}"
                )


class DPSequenceDataset(ImageSetDataset):
    """DP image sequences, one sub-folder per sequence: one item per frame.

    Reads RDPD's synthetic-video layout (``dplab/data/manifests/synthia_sf.yaml``), where every
    folder uses the same frame name::

        {split}_c/source/<seq>/<frame>.png   {split}_c/target/<seq>/<frame>.png
        {split}_l/source/<seq>/<frame>.png   {split}_r/source/<seq>/<frame>.png

    and the sequences ``python -m dplab synth`` writes under ``<out>/sequences/``, which use
    DPDD's view names (``<frame>_L.png``, ``<frame>_R.png``) and may add
    ``{split}_c/defocus/<seq>/<frame>.npy``. Items are frame samples (as :class:`DPDDDataset`)
    with ``"sequence"`` and ``"frame"`` added; :attr:`sequences` maps each sequence to its
    item indices in frame order.

    Args:
        split: a split folder prefix, e.g. ``"train"`` or ``"test"``.
        root: the folder holding ``{split}_c/`` etc. (RDPD's ``dd_dp_dataset_synth_vid``, or
            ``<out>/sequences`` of ``python -m dplab synth``).
        views, target, bit_depth, view_scale, cache, transform, defocus_decode: as
            :class:`DPDDDataset` (``bit_depth`` defaults to None: RDPD's generator writes
            8-bit PNGs, dplab's 16-bit ones).
        defocus: ``"auto"`` loads ``{split}_c/defocus/<seq>/`` maps when present, True
            requires them, False ignores them.

    Raises:
        DatasetNotFoundError: a folder or a frame's counterpart is missing.
        DatasetCorruptError: a folder holds frames that match no combined frame.

    Example:
        >>> import tempfile, numpy as np
        >>> from dplab.data.pngio import write_png
        >>> root = Path(tempfile.mkdtemp())
        >>> for f in ["000.png", "001.png"]:
        ...     for sub in ["train_c/source", "train_c/target", "train_l/source", "train_r/source"]:
        ...         _ = write_png(root / sub / "seq_001" / f, np.zeros((8, 8, 3), np.uint8))
        >>> ds = DPSequenceDataset("train", root)
        >>> ds.sequences
        {'seq_001': [0, 1]}
    """

    dataset = "synthia_sf"

    def __init__(
        self,
        split: str,
        root,
        *,
        views: bool = True,
        target: bool = True,
        defocus: bool | str = "auto",
        bit_depth: int | None = None,
        view_scale: float = 0.5,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
        defocus_decode: Callable | None = None,
    ):
        super().__init__(
            bit_depth=bit_depth, view_scale=view_scale, cache=cache, transform=transform, defocus_decode=defocus_decode
        )
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        if root is None:
            raise TypeError("root must be the folder that holds the sequences ({split}_c/source/<seq>/...)")
        if defocus not in (True, False, "auto"):
            raise ValueError(f"defocus must be True, False or 'auto', got {defocus!r}")
        self.split = split
        self.root = resolve_root(self.dataset, None, root)
        base = self.root / f"{split}_c" / "source"
        if not base.is_dir():
            raise DatasetNotFoundError(f"sequence folder {base} is missing {manifest_hint(self.dataset)}")
        seqs = sorted(p.name for p in base.iterdir() if p.is_dir())
        if not seqs:
            raise DatasetNotFoundError(f"{base} holds no sequence folders {manifest_hint(self.dataset)}")
        folders = {}
        if views:
            folders["left"] = (self.root / f"{split}_l" / "source", "_L")
            folders["right"] = (self.root / f"{split}_r" / "source", "_R")
        if target:
            folders["sharp"] = (self.root / f"{split}_c" / "target", "")
        defocus_dir = self.root / f"{split}_c" / "defocus"
        if defocus is True and not defocus_dir.is_dir():
            raise DatasetNotFoundError(f"defocus=True but {defocus_dir} is missing {manifest_hint(self.dataset)}")
        use_defocus = defocus is True or (defocus == "auto" and defocus_dir.is_dir())
        self.sequences: dict[str, list[int]] = {}
        for seq in seqs:
            frames = list_images(base / seq, self.dataset, f"sequence {seq!r}")
            names = {}
            for key, (folder, suffix) in folders.items():
                if not (folder / seq).is_dir():
                    raise DatasetNotFoundError(f"sequence {seq!r}: folder {folder / seq} ({key}) is missing {manifest_hint(self.dataset)}")
                # RDPD names a view like its frame; dplab synth adds DPDD's _L / _R suffix
                dpdd_names = bool(suffix) and (folder / seq / f"{frames[0].stem}{suffix}.png").is_file()
                names[key] = "{}" + (suffix if dpdd_names else "") + ".png"
                reject_orphans(folder / seq, {names[key].format(f.stem) for f in frames}, self.dataset, f"sequence {seq!r}")
            indices = []
            for frame in frames:
                record = {"name": f"{seq}/{frame.stem}", "combined": frame}
                record.update({key: folder / seq / names[key].format(frame.stem) for key, (folder, _) in folders.items()})
                if use_defocus:
                    found = [defocus_dir / seq / f"{frame.stem}{s}" for s in _MAP_SUFFIXES if (defocus_dir / seq / f"{frame.stem}{s}").is_file()]
                    record["defocus"] = found[0] if found else defocus_dir / seq / f"{frame.stem}.npy"
                indices.append(len(self.records))
                self.records.append(record)
            self.sequences[seq] = indices
        self._check_present()

    def load(self, index: int) -> dict:
        sample = super().load(index)
        sample["sequence"], sample["frame"] = sample["name"].split("/", 1)
        return sample
