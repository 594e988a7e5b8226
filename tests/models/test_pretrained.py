"""The shipped CPU-trained weights: each file loads, matches its card, stays small, and still
deblurs: on held-out images re-rendered here (the synthetic generator is deterministic by
seed and index), every network beats the blurred input by its card's gain minus 0.5 dB. A
change to a model, to the renderer or to the data pipeline that breaks the weights fails here.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from dplab.cli.weights import CHECK_IMAGES, training_wall_s
from dplab.metrics.image import psnr, ssim
from dplab.book.showcase import showcase
from dplab.eval.heldout import heldout_samples
from dplab.eval.zoo import NetworkMethod
from dplab.models.shipped import (DATASETS, SHIPPED, WEIGHTS_DIR, datasets_of, list_pretrained, load_card, pretrained,
                                  sha256_file)

pytestmark = pytest.mark.usefixtures("one_thread")

MB = 1 << 20


_DATA = os.environ.get("DPLAB_DATA")
HAVE_PIXEL4 = bool(_DATA) and (Path(_DATA) / "xin_pixel4_dp" / "calibration").is_dir()


@pytest.fixture(scope="module")
def heldout():
    """The first CHECK_IMAGES images of each held-out set, rendered once per module."""
    cache = {}

    def samples(dataset):
        if "pixel4" in DATASETS[dataset] and not HAVE_PIXEL4:
            pytest.skip("the Pixel 4 held-out set is rendered with the release's calibration: "
                        "set DPLAB_DATA to a folder holding xin_pixel4_dp/")
        if dataset not in cache:
            cache[dataset] = heldout_samples(range(CHECK_IMAGES), dataset)
        return cache[dataset]

    return samples


def test_every_recipe_ships():
    assert list_pretrained() == sorted(SHIPPED), "run `make weights` and commit dplab/weights/"


def test_sizes_stay_within_the_budget():
    sizes = {n: (WEIGHTS_DIR / f"{n}.pt").stat().st_size for n in list_pretrained()}
    assert all(s <= 8 * MB for s in sizes.values()), sizes
    assert sum(sizes.values()) <= 40 * MB


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_is_complete_and_matches_the_file(name):
    card = load_card(name)
    path = WEIGHTS_DIR / card["file"]
    assert sha256_file(path) == card["sha256"] and path.stat().st_size == card["bytes"]
    for key in ("model_spec", "commands", "data", "steps", "train_wall_s", "machine", "dplab_commit",
                "heldout", "check"):
        assert key in card, key
    assert card["commands"]["train"].startswith("python -m dplab train ")
    assert card["heldout"]["images"] == 48 and card["check"]["images"] == CHECK_IMAGES
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_network_still_beats_the_blurred_input(name, heldout):
    card = load_card(name)
    method = NetworkMethod(pretrained(name))
    gains, ssim_gains = [], []
    with torch.no_grad():
        for b in heldout(datasets_of(name)[1]):
            out = method(b).clamp(0, 1)
            gains.append(float(psnr(out, b["sharp"]) - psnr(b["combined"], b["sharp"])))
            ssim_gains.append(float(ssim(out, b["sharp"]) - ssim(b["combined"], b["sharp"])))
    gain = sum(gains) / len(gains)
    # The card's "check" numbers were measured by `make weights` on these same images.
    assert gain >= card["check"]["gain_psnr"] - 0.5, f"{name}: {gain:+.2f} dB, card {card['check']['gain_psnr']:+.2f}"
    assert gain == pytest.approx(card["check"]["gain_psnr"], abs=0.05)
    assert sum(ssim_gains) / len(ssim_gains) > 0


#: Shipped networks that miss the +1.5 dB target at the CPU budget they were trained with
#: (MDP, 10,000 steps at lr 1e-3: +1.31 dB): it beats the blurred input (PSNR and SSIM) but by
#: less; see dplab/weights/README.md. Listed so that the shortfall is visible and a retrain that
#: reaches the target turns the strict xfail below into a failure to update this list.
BELOW_TARGET = {"mdp"}
TARGET_GAIN_DB = 1.5


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_cards_show_a_gain_over_the_blurred_input(name):
    """On the 48 held-out images every shipped network beats the blurred input in PSNR and
    SSIM, and the card's gain is its PSNR minus the input's."""
    h = load_card(name)["heldout"]
    assert h["gain_psnr"] > (0.5 if name in BELOW_TARGET else TARGET_GAIN_DB) and h["gain_ssim"] > 0
    assert h["network"]["psnr"] == pytest.approx(h["blurred_input"]["psnr"] + h["gain_psnr"], abs=1e-3)


@pytest.mark.parametrize("name", sorted(BELOW_TARGET))
@pytest.mark.xfail(strict=True, reason="MDP: below +1.5 dB at the CPU budget it was trained with")
def test_single_image_networks_reach_the_target(name):
    assert load_card(name)["heldout"]["gain_psnr"] >= TARGET_GAIN_DB


def test_dual_pixel_input_beats_its_single_image_twin():
    """DPDNet's claim (ECCV 2020, Table 2): the two DP views deblur better than one image."""
    dp, single = load_card("dpdnet")["heldout"], load_card("dpdnet_single")["heldout"]
    assert dp["network"]["psnr"] > single["network"]["psnr"]


