import numpy as np
import pytest
import torch
from PIL import Image

from helpers.compare import pixel_difference
from helpers.effects import quantized_linears


def test_pixel_difference_in_levels_of_255():
    a = np.zeros((2, 4, 4, 3))
    b = a.copy()
    b[0, 0, 0, 0] = 1.0  # one channel of one pixel from black to white
    diff = pixel_difference(b, a)
    assert diff.max == pytest.approx(255.0)
    assert diff.mean == pytest.approx(255.0 / a.size)
    assert diff.within(mean=3.0) and not diff.within(mean=3.0, max=10)


def test_pixel_difference_takes_uint8_arrays_as_levels():
    dark = np.ones((1, 2, 2, 3), dtype=np.uint8)
    assert pixel_difference(dark, np.zeros_like(dark)).max == pytest.approx(1.0)


def test_pixel_difference_takes_pil_images():
    black, grey = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), (10, 10, 10))
    assert pixel_difference([grey], [black]).mean == pytest.approx(10.0)


def test_pixel_difference_refuses_other_shapes():
    with pytest.raises(ValueError, match="same batch and size"):
        pixel_difference(np.zeros((1, 4, 4, 3)), np.zeros((2, 4, 4, 3)))


def test_quantized_linears_counts_pytorch_dynamic_int8_layers():
    import warnings

    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    assert quantized_linears(model) == (0, 2)
    x = torch.randn(4, 32)
    before = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the API is deprecated in favour of torchao
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert quantized_linears(quantized) == (2, 2)
    assert torch.allclose(quantized(x), before, atol=0.05)  # approximate, not broken
