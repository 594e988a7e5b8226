"""One run per output folder: ``dplab._io.folder_lock`` held by ``synth`` and ``train``, tried
with real processes (a holder in another process, two commands started together on one
folder, a SIGKILL), and the start-up cleanup that removes only a dead run's temporary files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dplab._io import LOCK_NAME, FolderInUseError, folder_lock, remove_stale_temporaries
from dplab.cli.main import main
from dplab.data.pngio import write_png
from dplab.render.synth import MANIFEST_NAME, SynthConfig, synthesize
from dplab.training.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SYNTH = ["--count", "3", "--size", "16x24", "--max-layers", "8", "--coc-gain", "4",
         "--split-fractions", "1", "0", "0", "--quiet"]
HOLD = ("import sys, time\n"
        "from dplab._io import folder_lock\n"
        "with folder_lock(sys.argv[1], 'a test holding the folder'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _dplab(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dplab", *argv], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on ``tmp_path / "held"``; SIGKILLed at the end."""
    folder = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A DPDD-layout folder: 4 train images of 40 x 48, 16-bit PNGs."""
    root = tmp_path_factory.mktemp("dpdd")
    rng = np.random.default_rng(0)
    for i in range(4):
        sharp = rng.uniform(0, 65535, (40, 48, 3))
        blurred = (sharp + np.roll(sharp, 1, axis=1)) / 2
        write_png(root / "train_c" / "target" / f"{i}.png", sharp.astype(np.uint16))
        write_png(root / "train_c" / "source" / f"{i}.png", blurred.astype(np.uint16))
        write_png(root / "train_l" / "source" / f"{i}_L.png", np.roll(blurred, 1, axis=1).astype(np.uint16))
        write_png(root / "train_r" / "source" / f"{i}_R.png", np.roll(blurred, -1, axis=1).astype(np.uint16))
    return root


def _train_argv(data: Path, out: Path, width: int = 4, steps: int = 4) -> list[str]:
    return ["train", "--model", "dpdnet", "--recipe", "dpdnet", "--data", str(data), "--out", str(out),
            "--steps", str(steps), "--batch-size", "2", "--patch", "32", "--checkpoint-every", "2", "--quiet",
            "--widths", *[str(width)] * 4]


# --- the lock itself -----------------------------------------------------------------------
def test_lock_records_the_holder_is_released_and_nests(tmp_path):
    out = tmp_path / "new" / "folder"                   # created when missing
    with folder_lock(out, "first") as held:
        record = json.loads((held / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "first"
        with folder_lock(out, "nested"):                # the same process: shared, not refused
            assert json.loads((out / LOCK_NAME).read_text())["command"] == "first"
        assert (out / LOCK_NAME).is_file()              # still held by the outer block
    assert not (out / LOCK_NAME).exists() and out.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        with folder_lock(tmp_path / "file"):
            pass


def test_cleanup_needs_the_lock(tmp_path):
    (tmp_path / ".a.png.x1y2z3w4.tmp").write_bytes(b"half")
    with pytest.raises(RuntimeError, match="folder_lock"):
        remove_stale_temporaries(tmp_path)
    assert (tmp_path / ".a.png.x1y2z3w4.tmp").is_file()


def test_a_folder_held_by_another_process_is_refused_at_once(holder, data, capsys):
    folder, proc = holder
    with pytest.raises(FolderInUseError) as info:
        with folder_lock(folder):
            pass
    assert info.value.holder["pid"] == proc.pid and f"pid {proc.pid}" in str(info.value)
    leftover = folder / "train_c" / "source" / ".00000.png.k2j4h1x0.tmp"   # the holder's, in progress
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"being written")
    started = time.monotonic()
    assert main(["synth", "--out", str(folder), *SYNTH]) == 2
    assert main(_train_argv(data, folder)) == 2
    assert time.monotonic() - started < 20              # refused, not waiting for the holder
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"pid {proc.pid}" in line and "a test holding the folder" in line for line in err)
    assert leftover.is_file()                           # a live run's file is not touched
    assert sorted(p.name for p in folder.rglob("*")) == sorted([LOCK_NAME, "train_c", "source", leftover.name])

    proc.send_signal(signal.SIGKILL)                    # the holder dies: the kernel drops its lock
    proc.wait(timeout=30)
    assert (folder / LOCK_NAME).is_file()               # the file stays, the lock does not
    shutil.rmtree(folder / "train_c")                   # (the holder's work, not a dataset)
    assert main(["synth", "--out", str(folder), *SYNTH]) == 0
    assert json.loads((folder / MANIFEST_NAME).read_text())["complete"]
    assert not (folder / LOCK_NAME).exists()


# --- two commands started together on one folder ---------------------------------------------
def test_two_synth_runs_with_other_seeds_never_mix(tmp_path):
    out = tmp_path / "race"
    procs = {seed: _dplab("synth", "--out", str(out), "--seed", str(seed), *SYNTH) for seed in (7, 8)}
    results = {seed: (p.wait(timeout=300), p.communicate()[1]) for seed, p in procs.items()}
    winners = [seed for seed, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    code, err = results[15 - winners[0]]
    assert code == 2 and ("in use by another run" in err or "other arguments" in err), err
    reference = tmp_path / "reference"
    cfg = SynthConfig(count=3, seed=winners[0], size=(16, 24), max_layers=8, coc_gain=4.0,
                      split_fractions=(1.0, 0.0, 0.0))
    synthesize(reference, cfg, progress=False)
    assert _files(out) == _files(reference)             # every file the winner's, nothing else


def _train_rows(out: Path) -> list[int]:
    with open(out / "log.csv", newline="") as handle:
        return [int(r["step"]) for r in csv.DictReader(handle) if r["kind"] == "train"]


def test_two_train_runs_on_one_folder_leave_it_consistent(data, tmp_path):
    out = tmp_path / "race"
    procs = {w: _dplab(*_train_argv(data, out, width=w)) for w in (4, 8)}
    results = {w: (p.wait(timeout=300), p.communicate()[1]) for w, p in procs.items()}
    winners = [w for w, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    code, err = results[12 - winners[0]]
    assert code == 2 and ("in use by another run" in err or "other settings" in err), err
    settings = json.loads((out / "cli_train.json").read_text())
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert settings["options"]["widths"] == ckpt["model_spec"]["kwargs"]["widths"] == [winners[0]] * 4
    assert ckpt["step"] == 4 and _train_rows(out) == [1, 2, 3, 4]
    assert main(_train_argv(data, out, width=winners[0], steps=6)) == 0      # and it resumes
    assert _train_rows(out) == [1, 2, 3, 4, 5, 6]


def test_two_identical_train_runs_do_not_duplicate_the_log(data, tmp_path):
    out = tmp_path / "twins"
    procs = [_dplab(*_train_argv(data, out)) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    assert all("in use by another run" in err for code, err in results if code == 2)
    assert _train_rows(out) == [1, 2, 3, 4] and load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4


# --- a killed run: its lock goes, its temporary files are removed by the next run ----------
def test_sigkilled_synth_resumes_to_identical_bytes(tmp_path):
    argv = ["--count", "6", "--size", "16x24", "--max-layers", "8", "--coc-gain", "4", "--seed", "2", "--quiet"]
    out = tmp_path / "killed"
    proc = _dplab("synth", "--out", str(out), *argv)
    deadline = time.monotonic() + 120
    while not list(out.glob("*_c/meta/*.json")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "synth wrote no sample"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert (out / LOCK_NAME).is_file()                  # left by the killed run, no longer locked
    stale = out / "train_l" / "source" / ".00005_L.png.ab12cd34.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a png")
    mine = out / ".notes.tmp"                           # not synth's: kept
    mine.write_text("mine")
    assert main(["synth", "--out", str(out), *argv]) == 0
    mine.unlink()
    reference = tmp_path / "reference"
    assert main(["synth", "--out", str(reference), *argv]) == 0
    assert _files(out) == _files(reference)             # no temporary file, no lock file, same bytes


def test_train_removes_a_killed_runs_checkpoint_temporaries_only(data, tmp_path):
    out = tmp_path / "run"
    assert main(_train_argv(data, out, steps=2)) == 0
    stale = out / "checkpoints" / ".last.pt.q9w8e7r6.tmp"       # a SIGKILL during a checkpoint
    stale.write_bytes(b"\0" * 4096)
    other = out / "checkpoints" / ".mine.tmp"
    other.write_text("mine")
    assert main(_train_argv(data, out, steps=4)) == 0
    assert not stale.exists() and other.read_text() == "mine"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4
