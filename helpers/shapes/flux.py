"""Train `shapes-flux`: a Flux-class pipeline on the shapes world, beside the SD 1.x-style `shapes` (issue #37).

A ``FluxPipeline`` built and trained in code: a small ``FluxTransformer2DModel`` (double- and single-stream blocks,
so diffusers' ``enable_cache`` and ``compile_repeated_blocks`` apply), toy CLIP and T5 text encoders with
tokenizers built from the world's words, ``FlowMatchEulerDiscreteScheduler``, and the shipped ``shapes-vae-ft``
(frozen; its copy says ``shift_factor`` 0.0, which the pipeline adds to every latent it decodes). Trained with the
rectified-flow objective: ``x_t = (1 - t) x0 + t noise``, the transformer predicting ``noise - x0``, on the same
rendered pictures, captions (10 % empty, for true classifier-free guidance) and latents as ``shapes``' UNet.

What a caller must pass (FluxPipeline reads neither from the saved folder): ``height=64, width=64`` (its default
size is a fixed 128 x the VAE's scale factor, 512 px here) and ``max_sequence_length=16`` (its default pads the
T5 prompt to 512 tokens, which this model never saw): ``CALL_KWARGS``, or ``load`` for the sizes. For classifier-
free guidance, ``true_cfg_scale`` > 1 and ``negative_prompt=""`` (without a negative prompt FluxPipeline ignores
``true_cfg_scale``; ``guidance_scale`` is for guidance-distilled models and does nothing here).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..tokenizer import build_t5_tokenizer, build_tokenizer
from .train import _cosine, cpu_dtype, encode_latents, make_text_encoder, optimise, random_caption
from .world import SIZE, WORDS, pictures

WEIGHTS = Path(__file__).resolve().parent / "weights"
VAE = WEIGHTS / "shapes-vae-ft"  # the latent space the transformer learns: shapes' fine-tuned VAE
# T5 tokens the model is trained on (the longest caption takes 8: 7 words and </s>), and CLIP's model_max_length:
# FluxPipeline pads CLIP's prompt to that (16 rather than 77 made CLIP's step 57 -> 11 ms for a batch of 64, in
# an earlier session whose CPU was not recorded).
MAX_SEQUENCE_LENGTH = 16
CALL_KWARGS = {"height": SIZE, "width": SIZE, "max_sequence_length": MAX_SEQUENCE_LENGTH}
# The eval's true classifier-free guidance scale (2.5 to 8 were tried on the 6,000-step weights: none beat 4 by
# more than 2 pictures of 144).
CFG_SCALE = 4.0


@dataclasses.dataclass
class FluxConfig:
    """Every setting of a training run; ``micro()`` is a seconds-long version for tests."""

    seed: int = 0
    heads: int = 4
    head_dim: int = 32  # hidden size heads x head_dim = 128; RoPE splits head_dim (rope_axes)
    double_layers: int = 3  # FluxTransformerBlock: text and image streams with their own weights
    single_layers: int = 4  # FluxSingleTransformerBlock: one stream of text and image tokens
    text_width: int = 64  # CLIP and T5 alike: T5's width is the transformer's joint_attention_dim, CLIP's its
    text_layers: int = 2  # pooled_projection_dim
    # Shape adherence (true CFG 4) by recipe: 3,000 steps 57.6 %; 6,000 steps 76.4 % (logit_mean 0) and 87.5 %
    # (0.6); 9,000 steps with 0.6, the shipped run, 97.2 % (docs/shapes.md has the learning curves). Time on 2 cores:
    # 6,000 steps took 53.4 min on an Intel Xeon with AVX-512 BF16 and no AMX (0.51 s per step of 64) and 63.9 min
    # on an AMD EPYC (Zen 4; 0.62 s); the shipped 9,000 took 108.0 min on the same EPYC (2.1 min to encode the
    # pool, then 0.71 s per step). Half the work per step (hidden size 96, 2 + 3 blocks, 5,200 steps) trained in
    # 27.7 min on that EPYC but drew 58.3 % of shapes right.
    steps: int = 9000
    batch: int = 64
    # Pictures rendered and encoded once, before training, and drawn at random for each batch (each with a fresh
    # caption, noise and t every time it is drawn, about 18 times in all); 0 renders and encodes every batch anew.
    # Rendering and encoding were about half of a step before the pool (0.4 of 0.85 s, in an earlier session whose
    # CPU was not recorded): the pool pays them once.
    pool: int = 32_768
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 100
    ema_decay: float = 0.999
    # How training draws t (the noise's share): "logit_normal" (SD3's and Flux's, sigmoid of a normal draw) or
    # "uniform" on [0, 1].
    timesteps: str = "logit_normal"
    # 0.6 puts the median t at 0.65 instead of 0.5: more practice deciding a shape's outline from nearly pure
    # noise, where squares went wrong. Shape adherence 76.4 -> 87.5 % at 6,000 steps (docs/shapes.md).
    logit_mean: float = 0.6
    logit_std: float = 1.0
    shift: float = 1.0  # the scheduler's timestep shift at inference (Flux-dev shifts by resolution; 64 px: none)
    empty_caption: float = 0.1  # as shapes: an unconditional model for classifier-free guidance
    name_background: float = 0.7  # as shapes: share of the other captions that name the background

    @classmethod
    def micro(cls) -> FluxConfig:
        """A few steps of a very small model: checks the mechanics in seconds, learns nothing."""
        return cls(heads=2, head_dim=16, double_layers=1, single_layers=1, text_width=32, text_layers=1, steps=3,
                   batch=4, pool=8, warmup=1)


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """RoPE's split of a head over Flux's three position ids (unused index, row, column), each even, summing to it.

    Flux.1 gives its 128 as (16, 56, 56); here the rows and columns get 3/8 of a head each (32: (8, 12, 12)).
    """
    side = 2 * (head_dim * 3 // 16)
    return head_dim - 2 * side, side, side


def make_transformer(cfg: FluxConfig, latent_channels: int = 4):
    """A small FluxTransformer2DModel on 2x2 patches of ``latent_channels`` latents, with adaLN-Zero initialisation.

    As DiT's adaLN-Zero, every block's modulation and the output layer start at zero: each block starts as the
    identity and the prediction as 0. diffusers initialises them like any linear layer.
    """
    from diffusers import FluxTransformer2DModel

    if cfg.head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {cfg.head_dim}")
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=cfg.double_layers,
        num_single_layers=cfg.single_layers, attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads,
        joint_attention_dim=cfg.text_width, pooled_projection_dim=cfg.text_width, guidance_embeds=False,
        axes_dims_rope=rope_axes(cfg.head_dim),
    )
    with torch.no_grad():
        for block in transformer.transformer_blocks:
            for norm in (block.norm1, block.norm1_context):
                norm.linear.weight.zero_()
                norm.linear.bias.zero_()
        for block in transformer.single_transformer_blocks:
            block.norm.linear.weight.zero_()
            block.norm.linear.bias.zero_()
        for layer in (transformer.norm_out.linear, transformer.proj_out):
            layer.weight.zero_()
            layer.bias.zero_()
    return transformer


def make_t5(cfg: FluxConfig, tokenizer):
    """A small T5 encoder (T5 v1.1's gated GELU, as Flux's T5-XXL) for the tokenizer's vocabulary; no dropout."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer), d_model=cfg.text_width, d_kv=cfg.text_width // 4, d_ff=2 * cfg.text_width,
        num_layers=cfg.text_layers, num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, use_cache=False,
    )
    return T5EncoderModel(config)


