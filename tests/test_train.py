"""The Trainer: schedules, recipes, learning, checkpoints, exact resume after SIGKILL, DDP, and the
registry-driven inputs and losses it trains the book's networks with."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dplab.training.checkpoints import load_checkpoint
from dplab.training.monitor import TrainingDiverged
from dplab.training.recipes import DEFAULTS, RECIPES, lr_factor, recipe
from dplab.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

# A tiny deterministic problem, run in fresh processes by the kill/resume and torchrun tests.
SCRIPT = r'''
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from dplab.training.trainer import Trainer


def problem(n=16):
    g = torch.Generator().manual_seed(123)
    data = []
    for _ in range(n):
        x = torch.rand(3, 8, 8, generator=g)
        data.append({"combined": x, "sharp": 0.5 * x.flip(0) + 0.1})
    return data


def main(out, kill_at, steps, batch, dropout):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Dropout(dropout), torch.nn.Conv2d(8, 3, 3, padding=1))

    def stop(trainer, row):  # simulate a crash: signal the parent, then hang until killed
        if kill_at and trainer.step == kill_at:
            Path(out, "KILL_ME").write_text(str(os.getpid()))
            time.sleep(300)

    trainer = Trainer(
        model, lambda p, b: torch.nn.functional.mse_loss(p, b["sharp"]), problem(),
        {"max_steps": steps, "batch_size": batch, "lr": 1e-2, "checkpoint_every": 3, "seed": 5,
         "schedule": {"kind": "step", "every": 1, "gamma": 0.7}, "progress": False},
        output_dir=out, forward=lambda m, b: m(b["combined"]), callbacks=[stop])
    summary = trainer.fit()
    if trainer.rank == 0:
        Path(out, "losses.json").write_text(json.dumps([r["loss"] for r in summary["history"]]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
'''


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "train_tiny.py"
    path.write_text(SCRIPT)
    return path


def _run(script: Path, out: Path, kill_at=0, steps=10, batch=4, dropout=0.2, timeout=120):
    """Dropout makes the run depend on the global RNG, which a resume must restore."""
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at), str(steps), str(batch), str(dropout)],
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def _run_in_process(script: Path, out: Path, steps: int, batch: int, dropout: float) -> None:
    """Run the script's main() here (no interpreter start-up), restoring the thread count."""
    spec = importlib.util.spec_from_file_location("train_tiny", script)
    module = importlib.util.module_from_spec(spec)
    threads = torch.get_num_threads()
    try:
        spec.loader.exec_module(module)
        module.main(str(out), 0, steps, batch, dropout)
    finally:
        torch.set_num_threads(threads)


def _weights(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


# --- a tiny in-process problem -------------------------------------------------------------
def tiny_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"combined": (x := torch.rand(3, 6, 6, generator=g)), "sharp": 0.8 * x + 0.1} for _ in range(n)]


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 3, 3, padding=1)


def mse_loss(pred, batch):
    return torch.nn.functional.mse_loss(pred, batch["sharp"])


def forward(model, batch):
    return model(batch["combined"])


def make_trainer(tmp_path, config=None, **kwargs):
    cfg = {"epochs": 5, "batch_size": 4, "lr": 1e-2, "progress": False}
    cfg.update(config or {})
    kwargs.setdefault("forward", forward)
    return Trainer(kwargs.pop("model", None) or tiny_model(), kwargs.pop("loss_fn", mse_loss),
                   kwargs.pop("data", None) or tiny_data(), cfg, output_dir=tmp_path / "run", **kwargs)


# --- schedules and recipes -------------------------------------------------------------------
def test_lr_schedules():
    halve = {"kind": "step", "every": 60, "gamma": 0.5}
    assert [lr_factor(halve, e) for e in (0, 59, 60, 119, 120, 199)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    decay = {"kind": "linear_decay", "constant": 100, "decay": 100}
    assert lr_factor(decay, 99) == 1.0
    assert lr_factor(decay, 100) == pytest.approx(1 - 1 / 101)
    assert lr_factor(decay, 199) == pytest.approx(1 / 101)
    assert lr_factor(decay, 250) == 0.0
    assert lr_factor({"kind": "constant"}, 1000) == 1.0
    with pytest.raises(ValueError, match="kind"):
        lr_factor({"kind": "warmup"}, 0)
    # cosine: closed form 0.01 + 0.99 (1 + cos(pi t / T)) / 2, flat at the floor after T
    cosine = {"kind": "cosine", "total": 100}
    assert lr_factor(cosine, 0) == 1.0
    assert lr_factor(cosine, 50) == pytest.approx(0.505)
    assert lr_factor(cosine, 100) == pytest.approx(0.01) and lr_factor(cosine, 400) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="total"):
        lr_factor({"kind": "cosine"}, 0)
    with pytest.raises(ValueError, match="every"):
        lr_factor({"kind": "step", "every": 0}, 0)


