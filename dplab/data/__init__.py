"""Datasets: manifests, the data directory, loaders for the real on-disk layouts."""

from dplab.data.manifest import (
    DATA_ENV,
    MANIFEST_DIR,
    DatasetNotFoundError,
    Manifest,
    data_root,
    dataset_dir,
    list_manifests,
    load_manifest,
)
from dplab.data.base import DatasetCorruptError, read_image
from dplab.data.dldp import DLDPDataset
from dplab.data.dpdd import DPDDDataset, DPSequenceDataset
from dplab.data.lfdof import LFDOFDataset
from dplab.data.patches import (
    GridPatches,
    RandomPatches,
    SequencePatches,
    flip_dp,
    grid_positions,
    random_flip,
    random_positions,
)
from dplab.data.sharpness import sharpness_scores, sobel_energy
from dplab.ops.radial import radial_distance_map, radial_patch
from dplab.data.pixeldp import PixelDPDataset
from dplab.data.pngio import read_png, write_png
from dplab.data.realdof import RealDOFDataset

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
