"""One intra-op thread for these tiny models: as fast as two on them, and immune to OpenMP threads
spin-waiting for each other when the 2-core test machine is busy (which made these tests 5x slower)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