def load_vae(path: str | Path = VAE):
    """The frozen VAE, as FluxPipeline needs it: ``shift_factor`` 0.0 (it adds the value; None would fail)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(path, use_safetensors=True)
    vae.register_to_config(shift_factor=0.0)
    return vae.eval().requires_grad_(False)


def build_tokenizers():
    """The CLIP and the T5 tokenizer, of the world's words, both with ``MAX_SEQUENCE_LENGTH`` as model_max_length."""
    return (build_tokenizer(WORDS, model_max_length=MAX_SEQUENCE_LENGTH),
            build_t5_tokenizer(WORDS, model_max_length=MAX_SEQUENCE_LENGTH))


def build_models(cfg: FluxConfig, vae) -> dict:
    """The pipeline's components, untrained but for the VAE (seed ``cfg.seed``): FluxPipeline's keyword arguments."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(cfg.seed)
    tokenizer, tokenizer_2 = build_tokenizers()
    return dict(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.shift), vae=vae,
        text_encoder=make_text_encoder(cfg, tokenizer), tokenizer=tokenizer,
        text_encoder_2=make_t5(cfg, tokenizer_2), tokenizer_2=tokenizer_2,
        transformer=make_transformer(cfg, vae.config.latent_channels),
    )


def check_config(cfg: FluxConfig) -> None:
    """Raise ValueError (or TypeError) for settings the models cannot be built or trained with, before training."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in ("heads", "head_dim", "steps", "batch", "text_width", "text_layers") and value < 1:
            raise ValueError(f"{field.name}={value}: it must be 1 or more")
    if cfg.pool < 0:
        raise ValueError(f"pool={cfg.pool}: 0 (a fresh batch every step) or the number of pictures to draw from")
    if cfg.text_width % 4:
        raise ValueError(f"text_width={cfg.text_width}: the text encoders' 4 heads must divide it")
    sample_t(cfg, 1, torch.Generator())
    tokenizer, tokenizer_2 = build_tokenizers()
    make_transformer(cfg), make_text_encoder(cfg, tokenizer), make_t5(cfg, tokenizer_2)


