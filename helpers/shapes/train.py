"""Train the `shapes` checkpoint from scratch: a VAE, a fine-tuned VAE decoder, then a UNet with its text encoder.

Everything is seeded, the pictures are rendered on the fly, and the result is a standard diffusers folder
(``StableDiffusionPipeline.save_pretrained``), loadable with ``DiffusionPipeline.from_pretrained``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..presets import SD15_SCHEDULE, assemble
from ..tokenizer import build_tokenizer
from .evaluate import psnr
from .world import SIZE, WORDS, caption, pictures


@dataclasses.dataclass
class Config:
    """Every setting of a training run; ``micro()`` is a seconds-long version for tests."""

    seed: int = 0
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 1e-3  # 2e-3 let the loss climb for a while mid-run at 1,500 steps (issue #25)
    kl_weight: float = 1e-6
    # GroupNorm groups in the VAE. diffusers' default, 32, is one channel per group on a 32-channel level: each
    # channel is scaled by its own spread, which flat pictures barely have. 8 gave 29.3 against 26.3 dB (issue #25).
    vae_norm_groups: int = 8
    # Encode to the posterior's mean rather than a sample, in every phase and for the UNet's latents (issue #25).
    decode_mean: bool = True
    # Noise added to the latents the decoder sees in phases 1-2, as a share of their spread (std), from seeds of its
    # own: a decoder that has met latents a little off the encoder's own draws sound pictures from a sampler's
    # (issue #25: 0.1 lifted PNDM 50's circles at guidance 7.5 from 18.8 to 54.2 %, 0.3 to 93.8 %).
    vae_latent_noise: float = 0.3
    # Gaussian noise (std, in scaled latent units) added to the UNet's training latents; meant for decode_mean,
    # whose latents lack a sample's noise. 0.1 left guidance 7.5's overshoot as it was (issue #25, docs/shapes.md).
    latent_noise: float = 0.0
    decoder_steps: int = 450
    decoder_lr: float = 3e-4
    decoder_more_steps: int = 200  # phase 4: the fine-tuned VAE
    unet_channels: tuple[int, ...] = (64, 128, 128)
    text_width: int = 64
    text_layers: int = 2
    unet_steps: int = 1900
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.999
    # min-SNR loss weighting: 5 left PNDM at guidance 7.5 drawing broken pictures on the cleaner latents, 10 lost
    # colour (docs/shapes.md)
    snr_gamma: float = 20.0
    # Offset noise: a per-picture, per-channel constant added to the noise. Without it, SD's schedule leaves the
    # latents' mean nearly untouched at the last step, so the seed, not the prompt, picks a white or black background.
    noise_offset: float = 0.1
    empty_caption: float = 0.1  # share of empty captions, so classifier-free guidance has an unconditional model
    # Share of captions that name the background. At 0.5 the previous shipped model drew 88.9 % of named gray
    # backgrounds right (white 100 %, black 94.4 %); at 0.7 this one draws all three right every time.
    name_background: float = 0.7
    eval_pictures: int = 256  # held-out pictures for the VAEs' PSNR

    @classmethod
    def micro(cls) -> Config:
        """A few steps of a very small model: checks the mechanics in seconds, learns nothing."""
        return cls(vae_channels=(32, 32), vae_steps=3, vae_batch=4, decoder_steps=2, decoder_more_steps=2,
                   unet_channels=(32, 32), text_width=32, text_layers=1, unet_steps=3, unet_batch=4, warmup=1,
                   eval_pictures=8)


def vae_autocast():
    """The VAE's CPU autocast in every phase: bfloat16 where the CPU computes it natively, else off (float32).

    By the instruction set alone (``device.cpu_has_fast_bf16``), not by the recipe's speed measurement, so that one
    CPU kind always trains the same way: on a CPU that emulates bfloat16 it would be many times slower than float32.
    The same seeds give other weights in float32 than in bfloat16: the shipped ones are bfloat16's, and ``make
    shapes`` remakes them byte for byte only on a CPU with native bfloat16.
    """
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_dtype() == torch.bfloat16)


def cpu_dtype() -> torch.dtype:
    """The precision of ``vae_autocast``: bfloat16 where the CPU computes it natively, else float32."""
    from ..device import cpu_has_fast_bf16

    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def _cosine(optimizer, warmup: int, total: int):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)


def make_vae(cfg: Config):
    """An SD-style AutoencoderKL, 4 latent channels, scaling 64x64 pictures by 2^(levels-1)."""
    from diffusers import AutoencoderKL

    levels = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=SIZE, layers_per_block=1,
        block_out_channels=cfg.vae_channels, norm_num_groups=cfg.vae_norm_groups,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
    )
    # Start the posterior's log-variance near -10 (a standard deviation near 0.007) rather than 0: a fresh VAE's
    # latents are small, and unit noise on them hides everything from the decoder for hundreds of steps.
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.latent_channels:] = -10.0
    return vae


def _contiguous_input(_module, args):
    return (args[0].contiguous(), *args[1:])


@contextlib.contextmanager
def contiguous_group_norms(model):
    """Within the block, ``model``'s GroupNorms run on NCHW copies of their input (forward pre-hooks, removed after).

    oneDNN's bfloat16 convolutions return channels-last tensors even in an NCHW model, and PyTorch's CPU GroupNorm
    is slow on those: forward and backward of a (32, 32, 64, 64) bfloat16 input took 81 ms in channels-last and
    4 ms in NCHW (Intel Xeon with AMX, 2 cores), half of the VAE's training step. The copy costs far less.
    """
    handles = [m.register_forward_pre_hook(_contiguous_input) for m in model.modules()
               if isinstance(m, torch.nn.GroupNorm)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def train_vae(cfg: Config, vae, steps: int, lr: float, params, rng: random.Random, desc: str,
              noise_seed: int | None = None) -> list[float]:
    """Train ``params`` of the VAE to reconstruct rendered pictures (MSE plus a small KL term); returns losses.

    With ``noise_seed``, the decoder sees its latents plus ``cfg.vae_latent_noise`` times their spread in noise.
    """
    noise = torch.Generator().manual_seed(noise_seed) if noise_seed is not None and cfg.vae_latent_noise else None
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = _cosine(optimizer, min(cfg.warmup, steps // 10 + 1), steps)
    losses = []
    vae.train()
    for _ in (bar := tqdm(range(steps), desc=desc, mininterval=2)):
        x = pictures(rng, cfg.vae_batch)[0]
        # bfloat16 is faster here for the VAE's convolutions; NCHW GroupNorms halve the step (0.88 -> 0.41 s).
        with vae_autocast(), contiguous_group_norms(vae):
            posterior = vae.encode(x).latent_dist
            latents = posterior.mode() if cfg.decode_mean else posterior.sample()
            if noise is not None:
                spread = latents.detach().float().std()
                latents = latents + cfg.vae_latent_noise * spread * torch.randn(latents.shape, generator=noise)
            out = vae.decode(latents).sample
        loss = F.mse_loss(out.float(), x) + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
    vae.eval()
    return losses


def make_text_encoder(cfg: Config, tokenizer):
    """A small CLIP text encoder (SD 1.x's text-encoder class) for the tokenizer's vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=77,
        hidden_act="quick_gelu", projection_dim=cfg.text_width, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet(cfg: Config):
    """A small UNet2DConditionModel: cross-attention at every level but the first, one layer per block."""
    from diffusers import UNet2DConditionModel

    levels = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=SIZE // 2 ** (len(cfg.vae_channels) - 1), in_channels=4, out_channels=4,
        block_out_channels=cfg.unet_channels, layers_per_block=1, norm_num_groups=32, attention_head_dim=8,
        cross_attention_dim=cfg.text_width,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
    )


