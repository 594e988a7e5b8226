"""Dataset loaders read the real on-disk layouts exactly, keep 16 bits, and fail loudly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dplab.data import (
    DatasetCorruptError,
    DatasetNotFoundError,
    DLDPDataset,
    DPDDDataset,
    DPSequenceDataset,
    LFDOFDataset,
    PixelDPDataset,
    RealDOFDataset,
    read_png,
    write_png,
)
from dplab.data.lfdof import lfdof_ground_truth_name
from dplab.data.pngio import PNGError

H, W = 12, 16


def codes16(seed: int, shape=(H, W, 3)) -> np.ndarray:
    """16-bit codes whose low byte is never zero, so an 8-bit reader would be caught."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 255, shape) * 256 + rng.integers(1, 256, shape)).astype(np.uint16)


def make_dpdd(root: Path, split: str = "test", ids=("img_a", "img_b"), defocus: bool = False) -> dict:
    written = {}
    for k, i in enumerate(ids):
        files = {
            "combined": root / f"{split}_c/source/{i}.png",
            "sharp": root / f"{split}_c/target/{i}.png",
            "left": root / f"{split}_l/source/{i}_L.png",
            "right": root / f"{split}_r/source/{i}_R.png",
        }
        for j, (key, path) in enumerate(files.items()):
            codes = codes16(10 * k + j)
            write_png(path, codes)
            written[(i, key)] = codes
        if defocus:
            path = root / f"{split}_c/defocus/{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.full((H, W), -2.5 + k, np.float32))
    return written


@pytest.fixture
def dpdd_dir(tmp_path):
    written = make_dpdd(tmp_path / "dpdd", "test")
    return tmp_path, written


# --- PNG codec ------------------------------------------------------------------------------
def _png_with_filters(image: np.ndarray, filters) -> bytes:
    """Reference encoder straight from the PNG specification (all five filter types)."""
    h, w, c = image.shape
    rows = image.astype(">u2").reshape(h, -1).view(np.uint8).astype(int)
    bpp, prior, out = 2 * c, np.zeros(rows.shape[1], int), []
    for y in range(h):
        kind, cur, filtered = filters[y % len(filters)], rows[y], []
        for x in range(len(cur)):
            a = cur[x - bpp] if x >= bpp else 0
            b = prior[x]
            cc = prior[x - bpp] if x >= bpp else 0
            p = a + b - cc
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - cc) else (b if abs(p - b) <= abs(p - cc) else cc)
            pred = [0, a, b, (a + b) // 2, paeth][kind]
            filtered.append((cur[x] - pred) % 256)
        out.append(bytes([kind]) + bytes(filtered))
        prior = cur

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(out))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4], [4, 3, 1]])
def test_png_reader_undoes_every_scanline_filter_at_16_bits(tmp_path, filters):
    image = codes16(0, (7, 9, 3))
    image[2:4] = image[1]  # repeated rows exercise Up/Average/Paeth predictions
    path = tmp_path / "f.png"
    path.write_bytes(_png_with_filters(image, filters))
    assert np.array_equal(read_png(path), image)


def test_png_reader_matches_pillow_on_pillow_written_16_bit_gray(tmp_path):
    from PIL import Image

    gray = codes16(1, (13, 17))
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(read_png(tmp_path / "g.png"), gray)


def test_png_writer_roundtrips_and_refuses_to_overwrite(tmp_path):
    for image in (codes16(2), codes16(3, (5, 4)), np.arange(24, dtype=np.uint8).reshape(2, 3, 4)):
        path = write_png(tmp_path / f"x{image.ndim}{image.dtype}.png", image)
        assert np.array_equal(read_png(path), image)
    with pytest.raises(FileExistsError):
        write_png(path, image)
    assert not list(tmp_path.glob(".*tmp"))