def test_a_file_that_does_not_match_its_card_is_refused(tmp_path):
    shutil.copy(WEIGHTS_DIR / "dpdnet.json", tmp_path / "dpdnet.json")
    state = torch.load(WEIGHTS_DIR / "dpdnet.pt", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1
    torch.save(state, tmp_path / "dpdnet.pt")
    with pytest.raises(ValueError, match="sha256"):
        pretrained("dpdnet", weights_dir=tmp_path)
    (tmp_path / "dpdnet.pt").unlink()
    with pytest.raises(FileNotFoundError, match="make weights"):
        pretrained("dpdnet", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="shipped"):
        pretrained("resnet")


def test_training_wall_time_sums_resumed_segments(tmp_path):
    """log.csv's time_s restarts at each resume: 10 s, then 4 s more after a resume = 14 s."""
    rows = ["kind,step,epoch,lr,loss,time_s", "train,1,0,1,1,5.0", "train,2,0,1,1,10.0",
            "val,2,0,,,", "train,3,0,1,1,2.0", "train,4,0,1,1,4.0"]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    assert training_wall_s(tmp_path / "log.csv") == 14.0


def test_cards_record_the_commands_that_the_builder_runs():
    from dplab.models.shipped import train_argv

    for name in SHIPPED:
        card = load_card(name)
        train_set, heldout_set = datasets_of(name)
        assert card["commands"]["train"] == "python -m dplab " + " ".join(train_argv(name, f"DATA/{train_set}", "RUN"))
        assert card["data"] == {**card["data"], "train": DATASETS[train_set], "heldout": DATASETS[heldout_set]}
        assert json.loads(json.dumps(card)) == card


def test_showcase_scores_what_it_shows():
    import matplotlib

    matplotlib.use("agg")
    fig, scores = showcase(["dpdnet"], index=0)
    sample = heldout_samples(0)[0]
    assert scores["blurred input"] == pytest.approx(float(psnr(sample["combined"], sample["sharp"])[0]))
    assert len(fig.axes) == 3


def test_readme_table_agrees_with_the_cards():
    """The README copies each card's held-out PSNR and gain; they must agree to the digit."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) dB \| ([+-][\d.]+) dB \|", text, flags=re.M)
    assert {name for name, _, _ in rows} == set(SHIPPED)
    for name, value, gain in rows:
        h = load_card(name)["heldout"]
        assert (value, gain) == (f"{h['network']['psnr']:.2f}", f"{h['gain_psnr']:+.2f}"), name


def test_held_out_helpers_refuse_impossible_input():
    from dplab.eval.heldout import comparison
    with pytest.raises(ValueError, match="indices"):
        heldout_samples(48)
    with pytest.raises(ValueError, match="indices"):
        heldout_samples([-1])
    with pytest.raises(ValueError, match="same"):
        comparison({"a": {"psnr": [1.0]}, "b": {"psnr": [1.0, 2.0]}}, "a", "b")
    with pytest.raises(ValueError, match="shipped"):
        load_card("nope")