def random_caption(rng: random.Random, scene, cfg: Config) -> str:
    """A caption for training: empty, short ('a red circle') or naming the background."""
    if rng.random() < cfg.empty_caption:
        return ""
    return caption(scene, name_background=rng.random() < cfg.name_background)


def encode_latents(vae, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The frozen VAE's latents of pictures ``x``, shifted and scaled for a denoiser, in float32.

    The posterior's mean, or with ``generator`` a sample from it. Under ``vae_autocast``: bfloat16 is enough for the
    frozen encoder, and NCHW GroupNorms make it 135 -> 93 ms per batch of 64 (Intel Xeon with AMX). ``shift_factor``
    (None in SD's VAEs, 0.0 in ``shapes-flux``'s copy) is subtracted first, as Flux's pipeline adds it back.
    """
    with torch.no_grad(), vae_autocast(), contiguous_group_norms(vae):
        posterior = vae.encode(x).latent_dist
    latents = posterior.mode() if generator is None else posterior.sample(generator)
    latents = latents.float()
    if vae.config.get("shift_factor"):
        latents = latents - vae.config.shift_factor
    return latents * vae.config.scaling_factor


def optimise(loss: torch.Tensor, params: list, optimizer, schedule, ema) -> None:
    """One training step's update: gradients clipped to norm 1, the optimizer and its schedule, then the EMA."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    ema.step(params)


def train_unet(cfg: Config, unet, text_encoder, tokenizer, vae, rng: random.Random) -> list[float]:
    """Train the UNet and text encoder jointly to predict the noise (epsilon) on the VAE's latents."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel, compute_snr

    noise_scheduler = DDPMScheduler(**SD15_SCHEDULE)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    schedule = _cosine(optimizer, cfg.warmup, cfg.unet_steps)
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    unet.train().to(memory_format=torch.channels_last)  # about 20 % faster here than the default layout
    text_encoder.train()
    for _ in (bar := tqdm(range(cfg.unet_steps), desc="unet + text encoder", mininterval=2)):
        x, scenes = pictures(rng, cfg.unet_batch)
        ids = tokenizer([random_caption(rng, s, cfg) for s in scenes], padding="max_length",
                        max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        latents = encode_latents(vae, x, None if cfg.decode_mean else generator)
        if cfg.latent_noise:
            latents = latents + cfg.latent_noise * torch.randn(latents.shape, generator=generator)
        latents = latents.contiguous(memory_format=torch.channels_last)
        noise = torch.randn(latents.shape, generator=generator)
        noise += cfg.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(x),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        prediction = unet(noisy, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        snr = compute_snr(noise_scheduler, t)
        weight = torch.clamp(snr, max=cfg.snr_gamma) / snr
        loss = (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        optimise(loss, params, optimizer, schedule, ema)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
    ema.copy_to(params)
    unet.eval()
    text_encoder.eval()
    return losses


def _half_rounded(module):
    """The module with its weights rounded to float16 and back, exactly as saving and reloading them would."""
    return module.half().float()


def _decoder_only(vae):
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return vae


# The settings phases 1 and 2 depend on: a saved result of those phases serves a run only if these are the same.
VAE_PHASE_SETTINGS = ("seed", "vae_channels", "vae_steps", "vae_batch", "vae_lr", "kl_weight", "vae_norm_groups",
                      "decode_mean", "vae_latent_noise", "decoder_steps", "decoder_lr", "warmup", "eval_pictures")
# Settings that phase 4 alone uses: --resume, which reruns only phase 4, can change these and no others.
PHASE_4_SETTINGS = ("decoder_more_steps",)


def _vae_phase_settings(cfg: Config) -> dict:
    """What phases 1-2 depend on: their settings, the CPU's precision policy and the libraries' versions."""
    import diffusers

    settings = {name: getattr(cfg, name) for name in VAE_PHASE_SETTINGS}
    settings["cpu_dtype"] = str(cpu_dtype()).removeprefix("torch.")  # vae_autocast's choice
    settings.update(torch=torch.__version__, diffusers=diffusers.__version__)
    return json.loads(json.dumps(settings))  # tuples as lists, as read back from the file


def save_vae_phases(path: Path, cfg: Config, vae, decoded, rng: random.Random, report: dict) -> None:
    """Save phases 1-2's result (both VAEs in float32) with the random states a whole run goes on from."""
    from safetensors.torch import save_file

    tensors = {f"vae.{k}": v.contiguous() for k, v in vae.state_dict().items()}
    tensors.update({f"decoded.{k}": v.contiguous() for k, v in decoded.state_dict().items()})
    tensors["torch_rng_state"] = torch.get_rng_state()
    measured = {"vae_loss": report["vae_loss"], "seconds": report["seconds"], "psnr": report["psnr"]}
    meta = {"settings": _vae_phase_settings(cfg), "scaling_factor": vae.config.scaling_factor,
            "rng_state": rng.getstate(), "report": measured}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # renamed when complete: an interrupted save leaves no FILE
    save_file(tensors, str(partial), metadata={"vae_phases": json.dumps(meta)})
    partial.replace(path)


def load_vae_phases(path: Path, cfg: Config, rng: random.Random, report: dict):
    """Phases 1-2's saved result as ``(vae, decoded)``, with the random states and the report where they left off."""
    from safetensors import SafetensorError, safe_open

    from ..errors import TutorialError

    try:
        with safe_open(str(path), "pt") as file:
            meta = json.loads((file.metadata() or {}).get("vae_phases", "null") or "null")
            tensors = {key: file.get_tensor(key) for key in file.keys()} if meta else {}
    except SafetensorError:
        meta = None
    if meta is None:
        raise TutorialError(f"{path}: not a file of saved VAE phases (or a damaged one); delete it, or give a file "
                            "that --vae-phases wrote.")
    differ = {k: v for k, v in _vae_phase_settings(cfg).items() if meta["settings"].get(k) != v}
    if differ:
        raise TutorialError(f"{path} was made with other settings for phases 1-2 ({', '.join(sorted(differ))}); "
                            "delete it or give another --vae-phases file, and they are trained anew.")
    models = []
    for name in ("vae", "decoded"):
        model = make_vae(cfg)
        model.load_state_dict({k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")})
        model.register_to_config(scaling_factor=meta["scaling_factor"])
        models.append(model.eval())
    state = meta["rng_state"]
    rng.setstate((state[0], tuple(state[1]), state[2]))
    torch.set_rng_state(tensors["torch_rng_state"])
    for key in ("seconds", "psnr"):
        report[key].update(meta["report"][key])
    report.update(vae_loss=meta["report"]["vae_loss"], vae_phases_from=str(path))
    return models


def train(cfg: Config, out: Path, resume: Path | None = None, vae_phases: Path | None = None) -> dict:
    """Train everything and save ``out/shapes`` (the pipeline) and ``out/shapes-vae-ft`` (the better VAE).

    Four phases: (1) the VAE; (2) its decoder trained further: the pipeline's VAE; (3) the UNet and text encoder
    on the encoder's latents; (4) the decoder trained further still: ``shapes-vae-ft`` (the same latent space, as
    ``stabilityai/sd-vae-ft-mse`` was made from SD's VAE). ``resume`` takes phases 1-3 from an earlier run's
    output folder (its ``shapes`` pipeline, whose VAE is phase 2's) and runs phase 4 only. Phase 4 starts from
    float16-rounded weights (as saved) in a full run too, with seeds of its own, so both paths agree.
    ``vae_phases`` names a file for phases 1-2: read when it exists (its VAE settings must be ``cfg``'s), else
    written after them; the run then goes on exactly as a whole one, so a rerun that changes only the UNet's
    settings skips the VAE's half and still makes the same files as ``train`` from scratch.
    """
    from diffusers import AutoencoderKL, DiffusionPipeline

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    held_out, _ = pictures(random.Random(cfg.seed + 10_000), cfg.eval_pictures)
    report: dict = {"config": dataclasses.asdict(cfg), "seconds": {}, "psnr": {}}
    started = time.perf_counter()

    if resume is None and vae_phases is not None and vae_phases.is_file():
        vae, decoded = load_vae_phases(vae_phases, cfg, rng, report)
    elif resume is None:
        vae = make_vae(cfg)
        report["vae_loss"] = train_vae(cfg, vae, cfg.vae_steps, cfg.vae_lr, vae.parameters(), rng, "vae",
                                      noise_seed=cfg.seed + 1)[-1]
        # Scale latents to unit variance, as SD's scaling_factor does for its VAE.
        with torch.no_grad():
            posterior = vae.encode(held_out[:64]).latent_dist
            std = (posterior.mode() if cfg.decode_mean else posterior.sample()).std().item()
        vae.register_to_config(scaling_factor=round(1 / std, 5))
        report["seconds"]["vae"] = time.perf_counter() - started
        report["psnr"]["vae_phase1"] = psnr(vae, held_out)  # no randomness: the latents' mean, decoded

        # Phase 2, on a copy: the pipeline's VAE. The UNet trains on the encoder's latents, which this leaves alone.
        decoded = make_vae(cfg)
        decoded.load_state_dict(vae.state_dict())
        decoded.register_to_config(scaling_factor=vae.config.scaling_factor)
        tic = time.perf_counter()
        train_vae(cfg, _decoder_only(decoded), cfg.decoder_steps, cfg.decoder_lr, decoded.decoder.parameters(), rng,
                  "vae decoder", noise_seed=cfg.seed + 2)
        report["seconds"]["vae_decoder"] = time.perf_counter() - tic
        if vae_phases is not None:
            save_vae_phases(vae_phases, cfg, vae, decoded, rng, report)
    if resume is None:
        tokenizer = build_tokenizer(WORDS)
        text_encoder = make_text_encoder(cfg, tokenizer)
        unet = make_unet(cfg)
        tic = time.perf_counter()
        report["unet_loss"] = float(np.mean(train_unet(cfg, unet, text_encoder, tokenizer, vae, rng)[-100:]))
        report["seconds"]["unet"] = time.perf_counter() - tic
        vae, unet = _half_rounded(decoded), _half_rounded(unet)
    else:
        earlier = DiffusionPipeline.from_pretrained(resume / "shapes", use_safetensors=True)
        vae, unet = earlier.vae, earlier.unet
        text_encoder, tokenizer = earlier.text_encoder, earlier.tokenizer
        previous = resume / "training.json"
        if previous.is_file():
            before = json.loads(previous.read_text())
            report["seconds"].update({k: v for k, v in before["seconds"].items() if k != "total"})
            report.update({k: before[k] for k in ("vae_loss", "unet_loss") if k in before})
            report["psnr"].update({k: v for k, v in before["psnr"].items() if k == "vae_phase1"})
        report["resumed_from"] = str(resume)

    # Phase 4: the better VAE, from the pipeline's VAE (same encoder), with seeds of its own.
    torch.manual_seed(cfg.seed + 4)
    tuned = _decoder_only(AutoencoderKL.from_config(vae.config))
    tuned.load_state_dict(vae.state_dict())
    # from_config resets a scaling factor registered after __init__ (diffusers lists it as a default value): set it.
    tuned.register_to_config(scaling_factor=vae.config.scaling_factor)
    tic = time.perf_counter()
    train_vae(cfg, tuned, cfg.decoder_more_steps, cfg.decoder_lr, tuned.decoder.parameters(),
              random.Random(cfg.seed + 4), "vae decoder, further")
    report["seconds"]["vae_ft"] = time.perf_counter() - tic
    report["seconds"]["total"] = sum(report["seconds"].values())
    report["psnr"].update(vae=psnr(vae, held_out), vae_ft=psnr(tuned, held_out))

    # SD 1.5's noise schedule and default scheduler, so every compatible scheduler works as on SD 1.5. UNet and VAE
    # are stored in half precision to stay small; from_pretrained gives float32 as usual.
    pipeline = assemble(vae.half(), text_encoder, tokenizer, unet.half())
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out / "shapes", safe_serialization=True)
    tuned.half().save_pretrained(out / "shapes-vae-ft", safe_serialization=True)
    (out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
