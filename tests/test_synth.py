"""``python -m dplab synth``: layout, determinism, refusal, interruption and exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dplab.render.synth as synth
from dplab.cli.main import main
from dplab.data.pngio import read_png
from dplab.render.synth import MANIFEST_NAME, SynthConfig, render_sample, synthesize

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(count=5, seed=3, size=(20, 28), sequences=2, frames=2, coc_gain=8.0,
           split_fractions=(0.6, 0.2, 0.2), max_layers=24)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _args(out, **over):
    cfg = {**CFG, **over}
    argv = ["synth", "--out", str(out), "--count", str(cfg["count"]), "--seed", str(cfg["seed"]),
            "--size", "%dx%d" % cfg["size"], "--sequences", str(cfg["sequences"]),
            "--frames", str(cfg["frames"]), "--coc-gain", str(cfg["coc_gain"]),
            "--max-layers", str(cfg["max_layers"]), "--quiet",
            "--split-fractions", *map(str, cfg["split_fractions"])]
    return argv


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert main(_args(out)) == 0
    return out, _files(out)


def test_layout_and_contents(reference):
    out, files = reference
    manifest = json.loads(files[MANIFEST_NAME])
    assert manifest["complete"] and manifest["config"]["count"] == 5
    assert manifest["splits"] == {"train": [0, 3], "val": [3, 4], "test": [4, 5]}
    expect = {"train": ["00000", "00001", "00002"], "val": ["00003"], "test": ["00004"]}
    for split, ids in expect.items():
        assert sorted(p.stem for p in (out / f"{split}_c" / "source").iterdir()) == ids
        assert sorted(p.stem for p in (out / f"{split}_c" / "target").iterdir()) == ids
        assert sorted(p.name for p in (out / f"{split}_l" / "source").iterdir()) == [f"{i}_L.png" for i in ids]
        assert sorted(p.name for p in (out / f"{split}_r" / "source").iterdir()) == [f"{i}_R.png" for i in ids]
        assert sorted(p.name for p in (out / f"{split}_c" / "defocus").iterdir()) == [f"{i}.npy" for i in ids]
    c = read_png(out / "train_c" / "source" / "00001.png").astype(np.int64)
    left = read_png(out / "train_l" / "source" / "00001_L.png").astype(np.int64)
    right = read_png(out / "train_r" / "source" / "00001_R.png").astype(np.int64)
    target = read_png(out / "train_c" / "target" / "00001.png")
    assert c.shape == (20, 28, 3) and read_png(out / "train_c" / "source" / "00001.png").dtype == np.uint16
    assert np.abs(2 * c - left - right).max() <= 2  # combined = left + right, views stored x2
    assert np.abs(c - target.astype(np.int64)).max() > 1000  # blurred, noisy: not the target
    coc = np.load(out / "train_c" / "defocus" / "00001.npy")
    assert coc.shape == (20, 28) and coc.dtype == np.float32 and np.ptp(coc) > 1.0
    meta = json.loads((out / "train_c" / "meta" / "00001.json").read_text())
    assert meta["id"] == "00001" and meta["camera_set"] in range(5) and len(meta["psf"]) == 4
    # sequences: 2 x 2 frames; 0.6 * 2 rounds to 1 train sequence, then 0.8 * 2 -> 1 val
    seq = out / "sequences"
    assert sorted(p.name for p in (seq / "train_l" / "source" / "seq_000").iterdir()) == ["00000_L.png", "00001_L.png"]
    assert sorted(p.name for p in (seq / "val_c" / "source" / "seq_001").iterdir()) == ["00000.png", "00001.png"]
    assert (seq / "val_c" / "defocus" / "seq_001" / "00001.npy").is_file()
    assert json.loads((seq / "train_c" / "meta" / "seq_000.json").read_text())["frames"] == 2
    f0 = read_png(seq / "train_c" / "target" / "seq_000" / "00000.png")
    f1 = read_png(seq / "train_c" / "target" / "seq_000" / "00001.png")
    assert not np.array_equal(f0, f1)  # things move
    n_images = sum(1 for p in files if p.endswith(".png"))
    assert n_images == 5 * 4 + 4 * 4


def test_same_seed_same_bytes_and_sample_depends_only_on_seed_and_index(reference, tmp_path):
    out, files = reference
    assert main(_args(tmp_path / "again")) == 0
    assert _files(tmp_path / "again") == files
    # sample 00003 of a 5-sample set equals sample 00003 of a 4-sample set (other split)
    other = tmp_path / "four"
    assert main(_args(other, count=4, sequences=0, split_fractions=(1.0, 0.0, 0.0))) == 0
    assert (other / "train_l" / "source" / "00003_L.png").read_bytes() == \
        files["val_l/source/00003_L.png"]
    arrays, meta = render_sample(SynthConfig(**{**CFG, "count": 1}), 3)
    assert np.array_equal(arrays["left"], read_png(out / "val_l" / "source" / "00003_L.png"))


def test_interrupted_run_resumes_to_identical_output(reference, tmp_path, monkeypatch):
    _, files = reference
    out = tmp_path / "interrupted"
    real_write = synth._write_file
    calls = {"n": 0}

    def flaky(path, array):
        calls["n"] += 1
        if calls["n"] == 13:  # third sample, third of its five files
            raise KeyboardInterrupt
        real_write(path, array)

    monkeypatch.setattr(synth, "_write_file", flaky)
    assert main(_args(out)) == 130
    monkeypatch.setattr(synth, "_write_file", real_write)
    written = _files(out)
    assert sum(1 for p in written if p.startswith("train_c/meta/")) == 2  # two complete samples
    assert "train_c/target/00002.png" in written  # part of sample 2 ...
    assert "train_l/source/00002_L.png" not in written  # ... interrupted at its left view
    assert not json.loads(written[MANIFEST_NAME])["complete"]
    leftover = out / "train_r" / "source" / ".00002_R.png.abc123.tmp"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a png")
    result = synthesize(out, SynthConfig(**CFG), progress=False)
    assert result == {"written": 3 + 4, "skipped": 2}  # samples 2-4 and the 4 frames
    assert _files(out) == files  # nothing lost, nothing duplicated, same bytes, no temp file


def test_refuses_other_arguments_and_foreign_folders(reference, tmp_path, capsys):
    out, files = reference
    assert main(_args(out)) == 0  # same arguments: a complete dataset, nothing to do
    assert "0 written, 9 already complete" in capsys.readouterr().out
    assert main(_args(out, seed=4)) == 2
    err = capsys.readouterr().err
    assert "other arguments" in err and "'seed': (3, 4)" in err
    assert _files(out) == files
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(_args(foreign, count=1, sequences=0)) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(_args(foreign, count=1, sequences=0) + ["--overwrite"]) == 0
    assert (foreign / "notes.txt").read_text() == "mine"  # only synth's own entries are replaced
    assert (foreign / "train_c" / "source" / "00000.png").is_file()
    redo = tmp_path / "redo"
    assert main(_args(redo, count=2, sequences=0)) == 0
    assert main(_args(redo, count=1, sequences=0) + ["--overwrite"]) == 0
    assert sorted(p.name for p in (redo / "train_c" / "source").iterdir()) == ["00000.png"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="split_fractions"):
        SynthConfig(count=2, split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="noise_sigma"):
        SynthConfig(count=2, noise_sigma=(0.2, 0.1))
    with pytest.raises(SystemExit) as exit_info:  # argparse reports the bad size itself
        main(["synth", "--out", "x", "--count", "2", "--size", "12x"])
    assert exit_info.value.code == 2


def test_command_line_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dplab", "synth", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--split-fractions" in proc.stdout and "--overwrite" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "dplab", "synth", "--out", str(tmp_path / "o"),
                           "--count", "1", "--size", "bad"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "HxW" in proc.stderr


def test_dataset_readers_load_the_output(reference):
    import torch

    from dplab.data import DPDDDataset, DPSequenceDataset

    out, _ = reference
    ds = DPDDDataset("train", root=out)
    assert len(ds) == 3
    s = ds[1]
    assert s["name"] == "00001" and tuple(s["defocus"].shape) == (1, 20, 28)
    assert torch.allclose(s["left"] + s["right"], s["combined"], atol=3 / 65535)
    coc = np.load(out / "train_c" / "defocus" / "00001.npy")
    assert np.array_equal(s["defocus"][0].numpy(), coc)
    seq = DPSequenceDataset("train", out / "sequences")
    assert seq.sequences == {"seq_000": [0, 1]}


def test_a_complete_dataset_keeps_its_manifest_while_rechecked(reference, tmp_path):
    """Re-running synth on a complete dataset never marks it incomplete meanwhile (a `train`
    starting then would refuse it): the manifest is not even rewritten."""
    out, files = reference
    inode = (out / MANIFEST_NAME).stat().st_ino
    assert main(_args(out)) == 0
    assert (out / MANIFEST_NAME).stat().st_ino == inode and _files(out) == files
    redo = tmp_path / "redo"                       # a missing file is redone, the manifest kept complete
    assert main(_args(redo, count=2, sequences=0)) == 0
    (redo / "train_c" / "source" / "00000.png").unlink()
    assert synthesize(redo, SynthConfig(**{**CFG, "count": 2, "sequences": 0}), progress=False) == \
        {"written": 1, "skipped": 1}
    assert json.loads((redo / MANIFEST_NAME).read_text())["complete"]
