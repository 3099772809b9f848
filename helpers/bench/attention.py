"""An attention processor that pads each head's size up to a multiple of 64 for faster attention kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def padded_size(head_dim: int, multiple: int = 64) -> int:
    """``head_dim`` rounded up to a multiple of ``multiple`` (SD 1.5's 40, 80, 160 become 64, 128, 192)."""
    return math.ceil(head_dim / multiple) * multiple


class PaddedAttnProcessor:
    """diffusers' scaled-dot-product attention with zero-padded heads: the same result, kernel-friendly sizes.

    Zeros appended to every query and key add nothing to their dot products, zeros appended to the values
    give output columns that are sliced off, and the softmax scale stays 1/sqrt(true head size): the output is
    mathematically that of ``AttnProcessor2_0``. Works with fused projections (``fuse_qkv_projections``) too.
    """

    def __init__(self, multiple: int = 64):
        self.multiple = multiple

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = hidden_states.shape if hidden_states.ndim == 4 else None
        if image_shape is not None:  # (batch, channels, height, width) -> (batch, pixels, channels)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
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
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        pad = padded_size(head_dim, self.multiple) - head_dim
        if pad:
            query, key, value = (F.pad(t, (0, pad)) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False, scale=head_dim**-0.5)
        out = out[..., :head_dim].transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, then dropout
        if image_shape is not None:
            out = out.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def pad_attention_heads(model: torch.nn.Module, multiple: int = 64) -> None:
    """Give every attention layer of ``model`` the padded processor; call it after ``fuse_qkv_projections``."""
    model.set_attn_processor(PaddedAttnProcessor(multiple))
