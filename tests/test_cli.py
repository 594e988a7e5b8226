"""``python -m dplab train`` and ``python -m dplab evaluate``: a tiny run on a tiny DPDD-layout
folder, resume, refusal of other settings, the evaluation table against PSNR recomputed here,
and the error messages."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dplab.cli.main import main
from dplab.data import DPDDDataset
from dplab.data.pngio import write_png
from dplab.metrics.image import psnr
from dplab.models import build, count_parameters, from_checkpoint
from dplab.training.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = {  # tiny networks: (model, recipe, build options as arguments)
    "dpdnet": ("dpdnet", ["--widths", "4", "4", "4", "4"]),
    "dpdnet_single": ("dpdnet", ["--widths", "4", "4", "4", "4"]),
    "drbnet": ("drbnet_lfdof", ["--width", "4"]),
    "drbnet_dual": ("drbnet_dpdd", ["--width", "4"]),
    "rdpd": ("rdpd", ["--widths", "4", "4", "4", "4", "--option", "lstm_channels=4"]),
    "rspd": ("rdpd", ["--widths", "4", "4", "4", "4", "--option", "lstm_channels=4"]),
    "mdp": ("mdp_step2", ["--widths", "4", "4", "4", "4", "--option", "decoder_widths=[4,4,4,4,4]"]),
    "mdp_single_task": ("mdp_step2", ["--widths", "4", "4", "4", "4", "--option", "decoder_widths=[4,4,4,4,4]"]),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A DPDD-layout folder: 4 train and 2 test images of 40 x 48, 16-bit PNGs."""
    root = tmp_path_factory.mktemp("dpdd")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for i in range(count):
            sharp = rng.uniform(0, 65535, (40, 48, 3))
            blurred = (sharp + np.roll(sharp, 1, axis=1)) / 2
            write_png(root / f"{split}_c" / "target" / f"{i}.png", sharp.astype(np.uint16))
            write_png(root / f"{split}_c" / "source" / f"{i}.png", blurred.astype(np.uint16))
            write_png(root / f"{split}_l" / "source" / f"{i}_L.png", np.roll(blurred, 1, axis=1).astype(np.uint16))
            write_png(root / f"{split}_r" / "source" / f"{i}_R.png", np.roll(blurred, -1, axis=1).astype(np.uint16))
    return root


def _train(data, out, model="dpdnet", steps=2, extra=()):
    recipe, options = TINY[model]
    return main(["train", "--model", model, "--recipe", recipe, "--data", str(data), "--out", str(out),
                 "--steps", str(steps), "--batch-size", "2", "--patch", "32", "--quiet", *options, *extra])


def _train_steps(out: Path) -> list[int]:
    with open(out / "log.csv", newline="") as handle:
        return [int(r["step"]) for r in csv.DictReader(handle) if r["kind"] == "train"]


def test_train_resumes_and_refuses_other_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, steps=2) == 0
    ckpt = out / "checkpoints" / "last.pt"
    assert ckpt.is_file() and load_checkpoint(ckpt)["step"] == 2
    assert load_checkpoint(ckpt)["model_spec"] == {"name": "dpdnet", "kwargs": {"widths": [4, 4, 4, 4]}}
    assert _train(data, out, steps=4) == 0                 # same settings, more steps: continues
    assert load_checkpoint(ckpt)["step"] == 4
    assert _train_steps(out) == [1, 2, 3, 4]
    assert "resumed at step 2" in capsys.readouterr().out
    weights = load_checkpoint(ckpt)["model"]
    assert _train(data, out, steps=4, extra=["--resume"]) == 0     # finished: nothing retrained
    assert all(torch.equal(weights[k], v) for k, v in load_checkpoint(ckpt)["model"].items())
    capsys.readouterr()
    assert _train(data, out, steps=4, extra=["--lr", "0.5"]) == 2  # other settings: refused
    err = capsys.readouterr().err
    assert "other settings" in err and "lr" in err
    assert load_checkpoint(ckpt)["step"] == 4