def test_png_reader_detects_corruption(tmp_path):
    path = write_png(tmp_path / "c.png", codes16(4))
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside IDAT: CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(PNGError, match="CRC"):
        read_png(path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(PNGError, match="truncated"):
        read_png(path)


# --- DPDD layout ----------------------------------------------------------------------------
def test_dpdd_reads_16_bit_values_exactly_and_scales_views(dpdd_dir):
    data_dir, written = dpdd_dir
    ds = DPDDDataset("test", data_dir)
    assert len(ds) == 2 and ds.names == ["img_a", "img_b"]
    sample = ds[1]
    assert set(sample) == {"name", "combined", "sharp", "left", "right"}
    for key in ("combined", "sharp"):
        expected = torch.from_numpy(written[("img_b", key)].astype(np.float32) / 65535).permute(2, 0, 1)
        assert sample[key].dtype == torch.float32 and sample[key].shape == (3, H, W)
        assert torch.equal(sample[key], expected)
    left = torch.from_numpy(written[("img_b", "left")].astype(np.float32) / 65535).permute(2, 0, 1)
    assert torch.allclose(sample["left"], 0.5 * left)  # dplab convention: combined = left + right
    raw = DPDDDataset("test", data_dir, view_scale=1.0)[1]
    assert torch.equal(raw["left"], left)


def test_dpdd_batches_are_bchw(dpdd_dir):
    batch = next(iter(DataLoader(DPDDDataset("test", dpdd_dir[0]), batch_size=2)))
    assert batch["combined"].shape == (2, 3, H, W) and batch["name"] == ["img_a", "img_b"]


def test_dpdd_missing_file_is_named_with_the_manifest(dpdd_dir):
    data_dir, _ = dpdd_dir
    gone = data_dir / "dpdd/test_r/source/img_b_R.png"
    gone.unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        DPDDDataset("test", data_dir)
    text = str(err.value)
    assert str(gone) in text and "dpdd.yaml" in text and "img_a_R" not in text


def test_dpdd_missing_split_folder_and_data_dir(dpdd_dir, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dpdd.yaml"):
        DPDDDataset("train", root=dpdd_dir[0] / "dpdd")
    with pytest.raises(DatasetNotFoundError, match="dpdd.yaml"):
        DPDDDataset("test", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        DPDDDataset("training", dpdd_dir[0])


def test_dpdd_corrupt_file_raises_on_read_and_in_verify(dpdd_dir):
    data_dir, _ = dpdd_dir
    bad = data_dir / "dpdd/test_c/target/img_a.png"
    bad.write_bytes(bad.read_bytes()[:100])
    ds = DPDDDataset("test", data_dir)  # listing only checks presence
    with pytest.raises(DatasetCorruptError) as err:
        ds[0]
    assert str(bad) in str(err.value) and "dpdd.yaml" in str(err.value)
    assert ds[1]["name"] == "img_b"  # the intact item still reads
    with pytest.raises(DatasetCorruptError, match="1 item"):
        ds.verify()


def test_dpdd_refuses_wrong_bit_depth_size_and_orphans(dpdd_dir):
    data_dir, _ = dpdd_dir
    left = data_dir / "dpdd/test_l/source/img_a_L.png"
    write_png(left, np.zeros((H, W, 3), np.uint8), overwrite=True)
    with pytest.raises(DatasetCorruptError, match="8-bit"):
        DPDDDataset("test", data_dir)[0]
    assert DPDDDataset("test", data_dir, bit_depth=None)[0]["left"].abs().sum() == 0
    write_png(left, codes16(7, (H, W + 1, 3)), overwrite=True)
    with pytest.raises(DatasetCorruptError, match="sizes differ"):
        DPDDDataset("test", data_dir)[0]
    write_png(data_dir / "dpdd/test_l/source/stray_L.png", codes16(8))
    with pytest.raises(DatasetCorruptError, match="stray_L.png"):
        DPDDDataset("test", data_dir)


def test_dpdd_count_check_uses_the_manifest(dpdd_dir):
    with pytest.raises(DatasetNotFoundError, match="76"):
        DPDDDataset("test", dpdd_dir[0], check_count=True)


def test_synthetic_output_with_defocus_maps(tmp_path):
    make_dpdd(tmp_path / "synth", "train", ids=("000", "001", "002"), defocus=True)
    ds = DPDDDataset("train", root=tmp_path / "synth")
    sample = ds[1]
    assert sample["defocus"].shape == (1, H, W) and float(sample["defocus"][0, 0, 0]) == -1.5
    assert "defocus" not in DPDDDataset("train", root=tmp_path / "synth", defocus=False)[0]
    (tmp_path / "synth/train_c/defocus/002.npy").unlink()
    with pytest.raises(DatasetNotFoundError, match="002"):
        DPDDDataset("train", root=tmp_path / "synth")
    make_dpdd(tmp_path / "plain", "test")
    with pytest.raises(DatasetNotFoundError, match="defocus"):
        DPDDDataset("test", root=tmp_path / "plain", defocus=True)


def test_dpdd_without_views_or_target(tmp_path):
    root = tmp_path / "d"
    write_png(root / "val_c/source/x.png", codes16(0))
    ds = DPDDDataset("val", root=root, views=False, target=False)
    assert set(ds[0]) == {"name", "combined"}
    with pytest.raises(DatasetNotFoundError, match="sharp"):
        DPDDDataset("val", root=root, views=False)


# --- other layouts --------------------------------------------------------------------------
def test_pixeldp_has_no_ground_truth_and_rotates_portrait_images(tmp_path):
    root = tmp_path / "pixeldp"
    for rel in ("test_c/source/p1.png", "test_l/source/p1_L.png", "test_r/source/p1_R.png"):
        write_png(root / rel, codes16(len(rel), (W, H, 3)))  # portrait: taller than wide
    ds = PixelDPDataset(tmp_path)
    sample = ds[0]
    assert "sharp" not in sample and sample["combined"].shape == (3, W, H)
    rotated = PixelDPDataset(tmp_path, landscape=True)[0]
    assert rotated["combined"].shape == (3, H, W)
    assert torch.equal(rotated["left"], torch.rot90(sample["left"], 1, dims=(-2, -1)))
    (root / "test_r/source/p1_R.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="pixeldp"):
        PixelDPDataset(tmp_path)


def test_realdof_pairs_by_name(tmp_path):
    root = tmp_path / "realdof"
    for name in ("01.png", "02.png"):
        write_png(root / "source" / name, np.full((H, W, 3), 10, np.uint8))
        write_png(root / "target" / name, np.full((H, W, 3), 20, np.uint8))
    ds = RealDOFDataset(tmp_path)
    sample = ds[0]
    assert ds.names == ["01", "02"] and set(sample) == {"name", "combined", "sharp"}
    assert float(sample["sharp"][0, 0, 0]) == pytest.approx(20 / 255)
    (root / "target/02.png").unlink()
    with pytest.raises(DatasetCorruptError, match="02.png"):
        RealDOFDataset(tmp_path)
    (root / "source/02.png").unlink()
    (root / "target/01.png").write_bytes(b"not a png")
    with pytest.raises(DatasetCorruptError, match="realdof.yaml"):
        RealDOFDataset(tmp_path)[0]


def test_lfdof_maps_inputs_to_shared_ground_truth(tmp_path):
    root = tmp_path / "lfdof"
    for rel in ("test_data/input/IMG_1_ap1_fd2.png", "test_data/input/IMG_1_ap3_fd1.png",
                "test_data/input/IMG_2.png", "test_data/ground_truth/IMG_1.png", "test_data/ground_truth/IMG_2.png"):
        write_png(root / rel, np.zeros((H, W, 3), np.uint8))
    ds = LFDOFDataset("test", tmp_path)
    assert [r["sharp"].name for r in ds.records] == ["IMG_1.png", "IMG_1.png", "IMG_2.png"]
    assert lfdof_ground_truth_name("IMG_9_ap0.5.png") == "IMG_9.png"
    (root / "test_data/ground_truth/IMG_1.png").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        LFDOFDataset("test", tmp_path)
    assert "2 file(s)" in str(err.value) and "lfdof.yaml" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="train_data"):
        LFDOFDataset("train", root=root)


def test_dldp_reads_views_and_rejects_orphans(tmp_path):
    root = tmp_path / "dldp"
    for sub in "clr":
        write_png(root / "train" / sub / "s.png", codes16(ord(sub)))
    sample = DLDPDataset("train", tmp_path)[0]
    assert set(sample) == {"name", "combined", "left", "right"}
    write_png(root / "train" / "l" / "t.png", codes16(0))
    with pytest.raises(DatasetCorruptError, match="t.png"):
        DLDPDataset("train", tmp_path)


def test_sequence_layout_groups_frames(tmp_path):
    for seq, n in (("seq_001", 3), ("seq_002", 2)):
        for f in range(n):
            for sub in ("train_c/source", "train_c/target", "train_l/source", "train_r/source"):
                write_png(tmp_path / sub / seq / f"{f:07d}.png", np.full((H, W, 3), f, np.uint8))
    ds = DPSequenceDataset("train", tmp_path)
    assert ds.sequences == {"seq_001": [0, 1, 2], "seq_002": [3, 4]}
    sample = ds[4]
    assert sample["sequence"] == "seq_002" and sample["frame"] == "0000001"
    (tmp_path / "train_r/source/seq_001/0000002.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="0000002"):
        DPSequenceDataset("train", tmp_path)


def test_sequences_with_dpdd_view_names_and_defocus(tmp_path):
    # the naming `python -m dplab synth` uses under <out>/sequences/
    for f in range(3):
        for sub, suffix in (("train_c/source", ""), ("train_c/target", ""), ("train_l/source", "_L"), ("train_r/source", "_R")):
            write_png(tmp_path / sub / "seq_000" / f"{f:05d}{suffix}.png", codes16(f))
        path = tmp_path / "train_c/defocus/seq_000" / f"{f:05d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((H, W), float(f), np.float32))
    ds = DPSequenceDataset("train", tmp_path)
    sample = ds[2]
    assert ds.files(2)["left"].name == "00002_L.png" and float(sample["defocus"].mean()) == 2.0


def test_reads_the_output_of_dplab_synth(tmp_path):
    synth = pytest.importorskip("dplab.render.synth")
    if not hasattr(synth, "synthesize") or not hasattr(synth, "SynthConfig"):
        pytest.skip("dplab.render.synth has no synthesize/SynthConfig")
    cfg = synth.SynthConfig(count=2, size=(24, 32), sequences=1, frames=2, split_fractions=(1.0, 0.0, 0.0))
    synth.synthesize(tmp_path / "out", cfg, progress=False)
    ds = DPDDDataset("train", root=tmp_path / "out")
    sample = ds[0]
    assert len(ds) == 2 and sample["combined"].shape == (3, 24, 32) and sample["defocus"].shape == (1, 24, 32)
    # synth stores full-brightness views; the default view_scale restores combined = left + right
    assert torch.allclose(sample["left"] + sample["right"], sample["combined"], atol=2 / 65535)
    seqs = DPSequenceDataset("train", tmp_path / "out" / "sequences", bit_depth=16)
    assert len(seqs.sequences) == 1 and len(seqs) == 2
