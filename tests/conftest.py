"""Shared fixtures: chapter notebooks executed once per session in the `test` profile, and a
one-thread torch setting for tests that time or stress FFTs."""

import pytest
import torch

from harness import NotebookRunner


@pytest.fixture(scope="session")
def notebook_runner(tmp_path_factory) -> NotebookRunner:
    return NotebookRunner(tmp_path_factory.mktemp("notebooks"))


@pytest.fixture
def one_thread():
    """The test machine shares 2 cores; one intra-op thread avoids oversubscription stalls.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
