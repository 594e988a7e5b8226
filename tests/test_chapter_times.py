"""benchmarks/chapter_times.py: per-profile run times of the chapters (the instructors page)."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest

from harness import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import chapter_times  # noqa: E402

SLEEP_S = 0.6


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "book"\noutput_dir = "outputs/demo"\ndata_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_a_chapter_is_timed_in_the_profile_it_was_given(tmp_path):
    body = (f"import time, pathlib\ntime.sleep({SLEEP_S})\n"
            "p = pathlib.Path(output_dir); p.mkdir(parents=True, exist_ok=True)\n"
            "(p / 'profile.txt').write_text(profile)")
    nb = _notebook(tmp_path / "demo.ipynb", body)
    row = chapter_times.time_chapter(nb, "test", tmp_path / "out")
    assert row["chapter"] == "demo" and row["profile"] == "test"
    assert row["returncode"] == 0 and not row["timed_out"]
    # The wall time includes the sleep inside the notebook (and a kernel start on top).
    assert row["seconds"] >= SLEEP_S
    # The parameters reached the chapter: it wrote the profile into output_root/<stem>.
    assert (tmp_path / "out" / "demo" / "profile.txt").read_text() == "test"


def test_a_failing_chapter_is_recorded_as_failed(tmp_path):
    nb = _notebook(tmp_path / "broken.ipynb", "raise RuntimeError('boom')")
    row = chapter_times.time_chapter(nb, "test", tmp_path / "out")
    assert row["returncode"] not in (0, None)
    assert "boom" in (tmp_path / "out" / "broken.log").read_text()


def test_the_cli_writes_one_record_per_profile(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    _notebook(book / "a.ipynb", "x = 1")
    monkeypatch.setattr(chapter_times, "ROOT", tmp_path)
    record = chapter_times.time_chapters(["a"], "test", book_dir=book, log=lambda *_: None)
    assert [r["chapter"] for r in record["rows"]] == ["a"]
    assert record["total_seconds"] == pytest.approx(record["rows"][0]["seconds"], abs=0.05)
    assert {"cpu", "cpu_count", "torch"} <= set(record["machine"])
    json.dumps(record)  # a record is plain JSON


def test_toc_chapters_follow_the_book_order():
    stems = chapter_times.toc_chapters()
    assert stems[:3] == ["thin_lens", "dp_psf", "layered_rendering"]
    assert "intro" not in stems and "instructors" not in stems   # markdown pages are not timed
    assert "assignments/networks" in stems                        # notebooks in sub-folders keep their folder
    assert len(stems) == len(set(stems))


def test_refusals(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook"):
        chapter_times.time_chapter(tmp_path / "nope.ipynb", "test", tmp_path)
    nb = _notebook(tmp_path / "a.ipynb", "x = 1")
    with pytest.raises(ValueError, match="profile"):
        chapter_times.time_chapter(nb, "fast", tmp_path)
    with pytest.raises(ValueError, match="chapters is empty"):
        chapter_times.time_chapters([], "test")
    with pytest.raises(FileNotFoundError, match="chapters"):
        chapter_times.time_chapters(["nope"], "test", book_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="toc"):
        chapter_times.toc_chapters(tmp_path / "_toc.yml")
    assert chapter_times.main(["--profile", "test", "--chapters", "nope", "--record-dir", str(tmp_path)]) == 2
    assert chapter_times.main(["--profile", "test", "--update", "--record-dir", str(tmp_path)]) == 2


def test_an_update_replaces_only_the_chapters_it_re_timed():
    old = {"profile": "book", "date": "d0", "rows": [{"chapter": "a", "seconds": 10.0}, {"chapter": "b", "seconds": 20.0}]}
    new = {"profile": "book", "date": "d1", "rows": [{"chapter": "b", "seconds": 5.0}, {"chapter": "c", "seconds": 1.0}]}
    merged = chapter_times.merge_records(old, new)
    assert [(r["chapter"], r["seconds"]) for r in merged["rows"]] == [("a", 10.0), ("b", 5.0), ("c", 1.0)]
    assert merged["total_seconds"] == 16.0 and merged["updated_from"] == "d0"
    with pytest.raises(ValueError, match="merge"):
        chapter_times.merge_records(old, dict(new, profile="test"))
