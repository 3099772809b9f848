import copy

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from helpers.bench.attention import PaddedAttnProcessor, pad_attention_heads, padded_size


def test_head_sizes_round_up_to_the_multiple():
    assert [padded_size(d) for d in (40, 64, 80, 160)] == [64, 64, 128, 192]
    assert [padded_size(d, 16) for d in (8, 40, 80)] == [16, 48, 80]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_padded_heads_give_the_same_attention(fused, cross):
    """SD 1.5's first level: head size 40, not a multiple of 16; self- and cross-attention, fused or not."""
    torch.manual_seed(0)
    attn = Attention(query_dim=80, heads=2, dim_head=40, cross_attention_dim=24 if cross else None).eval()
    if fused:
        attn.fuse_projections()
    x = torch.randn(2, 50, 80)
    context = torch.randn(2, 7, 24) if cross else None
    with torch.no_grad():
        attn.set_processor(AttnProcessor2_0())
        reference = attn(x, encoder_hidden_states=context)
        attn.set_processor(PaddedAttnProcessor())
        padded = attn(x, encoder_hidden_states=context)
    assert padded.shape == reference.shape
    torch.testing.assert_close(padded, reference, rtol=1e-5, atol=1e-5)


def test_the_tiny_unet_is_unchanged_by_padding_after_fusing(tiny_pipe):
    unet = copy.deepcopy(tiny_pipe.unet)
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, unet.config.cross_attention_dim)
    with torch.no_grad():
        reference = unet(sample, 10, encoder_hidden_states=context).sample
        unet.fuse_qkv_projections()
        pad_attention_heads(unet)
        assert {type(p) for p in unet.attn_processors.values()} == {PaddedAttnProcessor}
        padded = unet(sample, 10, encoder_hidden_states=context).sample
    torch.testing.assert_close(padded, reference, rtol=1e-4, atol=1e-4)
