"""Model tests run tiny tensors: one intra-op thread avoids thread-pool spin-waits, which on a
shared 2-core machine made these tests several times slower. The previous setting is restored."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
