import os

import pytest
import torch

_MADE = []  # the cache folder this process made, removed when it ends


def pytest_configure(config):
    """Presets are saved as folders on first use: in a fresh folder per test run, not the user's cache (pytest-xdist's
    workers inherit the folder from the process that starts them). Under pytest-xdist (make test runs two workers on
    a 2-core machine), each worker and what it starts gets one thread."""
    import tempfile

    if not os.environ.get("EFFICIENT_DIFFUSION_CACHE"):
        os.environ["EFFICIENT_DIFFUSION_CACHE"] = tempfile.mkdtemp(prefix="efficient-diffusion-test-")
        _MADE.append(os.environ["EFFICIENT_DIFFUSION_CACHE"])
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_unconfigure(config):
    import shutil

    for folder in _MADE:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Tests marked other_model run only when -m names them (make test-models), whatever else -m says. The slow
    ones (whole notebooks, 25-50 s each with native bfloat16, 1.5-3.5 min on an AVX2-only EPYC) go first, so that
    pytest-xdist's two workers do not end on one of them; make's --maxschedchunk 1 keeps two tests at a time on
    each worker, so that both workers share them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: each group keeps its order
    if "other_model" in (config.option.markexpr or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("other_model")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("other_model")]


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny preset on the CPU in float32, loaded once for the whole session."""
    from helpers.models import load_pipeline

    return load_pipeline("tiny", dtype=torch.float32, device="cpu", quiet=True)


@pytest.fixture
def simulate_device(monkeypatch):
    """Make pick_device() see a CUDA or MPS device on this machine: simulate_device("cuda") or ("mps")."""

    def simulate(kind: str) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: kind == "cuda")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: kind == "mps")

    return simulate
