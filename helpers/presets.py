"""Embedded model presets: Stable Diffusion pipelines built in code, with random weights.

No file and no network is needed. ``tiny`` is a toy-size pipeline for fast runs and
tests; ``sd15-random`` has the exact Stable Diffusion v1.5 architecture (the real
model's compute and memory cost) but random weights, so its images are noise.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# The words the tokenizer learns whole, so that prompt token counts behave like CLIP's.
_CORPUS = """
portrait photo of a the an old oldest young warrior chief tribal panther make up blue on red
side profile looking away serious eyes mm portrait photography hard rim lighting beta ar upbeta
astronaut riding horse mars cat dog city night street landscape mountain river forest sky sunset
painting oil watercolor digital art concept sharp focus detailed highly intricate realistic
cinematic dramatic soft light studio professional color black white green yellow purple orange
man woman child face hair beard smile wearing hat feathers paint skin wrinkles background bokeh
blurry lowres low quality ugly deformed distorted bad anatomy extra fingers watermark text
signature cropped worst jpeg artifacts duplicate mutated disfigured and with in at by for from
very best high resolution masterpiece trending award winning canon nikon lens depth field
"""

# Stable Diffusion 1.5's noise schedule (what a model is trained with), and its default scheduler, PNDM, on it.
SD15_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SD15_SCHEDULER = dict(SD15_SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
)

SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
    scaling_factor=0.18215,
)

SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)

TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    sample_size=64,
    norm_num_groups=32,
)

TINY_TEXT = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
)


def preset_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer that keeps the word list's words whole; the same vocabulary in every process."""
    from .tokenizer import build_tokenizer

    return build_tokenizer([word for word in _CORPUS.split() if word.isalpha()])


def _build(unet_cfg: dict, vae_cfg: dict, text_cfg: dict, seed: int) -> StableDiffusionPipeline:
    tokenizer = preset_tokenizer()
    text_config = CLIPTextConfig(
        **{**text_cfg, "vocab_size": max(text_cfg["vocab_size"], len(tokenizer))},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed the random weights without touching the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(text_config)
    return assemble(vae.eval(), text_encoder.eval(), tokenizer, unet.eval())


def assemble(vae, text_encoder, tokenizer, unet) -> StableDiffusionPipeline:
    """An SD 1.x pipeline of these parts with SD 1.5's PNDM scheduler and no safety checker (presets, shapes)."""
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def tiny(seed: int = 0) -> StableDiffusionPipeline:
    """Toy-size Stable Diffusion pipeline (64x64 images) with random weights, for quick runs."""
    return _build(TINY_UNET, TINY_VAE, TINY_TEXT, seed)


def sd15_random(seed: int = 0) -> StableDiffusionPipeline:
    """The exact Stable Diffusion v1.5 architecture (512x512 images) with random weights."""
    return _build(SD15_UNET, SD15_VAE, SD15_TEXT, seed)


def tiny_vae(seed: int = 1) -> AutoencoderKL:
    """A stand-in for a fine-tuned VAE of the ``tiny`` preset's shape (different random weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**TINY_VAE).eval()


def sd15_vae(seed: int = 1) -> AutoencoderKL:
    """A stand-in for a fine-tuned VAE of Stable Diffusion v1.5's shape (different random weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**SD15_VAE).eval()


PRESETS = {"tiny": tiny, "sd15-random": sd15_random}
STAND_IN_VAES = {"tiny": tiny_vae, "sd15-random": sd15_vae}