@pytest.mark.parametrize("model", ["dpdnet", "drbnet"])
def test_evaluate_matches_psnr_recomputed(data, tmp_path, capsys, model):
    out = tmp_path / model
    assert _train(data, out, model=model, steps=2) == 0
    ckpt, report = out / "checkpoints" / "last.pt", tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--json", str(report),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = json.loads(report.read_text())
    net = from_checkpoint(ckpt)
    values = []
    with torch.no_grad():
        for sample in DPDDDataset("test", root=data):
            if model == "dpdnet":                             # 6 channels: the two views
                x = torch.cat([sample["left"], sample["right"]])[None]
            else:                                             # DRBNet: the combined image
                x = sample["combined"][None]
            values.append(float(psnr(net(x).clamp(0, 1), sample["sharp"][None])[0]))
    mean = table["rows"][-1]
    assert mean["image"] == "mean" and len(table["rows"]) == 3
    assert mean["psnr"] == pytest.approx(np.mean(values), abs=1e-6)
    assert [r["psnr"] for r in table["rows"][:2]] == pytest.approx(values, abs=1e-6)
    assert table["params"] == count_parameters(net) and table["model_spec"]["name"] == model
    assert f"{mean['psnr']:.4f}" in printed and "ssim" in printed and "time_s" in printed
    # the blurred input is always scored beside the method, with the gain
    blurred = [float(psnr(s["combined"][None], s["sharp"][None])[0]) for s in DPDDDataset("test", root=data)]
    assert table["blurred_input"]["rows"][-1]["psnr"] == pytest.approx(np.mean(blurred), abs=1e-6)
    assert table["gain"]["psnr"] == pytest.approx(mean["psnr"] - np.mean(blurred), abs=1e-6)
    assert "blurred input" in printed and "gain over the blurred input" in printed


