"""SD 1.5's parts at the real model's size, for costs that depend on size (01, 02).

Time and memory depend on the shapes of the tensors, not on the weights' values, so a part built from SD 1.5's
configuration with random weights costs what the real one costs. Each builder takes the loaded pipeline's own part
instead when the pipeline is real-size (the real SD 1.5 on a GPU, or ``sd15-random``), so those runs measure the
model itself. The inputs are those of one 512x512 picture with classifier-free guidance (a batch of 2).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

LATENT = 64  # a 512x512 picture's latents are 64x64: the VAE shrinks each side 8x


def _sd15() -> tuple[dict, dict]:
    """SD 1.5's UNet and VAE configurations (helpers.presets, imported only when a part is built)."""
    from .presets import SD15_UNET, SD15_VAE

    return SD15_UNET, SD15_VAE


def _level() -> tuple[int, int, int]:
    """The first level's channels (320), heads (8: SD 1.5's config calls them attention_head_dim), text width (768)."""
    unet, _ = _sd15()
    return unet["block_out_channels"][0], unet["attention_head_dim"], unet["cross_attention_dim"]


def is_real_size(unet) -> bool:
    """Whether a UNet has SD 1.5's size (its first level's width, its latent size and its text width)."""
    config, (channels, _, text) = unet.config, _level()
    return (config.block_out_channels[0], config.sample_size, config.cross_attention_dim) == (
        channels, _sd15()[0]["sample_size"], text)


class FirstLevel(nn.Module):
    """One layer of SD 1.5's UNet at its first level: a ResNet block, then a Transformer block, 320 channels (01)."""

    def __init__(self, resnet: nn.Module, transformer: nn.Module):
        super().__init__()
        self.resnet, self.transformer = resnet, transformer

    def forward(self, sample, temb, encoder_hidden_states):
        hidden = self.resnet(sample, temb)
        return self.transformer(hidden, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


def first_level(unet=None, seed: int = 0) -> FirstLevel:
    """SD 1.5's first-level ResNet and Transformer blocks: ``unet``'s own if it is real-size, else built (01)."""
    if unet is not None and is_real_size(unet):
        block = unet.down_blocks[0]
        return FirstLevel(copy.deepcopy(block.resnets[0]), copy.deepcopy(block.attentions[0])).eval()
    from diffusers import Transformer2DModel
    from diffusers.models.resnet import ResnetBlock2D

    channels, heads, text = _level()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        resnet = ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=4 * channels)
        transformer = Transformer2DModel(num_attention_heads=heads, attention_head_dim=channels // heads,
                                         in_channels=channels, cross_attention_dim=text)
    return FirstLevel(resnet, transformer).eval()


def first_level_inputs(latent: int = LATENT, dtype=torch.float32, device="cpu", batch: int = 2) -> dict:
    """What the first level receives for ``batch`` rows of ``latent`` x ``latent`` latents (01)."""
    generator, (channels, _, text) = torch.Generator("cpu").manual_seed(0), _level()
    shapes = {"sample": (batch, channels, latent, latent), "temb": (batch, 4 * channels),
              "encoder_hidden_states": (batch, 77, text)}  # CLIP's 77 tokens
    return {name: torch.randn(shape, generator=generator).to(device, dtype) for name, shape in shapes.items()}


def self_attention(unet=None, seed: int = 0) -> nn.Module:
    """SD 1.5's largest self-attention layer (4,096 tokens at 512x512, 8 heads of 40): ``unet``'s own or built (02)."""
    if unet is not None and is_real_size(unet):
        return copy.deepcopy(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1).eval()
    from diffusers.models.attention_processor import Attention

    channels, heads, _ = _level()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Attention(query_dim=channels, heads=heads, dim_head=channels // heads).eval()


def attention_tokens(latent: int = LATENT, dtype=torch.float32, device="cpu", batch: int = 2) -> torch.Tensor:
    """The first level's hidden states as the attention layer sees them: (batch, latent², 320) (02)."""
    generator = torch.Generator("cpu").manual_seed(0)
    return torch.randn((batch, latent * latent, _level()[0]), generator=generator).to(device, dtype)


def sd15_vae(pipeline=None, dtype=torch.float32, device="cpu", seed: int = 1):
    """SD 1.5's VAE (83.65 M parameters) in ``dtype`` on ``device``: the pipeline's own if it is real-size, else
    built from the config (02)."""
    if pipeline is not None and is_real_size(pipeline.unet):
        return pipeline.vae
    from diffusers import AutoencoderKL

    from .models import quiet_logs

    with torch.random.fork_rng(devices=[]), quiet_logs():  # no notice about casting a model built in float32
        torch.manual_seed(seed)
        return AutoencoderKL(**_sd15()[1]).eval().to(device, dtype)


def vae_latents(batch: int, latent: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """``batch`` latents of ``latent`` x ``latent`` for SD 1.5's VAE (4 channels), seeded (02)."""
    generator = torch.Generator("cpu").manual_seed(0)
    channels = _sd15()[1]["latent_channels"]
    return torch.randn((batch, channels, latent, latent), generator=generator).to(device, dtype)
