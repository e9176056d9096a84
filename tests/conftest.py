"""Shared fixtures. Tests use tiny models and tiny data written in real on-disk formats."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep the suite predictable on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
# Measured step FLOPs (planner, sweep bills) go to a cache of this session, not the user's ~/.cache.
if "ROBUSTSCALE_FLOPS_CACHE" not in os.environ:
    import tempfile

    os.environ["ROBUSTSCALE_FLOPS_CACHE"] = str(Path(tempfile.mkdtemp(prefix="robustscale-test-")) / "step-flops.json")

SHARED = Path(os.environ.get("ROBUSTSCALE_TEST_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
PAPER_RUNS_CSV = SHARED / "data" / "paper-runs" / "results.csv"


# One intra-op thread where tests train or attack tiny models: as fast as two on them, and immune to
# OpenMP threads spin-waiting for each other when the 2-core test machine is busy (which made these
# tests 5x slower).
ONE_THREAD_DIRS = ("attacks", "evaluation", "export", "tasks", "train")


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_tiny_models(request):
    if request.path.parent.name not in ONE_THREAD_DIRS:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist_like_dir(tmp_path_factory) -> Path:
    """A learnable 10-class dataset in Fashion-MNIST's IDX .gz layout (512 train / 256 test)."""
    from robustscale.testing import write_mnist_like

    return write_mnist_like(tmp_path_factory.mktemp("fmnist"), n_train=512, n_test=256)


@pytest.fixture(scope="session")
def paper_runs_csv() -> Path:
    """The 2024 study's published results.csv from ../shared; skips when absent."""
    if not PAPER_RUNS_CSV.is_file():
        pytest.skip(f"paper runs not available at {PAPER_RUNS_CSV}")
    return PAPER_RUNS_CSV


@pytest.fixture
def cli(capsys):
    """Run ``robustscale ...`` in-process; returns (exit_code, stdout, stderr)."""
    from robustscale.cli import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def flops_cache(tmp_path_factory):
    """One measured-FLOPs cache for the session's tests (outside every test's own tmp_path)."""
    path = tmp_path_factory.mktemp("flops-cache") / "step-flops.json"
    old = os.environ.get("ROBUSTSCALE_FLOPS_CACHE")
    os.environ["ROBUSTSCALE_FLOPS_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ROBUSTSCALE_FLOPS_CACHE", None)
    else:
        os.environ["ROBUSTSCALE_FLOPS_CACHE"] = old
