"""Checks for book/assignments/optimisation.ipynb (assignment 2): the reference solution earns every
point against the grader's numpy references (Xin et al. supplement Eqs. 26-27, Eq. 5), and the
story the assignment tells holds: the uncorrected minimum leaves the truth, the corrected one finds it."""

from dplab.eval.assignments import assignment
from dplab.eval.grading import score

MIN_FIGURES = 3  # the data, the energy curves, the estimates


def check(metrics, output_dir):
    spec = assignment("optimisation")
    results = score(spec, metrics, spec.reference(spec.givens, "test"))
    assert [r.status for r in results] == ["correct"] * len(results), [vars(r) for r in results]
    truth = spec.givens["true_radius_px"]
    assert metrics["q3_radius_uncorrected_px"] < truth - 1      # the noise bias pulls it to small kernels
    assert abs(metrics["q4_radius_corrected_px"] - truth) <= spec.givens["radius_step_px"]
    assert metrics["q2_psnr_wiener_true_db"] > metrics["q1_psnr_blurred_db"]
    assert metrics["q5_gain_db"] > 0