def sample_t(cfg: FluxConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` noise levels in (0, 1) for training, drawn as ``cfg.timesteps`` says."""
    if cfg.timesteps == "logit_normal":
        return torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, generator=generator))
    if cfg.timesteps == "uniform":
        return torch.rand(n, generator=generator)
    raise ValueError(f"timesteps: 'logit_normal' or 'uniform', got {cfg.timesteps!r}")


def latent_pool(cfg: FluxConfig, vae, rng: random.Random, progress: bool = True) -> tuple[torch.Tensor, list]:
    """``cfg.pool`` random pictures' latents (encoded as in training, in batches of ``cfg.batch``) and scenes."""
    latents, scenes = [], []
    for start in tqdm(range(0, cfg.pool, cfg.batch), desc="encoding the pool", mininterval=2, disable=not progress):
        x, batch = pictures(rng, min(cfg.batch, cfg.pool - start))
        latents.append(encode_latents(vae, x))
        scenes += batch
    return torch.cat(latents), scenes


def train_transformer(cfg: FluxConfig, models: dict, rng: random.Random, progress: bool = True,
                      snapshot=None, snapshot_every: int = 0, pool=None) -> list[float]:
    """Train the transformer and both text encoders jointly on rectified flow; returns the losses.

    With ``snapshot_every``, ``snapshot(step)`` is called after every that many steps but the last, with the EMA
    weights in the models (the training weights are put back after it); it draws no random numbers, so the run is
    unchanged. ``pool`` is ``latent_pool``'s result where the caller made it (else made here when ``cfg.pool``).
    """
    from diffusers import FluxPipeline
    from diffusers.training_utils import EMAModel

    if snapshot_every < 0:
        raise ValueError(f"snapshot_every={snapshot_every}: a number of steps, or 0 for no snapshots")
    transformer, clip, t5 = models["transformer"], models["text_encoder"], models["text_encoder_2"]
    tokenizer, tokenizer_2, vae = models["tokenizer"], models["tokenizer_2"], models["vae"]
    params = [p for model in (transformer, clip, t5) for p in model.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = _cosine(optimizer, cfg.warmup, cfg.steps)
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    side = SIZE // 2 ** (len(vae.config.block_out_channels) - 1)  # the latents' side, 16; 8 x 8 tokens of 2 x 2
    channels = vae.config.latent_channels
    img_ids = FluxPipeline._prepare_latent_image_ids(None, side // 2, side // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(MAX_SEQUENCE_LENGTH, 3)
    if pool is None and cfg.pool:
        pool = latent_pool(cfg, vae, rng, progress)
    losses = []
    for model in (transformer, clip, t5):
        model.train()
    for step in (bar := tqdm(range(cfg.steps), desc="transformer + text encoders", mininterval=2,
                             disable=not progress)):
        if pool:
            index = torch.randint(len(pool[1]), (cfg.batch,), generator=generator)
            latents, scenes = pool[0][index], [pool[1][i] for i in index.tolist()]
        else:
            x, scenes = pictures(rng, cfg.batch)
            latents = encode_latents(vae, x)
        captions = [random_caption(rng, s, cfg) for s in scenes]
        # Tokenized as FluxPipeline does: CLIP to its model_max_length, T5 to max_sequence_length, no masks.
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        ids_2 = tokenizer_2(captions, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
                            return_tensors="pt").input_ids
        noise = torch.randn(latents.shape, generator=generator)
        t = sample_t(cfg, len(latents), generator)
        noisy = (1 - t[:, None, None, None]) * latents + t[:, None, None, None] * noise
        prediction = transformer(
            hidden_states=FluxPipeline._pack_latents(noisy, len(latents), channels, side, side),
            timestep=t,  # in [0, 1]: the pipeline passes the scheduler's timestep / 1000, the model scales by 1000
            pooled_projections=clip(ids).pooler_output, encoder_hidden_states=t5(ids_2)[0],
            txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
        )[0]
        target = FluxPipeline._pack_latents(noise - latents, len(latents), channels, side, side)
        loss = F.mse_loss(prediction, target)
        optimise(loss, params, optimizer, schedule, ema)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        if snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 < cfg.steps:
            ema.store(params)
            ema.copy_to(params)
            snapshot(step + 1)
            ema.restore(params)
    ema.copy_to(params)
    for model in (transformer, clip, t5):
        model.eval()
    return losses


def parameter_counts(models: dict) -> dict[str, int]:
    """Parameters per trained component, and the VAE's."""
    names = ("transformer", "text_encoder", "text_encoder_2", "vae")
    return {name: sum(p.numel() for p in models[name].parameters()) for name in names}


def _vae_record(path: str | Path) -> dict:
    """Which VAE a run used: its folder (inside the package: relative, so no machine path is shipped) and the
    SHA-256 of its weights."""
    import hashlib

    folder = Path(path).resolve()
    package = WEIGHTS.parents[2]  # the repository, or site-packages
    shown = folder.relative_to(package).as_posix() if folder.is_relative_to(package) else str(path)
    digest = hashlib.sha256((folder / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    return {"path": shown, "sha256": digest}


def _save_pipeline(models: dict, out: Path) -> None:
    """Save the components as a FluxPipeline folder: transformer and VAE in float16 (copies), the rest as they are."""
    import copy

    from diffusers import FluxPipeline

    halves = {name: copy.deepcopy(models[name]).half() for name in ("transformer", "vae")}
    out.mkdir(parents=True, exist_ok=True)
    FluxPipeline(**dict(models, **halves)).save_pretrained(out, safe_serialization=True)


def train(cfg: FluxConfig, out: Path, vae: str | Path = VAE, progress: bool = True, snapshot_every: int = 0) -> dict:
    """Train the transformer and text encoders, and save the pipeline to ``out`` with ``training.json`` inside.

    The same seed, settings, VAE and CPU kind give the same files byte for byte (but ``training.json``'s times).
    The transformer and VAE are stored in float16 (loaded as float32, as ``shapes``), the text encoders in float32.
    ``snapshot_every`` also saves the EMA weights after every that many steps, to ``out/snapshots/step-N`` (the
    learning curve: judge each with the eval); the final files are the same with or without them.
    """
    import diffusers

    from ..device import cpu_model, isa_line

    rng = random.Random(cfg.seed)
    models = build_models(cfg, load_vae(vae))
    report: dict = {"config": dataclasses.asdict(cfg), "vae": _vae_record(vae), "parameters": parameter_counts(models),
                    "cpu": cpu_model(), "isa": isa_line(), "cpu_dtype": str(cpu_dtype()).removeprefix("torch."),
                    "torch": torch.__version__,
                    "diffusers": diffusers.__version__}
    tic = time.perf_counter()
    pool = latent_pool(cfg, models["vae"], rng, progress) if cfg.pool else None
    report["pool_seconds"] = time.perf_counter() - tic
    losses = train_transformer(cfg, models, rng, progress=progress, snapshot_every=snapshot_every, pool=pool,
                               snapshot=lambda step: _save_pipeline(models, out / "snapshots" / f"step-{step}"))
    report["seconds"] = time.perf_counter() - tic  # the pool's encoding and the steps
    report["loss"] = float(np.mean(losses[-100:]))
    _save_pipeline(models, out)
    (out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def load(folder: str | Path, **kwargs):
    """The saved pipeline, whose calls default to 64 x 64 pictures (FluxPipeline's own default is 512 x 512)."""
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(folder, use_safetensors=True, **kwargs)
    pipeline.default_sample_size = SIZE // pipeline.vae_scale_factor  # an attribute __init__ sets to 128
    return pipeline


def evaluate(model: str, seeds: int = 8, device: str | None = None, cfg_scale: float = CFG_SCALE):
    """The eval command for a FluxPipeline: adherence per colour and shape with FlowMatch Euler 20, without and with
    true classifier-free guidance, background, stray colour in generated pictures, and the VAE's PSNR."""
    import pandas as pd

    from ..device import pick_device
    from .evaluate import adherence, held_out_pictures, judge_prompts, print_adherence, prompt_grid, vae_psnr

    device = torch.device(device) if device else pick_device()
    pipeline = load(model).to(device)
    pipeline.set_progress_bar_config(disable=True)
    print(f"model {model} ({type(pipeline.transformer).__name__}) on {device.type}; {seeds} seeds per prompt, "
          f"FlowMatch Euler 20 steps")
    guided = f"Euler 20, true CFG {cfg_scale:g}"
    runs = {"Euler 20, no CFG": _call_kwargs(), guided: _call_kwargs(cfg_scale)}
    results, tables, generated = {}, {}, []
    for label, kwargs in runs.items():
        keep = generated if label == guided else None
        tables[label] = judge_prompts(pipeline, prompt_grid(), range(seeds), steps=20, keep=keep, **kwargs)
        results[label] = adherence(tables[label])
        print(f"{label}: {tables[label].seconds.mean():.3f} s per picture")
    print_adherence(pipeline, tables, generated, guided, steps=20, **runs[guided])
    print(f"\nVAE PSNR on 256 held-out pictures: {model}/vae {vae_psnr(pipeline.vae, held_out_pictures()):.2f} dB")
    summary = pd.DataFrame(results).T
    print("\n" + summary.to_string())
    best = results[guided]
    print(f"adherence ({guided}): colour {best['colour %']:.0f}%, shape {best['shape %']:.0f}%, "
          f"both {best['both %']:.0f}%")
    return summary


def _call_kwargs(true_cfg_scale: float = 1.0) -> dict:
    """FluxPipeline keywords for the eval: 64 px, 16 T5 tokens and, for true CFG, the empty negative prompt."""
    kwargs = dict(CALL_KWARGS)
    if true_cfg_scale > 1:
        kwargs.update(true_cfg_scale=true_cfg_scale, negative_prompt="")
    return kwargs