def test_recipes_hold_the_papers_settings():
    assert (RECIPES["dpdnet"]["optimizer"], RECIPES["dpdnet"]["lr"], RECIPES["dpdnet"]["schedule"]["every"]) == ("adam", 2e-5, 60)
    assert (RECIPES["rdpd"]["lr"], RECIPES["rdpd"]["schedule"]["every"]) == (5e-5, 40)
    for name, lr in (("drbnet_lfdof", 1e-4), ("drbnet_dpdd", 1e-5)):
        r = RECIPES[name]
        assert r["optimizer"] == "radam" and tuple(r["betas"]) == (0.9, 0.99) and r["lr"] == lr
        assert r["schedule"]["kind"] == "linear_decay" and r["schedule"]["constant"] * 2 == r["epochs"]
    assert RECIPES["mdp_step1"]["lr"] == 3e-4
    assert (RECIPES["mdp_step2"]["lr"], RECIPES["mdp_step2"]["schedule"]["every"]) == (6e-4, 8)
    cfg = recipe("drbnet_dpdd", epochs=2)
    assert cfg["epochs"] == 2 and RECIPES["drbnet_dpdd"]["epochs"] == 100
    with pytest.raises(KeyError, match="dpdnet"):
        recipe("nope")


def test_every_recipe_is_accepted_by_the_trainer(tmp_path):
    for name in RECIPES:
        trainer = make_trainer(tmp_path / name, recipe(name, epochs=1, batch_size=4))
        assert trainer.optimizer.param_groups[0]["lr"] == RECIPES[name]["lr"]


# --- learning, logs, checkpoints -------------------------------------------------------------
def test_training_lowers_the_loss_and_writes_logs(tmp_path):
    trainer = make_trainer(tmp_path, {"epochs": 15, "checkpoint_every": 4})
    summary = trainer.fit()
    losses = [r["loss"] for r in summary["history"]]
    assert summary["step"] == 30 and summary["epoch"] == 15
    assert losses[-1] < 0.2 * losses[0]
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["step"] == 30 and len(log["train"]) == 30
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temporary files left


def test_checkpoint_is_weights_only_and_complete(tmp_path):
    make_trainer(tmp_path, {"epochs": 2, "optimizer": "radam", "betas": (0.9, 0.99), "grad_clip": 0.5}).fit()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and set(state["model"]) == {"weight", "bias"}
    assert {"optimizer", "scheduler", "rng", "config", "best"} <= set(state)
    assert state["config"]["betas"] == [0.9, 0.99]
    assert state["rng"]["torch"].dtype == torch.uint8


def test_lr_follows_the_schedule_per_epoch(tmp_path):
    trainer = make_trainer(tmp_path, {"epochs": 4, "lr": 0.1, "schedule": {"kind": "linear_decay", "constant": 2, "decay": 2}})
    lrs = [r["lr"] for r in trainer.fit()["history"]]
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1 * 2 / 3, 0.1 * 2 / 3, 0.1 / 3, 0.1 / 3])


def test_validation_keeps_the_best_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, {"epochs": 6}, val_data=tiny_data(3, seed=1))
    summary = trainer.fit()
    vals = summary["val_history"]
    assert len(vals) == 6 and all("val_psnr" in v for v in vals)
    best = max(vals, key=lambda v: v["val_psnr"])
    assert summary["best"]["step"] == best["step"] and summary["best"]["value"] == pytest.approx(best["val_psnr"])
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert saved["step"] == best["step"] and saved["metric"] == "psnr"


def test_loss_dict_terms_are_logged_and_parameters_can_be_frozen(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1))
    model[1].requires_grad_(False)
    frozen = model[1].weight.detach().clone()

    def loss(pred, batch):
        l1 = (pred - batch["sharp"]).abs().mean()
        return {"loss": l1, "l1": l1}

    summary = make_trainer(tmp_path, {"epochs": 2}, model=model, loss_fn=loss).fit()
    assert "l1" in summary["history"][0] and torch.equal(model[1].weight, frozen)


