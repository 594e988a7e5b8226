"""Datasets: manifests, the data directory, loaders for the real on-disk layouts."""

from .manifest import (
    DATA_ENV,
    MANIFEST_DIR,
    DatasetNotFoundError,
    Manifest,
    data_root,
    dataset_dir,
    list_manifests,
    load_manifest,
)
from .base import DatasetCorruptError, read_image
from .dldp import DLDPDataset
from .dpdd import DPDDDataset, DPSequenceDataset
from .lfdof import LFDOFDataset
from .patches import (
    GridPatches,
    RandomPatches,
    SequencePatches,
    flip_dp,
    grid_positions,
    radial_distance_map,
    radial_patch,
    random_flip,
    random_positions,
    sharpness_scores,
    sobel_energy,
)
from .pixeldp import PixelDPDataset
from .pngio import read_png, write_png
from .realdof import RealDOFDataset

__all__ = [
    "DATA_ENV",
    "MANIFEST_DIR",
    "DatasetNotFoundError",
    "Manifest",
    "data_root",
    "dataset_dir",
    "list_manifests",
    "load_manifest",
    "DatasetCorruptError",
    "read_image",
    "read_png",
    "write_png",
    "DPDDDataset",
    "DPSequenceDataset",
    "PixelDPDataset",
    "RealDOFDataset",
    "LFDOFDataset",
    "DLDPDataset",
    "RandomPatches",
    "GridPatches",
    "SequencePatches",
    "grid_positions",
    "random_positions",
    "radial_distance_map",
    "radial_patch",
    "flip_dp",
    "random_flip",
    "sobel_energy",
    "sharpness_scores",
]