def test_train_schedule_and_grad_clip_options(data, tmp_path, capsys):
    out = tmp_path / "cos"
    assert _train(data, out, steps=4, extra=["--schedule", "cosine", "--grad-clip", "0.5", "--lr", "1e-3",
                                             "--cache"]) == 0
    lrs = [float(r["lr"]) for r in csv.DictReader(open(out / "log.csv")) if r["kind"] == "train"]
    # lr of step t+1 is lr * (0.01 + 0.99 (1 + cos(pi t / 4)) / 2), t = 0..3
    expected = [1e-3 * (0.01 + 0.99 * (1 + np.cos(np.pi * t / 4)) / 2) for t in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    settings = json.loads((out / "cli_train.json").read_text())
    assert settings["schedule"] == "cosine" and settings["grad_clip"] == 0.5
    assert _train(data, tmp_path / "c2", steps=2, extra=["--schedule", "cosine", "--grad-clip", "-1"]) == 2
    assert "--grad-clip" in capsys.readouterr().err
    assert main(["train", "--model", "dpdnet", "--recipe", "dpdnet", "--data", str(data), "--out",
                 str(tmp_path / "c3"), "--schedule", "cosine", "--quiet"]) == 2    # decays over what?
    assert "--steps" in capsys.readouterr().err


def test_a_diverging_run_stops_with_a_message(data, tmp_path, capsys):
    assert _train(data, tmp_path / "nan", steps=30, extra=["--lr", "1e30"]) == 2
    assert "diverged at step" in capsys.readouterr().err


def test_evaluate_pretrained_shows_the_blurred_input(data, capsys):
    assert main(["evaluate", "--pretrained", "dpdnet", "--data", str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "shipped network dpdnet" in out and "blurred input" in out and "gain over the blurred input" in out
    with pytest.raises(SystemExit):
        main(["evaluate", "--pretrained", "dpdnet", "--checkpoint", "x.pt", "--data", str(data)])


@pytest.mark.parametrize("model", sorted(set(TINY) - {"dpdnet", "drbnet"}))
def test_every_trainable_model_trains_and_evaluates(data, tmp_path, capsys, model):
    out = tmp_path / model
    assert _train(data, out, model=model, steps=1) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["model_spec"]["name"] == model
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data", str(data),
                 "--limit", "1", "--json", str(report), "--quiet"]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert len(rows) == 2 and np.isfinite(rows[-1]["psnr"])


def test_evaluate_errors(data, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err
    bare = tmp_path / "bare.pt"                               # weights without a model spec
    torch.save({"model": torch.nn.Conv2d(6, 3, 1).state_dict()}, bare)
    assert main(["evaluate", "--checkpoint", str(bare), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "model_spec" in err and "re-run" in err
    spec = tmp_path / "spec.pt"
    net = build("dpdnet", widths=(4, 4, 4, 4))
    torch.save({"model": net.state_dict(), "model_spec": net.dplab_spec}, spec)
    assert main(["evaluate", "--checkpoint", str(spec), "--data", str(tmp_path / "nodata")]) == 2
    assert "nodata" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(spec), "--data", str(data), "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err


def test_train_errors(data, tmp_path, capsys):
    assert _train(tmp_path / "nodata", tmp_path / "a") == 2
    assert "nodata" in capsys.readouterr().err
    assert _train(data, tmp_path / "b", extra=["--resume"]) == 2      # nothing to resume
    assert "no checkpoint" in capsys.readouterr().err
    foreign = tmp_path / "c" / "checkpoints" / "last.pt"              # a checkpoint of another tool
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"x")
    assert _train(data, tmp_path / "c") == 2
    assert "cli_train.json" in capsys.readouterr().err
    assert main(["train", "--model", "mdp", "--recipe", "dpdnet", "--data", str(data),
                 "--out", str(tmp_path / "d"), "--steps", "1", "--quiet"]) == 2
    assert "do not go together" in capsys.readouterr().err
    assert main(["train", "--model", "dpdnet", "--recipe", "mdp_step1", "--data", str(data),
                 "--out", str(tmp_path / "d2"), "--steps", "1", "--quiet"]) == 2
    assert "do not go together" in capsys.readouterr().err
    assert _train(data, tmp_path / "e", extra=["--option", "no_such_option=1"]) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert _train(data, tmp_path / "f", extra=["--patch", "64"]) == 2   # larger than the 40 x 48 images
    assert "64" in capsys.readouterr().err
    assert main(["train", "--model", "mdp_single_task", "--recipe", "mdp_step2", "--data", str(data),
                 "--out", str(tmp_path / "g"), "--option", "task=views"]) == 2   # the chapter's
    assert "task=deblur" in capsys.readouterr().err
    assert main(["train", "--model", "mdp_single_task", "--recipe", "mdp_step1", "--data", str(data),
                 "--out", str(tmp_path / "g2")]) == 2
    assert "mdp_step1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:                        # argparse: unknown model
        main(["train", "--model", "unet", "--recipe", "dpdnet", "--data", str(data), "--out", str(tmp_path / "h")])
    assert exit_info.value.code == 2


def test_help(capsys):
    proc = subprocess.run([sys.executable, "-m", "dplab", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and all(c in proc.stdout for c in ("synth", "train", "evaluate"))
    for command, options in (("train", ("--model", "--recipe", "--steps", "--patch", "--widths", "--resume")),
                             ("evaluate", ("--checkpoint", "--split", "--limit", "--json", "--device"))):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert exit_info.value.code == 0 and all(o in text for o in options)


# --- one error path: every expected failure exits 2 with one line naming the file or argument ---
def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m dplab "), err   # one line, no traceback
    return err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "cut"])
def test_unreadable_checkpoints_are_named(data, tmp_path, capsys, content):
    out = tmp_path / "run"
    assert _train(data, out, steps=1) == 0
    ckpt = out / "checkpoints" / "last.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2] if content == "cut" else content)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--quiet"]) == 2
    err = _error(capsys)
    assert str(ckpt) in err and "cannot be read as a PyTorch checkpoint" in err
    assert _train(data, out, steps=2) == 2                 # resuming from it
    assert str(ckpt) in _error(capsys)
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--quiet"]) == 2   # a folder
    assert str(out) in _error(capsys)


def test_checkpoints_of_another_network_are_refused(data, tmp_path, capsys):
    four, eight = tmp_path / "four", tmp_path / "eight"
    assert _train(data, four, steps=1) == 0
    assert main(["train", "--model", "dpdnet", "--recipe", "dpdnet", "--data", str(data), "--out", str(eight),
                 "--steps", "1", "--batch-size", "2", "--patch", "32", "--quiet", "--widths", "8", "8", "8", "8"]) == 0
    ckpt = four / "checkpoints" / "last.pt"
    ckpt.write_bytes((eight / "checkpoints" / "last.pt").read_bytes())   # widths 8 where widths 4 ran
    capsys.readouterr()
    assert _train(data, four, steps=2) == 2
    err = _error(capsys)
    assert str(ckpt) in err and "[8, 8, 8, 8]" in err and "[4, 4, 4, 4]" in err
    state = load_checkpoint(eight / "checkpoints" / "last.pt")          # the same weights, no spec
    del state["model_spec"]
    torch.save(state, ckpt)
    assert _train(data, four, steps=2) == 2
    assert "size mismatch" in _error(capsys)
    # evaluate: a spec with an option this dplab does not know, or weights that do not fit it
    spec = tmp_path / "spec.pt"
    net = build("dpdnet", widths=(4, 4, 4, 4))
    torch.save({"model": net.state_dict(), "model_spec": {"name": "dpdnet", "kwargs": {"wings": 2}}}, spec)
    assert main(["evaluate", "--checkpoint", str(spec), "--data", str(data), "--quiet"]) == 2
    err = _error(capsys)
    assert str(spec) in err and "wings" in err
    torch.save({"model": net.state_dict(), "model_spec": {"name": "dpdnet", "kwargs": {"widths": [8] * 4}}}, spec)
    assert main(["evaluate", "--checkpoint", str(spec), "--data", str(data), "--quiet"]) == 2
    assert str(spec) in _error(capsys)


class _FullDisk:
    """A file whose writes fail as on a full disk (no file name in the error, as the OS gives)."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def test_a_full_disk_is_reported_and_the_run_resumes(data, tmp_path, capsys, monkeypatch):
    import dplab._io

    class FullForCheckpoints:                            # os, but checkpoints meet a full disk
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fdopen(fd, *args, **kwargs):
            handle = os.fdopen(fd, *args, **kwargs)
            return _FullDisk(handle) if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}") else handle

    out = tmp_path / "full"
    monkeypatch.setattr(dplab._io, "os", FullForCheckpoints())
    assert _train(data, out, steps=4, extra=["--checkpoint-every", "2"]) == 2
    err = _error(capsys)
    assert str(out / "checkpoints" / "last.pt") in err and "no space left" in err and "run the same command" in err
    assert not list((out / "checkpoints").iterdir())     # no temporary file, no half checkpoint
    monkeypatch.undo()
    assert _train(data, out, steps=4, extra=["--checkpoint-every", "2"]) == 0    # space again: it runs
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4 and _train_steps(out) == [1, 2, 3, 4]


def test_an_unwritable_out_is_reported(data, tmp_path, capsys, monkeypatch):
    import dplab._io

    out = tmp_path / "readonly"
    out.mkdir()

    class ReadOnly:                                      # os, but --out refuses new files
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def open(path, *args, **kwargs):
            if Path(path).parent == out:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return os.open(path, *args, **kwargs)

    monkeypatch.setattr(dplab._io, "os", ReadOnly())
    assert _train(data, out) == 2
    err = _error(capsys)
    assert f"{out}: permission denied" in err and "choose another folder" in err
    assert main(["synth", "--out", str(out), "--count", "1", "--size", "16x24", "--quiet"]) == 2
    assert f"{out}: permission denied" in _error(capsys)
    assert not any(out.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_reported(data, tmp_path, capsys):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert _train(data, out) == 2
        assert str(out) in _error(capsys)
    finally:
        out.chmod(0o755)


def test_bad_device_absurd_size_and_nan_loss(data, tmp_path, capsys):
    assert _train(data, tmp_path / "tpu", extra=["--device", "tpu9"]) == 2
    assert "--device" in _error(capsys) and not (tmp_path / "tpu").exists()
    huge = tmp_path / "huge"
    assert main(["synth", "--out", str(huge), "--count", "1", "--size", "99999x99999", "--quiet"]) == 2
    assert "--size 99999x99999" in _error(capsys) and not huge.exists()
    assert _train(data, tmp_path / "nan", steps=30, extra=["--lr", "1e12"]) == 2
    err = _error(capsys)
    assert "diverged at step" in err and "--lr" in err and "no checkpoint was written" in err
    assert _train(data, tmp_path / "nan", steps=2, extra=["--lr", "1e-3"]) == 0    # a lower --lr starts afresh


def test_torn_logs_and_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, steps=2) == 0
    log = out / "log.csv"
    with open(log, "a") as handle:                      # a row cut short by a crash: dropped
        handle.write("train,3,0,0.0001,0.12")
    assert _train(data, out, steps=3) == 0
    assert _train_steps(out) == [1, 2, 3]
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2] + ["train,x,0,0.1,0.1,,,0.5\n"] + lines[2:]))   # damaged mid-file
    capsys.readouterr()
    assert _train(data, out, steps=4) == 2
    err = _error(capsys)
    assert str(log) in err and "line 3" in err
    log.write_text("".join(lines))
    settings = out / "cli_train.json"
    settings.write_text("")
    assert _train(data, out, steps=4) == 2
    err = _error(capsys)
    assert str(settings) in err and "empty or damaged" in err


def test_fewer_steps_than_done_are_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, steps=4) == 0
    ckpt = out / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert _train(data, out, steps=2) == 2
    err = _error(capsys)
    assert "already holds 4 trained steps" in err and "--steps 2" in err and "step 4 of 2" not in err
    assert ckpt.read_bytes() == before
    assert _train(data, out, steps=4) == 0              # exactly done: nothing to do, exit 0
    assert "step 4 of 4" in capsys.readouterr().out


def test_train_keeps_out_of_folders_it_did_not_make(data, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "log.csv").write_text("my,own,table\n1,2,3\n")
    assert _train(data, mine) == 2
    err = _error(capsys)
    assert "not empty" in err and "cli_train.json" in err
    assert sorted(p.name for p in mine.iterdir()) == ["log.csv"]
    assert (mine / "log.csv").read_text() == "my,own,table\n1,2,3\n"
    # the Trainer itself deletes only the logs it wrote (here: a run folder without a checkpoint)
    from dplab.training.trainer import Trainer

    (mine / "log.json").write_text('{"mine": true}\n')
    (mine / "log.csv").unlink()
    with pytest.raises(FileExistsError, match="log.json"):
        Trainer(torch.nn.Conv2d(3, 3, 1), lambda p, b: p.mean(), [{"x": torch.zeros(3, 2, 2)}] * 2,
                {"max_steps": 1, "batch_size": 1, "progress": False}, output_dir=mine)
    assert (mine / "log.json").read_text() == '{"mine": true}\n'


def test_resuming_on_other_data_is_refused_unless_told(tmp_path, capsys):
    data = tmp_path / "synth"
    synth = ["synth", "--out", str(data), "--count", "2", "--size", "40x48", "--max-layers", "8",
             "--split-fractions", "1", "0", "0", "--quiet"]
    assert main(synth) == 0
    out = tmp_path / "run"
    assert _train(data, out, steps=1) == 0
    recorded = json.loads((out / "cli_train.json").read_text())["data_fingerprint"]
    assert recorded.startswith("synth:")
    moved = tmp_path / "moved"                           # the same data elsewhere: resumes
    data.rename(moved)
    assert _train(moved, out, steps=2) == 0
    assert main([*synth, "--seed", "5", "--overwrite"]) == 0    # regenerated with another seed
    capsys.readouterr()
    assert _train(data, out, steps=3) == 2
    err = _error(capsys)
    assert "other data" in err and "--allow-other-data" in err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    assert _train(data, out, steps=3, extra=["--allow-other-data"]) == 0
    now = json.loads((out / "cli_train.json").read_text())["data_fingerprint"]
    assert now != recorded and _train(data, out, steps=4) == 0
    manifest = data / "dplab_synth.json"                 # a synth dataset not complete: refused
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    capsys.readouterr()
    assert _train(data, tmp_path / "other", steps=1) == 2
    assert "not complete" in _error(capsys)
