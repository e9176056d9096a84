import os

import pytest


@pytest.fixture(scope="session")
def flops_cache(tmp_path_factory):
    """One measured-FLOPs cache for the folder's tests (outside every test's own tmp_path)."""
    path = tmp_path_factory.mktemp("flops-cache") / "step-flops.json"
    old = os.environ.get("ROBUSTSCALE_FLOPS_CACHE")
    os.environ["ROBUSTSCALE_FLOPS_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ROBUSTSCALE_FLOPS_CACHE", None)
    else:
        os.environ["ROBUSTSCALE_FLOPS_CACHE"] = old
