"""Checks for book/assignments/image_formation.ipynb (assignment 1): the reference solution earns
every point against the grader's references, and its answers match RDPD Eq. 1 worked by hand."""

import math

from dplab.eval.assignments import assignment
from dplab.eval.grading import score

MIN_FIGURES = 1  # the rendered DP pair of the point


def check(metrics, output_dir):
    spec = assignment("image_formation")
    results = score(spec, metrics, spec.reference(spec.givens, "test"))
    assert [r.status for r in results] == ["correct"] * len(results), [vars(r) for r in results]
    # By hand: 25 mm f/2.8 focused at 1.5 m, 5 um pixels: A = f^2 / (2 N (s - f)) / p = 15.13 px.
    a = 0.025 ** 2 / (2 * 2.8 * 1.475) / 5e-6
    assert math.isclose(metrics["q1_coc_far_px"], a * 2.5 / 4, rel_tol=1e-9)
    assert math.isclose(metrics["q2_coc_near_px"], -a * 0.5, rel_tol=1e-9)
    assert math.isclose(metrics["q3_depth_m"], 1.5 / (1 + 12 / a), rel_tol=1e-9)
    # Behind focus the left view moves to -x; the Butterworth PSF's disparity lies between 0 and
    # the ideal half-discs' -8 r / (3 pi) (its rim and ramp keep light on the other side).
    r = metrics["q1_coc_far_px"]
    assert -8 * r / (3 * math.pi) < metrics["q4_disparity_px"] < 0
