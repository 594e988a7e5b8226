"""Model tests run tiny tensors with one intra-op thread (the shared ``one_thread`` fixture of
tests/conftest.py), the previous setting restored after each module."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_thread):
    yield
