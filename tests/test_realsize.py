"""SD 1.5's parts at real size: built from its configuration, or taken from a real-size pipeline (01, 02)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from helpers.presets import SD15_UNET, TINY_UNET
from helpers.realsize import (
    attention_tokens,
    first_level,
    first_level_inputs,
    is_real_size,
    sd15_vae,
    self_attention,
    vae_latents,
)


@pytest.fixture(scope="module")
def sd15_unet():
    """SD 1.5's UNet on the meta device: every shape, no memory and no time."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**SD15_UNET)


def shapes(module) -> list:
    return [(name, tuple(p.shape)) for name, p in module.named_parameters()]


def test_the_built_parts_are_the_real_unets(sd15_unet):
    assert is_real_size(sd15_unet)
    built, taken = first_level(), first_level(sd15_unet)
    assert shapes(built) == shapes(taken)
    assert all(p.device.type == "meta" for p in taken.parameters())  # the pipeline's own layer, copied
    attention = self_attention()
    assert shapes(attention) == shapes(sd15_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1)
    assert (attention.heads, attention.inner_dim // attention.heads) == (8, 40)


def test_a_small_unet_is_not_real_size_and_gets_built_parts():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        tiny = UNet2DConditionModel(**TINY_UNET)
    assert not is_real_size(tiny)
    assert all(p.device.type == "cpu" for p in first_level(tiny).parameters())
    assert sd15_vae(SimpleNamespace(unet=tiny, vae="tiny's")) != "tiny's"


def test_the_real_size_vae_is_the_pipelines_own(sd15_unet):
    pipeline = SimpleNamespace(unet=sd15_unet, vae="the pipeline's VAE")
    assert sd15_vae(pipeline) == "the pipeline's VAE"


def test_inputs_have_a_512x512_pictures_shapes_and_one_layer_runs():
    inputs = first_level_inputs(8)
    assert {k: tuple(v.shape) for k, v in inputs.items()} == {
        "sample": (2, 320, 8, 8), "temb": (2, 1280), "encoder_hidden_states": (2, 77, 768)}
    assert tuple(first_level_inputs()["sample"].shape) == (2, 320, 64, 64)
    with torch.inference_mode():
        out = first_level()(**inputs)
    assert out.shape == inputs["sample"].shape and torch.isfinite(out).all()
    assert tuple(attention_tokens(8, torch.bfloat16).shape) == (2, 64, 320)
    assert attention_tokens(8, torch.bfloat16).dtype == torch.bfloat16
    assert tuple(vae_latents(3, 16).shape) == (3, 4, 16, 16)
