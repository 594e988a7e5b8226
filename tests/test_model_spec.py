"""Self-describing checkpoints: build() records its spec, the Trainer saves it, from_checkpoint
rebuilds the network (dplab.models.from_checkpoint)."""

from __future__ import annotations

import pytest
import torch

from dplab.models import build, count_parameters, from_checkpoint, list_models, model_spec
from dplab.training.checkpoints import load_checkpoint
from dplab.training.trainer import Trainer

# Tiny options for every registry name (the test fails if a name is added without one).
TINY = {
    "dpdnet": {"widths": (4, 4, 8, 8)},
    "dpdnet_single": {"widths": (4, 4, 8, 8), "dropout": 0.0},
    "rdpd": {"widths": (4, 4, 4, 4), "lstm_channels": 4},
    "rspd": {"widths": (4, 4, 4, 8), "lstm_channels": 4, "peephole": False},
    "drbnet": {"width": 4},
    "drbnet_dual": {"width": 4, "kernel_size": 5},
    "mdp": {"width": 0.0625, "stitching": "late"},
    "mdp_single_task": {"width": 0.0625, "task": "views"},
}


def _outputs(model, x):
    out = model(x)
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for t in out if t is not None]


def test_every_registered_model_has_tiny_options():
    assert sorted(TINY) == list_models()


@pytest.mark.parametrize("name", sorted(TINY))
def test_round_trip_rebuilds_the_same_network(name, tmp_path):
    torch.manual_seed(0)
    net = build(name, **TINY[name]).eval()
    spec = model_spec(net)
    assert spec["name"] == name
    # tuples are recorded as lists (weights_only-safe), everything else as given
    assert spec["kwargs"] == {k: list(v) if isinstance(v, tuple) else v for k, v in TINY[name].items()}
    path = tmp_path / "c.pt"
    torch.save({"model": net.state_dict(), "model_spec": spec}, path)
    again = from_checkpoint(path)
    assert type(again) is type(net) and not again.training
    assert count_parameters(again) == count_parameters(net)
    assert model_spec(again) == spec
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    x = torch.rand(1, net.in_channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(_outputs(net, x), _outputs(again, x)):
            assert torch.allclose(a, b, atol=1e-6)


def test_trainer_checkpoints_carry_the_spec(tmp_path):
    torch.manual_seed(0)
    net = build("dpdnet_single", widths=(4, 4, 4, 4))
    data = [{"combined": torch.rand(3, 16, 16), "sharp": torch.rand(3, 16, 16)} for _ in range(4)]
    trainer = Trainer(net, lambda p, b: torch.nn.functional.mse_loss(p, b["sharp"]), data,
                      {"max_steps": 2, "batch_size": 2, "progress": False, "checkpoint_every": 0},
                      output_dir=tmp_path, forward=lambda m, b: m(b["combined"]))
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["model_spec"] == {"name": "dpdnet_single", "kwargs": {"widths": [4, 4, 4, 4]}}
    again = from_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_a_model_not_made_by_build_has_no_spec(tmp_path):
    assert model_spec(torch.nn.Conv2d(3, 3, 1)) is None
    net = torch.nn.Conv2d(3, 3, 1)
    trainer = Trainer(net, lambda p, b: p.mean(), [{"combined": torch.rand(3, 4, 4)}] * 2,
                      {"max_steps": 1, "batch_size": 2, "progress": False},
                      output_dir=tmp_path, forward=lambda m, b: m(b["combined"]))
    trainer.fit()
    assert "model_spec" not in load_checkpoint(tmp_path / "checkpoints" / "last.pt")


def test_missing_spec_says_to_rerun_what_trained_it(tmp_path):
    path = tmp_path / "outputs" / "dpdnet" / "train_dp" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": build("dpdnet", widths=(4, 4, 4, 4)).state_dict()}, path)
    with pytest.raises(ValueError, match=r"no 'model_spec'.*re-run what trained it"):
        from_checkpoint(path)
    torch.save({"step": 3}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no 'model' state dict"):
        from_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        from_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="model must be"):
        model_spec("dpdnet")
