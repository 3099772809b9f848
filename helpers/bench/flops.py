"""What the model costs: FLOPs of one guided UNet call, one VAE decode and the text encoder, counted, not timed."""

from __future__ import annotations

import torch

from ..models import quiet_logs


def count_flops(pipe, height: int, width: int) -> dict[str, float]:
    """FLOPs of one guided UNet call, one VAE decode and the text encoder, counted on meta-device copies."""
    return totals(flops_by_operator(pipe, height, width))


def totals(counts: dict[str, dict]) -> dict[str, float]:
    """Each part's FLOPs from its counts per operator (``flops_by_operator``)."""
    return {part: float(sum(ops.values())) for part, ops in counts.items()}


def flops_by_operator(pipe, height: int, width: int) -> dict[str, dict]:
    """The same counts per operator (``aten.convolution``, ``aten.bmm``, ...) for each of the three parts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    latent = (pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    with quiet_logs(), torch.device("meta"):
        unet = type(pipe.unet).from_config(pipe.unet.config)
        vae = type(pipe.vae).from_config(pipe.vae.config)
        text = type(pipe.text_encoder)(pipe.text_encoder.config)
    counts = {}
    # The math backend spells attention out as matrix products, which the counter knows.
    with torch.device("meta"), torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        cond = torch.empty(2, pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
        for key, call in {
            "unet": lambda: unet(torch.empty(2, *latent), torch.tensor(999), cond),
            "vae": lambda: vae.decode(torch.empty(1, *latent)),
            "text": lambda: text(torch.zeros(2, pipe.tokenizer.model_max_length, dtype=torch.long)),
        }.items():
            with FlopCounterMode(display=False) as counter:
                call()
            counts[key] = dict(counter.get_flop_counts()["Global"])
    return counts


def flops_text(flops: float) -> str:
    """A FLOP count for the header: in T (10^12) at real size, in G (10^9) for a toy model whose T would read 0.000."""
    return f"{flops / 1e12:.3f} T" if flops >= 1e11 else f"{flops / 1e9:.3f} G"
