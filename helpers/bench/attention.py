"""Attention processors for the ladder: heads zero-padded to a multiple of 64, or the project's fused C++ kernel."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

KERNEL_SOURCE = Path(__file__).with_name("flash_attention.cpp")
KERNEL_FLAGS = {  # compiler flags per instruction set, as PyTorch names the one it runs (ATEN_CPU_CAPABILITY caps it)
    "AVX512": ["-mavx512f", "-mavx512dq", "-mfma", "-DED_AVX512"],
    "AVX2": ["-mavx2", "-mfma"],
}
# AVX-512 with bfloat16 pairs (vdpbf16ps): bfloat16 inputs multiply in bfloat16, summed in float32
KERNEL_FLAGS["AVX512_BF16"] = [*KERNEL_FLAGS["AVX512"], "-mavx512bw", "-mavx512bf16", "-DED_BF16"]
KERNEL_MAX_HEAD = 80  # SD 1.5's heads of 40 and 80; at 160 (and the VAE's 512) SDPA was as fast or faster (Intel Xeon)
# bfloat16 pairs (AVX-512 BF16) beat PyTorch's bfloat16 SDPA at every head size measured, the VAE's 512 included
KERNEL_MAX_HEAD_BF16 = 512


def padded_size(head_dim: int, multiple: int = 64) -> int:
    """``head_dim`` rounded up to a multiple of ``multiple`` (SD 1.5's 40, 80, 160 become 64, 128, 192)."""
    return math.ceil(head_dim / multiple) * multiple


def kernel_isa() -> str | None:
    """The instruction set the attention kernel is built for here (PyTorch's own choice of CPU kernels), or None."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512" and torch.cpu._is_avx512_bf16_supported():
        return "AVX512_BF16"
    return capability if capability in KERNEL_FLAGS else None


def kernel_build() -> tuple[str, list[str]]:
    """The kernel's library name and compiler flags for this CPU; a one-line error where neither instruction set is."""
    isa = kernel_isa()
    if isa is None:
        raise RuntimeError(f"the attention kernel needs a CPU that PyTorch runs with AVX2 or AVX-512, not "
                           f"{torch.backends.cpu.get_cpu_capability()}: use PyTorch's SDPA instead")
    return f"efficient_diffusion_attention_{isa.lower()}", ["-O3", "-fopenmp", *KERNEL_FLAGS[isa]]


@functools.cache
def flash_kernel():
    """``torch.ops.efficient_diffusion.flash_attention``: the fused kernel (``flash_attention.cpp``), compiled for
    this CPU at its first use (about 7 s; PyTorch keeps the build) and given its shape rule for tracing."""
    from torch.utils.cpp_extension import load

    name, flags = kernel_build()
    load(name, [str(KERNEL_SOURCE)], is_python_module=False, extra_cflags=flags, extra_ldflags=["-fopenmp"])
    try:
        torch.library.register_fake("efficient_diffusion::flash_attention", _output_like_query)
    except RuntimeError as err:  # registered by an earlier load in this process (the cache cleared, a reload)
        if "already" not in str(err):
            raise
    return torch.ops.efficient_diffusion.flash_attention


def kernel_error() -> str | None:
    """None once the kernel is built and loaded here; else why not, in one line (no compiler, no AVX2, ...)."""
    try:
        flash_kernel()
    except Exception as err:  # a missing or failing C++ compiler raises several kinds
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        reason = next((line for line in lines if "error:" in line or "not found" in line), lines[-1])
        return f"{type(err).__name__}: {reason}"
    return None


def _output_like_query(query, key, value, scale):
    return query.new_empty(query.shape)


def flash_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(query key^T * scale) value on (batch, tokens, heads, head size) CPU tensors, by the fused kernel
    (built and loaded at the first eager call; under torch.compile, load it first with ``flash_kernel()``)."""
    if not torch.compiler.is_compiling():
        flash_kernel()  # cached after the first call
    return torch.ops.efficient_diffusion.flash_attention(query, key, value, scale)


class HeadsAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` (fused projections included) with the attention itself in ``attend``."""

    def attend(self, query, key, value, mask, head_dim: int) -> torch.Tensor:
        """(batch, tokens, heads * head size) from (batch, tokens, heads, head size) views: PyTorch's SDPA."""
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        return out.transpose(1, 2).flatten(2)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = hidden_states.shape if hidden_states.ndim == 4 else None
        if image_shape is not None:  # (batch, channels, height, width) -> (batch, pixels, channels)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            keys = hidden_states.shape[1] if encoder_hidden_states is None else encoder_hidden_states.shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, keys, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states  # after the norm
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)

        fused = getattr(attn, "fused_projections", False)  # set by fuse_qkv_projections()
        if fused and encoder_hidden_states is None and hasattr(attn, "to_qkv"):  # self-attention
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query = attn.to_q(hidden_states)
            if fused and hasattr(attn, "to_kv"):  # cross-attention
                key, value = attn.to_kv(context).chunk(2, dim=-1)
            else:
                key, value = attn.to_k(context), attn.to_v(context)

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = self.attend(query, key, value, attention_mask, head_dim).to(query.dtype)

        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, then dropout
        if image_shape is not None:
            out = out.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class PaddedAttnProcessor(HeadsAttnProcessor):
    """SDPA on heads zero-padded to a multiple of ``multiple``: the same result, kernel-friendly sizes.

    Zeros appended to every query and key add nothing to their dot products, zeros appended to the values give
    output columns that are sliced off, and the softmax scale stays 1/sqrt(true head size).
    """

    def __init__(self, multiple: int = 64):
        self.multiple = multiple

    def attend(self, query, key, value, mask, head_dim: int) -> torch.Tensor:
        """SDPA on the padded heads, the padding sliced off again."""
        pad = padded_size(head_dim, self.multiple) - head_dim
        query, key, value = (F.pad(t, (0, pad)).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                             scale=head_dim**-0.5)
        return out[..., :head_dim].transpose(1, 2).flatten(2)


class FlashAttnProcessor(HeadsAttnProcessor):
    """The project's fused kernel where it was faster (CPU, no mask, heads up to ``KERNEL_MAX_HEAD``, or
    ``KERNEL_MAX_HEAD_BF16`` for bfloat16 on AVX-512 BF16), else SDPA."""

    def __init__(self):
        self.bf16_pairs = kernel_isa() == "AVX512_BF16"  # read once: not from inside a compiled graph

    def attend(self, query, key, value, mask, head_dim: int) -> torch.Tensor:
        """The kernel's output, already laid out as (batch, tokens, heads, head size)."""
        pairs = self.bf16_pairs and query.dtype == torch.bfloat16
        if mask is not None or head_dim > (KERNEL_MAX_HEAD_BF16 if pairs else KERNEL_MAX_HEAD) or \
                query.device.type != "cpu":
            return super().attend(query, key, value, mask, head_dim)
        return flash_attention(query, key, value, head_dim**-0.5).flatten(2)


def pad_attention_heads(model: torch.nn.Module, multiple: int = 64) -> None:
    """Give every attention layer of ``model`` the padded processor; call it after ``fuse_qkv_projections``."""
    model.set_attn_processor(PaddedAttnProcessor(multiple))


def use_flash_attention(model: torch.nn.Module) -> None:
    """Give every attention layer of ``model`` the fused kernel (built now); call it after ``fuse_qkv_projections``."""
    flash_kernel()
    model.set_attn_processor(FlashAttnProcessor())