def test_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match="unknown config"):
        make_trainer(tmp_path, {"learning_rate": 1})
    with pytest.raises(ValueError, match="epochs or max_steps"):
        make_trainer(tmp_path, {"epochs": None})
    with pytest.raises(ValueError, match="CUDA"):
        make_trainer(tmp_path, {"amp": True})
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_trainer(tmp_path, {"batch_size": 16})
    with pytest.raises(ValueError, match="optimizer"):
        make_trainer(tmp_path, {"optimizer": "sgd"})
    assert set(DEFAULTS) >= {"epochs", "max_steps", "checkpoint_every", "amp", "compile", "grad_clip"}


def test_nothing_is_overwritten_without_resume(tmp_path):
    make_trainer(tmp_path, {"epochs": 1}).fit()
    with pytest.raises(FileExistsError, match="resume"):
        make_trainer(tmp_path, {"epochs": 2}, resume=False)
    with pytest.raises(FileNotFoundError):
        make_trainer(tmp_path / "other", {"epochs": 2}, resume=True)
    more = make_trainer(tmp_path, {"epochs": 3}).fit()  # resume="auto" continues the run
    assert more["step"] == 6 and [r["step"] for r in more["history"]] == list(range(1, 7))


def test_in_process_resume_matches_an_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "a", {"max_steps": 8, "checkpoint_every": 2})
    full.fit()
    part = make_trainer(tmp_path / "b", {"max_steps": 5, "checkpoint_every": 2})
    part.fit()
    resumed = make_trainer(tmp_path / "b", {"max_steps": 8, "checkpoint_every": 2})
    assert resumed.step == 5
    resumed.fit()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


# --- crash and resume, and torchrun, in fresh processes --------------------------------------
def test_sigkill_mid_training_then_resume_gives_identical_weights(script, tmp_path):
    def start(out, kill_at):
        return subprocess.Popen([sys.executable, str(script), str(out), str(kill_at), "10", "4", "0.2"], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    out = tmp_path / "crash"
    proc = start(out, 5)
    deadline = time.monotonic() + 120
    while not (out / "KILL_ME").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the training run never reached step 5"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3  # work after step 3 is lost
    assert int(list(csv.DictReader(open(out / "log.csv")))[-1]["step"]) == 5

    resumed = _run(script, out)
    assert resumed.returncode == 0, resumed.stderr
    _run_in_process(script, tmp_path / "ref", 10, 4, 0.2)  # the uninterrupted run
    ref_w, res_w = _weights(tmp_path / "ref"), _weights(out)
    for key in ref_w:
        assert torch.equal(ref_w[key], res_w[key]), key
    assert json.loads((out / "losses.json").read_text()) == json.loads((tmp_path / "ref" / "losses.json").read_text())
    assert [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))] == list(range(1, 11))


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(script, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path / "two"), "0", "8", "4", "0.0"]
    ddp = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # the one-process reference runs here (no dropout: each process draws its own masks)
    _run_in_process(script, tmp_path / "one", 8, 4, 0.0)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6), key
    l1 = json.loads((tmp_path / "one" / "losses.json").read_text())
    l2 = json.loads((tmp_path / "two" / "losses.json").read_text())
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert json.loads((tmp_path / "two" / "log.json").read_text())["world_size"] == 2


def test_network_forward_feeds_the_registry_inputs(tmp_path):
    from dplab.models.registry import network_forward

    g = torch.Generator().manual_seed(0)
    data = [{"left": torch.rand(3, 6, 6, generator=g), "right": torch.rand(3, 6, 6, generator=g)} for _ in range(4)]
    for d in data:
        d["sharp"] = d["left"] + d["right"]
    torch.manual_seed(0)
    model = torch.nn.Conv2d(6, 3, 1)                   # fed like "dpdnet": [left, right]
    summary = make_trainer(tmp_path, {"epochs": 40, "lr": 0.05}, model=model, data=data,
                           forward=network_forward("dpdnet")).fit()
    assert summary["history"][-1]["loss"] < 0.2 * summary["history"][0]["loss"]
    with pytest.raises(KeyError, match="right"):
        network_forward("dpdnet")(model, {"left": data[0]["left"]})


@pytest.mark.parametrize("name", ["dpdnet", "dpdnet_single", "rdpd", "rspd", "drbnet", "drbnet_dual", "mdp",
                                  "mdp_single_task"])
