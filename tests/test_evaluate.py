"""evaluate/compare run methods over a dataset and tabulate DPDD-style metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dplab.data import DPDDDataset, write_png
from dplab.eval.evaluate import Table, compare, evaluate, method_parameters
from dplab.eval.tables import format_table
from dplab.metrics.image import mae, psnr, ssim


def make_data(n=3, h=20, w=26):
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(n):
        sharp = torch.rand(3, h, w, generator=g)
        data.append({"name": f"im{i}", "sharp": sharp, "combined": (sharp + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1)})
    return data


def test_evaluate_rows_and_mean_match_the_metrics():
    data = make_data()
    table = evaluate(lambda batch: batch["combined"], data, name="identity")
    assert isinstance(table, Table) and len(table) == 4 and table[-1]["image"] == "mean"
    for row, sample in zip(table[:-1], data):
        p, t = sample["combined"][None], sample["sharp"][None]
        assert row["image"] == sample["name"]
        assert row["psnr"] == pytest.approx(psnr(p, t).item())
        assert row["ssim"] == pytest.approx(ssim(p, t).item())
        assert row["mae"] == pytest.approx(mae(p, t).item())
        assert row["time_s"] >= 0
    assert table.mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in table[:-1]]))
    assert table.params is None and table.method == "identity"
    text = str(table)
    assert "identity" in text and "mean" in text and "psnr" in text


def test_evaluate_a_module_counts_parameters_and_clips():
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(2.0)  # predicts 2 everywhere: clipped to 1
    data = make_data(2)
    table = evaluate(lambda b, m=model: m(b["combined"]), data, name="const")
    assert table.params is None
    wrapped = type("Method", (), {"model": model, "__call__": lambda self, b: model(b["combined"])})()
    assert method_parameters(wrapped) == 84 == method_parameters(model)
    assert method_parameters(type("P", (), {"parameters": lambda self: model.parameters()})()) == 84
    clipped = evaluate(wrapped, data)
    expected = mae(torch.ones(1, 3, 20, 26), data[0]["sharp"][None]).item()
    assert clipped[0]["mae"] == pytest.approx(expected)
    unclipped = evaluate(wrapped, data, clip=False)
    assert unclipped[0]["mae"] > clipped[0]["mae"]


def test_evaluate_crops_to_a_multiple_and_reads_dict_outputs():
    data = make_data(1, h=21, w=35)
    seen = []

    def method(batch):
        seen.append(tuple(batch["combined"].shape))
        return {"sharp": batch["combined"], "left": None}

    table = evaluate(method, data, crop_multiple=16, warmup=0)
    assert seen == [(1, 3, 16, 32)] and len(table) == 2
    with pytest.raises(KeyError, match="out"):
        evaluate(method, data, output_key="out", warmup=0)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda b: b["combined"][..., :-1], data, warmup=0)
    with pytest.raises(KeyError, match="ground truth"):
        evaluate(lambda b: b["combined"], [{"combined": torch.zeros(3, 8, 8), "name": "x"}])


def test_evaluate_on_a_dpdd_layout_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for i in ("a", "b"):
        sharp = rng.integers(0, 65536, (16, 24, 3)).astype(np.uint16)
        write_png(tmp_path / "test_c/target" / f"{i}.png", sharp)
        write_png(tmp_path / "test_c/source" / f"{i}.png", (sharp // 2).astype(np.uint16))
    table = evaluate(lambda b: b["combined"], DPDDDataset("test", root=tmp_path, views=False), max_images=1)
    assert [r["image"] for r in table] == ["a", "mean"] and 0 < table.mean["ssim"] < 1


def test_compare_gives_one_row_per_method():
    data = make_data(2)
    model = torch.nn.Identity()
    table = compare({"identity": lambda b: b["combined"], "net": lambda b: model(b["combined"]) * 0}, data)
    assert [r["method"] for r in table] == ["identity", "net"]
    assert table[0]["psnr"] > table[1]["psnr"]
    assert table.details["net"].mean["mae"] == pytest.approx(table[1]["mae"])
    assert "method" in table.format()
    assert format_table([]) == "(empty table)"
    with pytest.raises(ValueError, match="empty"):
        compare({}, data)


def test_a_registry_network_is_fed_its_declared_inputs_and_counted():
    from dplab.eval.zoo import NetworkMethod
    from dplab.models import build, count_parameters

    torch.manual_seed(0)
    net = build("dpdnet", widths=(4, 4, 4, 4)).eval()
    data = [{"name": "a", "left": torch.full((3, 16, 16), 0.2), "right": torch.full((3, 16, 16), 0.3),
             "sharp": torch.full((3, 16, 16), 0.5)}]
    table = evaluate(NetworkMethod(net), data)
    with torch.no_grad():
        expected = net(torch.cat([data[0]["left"], data[0]["right"]])[None]).clamp(0, 1)
    assert table.params == count_parameters(net)
    assert table.mean["mae"] == pytest.approx(float((expected - 0.5).abs().mean()), abs=1e-7)
