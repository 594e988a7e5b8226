"""Shared fixtures: chapter notebooks executed once per session in the `test` profile."""

import pytest

from harness import NotebookRunner


@pytest.fixture(scope="session")
def notebook_runner(tmp_path_factory) -> NotebookRunner:
    return NotebookRunner(tmp_path_factory.mktemp("notebooks"))
