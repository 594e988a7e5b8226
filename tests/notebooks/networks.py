"""Checks for book/assignments/networks.ipynb (assignment 3): the reference solution earns every
point against the grader's references (the cards' scoring protocol, the closed-form count)."""

import json
from pathlib import Path

from dplab.eval.assignments import HELDOUT_IMAGES, assignment
from dplab.eval.grading import score
from dplab.models import build, count_parameters

MIN_FIGURES = 1  # input, output and ground truth of one image


def check(metrics, output_dir):
    spec = assignment("networks")
    results = score(spec, metrics, spec.reference(spec.givens, "test"))
    assert [r.status for r in results] == ["correct"] * len(results), [vars(r) for r in results]
    # A second method for the count (the grader uses a closed form): build the card's network.
    card = json.loads((Path(__file__).resolve().parents[2] / "dplab" / "weights" / "dpdnet.json").read_text())
    kwargs = card["model_spec"]["kwargs"]
    net = build("dpdnet", widths=tuple(kwargs["widths"]), head=kwargs.get("head", "paper"))
    assert metrics["q5_parameters"] == count_parameters(net)
    assert abs(metrics["q3_gain_db"] - (metrics["q2_psnr_network_db"] - metrics["q1_psnr_input_db"])) < 1e-9
    assert 0 <= metrics["q4_wins"] <= HELDOUT_IMAGES["test"]
