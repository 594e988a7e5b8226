"""dplab.book.chapter: profiles, seeding and the atomic metrics record chapters rely on."""

import json

import pytest
import torch

from dplab._io import write_json_atomic
from dplab._validate import resolve_device
from dplab.book.chapter import Chapter


def test_profile_is_checked(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        Chapter("x", profile="quick", output_dir=tmp_path)


def test_pick_follows_the_profile(tmp_path):
    for profile, expected in (("test", 1), ("book", 2), ("full", 3)):
        ch = Chapter("x", profile=profile, output_dir=tmp_path)
        assert ch.pick(test=1, book=2, full=3) == expected


def test_same_seed_same_bytes(tmp_path):
    a = Chapter("x", profile="test", output_dir=tmp_path, seed=7)
    first = torch.rand(5, generator=a.generator), torch.rand(5)
    b = Chapter("x", profile="test", output_dir=tmp_path, seed=7)
    second = torch.rand(5, generator=b.generator), torch.rand(5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_metrics_are_written_as_plain_json(tmp_path):
    ch = Chapter("demo", profile="test", output_dir=tmp_path / "out")
    ch.record("psnr", torch.tensor(31.5), glue=False)
    ch.record("curve", torch.arange(3.0), glue=False)
    assert ch.record("x", 1.0, glue=False) is None and ch.finish() is None   # a cell ending in either shows nothing
    payload = json.loads(ch.metrics_path.read_text())
    del payload["metrics"]["x"]
    assert payload["metrics"] == {"psnr": 31.5, "curve": [0.0, 1.0, 2.0]}
    assert payload["chapter"] == "demo" and payload["profile"] == "test"
    assert not list((tmp_path / "out").glob(".*tmp")), "no temporary file may be left behind"


def test_nan_metrics_and_bad_keys_are_refused(tmp_path):
    ch = Chapter("demo", profile="test", output_dir=tmp_path)
    with pytest.raises(ValueError, match="nan"):
        ch.record("bad", float("nan"), glue=False)
    with pytest.raises(ValueError, match="key"):
        ch.record("not an id", 1.0, glue=False)


def test_glue_figure_refuses_bad_keys_and_non_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ch = Chapter("demo", profile="test", output_dir=tmp_path)
    fig = plt.figure()
    try:
        with pytest.raises(ValueError, match="key must be an identifier"):
            ch.glue_figure("result figure", fig)
        with pytest.raises(ValueError, match="key must be an identifier"):
            ch.glue_figure(3, fig)
        with pytest.raises(TypeError, match="fig must be a matplotlib Figure, got ndarray"):
            ch.glue_figure("result", __import__("numpy").zeros((4, 4)))
        ch.glue_figure("result", fig)            # outside a kernel: accepted, nothing shown
    finally:
        plt.close(fig)


def test_atomic_write_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_device_resolution():
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu:7")
    with pytest.raises(TypeError, match="device"):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_chapter_refuses_a_data_dir_that_does_not_exist(tmp_path):
    from dplab.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        Chapter("x", profile="test", data_dir=str(tmp_path / "no_such_folder"), output_dir=tmp_path / "out")
