"""``python -m dplab weights`` (``make weights``) on a tiny recipe: it renders the data, trains
with the recorded command, exports float16 weights, writes a complete card, and is
deterministic (two builds in two folders give the same bytes) and resumable."""

import json

import pytest
import torch

from dplab.cli.main import main
from dplab.models import shipped
from dplab.models.shipped import load_card, pretrained, sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = {
    "train": ["--count", "4", "--seed", "0", "--size", "32x48", "--coc-gain", "8",
              "--split-fractions", "1", "0", "0"],
    "heldout": ["--count", "3", "--seed", "1000", "--size", "32x48", "--coc-gain", "8",
                "--split-fractions", "0", "0", "1"],
}
TINY_NET = {"dpdnet": {"about": "tiny DPDNet for the builder test",
                       "train": ["--model", "dpdnet", "--recipe", "dpdnet", "--widths", "4", "4", "4", "4",
                                 "--option", "head=residual", "--lr", "1e-3", "--steps", "3",
                                 "--patch", "32", "--batch-size", "2", "--schedule", "cosine", "--cache",
                                 "--seed", "0"]}}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(shipped, "DATASETS", TINY_DATA)
    monkeypatch.setattr(shipped, "SHIPPED", TINY_NET)


def _build(tmp_path, name):
    work, weights = tmp_path / name / "work", tmp_path / name / "weights"
    assert main(["weights", "--work", str(work), "--weights-dir", str(weights)]) == 0
    return work, weights


def test_builder_writes_weights_and_a_complete_card_deterministically(tiny, tmp_path, capsys):
    work, weights = _build(tmp_path, "a")
    card = load_card("dpdnet", weights)
    assert card["steps"] == 3 and card["model_spec"] == {"name": "dpdnet",
                                                         "kwargs": {"head": "residual", "widths": [4, 4, 4, 4]}}
    assert card["sha256"] == sha256_file(weights / "dpdnet.pt")
    assert card["commands"]["train"].startswith("python -m dplab train --model dpdnet")
    assert card["heldout"]["images"] == 3 and "gain_psnr" in card["heldout"]
    assert card["train_wall_s"] > 0 and card["machine"]["cpu_count"] >= 1
    state = torch.load(weights / "dpdnet.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values())
    net = pretrained("dpdnet", weights_dir=weights)
    assert not net.training and net.dplab_card["name"] == "dpdnet"
    # the card's numbers are those of the returned network on the held-out files
    from dplab.cli.weights import score_heldout
    again = score_heldout(net, work / "data" / "heldout")
    again.pop("time_s_per_image")
    assert again == {k: card["heldout"][k] for k in again}
    # a second build from scratch elsewhere gives the same bytes
    _, weights_b = _build(tmp_path, "b")
    assert sha256_file(weights_b / "dpdnet.pt") == card["sha256"]
    # run again in the same folder: resumes (nothing retrained), same file
    capsys.readouterr()
    _build(tmp_path, "a")
    assert sha256_file(weights / "dpdnet.pt") == card["sha256"]
    assert "step 3 of 3" in capsys.readouterr().out


def test_builder_refuses_what_it_cannot_do(tiny, tmp_path, capsys):
    assert main(["weights", "--work", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err
    assert main(["weights", "--work", str(tmp_path / "w"), "--weights-dir", str(tmp_path / "x"),
                 "--score-only"]) == 2
    assert "no finished run" in capsys.readouterr().err
    json.dumps(TINY_NET)
