import pytest
import torch


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny preset on the CPU in float32, loaded once for the whole session."""
    from helpers import load_pipeline

    return load_pipeline("tiny", dtype=torch.float32, device="cpu", quiet=True)
