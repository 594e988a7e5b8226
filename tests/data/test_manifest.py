"""Manifests parse, carry what the data page and loaders need, and missing data is reported clearly."""

from pathlib import Path

import pytest

from dplab.data import (
    DATA_ENV,
    MANIFEST_DIR,
    DatasetNotFoundError,
    data_root,
    dataset_dir,
    list_manifests,
    load_manifest,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_every_manifest_file_loads_with_its_own_name():
    files = sorted(MANIFEST_DIR.glob("*.yaml"))
    assert [p.stem for p in files] == list_manifests()
    for path in files:
        m = load_manifest(path.stem)
        assert m.citation["bibkey"] and m.citation["text"]
        assert m.layout and all("path" in entry and "what" in entry for entry in m.layout)
        assert m.required, f"{path.name}: list the paths whose presence proves the dataset is there"
        assert all(isinstance(v, int) and v > 0 for v in m.splits.values())


def test_manifest_keys_are_cited_in_the_bibliography():
    bib = (Path(__file__).resolve().parents[2] / "book" / "references.bib").read_text()
    for name in list_manifests():
        assert "{" + load_manifest(name).citation["bibkey"] + "," in bib, name


def test_dpdd_counts_match_the_published_split():
    assert load_manifest("dpdd").splits == {"train": 350, "val": 74, "test": 76}


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(KeyError, match="xin_pixel4_dp"):
        load_manifest("no_such_dataset")
    with pytest.raises(TypeError, match="name"):
        load_manifest(3)


def test_missing_data_directory_says_how_to_fix(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        dataset_dir("xin_pixel4_dp")
    text = str(err.value)
    assert "xin_pixel4_dp" in text and DATA_ENV in text and "xin_pixel4_dp.yaml" in text


def test_missing_dataset_names_dataset_path_and_manifest(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        dataset_dir("dpdd", tmp_path)
    text = str(err.value)
    assert str(tmp_path / "dpdd") in text and "dpdd.yaml" in text


def test_incomplete_dataset_lists_the_missing_files(tmp_path):
    (tmp_path / "xin_pixel4_dp" / "calibration").mkdir(parents=True)
    (tmp_path / "xin_pixel4_dp" / "001_left.png").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as err:
        dataset_dir("xin_pixel4_dp", tmp_path)
    assert "blur_kernels_left.npy" in str(err.value) and "001_right.png" in str(err.value)
    assert "001_left.png" not in str(err.value).split("missing:")[1].split("manifest")[0]


def test_env_variable_is_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_root() == tmp_path.resolve()
    assert data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    with pytest.raises(TypeError, match="data_dir"):
        data_root(42)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared real-data folder is not beside the repository")
def test_real_pixel4_release_is_found_in_shared_data():
    folder = dataset_dir("xin_pixel4_dp", SHARED)
    assert (folder / "calibration" / "blur_kernels_left.npy").is_file()


def test_a_named_data_directory_that_does_not_exist_is_an_error(monkeypatch, tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(DatasetNotFoundError, match=r"typo \(data_dir\) does not exist"):
        data_root(missing, must_exist=True)
    monkeypatch.setenv(DATA_ENV, str(missing))
    with pytest.raises(DatasetNotFoundError, match=r"typo \(\$DPLAB_DATA\) does not exist"):
        data_root(must_exist=True)
    monkeypatch.delenv(DATA_ENV)
    assert data_root(must_exist=True) is None          # nothing named: the chapters use synthetic data
    assert data_root(tmp_path, must_exist=True) == tmp_path.resolve()