def test_each_registry_network_trains_on_its_inputs_and_default_loss(name, tmp_path):
    """One step per network through forward_and_loss: the inputs and the loss of the registry
    entry fit the network (RDPD's radial channel is built for a batch without one)."""
    from dplab.models import build
    from dplab.models.registry import model_entry, model_inputs
    from dplab.training.objectives import forward_and_loss

    opts = {"dpdnet": {"widths": (4, 4, 4, 4)}, "rdpd": {"widths": (4, 4, 4, 4), "lstm_channels": 4},
            "drbnet": {"width": 4}, "mdp": {"width": 0.0625}}[name.split("_")[0].replace("rspd", "rdpd")]
    torch.manual_seed(0)
    model = build(name, **opts)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 16, 16, generator=g)
    data = [{"left": x / 2, "right": x / 2, "combined": x, "sharp": x}] * 2
    forward, loss_fn = forward_and_loss(name, None, getattr(model, "in_channels", None))
    assert forward.inputs == model_inputs(name) == model_entry(name).inputs
    summary = make_trainer(tmp_path, {"max_steps": 1, "batch_size": 2}, model=model, data=data,
                           forward=forward, loss_fn=loss_fn).fit()
    assert summary["step"] == 1 and math.isfinite(summary["final_loss"])


def test_registry_inputs_follow_in_channels():
    from dplab.models.registry import model_inputs, network_input

    assert model_inputs("rdpd", 6) == ("left", "right") and model_inputs("rspd", 3) == ("left",)
    with pytest.raises(ValueError, match="input channels"):
        model_inputs("dpdnet", 3)
    clip = {"left": torch.rand(2, 4, 3, 8, 8), "right": torch.rand(2, 4, 3, 8, 8)}
    x = network_input("rdpd", clip)                    # a sequence batch (B, T, C, H, W)
    assert x.shape == (2, 4, 7, 8, 8) and torch.equal(x[:, :, 6], x[0, 0, 6].expand(2, 4, 8, 8))
    assert float(x[0, 0, 6, 0, 0]) == 1.0              # a corner of the full frame


# --- divergence -------------------------------------------------------------------------------
def test_a_loss_that_leaves_its_range_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    """The loss jumps by 10^4 at step 37 (as DRBNet's did, 0.09 -> 2,040 within 21 steps):
    training stops there with an error naming the step, and ``last.pt`` still holds the model
    of step 30, before the jump, and no weight was changed by the bad step."""
    calls = {"n": 0}

    def loss_fn(pred, batch):
        calls["n"] += 1
        loss = mse_loss(pred, batch)
        return loss * 1e4 if calls["n"] >= 37 else loss

    trainer = make_trainer(tmp_path, {"epochs": 100, "checkpoint_every": 10, "divergence_window": 20},
                           loss_fn=loss_fn)
    before = None

    def remember(trainer, row):
        nonlocal before
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer.callbacks.append(remember)
    with pytest.raises(TrainingDiverged, match="step 37") as info:
        trainer.fit()
    assert info.value.step == 37 and "last checkpoint" in str(info.value)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 30
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_a_non_finite_loss_stops_training_at_once(tmp_path):
    calls = {"n": 0}

    def loss_fn(pred, batch):
        calls["n"] += 1
        return mse_loss(pred, batch) * (float("nan") if calls["n"] == 5 else 1.0)

    trainer = make_trainer(tmp_path, {"epochs": 50, "divergence_factor": None}, loss_fn=loss_fn)
    with pytest.raises(TrainingDiverged, match=r"step 5: the loss is nan"):
        trainer.fit()
    assert trainer.step == 4


def test_a_noisy_but_stable_loss_is_not_called_divergent(tmp_path):
    """A factor of 100 over the window's largest loss: the ordinary step-to-step noise of a
    loss (here a factor of 10 up and down) never trips it."""
    calls = {"n": 0}

    def loss_fn(pred, batch):
        calls["n"] += 1
        return mse_loss(pred, batch) * (10.0 if calls["n"] % 7 == 0 else 1.0)

    summary = make_trainer(tmp_path, {"epochs": 40, "divergence_window": 5}, loss_fn=loss_fn).fit()
    assert summary["step"] == 80


def test_divergence_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match="divergence_factor"):
        make_trainer(tmp_path, {"divergence_factor": 0.5})
    with pytest.raises(ValueError, match="divergence_window"):
        make_trainer(tmp_path, {"divergence_window": 0})
