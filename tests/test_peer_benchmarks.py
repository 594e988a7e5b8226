"""The peer references of the benchmark suite (benchmarks/peer_render.py, benchmarks/networks.py).

The renderer's peer is the RDPD generator procedure (RDPD Sec. 3, Eq. 6: per depth layer and
view, blur the whole image, keep the layer's pixels, sum), written with numpy/scipy. It must
give the same views as ``render_views(composite="hard_mask")`` for the same layers and
kernels (a second method for the same quantity), and on its own the closed forms of a point
source (the kernel itself, in convolution orientation) and of a flat image (the kernel's sum).
The networks' peer runs the same module the authors' way, so its output must be the output of
dplab's default path. No timing is asserted.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from harness import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_common  # noqa: E402
import networks  # noqa: E402
import peer_render  # noqa: E402
import suite  # noqa: E402
from dplab.render.layered import layer_psfs, render_views  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _layers(h=40, w=52, seed=0):
    """A random image, a label map of four layers (blocks and a disc) and their CoC values."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, h, w, generator=g)
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[: h // 2, w // 2:] = 1
    labels[h // 2:, : w // 3] = 2
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    labels[(yy - 0.6 * h) ** 2 + (xx - 0.6 * w) ** 2 < (0.2 * h) ** 2] = 3
    levels = torch.tensor([7.0, 2.5, 0.0, -4.0], dtype=torch.float64)  # back to front, one in focus
    return img, labels, levels


def test_peer_equals_render_views_hard_mask():
    img, labels, levels = _layers()
    coc = levels.float()[labels][None, None]
    left, right, coc_q = render_views(img, coc, composite="hard_mask")
    assert torch.equal(coc_q, coc)  # render_views found exactly these four layers
    kernels = [(kl.float().numpy(), kr.float().numpy()) for kl, kr in layer_psfs(levels)]
    assert [k[0].shape[0] for k in kernels][2] == 1  # the in-focus layer: a 1x1 kernel
    pl, pr = peer_render.rdpd_generator_views(img[0].numpy(), labels.numpy(), kernels)
    for ours, peer in ((left, pl), (right, pr)):
        diff = np.abs(ours[0].numpy() - peer).max()
        assert diff <= peer_render.TOLERANCE, diff
    # and the two views differ (a DP pair, not one blur twice)
    assert np.abs(pl - pr).max() > 1e-2


def test_peer_equals_render_views_hard_mask_on_the_benchmark_scene():
    """The timed scene (a slanted floor of full-width layers, a box and a disc): render_views
    takes the frame's shared x pass there; its output is still the peer's."""
    from dplab.render import engine

    img, cq, image, labels, kernels = peer_render.scene_inputs((200, 300), 20)
    halves = [k[0].shape[-1] // 2 for k in kernels]
    layer_of, boxes = engine._layer_pieces(*engine._row_extents(torch.from_numpy(labels), len(kernels)),
                                           halves, 300)
    chunks = engine.plan_chunks(boxes, [halves[i] for i in layer_of], (200, 300), 3, "hard_mask", 2**29,
                                layers=layer_of)
    plans = engine._windows(chunks, boxes, (200, 300), True, False)
    assert 1 in engine._frame_passes(plans, (200, 300), 3, max(halves))
    left, right, _ = render_views(img, cq, composite="hard_mask", max_layers=20)
    pl, pr = peer_render.rdpd_generator_views(image, labels, kernels)
    for ours, peer in ((left, pl), (right, pr)):
        assert np.abs(ours[0].numpy() - peer).max() <= peer_render.TOLERANCE


def test_peer_point_source_and_flat_image_closed_forms():
    rng = np.random.default_rng(0)
    k_left = rng.random((5, 5)).astype(np.float32)  # asymmetric: orientation matters
    k_right = rng.random((5, 5)).astype(np.float32)
    img = np.zeros((1, 15, 17), np.float32)
    img[0, 7, 8] = 1.0
    labels = np.zeros((15, 17), np.int64)
    left, right = peer_render.rdpd_generator_views(img, labels, [(k_left, k_right)])
    # convolution: a unit impulse at (7, 8) paints the kernel itself centred there, not its flip
    np.testing.assert_allclose(left[0, 5:10, 6:11], k_left, atol=1e-6)
    np.testing.assert_allclose(right[0, 5:10, 6:11], k_right, atol=1e-6)
    assert np.abs(left[0]).sum() == pytest.approx(k_left.sum(), rel=1e-5)
    # a flat image with replicated borders: the kernel's sum everywhere, corners included
    flat = np.full((2, 9, 11), 0.25, np.float32)
    two = np.where(np.arange(11)[None, :] < 5, 0, 1).repeat(9, 0)  # two layers, same kernel pair
    left, right = peer_render.rdpd_generator_views(flat, two, [(k_left, k_right)] * 2)
    np.testing.assert_allclose(left, 0.25 * k_left.sum(), rtol=1e-5)
    np.testing.assert_allclose(right, 0.25 * k_right.sum(), rtol=1e-5)


@pytest.mark.parametrize("image, labels, kernels, match", [
    (np.zeros((4, 4), np.float32), np.zeros((4, 4), int), [(np.ones((1, 1)),) * 2], "image"),
    (np.full((1, 4, 4), np.nan, np.float32), np.zeros((4, 4), int), [(np.ones((1, 1)),) * 2], "image"),
    (np.zeros((1, 4, 4), np.float32), np.zeros((4, 5), int), [(np.ones((1, 1)),) * 2], "labels"),
    (np.zeros((1, 4, 4), np.float32), np.ones((4, 4), int), [(np.ones((1, 1)),) * 2], r"labels must lie in \[0, 1\)"),
    (np.zeros((1, 4, 4), np.float32), np.zeros((4, 4), int), [(np.ones((2, 2)),) * 2], "odd square"),
    (np.zeros((1, 4, 4), np.float32), np.zeros((4, 4), int), [], "labels must lie"),
])
def test_peer_refuses_impossible_input(image, labels, kernels, match):
    with pytest.raises(ValueError, match=match):
        peer_render.rdpd_generator_views(image, labels, kernels)


def test_peer_render_rows_are_like_for_like():
    rows = peer_render.rows("cpu", (48, 64), 4, repeats=1)
    assert [r["benchmark"] for r in rows] == ["render_views hard_mask, 4 layers", "render_views alpha, 4 layers"]
    for r in rows:
        assert r["reference_kind"] == "peer" and r["reference"] == peer_render.PEER_LABEL
        assert r["size"] == "64x48 DP pair" and r["extrapolated"] is False
        assert r["ratio"] == pytest.approx(r["reference_seconds"] / r["seconds"], rel=1e-12)
    assert rows[0]["reference_seconds"] == rows[1]["reference_seconds"]  # one peer, timed once per round
    diff = float(rows[0]["note"].split("max |difference| ")[1].split()[0])
    assert diff <= peer_render.TOLERANCE and "within" in rows[0]["note"]
    with pytest.raises(ValueError, match="size"):
        peer_render.rows("cpu", (16, 64), 4)
    with pytest.raises(ValueError, match="repeats"):
        peer_render.side_by_side((48, 64), 4, repeats=0)


def test_peer_render_script_writes_a_record_with_the_load(tmp_path):
    path = tmp_path / "peer.json"
    argv = ["--size", "48", "64", "--layers", "3", "--repeats", "1", "--json", str(path), "--note", "two jobs ran"]
    assert peer_render.main(argv) == 0
    rec = json.loads(path.read_text())
    assert rec["note"] == "two jobs ran" and rec["command"].endswith("--note 'two jobs ran'")
    assert rec["size"] == [48, 64] and len(rec["rows"]) == 2 and rec["tolerance"] == peer_render.TOLERANCE
    assert f"{rec['load_average_start']:.2f}" in rec["conditions"]
    assert rec["conditions"].startswith("measured under load" if rec["under_load"] else "quiet machine")
    with pytest.raises(SystemExit):
        peer_render.main(["--layers", "0"])


def test_network_peer_has_the_same_output_and_the_paper_rows_are_apart():
    rows = networks.inference_rows("dpdnet", "cpu", (32, 48), model_cfg=suite.QUICK_MODELS["dpdnet"])
    peer, paper = rows
    assert (peer["reference_kind"], peer["reference"]) == ("peer", networks.PEER_LABEL)
    assert "max |output - peer's output| 0.0e+00" in peer["note"]  # the same module, the same arithmetic
    assert paper["reference_kind"] == "paper" and paper["reference"].startswith("paper:")
    assert paper["reference_seconds"] == networks.PAPER_SECONDS["dpdnet"][0] and paper["seconds"] == peer["seconds"]
    drb = networks.inference_rows("drbnet", "cpu", (32, 48), model_cfg=suite.QUICK_MODELS["drbnet"])
    assert [r["reference_kind"] for r in drb] == ["peer"]  # DRBNet's paper publishes no time
    no_paper = networks.inference_rows("rdpd", "cpu", (32, 48), model_cfg=suite.QUICK_MODELS["rdpd"], paper=False)
    assert [r["reference_kind"] for r in no_paper] == ["peer"]


def test_interleaved_best_times_alternates_the_order():
    calls = []
    fns = [lambda: calls.append("a") or 1, lambda: calls.append("b") or 2]
    times, outs = bench_common.interleaved_best_times(fns, "cpu", repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"] and outs == [1, 2] and len(times) == 2
    with pytest.raises(ValueError, match="repeats"):
        bench_common.interleaved_best_times(fns, "cpu", repeats=0)
