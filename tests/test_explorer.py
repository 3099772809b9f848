import numpy as np
import pytest
from PIL import Image

from helpers.explorer import Explorer, ExplorerPanel, verdict
from helpers.shapes import Scene, render


def test_generate_is_a_plain_function(tiny_pipe):
    explorer = Explorer(tiny_pipe)
    result = explorer.generate("a red circle", scheduler="EulerDiscreteScheduler", steps=2, guidance=3.0, seed=1)
    assert isinstance(result.image, Image.Image) and result.seconds > 0
    assert result.verdict is None  # tiny has no judge
    assert "EulerDiscreteScheduler, 2 steps, guidance 3, seed 1, float32" in str(result)
    assert type(tiny_pipe.scheduler).__name__ == "PNDMScheduler"  # the notebook's pipeline is left alone


def test_generate_is_reproducible_and_keeps_the_base_precision(tiny_pipe):
    import torch

    explorer = Explorer(tiny_pipe)
    a = explorer.generate("a red circle", steps=2, seed=3)
    b = explorer.generate("a red circle", steps=2, seed=3)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    half = explorer.generate("a red circle", steps=2, seed=3, precision="bfloat16")
    assert "bfloat16" in str(half)
    assert tiny_pipe.unet.dtype == torch.float32


def test_generate_rejects_bad_settings_in_one_line(tiny_pipe):
    explorer = Explorer(tiny_pipe)
    with pytest.raises(ValueError, match="Unknown scheduler 'Nope'"):
        explorer.generate("a red circle", scheduler="Nope")
    with pytest.raises(ValueError, match="prompt is empty"):
        explorer.generate("  ")
    with pytest.raises(ValueError, match="Unknown precision"):
        explorer.generate("a red circle", precision="int4")


def test_verdict_reads_the_judge():
    picture = render(Scene("red", "circle", "white", 32, 32, 24, 0))
    assert verdict("a red circle", picture).endswith("matches the prompt")
    assert verdict("a blue circle", picture).endswith("wrong colour")
    assert verdict("a blue square", picture).endswith("wrong colour and shape")
    assert verdict("a red circle on a white background", picture).endswith("matches the prompt")
    assert verdict("a red circle on a black background", picture).endswith("wrong background")
    assert "not one of this world's captions" in verdict("portrait photo of a old warrior chief", picture)


def test_panel_widgets_build_and_the_button_generates(tiny_pipe):
    import ipywidgets as w

    panel = ExplorerPanel(Explorer(tiny_pipe), prompt="a red circle", steps=2)
    kinds = [type(c) for c in panel.controls]
    assert kinds == [w.Text, w.Dropdown, w.IntSlider, w.FloatSlider, w.IntText, w.Dropdown]
    assert "DPMSolverMultistepScheduler" in panel.scheduler.options
    assert panel.precision.options == ("float32", "bfloat16")  # a CPU's 16-bit type
    assert panel.settings()["steps"] == 2
    panel.seed.value = 5
    panel.button.click()  # what the browser does, without one
    assert panel.last is not None and panel.last.settings["seed"] == 5
    assert isinstance(panel.widget, w.VBox) and panel.button in panel.widget.children
