import numpy as np
import pytest
from PIL import Image

from helpers.compare import pixel_difference


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
