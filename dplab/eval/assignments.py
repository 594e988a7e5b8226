"""The book's three graded assignments: what each asks, its givens and its reference answers.

One assignment per part of the book, each a notebook in ``book/assignments/`` whose notebook
metadata names it (``{"dplab": {"assignment": NAME}}``):

* ``image_formation``: signed circles of confusion of a thin lens (RDPD, Abuolaim et al.
  ICCV 2021, Eq. 1), its inverse, and the disparity of a rendered DP pair of a point (RDPD
  Sec. 2.2, the Butterworth PSF of Eqs. 2-4);
* ``optimisation``: two-view Wiener deconvolution of a DP pair (Xin et al. ICCV 2021,
  supplement Eq. 27), the defocus hypothesis of least energy (supplement Eq. 26) with and
  without the bias correction (main paper Eq. 5), and the PSNR gain over the blurred input;
* ``networks``: a shipped DPDNet (Abuolaim and Brown, ECCV 2020) on held-out synthetic
  images: PSNR of the input and of the output, the gain, the images won, the parameters.

The notebook and the grader share the problem (the givens and :func:`optimisation_problem`,
:func:`heldout_indices`); the reference answers are computed here, independently of the
notebook's solution cells: closed forms for ``image_formation``, numpy FFTs of Eqs. 26-27 and
Eq. 5 for ``optimisation``, :func:`dplab.eval.heldout.heldout_scores` and the U-Net's
parameter count in closed form for ``networks``. :mod:`dplab.eval.grading` runs a notebook
and compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dplab._validate import require_number, require_positive
from dplab.eval.heldout import heldout_scores
from dplab.models.shipped import load_card
from dplab.optics.psf import butterworth_dp
from dplab.render.scenes import load_image
from dplab.xin.bias import PHI2
from dplab.xin.noise_bias import periodic_blur

__all__ = ["Question", "Assignment", "ASSIGNMENTS", "HELDOUT_IMAGES", "assignment", "as_number",
           "record_answers", "optimisation_problem", "heldout_indices", "dpdnet_parameters"]

#: Held-out images the ``networks`` assignment scores, per profile.
HELDOUT_IMAGES = {"test": 3, "book": 12, "full": 48}


@dataclass(frozen=True)
class Question:
    """One graded answer: the key it is recorded under, what it asks, its points and the
    absolute tolerance within which it earns them."""

    key: str
    text: str
    points: int
    tolerance: float
    unit: str = ""


@dataclass(frozen=True)
class Assignment:
    """An assignment: its name (the notebook metadata's), title, givens (the literals of its
    notebook's ``parameters`` cell, which the grader passes again), questions, and
    ``reference(givens, profile) -> {key: value}``."""

    name: str
    title: str
    givens: dict
    questions: tuple
    reference: Callable

    @property
    def keys(self) -> list[str]:
        return [q.key for q in self.questions]

    @property
    def max_points(self) -> int:
        return sum(q.points for q in self.questions)


def as_number(value) -> float | None:
    """``value`` as one float (a number, or a one-element tensor, array or list), else None.

    Example:
        >>> as_number(torch.tensor([2.5])), as_number("2.5"), as_number([1.0, 2.0]), as_number(True)
        (2.5, None, None, None)
    """
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(arr.reshape(())) if arr.size == 1 else None


def record_answers(chapter, name: str, answers: dict) -> None:
    """Record a notebook's answers under the assignment's keys and print what is still open.

    An answer left at None is skipped (it scores 0, the others still count); a value that is
    not one finite number is recorded as text, which the grader marks "not a number".

    Args:
        chapter: the notebook's :class:`dplab.book.chapter.Chapter` (anything with
            ``record(key, value, glue=False)``).
        name: the assignment's name.
        answers: ``{key: value}``; every key must be one of the assignment's.

    Raises:
        ValueError: an unknown assignment, or a key the assignment does not ask for.
    """
    spec = assignment(name)
    unknown = sorted(set(answers) - set(spec.keys))
    if unknown:
        raise ValueError(f"answers has keys that assignment {name!r} does not ask for: {unknown}; "
                         f"its keys are {spec.keys}")
    lines = []
    for q in spec.questions:
        value = answers.get(q.key)
        number = as_number(value)
        if value is None:
            lines.append(f"{q.key}: not answered yet")
            continue
        if number is None or not math.isfinite(number):
            chapter.record(q.key, f"not a number: {value!r}"[:200], glue=False)
            lines.append(f"{q.key}: recorded, but it is not one finite number ({type(value).__name__})")
        else:
            chapter.record(q.key, number, glue=False)
            lines.append(f"{q.key}: recorded")
    print("\n".join(lines))


def assignment(name: str) -> Assignment:
    """The :class:`Assignment` called ``name`` (a key of :data:`ASSIGNMENTS`)."""
    if name not in ASSIGNMENTS:
        raise ValueError(f"no assignment {name!r}; the assignments are {sorted(ASSIGNMENTS)}")
    return ASSIGNMENTS[name]


# ----------------------------------------------------------------------------- image formation
def _image_formation_reference(g: dict, profile: str) -> dict:
    """RDPD Eq. 1 by hand, its inverse, and the left-minus-right centroid of the PSF pair."""
    f, n, s = g["focal_length_mm"] * 1e-3, g["f_number"], g["focus_distance_m"]
    coc_inf_px = f * f / (2 * n * (s - f)) / (g["pixel_pitch_um"] * 1e-6)   # r = A (d - s) / d
    far = coc_inf_px * (g["depth_far_m"] - s) / g["depth_far_m"]
    near = coc_inf_px * (g["depth_near_m"] - s) / g["depth_near_m"]
    depth = s / (1 - g["target_coc_px"] / coc_inf_px)
    # A rendered point is the PSF itself: its views' centroids are the kernels' (convolution).
    k_left, k_right = (k.double().numpy() for k in butterworth_dp(far))
    x = np.arange(k_left.shape[-1])
    centroid = [float((k.sum(0) * x).sum() / k.sum()) for k in (k_left, k_right)]
    return {"q1_coc_far_px": far, "q2_coc_near_px": near, "q3_depth_m": depth,
            "q4_disparity_px": centroid[0] - centroid[1]}


# ----------------------------------------------------------------------------- optimisation
def optimisation_problem(scene_name: str, image_px: int, kernel_px: int, true_radius_px: float,
                         noise_sigma: float, radii_px, seed: int) -> dict:
    """The DP pair of the ``optimisation`` assignment (Xin et al. supplement Eqs. 19-20).

    A gray photo (:func:`dplab.render.scenes.load_image`) blurred periodically
    (:func:`dplab.xin.noise_bias.periodic_blur`) by the Butterworth DP PSF pair of radius
    ``true_radius_px`` (RDPD Eqs. 2-4), plus white noise of std ``noise_sigma`` on each view
    drawn from ``torch.Generator().manual_seed(seed)``; float64 throughout.

    Args:
        scene_name: a bundled photo.
        image_px: side of the square image.
        kernel_px: odd side of the kernels.
        true_radius_px: CoC radius of the blur (> 0).
        noise_sigma: noise std of each view (>= 0).
        radii_px: ``(min, max, step)`` of the hypotheses' radii, all > 0.
        seed: seed of the noise.

    Returns:
        ``{"sharp", "left", "right"}`` as ``(1, 1, N, N)`` tensors, ``"radii"`` ``(D,)`` and
        ``"k_left"``, ``"k_right"`` ``(D, K, K)``: the hypotheses' kernel pairs.

    Example:
        >>> p = optimisation_problem("gravel", 32, 9, 2.0, 0.01, (1.0, 3.0, 1.0), 0)
        >>> p["left"].shape, p["k_left"].shape, p["radii"].tolist()
        (torch.Size([1, 1, 32, 32]), torch.Size([3, 9, 9]), [1.0, 2.0, 3.0])
    """
    lo, hi, step = (float(require_positive("radii_px", v)) for v in radii_px)
    if hi < lo:
        raise ValueError(f"radii_px must be (min, max, step) with max >= min, got {tuple(radii_px)}")
    sigma = float(require_positive("noise_sigma", noise_sigma, allow_zero=True))
    f64 = torch.float64
    sharp = load_image(scene_name, (image_px, image_px)).mean(1, keepdim=True).to(f64)
    radii = torch.arange(lo, hi + 1e-9, step, dtype=f64)
    k_left, k_right = butterworth_dp(radii, size=kernel_px, dtype=f64)
    true_l, true_r = butterworth_dp(float(require_positive("true_radius_px", true_radius_px)),
                                    size=kernel_px, dtype=f64)
    gen = torch.Generator().manual_seed(int(require_number("seed", seed, integer=True)))
    left = periodic_blur(sharp, true_l) + sigma * torch.randn(sharp.shape, generator=gen, dtype=f64)
    right = periodic_blur(sharp, true_r) + sigma * torch.randn(sharp.shape, generator=gen, dtype=f64)
    return {"sharp": sharp, "left": left, "right": right, "radii": radii, "k_left": k_left, "k_right": k_right}


def _spectrum(k: np.ndarray, n: int) -> np.ndarray:
    """DFT of kernels zero-padded to ``n x n`` with their centre moved to the origin."""
    pad = np.zeros(k.shape[:-2] + (n, n))
    pad[..., :k.shape[-2], :k.shape[-1]] = k
    return np.fft.fft2(np.roll(pad, (-(k.shape[-2] // 2), -(k.shape[-1] // 2)), axis=(-2, -1)))


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((np.clip(x, 0, 1) - ref) ** 2)))


def _optimisation_reference(g: dict, profile: str) -> dict:
    """Eq. 27 (Wiener), Eq. 26 (energy, mean per pixel) and Eq. 5 (bias) with numpy FFTs.

    For unit-sum views the regulariser is ``sigma^2 |Phi|^2``; dplab's views sum to 1/2, so
    it is scaled by ``s^2`` with ``s`` the mean kernel sum (Xin et al. Sec. 4.3 constants).
    """
    p = optimisation_problem(g["scene_name"], g["image_px"], g["kernel_px"], g["true_radius_px"],
                             g["noise_sigma"], (g["radius_min_px"], g["radius_max_px"], g["radius_step_px"]),
                             g["seed"])
    n, sigma2 = g["image_px"], g["noise_sigma"] ** 2
    sharp, left, right = (p[k][0, 0].numpy() for k in ("sharp", "left", "right"))
    il, ir = np.fft.fft2(left), np.fft.fft2(right)
    kls, krs = p["k_left"].numpy(), p["k_right"].numpy()
    radii = p["radii"].numpy()

    def wiener(kl, kr):
        Kl, Kr = _spectrum(kl, n), _spectrum(kr, n)
        eps = sigma2 * PHI2 * (0.5 * (kl.sum() + kr.sum())) ** 2
        num = np.conj(Kl) * il + np.conj(Kr) * ir
        den = np.abs(Kl) ** 2 + np.abs(Kr) ** 2 + eps
        energy = float(np.sum(np.abs(il) ** 2 + np.abs(ir) ** 2 - np.abs(num) ** 2 / den)) / n ** 4
        bias = sigma2 * float(np.mean(eps / den))
        return np.real(np.fft.ifft2(num / den)), energy, bias

    blurred = _psnr(left + right, sharp)
    true_l, true_r = (k.numpy() for k in butterworth_dp(float(g["true_radius_px"]), size=g["kernel_px"],
                                                         dtype=torch.float64))
    runs = [wiener(kls[d], krs[d]) for d in range(len(radii))]
    energy = np.array([r[1] for r in runs])
    corrected = energy - np.array([r[2] for r in runs])
    best = int(np.argmin(corrected))
    return {"q1_psnr_blurred_db": blurred,
            "q2_psnr_wiener_true_db": _psnr(wiener(true_l, true_r)[0], sharp),
            "q3_radius_uncorrected_px": float(radii[int(np.argmin(energy))]),
            "q4_radius_corrected_px": float(radii[best]),
            "q5_gain_db": _psnr(runs[best][0], sharp) - blurred}


# ----------------------------------------------------------------------------- networks
def heldout_indices(profile: str) -> list[int]:
    """The held-out images (of :func:`dplab.eval.heldout.heldout_samples`) the ``networks``
    assignment scores in ``profile``: the first :data:`HELDOUT_IMAGES` ``[profile]``.

    Example:
        >>> heldout_indices("test")
        [0, 1, 2]
    """
    if profile not in HELDOUT_IMAGES:
        raise ValueError(f"profile must be one of {sorted(HELDOUT_IMAGES)}, got {profile!r}")
    return list(range(HELDOUT_IMAGES[profile]))


def dpdnet_parameters(in_channels: int, widths, head: str = "paper") -> int:
    """DPDNet's parameter count in closed form (Abuolaim and Brown, ECCV 2020, Fig. 3): two 3x3
    convolutions per encoder level and in the bottleneck (``2 w4``), a 2x2 up-convolution and two
    3x3 convolutions per decoder level, and the head (the authors': 3x3 to 3 channels, then 1x1;
    ``"residual"``: one 3x3 to 3 channels).

    Example:
        >>> dpdnet_parameters(6, (64, 128, 256, 512))    # the paper's DP network
        31035151
    """
    def conv(a, b, k):
        return a * b * k * k + b

    w1, w2, w3, w4 = widths
    total = sum(conv(a, b, 3) + conv(b, b, 3) for a, b in
                ((in_channels, w1), (w1, w2), (w2, w3), (w3, w4), (w4, 2 * w4)))
    total += sum(conv(a, b, 2) + conv(2 * b, b, 3) + conv(b, b, 3) for a, b in
                 ((2 * w4, w4), (w4, w3), (w3, w2), (w2, w1)))
    return total + conv(w1, 3, 3) + (conv(3, 3, 1) if head == "paper" else 0)


def _networks_reference(g: dict, profile: str) -> dict:
    """The cards' protocol (:func:`dplab.eval.heldout.heldout_scores`) and the closed-form count."""
    name = g["network"]
    spec = load_card(name)["model_spec"]
    kwargs = spec.get("kwargs", {})
    if spec["name"] != "dpdnet" or kwargs.get("in_channels", 6) != 6:
        raise ValueError(f"network must be a shipped DPDNet with the DP input (dpdnet, dpdnet_pixel4), got {name!r}")
    scores = heldout_scores([name], heldout_indices(profile))
    inp, out = scores["blurred input"]["psnr"], scores[name]["psnr"]
    return {"q1_psnr_input_db": float(np.mean(inp)), "q2_psnr_network_db": float(np.mean(out)),
            "q3_gain_db": float(np.mean(out) - np.mean(inp)),
            "q4_wins": float(sum(o > i for o, i in zip(out, inp))),
            "q5_parameters": float(dpdnet_parameters(6, kwargs["widths"], kwargs.get("head", "paper")))}


