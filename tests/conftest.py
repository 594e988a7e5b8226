"""Shared fixtures: chapter notebooks executed once per session in the `test` profile, and a
one-thread torch setting for tests that time or stress FFTs."""

import pytest
import torch

from harness import NotebookRunner

# The chapter checkers (tests/notebooks/<stem>.py) are loaded by path under unique names
# (tests/test_notebooks.py). Collected as doctest modules they would be imported under their
# bare names, and a checker called like a benchmark module (networks, mdp, drbnet) would then
# shadow `import networks` in the benchmark tests.
collect_ignore_glob = ["notebooks/*.py"]


@pytest.fixture(scope="session")
def notebook_runner(tmp_path_factory) -> NotebookRunner:
    return NotebookRunner(tmp_path_factory.mktemp("notebooks"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module, the previous setting restored after it:
    on a shared 2-core machine thread-pool spin-waits made small-tensor tests several times
    slower. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
