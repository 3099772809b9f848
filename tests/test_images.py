import numpy as np
import pytest
from PIL import Image

from helpers.images import GUTTER, captioned_grid, check_images, image_problems, make_image_grid, wrap_caption


def noise(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_make_image_grid_is_diffusers_own():
    import diffusers.utils

    assert make_image_grid is diffusers.utils.make_image_grid
    assert make_image_grid([noise(i) for i in range(4)], 2, 2).size == (64, 64)


def test_captioned_grid_adds_a_caption_band():
    grid = captioned_grid([noise(i) for i in range(4)], ["the oldest", "a old", "a", "a young"], 2, 2)
    assert grid.width == 2 * (32 + GUTTER) and grid.height > 64
    band = np.asarray(grid)[32:40, :32]  # under the first image: white with black text
    assert band.max() == 255 and band.min() < 128


def test_captioned_grid_keeps_a_white_gutter_between_columns():
    black = Image.new("RGB", (32, 32), "black")
    grid = np.asarray(captioned_grid([black, black], ["seed 6", "seed 7"], 1, 2))
    assert grid.shape[1] == 2 * (32 + GUTTER)
    assert (grid[:32, 32:32 + GUTTER] == 255).all() and (grid[:32, 36:68] == 0).all()


def test_captions_break_between_word_parts_not_inside_them():
    assert wrap_caption("DPMSolverMultistep 4", 10) == ["DPMSolver", "Multistep", "4"]
    assert wrap_caption("torch.bfloat16, PNDM 50", 10) == ["torch.", "bfloat16,", "PNDM 50"]
    assert wrap_caption("seed 3, sliced", 10) == ["seed 3,", "sliced"]
    assert wrap_caption("abcdefghijklmnopqrstuvwxyz", 10) == ["abcdefghij", "klmnopqrst", "uvwxyz"]
    assert wrap_caption("", 10) == [""]


def test_captioned_grid_needs_matching_counts():
    with pytest.raises(ValueError, match="captions"):
        captioned_grid([noise()] * 4, ["a", "b"], 2, 2)


def test_blank_and_nan_images_are_flagged():
    assert image_problems(noise()) == []
    assert "blank" in image_problems(Image.new("RGB", (8, 8), "black"))[0]
    arr = np.zeros((8, 8, 3), dtype=np.float32)
    arr[0, 0, 0] = np.nan
    assert image_problems(arr) == ["NaN values"]


def test_check_images_verdicts():
    assert check_images([noise(0), noise(1)], expected=2) == "2 images, none blank or NaN"
    with pytest.raises(ValueError, match="Expected 3 images, got 2"):
        check_images([noise(0), noise(1)], expected=3)
    with pytest.raises(ValueError, match="image 1: blank"):
        check_images([noise(0), Image.new("RGB", (8, 8))])


def test_safety_checker_hits_are_reported_not_raised():
    from types import SimpleNamespace

    black = Image.new("RGB", (8, 8))
    output = SimpleNamespace(images=[noise(0), black], nsfw_content_detected=[False, True])
    verdict = check_images(output, expected=2)
    assert "1 blacked out by the safety checker" in verdict and ": 1;" in verdict
    assert "safety checker" in check_images([noise(0), black], nsfw=[False, True])
    with pytest.raises(ValueError, match="image 1: blank"):  # a black image the checker did not flag still fails
        check_images(SimpleNamespace(images=[noise(0), black], nsfw_content_detected=[False, False]))
    assert check_images(SimpleNamespace(images=[noise(0)], nsfw_content_detected=None)) == "1 image, none blank or NaN"


def test_bad_images_on_mps_are_flagged_not_raised(simulate_device):
    black = Image.new("RGB", (8, 8))
    verdict = check_images([noise(0), black], device="mps")
    assert verdict.startswith("FLAGGED: 1 of 2 images are unusable") and "#14438" in verdict
    simulate_device("mps")
    assert check_images([black]).startswith("FLAGGED")
    with pytest.raises(ValueError):
        check_images([black], device="cpu")