_RUN = {"seed": 0}

ASSIGNMENTS = {a.name: a for a in (
    Assignment(
        "image_formation", "Assignment 1: image formation",
        {**_RUN, "focal_length_mm": 25.0, "f_number": 2.8, "focus_distance_m": 1.5, "pixel_pitch_um": 5.0,
         "depth_far_m": 4.0, "depth_near_m": 1.0, "target_coc_px": -12.0},
        (Question("q1_coc_far_px", "signed CoC radius of the far point", 2, 1e-3, "px"),
         Question("q2_coc_near_px", "signed CoC radius of the near point", 2, 1e-3, "px"),
         Question("q3_depth_m", "depth of the target CoC radius", 3, 1e-4, "m"),
         Question("q4_disparity_px", "disparity of the rendered DP pair", 3, 1e-2, "px")),
        _image_formation_reference),
    Assignment(
        "optimisation", "Assignment 2: optimisation",
        {**_RUN, "scene_name": "gravel", "image_px": 128, "kernel_px": 33, "true_radius_px": 6.0,
         "noise_sigma": 0.02, "radius_min_px": 1.0, "radius_max_px": 12.0, "radius_step_px": 1.0},
        (Question("q1_psnr_blurred_db", "PSNR of the blurred input", 2, 1e-2, "dB"),
         Question("q2_psnr_wiener_true_db", "PSNR of Wiener with the true kernels", 2, 1e-2, "dB"),
         Question("q3_radius_uncorrected_px", "radius of least energy, uncorrected", 2, 1e-6, "px"),
         Question("q4_radius_corrected_px", "radius of least energy, bias-corrected", 2, 1e-6, "px"),
         Question("q5_gain_db", "PSNR gain of the corrected estimate", 2, 1e-2, "dB")),
        _optimisation_reference),
    Assignment(
        "networks", "Assignment 3: networks",
        {**_RUN, "network": "dpdnet"},
        (Question("q1_psnr_input_db", "mean PSNR of the blurred input", 2, 1e-2, "dB"),
         Question("q2_psnr_network_db", "mean PSNR of the network", 2, 1e-2, "dB"),
         Question("q3_gain_db", "mean gain over the blurred input", 2, 1e-2, "dB"),
         Question("q4_wins", "images on which the network wins", 2, 0.0),
         Question("q5_parameters", "parameters of the network", 2, 0.0)),
        _networks_reference),
)}
