import copy
import os
import shutil
import subprocess

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import helpers.bench.attention as attention
from helpers.bench.attention import (
    FlashAttnProcessor,
    PaddedAttnProcessor,
    flash_attention,
    flash_kernel,
    kernel_isa,
    pad_attention_heads,
    padded_size,
    use_flash_attention,
)

needs_kernel = pytest.mark.skipif(
    kernel_isa() is None or not shutil.which(os.environ.get("CXX", "c++")),
    reason="the attention kernel needs AVX2 or AVX-512 and a C++ compiler")


needs_bf16_pairs = pytest.mark.skipif(
    kernel_isa() != "AVX512_BF16" or not shutil.which(os.environ.get("CXX", "c++")),
    reason="the kernel's bfloat16 path needs AVX-512 BF16 and a C++ compiler")


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


@pytest.mark.parametrize("use, processor", [
    (pad_attention_heads, PaddedAttnProcessor),
    pytest.param(use_flash_attention, FlashAttnProcessor, marks=needs_kernel),
])
def test_the_tiny_unet_is_unchanged_by_the_processor_after_fusing(tiny_pipe, use, processor):
    unet = copy.deepcopy(tiny_pipe.unet)
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, unet.config.cross_attention_dim)
    with torch.no_grad():
        reference = unet(sample, 10, encoder_hidden_states=context).sample
        unet.fuse_qkv_projections()
        use(unet)
        assert {type(p) for p in unet.attn_processors.values()} == {processor}
        out = unet(sample, 10, encoder_hidden_states=context).sample
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def sdpa(query, key, value, scale):
    """PyTorch's attention on (batch, tokens, heads, head size), laid out as the kernel's output."""
    query, key, value = (t.transpose(1, 2) for t in (query, key, value))
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scale).transpose(1, 2)


@needs_kernel
@pytest.mark.parametrize("shape", [
    (2, 300, 301, 2, 40),  # SD 1.5's head size; neither token count a whole number of the kernel's blocks
    (1, 64, 77, 3, 80),  # cross-attention on 77 text tokens
    (2, 5, 1, 1, 7),  # one key: every weight is 1; an odd head size
])
def test_the_kernel_computes_what_sdpa_computes(shape):
    batch, queries, keys, heads, head = shape
    torch.manual_seed(0)
    q = torch.randn(batch, queries, heads * head).view(batch, queries, heads, head)  # strided views, as in the UNet
    k, v = torch.randn(batch, keys, 2 * heads * head).chunk(2, dim=-1)
    k, v = (t.view(batch, keys, heads, head) for t in (k, v))
    out = flash_attention(q, k, v, head**-0.5)
    assert out.shape == q.shape and out.is_contiguous()
    torch.testing.assert_close(out, sdpa(q, k, v, head**-0.5), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_kernel_keeps_large_scores_finite_and_returns_the_input_dtype():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 300, 2, 40) for _ in range(3))  # keys over several of the kernel's blocks
    sharp = flash_attention(q, k, v, 30.0)  # scores in the hundreds: a softmax without its running maximum overflows
    assert torch.isfinite(sharp).all()
    # float32 rounds a score of 300 by about 3e-5, which the exponential carries into the weights: both kernels
    torch.testing.assert_close(sharp, sdpa(q, k, v, 30.0), rtol=1e-3, atol=1e-3)
    nan_key = k.clone()
    nan_key[0, 200, 1, 3] = float("nan")  # one key of head 1 in the second block: every query of that head sees it
    broken = flash_attention(q, nan_key, v, 40**-0.5)
    assert torch.isnan(broken[:, :, 1]).all() and not torch.isnan(broken[:, :, 0]).any()
    assert torch.equal(torch.isnan(broken), torch.isnan(sdpa(q, nan_key, v, 40**-0.5)))
    half = flash_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 40**-0.5)
    assert half.dtype == torch.bfloat16  # handed back in the caller's precision (float32 or bfloat16 pairs inside)
    torch.testing.assert_close(half.float(), sdpa(q, k, v, 40**-0.5), rtol=2e-2, atol=2e-2)


@needs_bf16_pairs
@pytest.mark.parametrize("shape", [
    (2, 300, 301, 2, 40),  # an odd number of keys, over three blocks: the last pair's partner is a padded key
    (1, 64, 77, 3, 80),  # cross-attention on 77 text tokens
    (1, 33, 3, 1, 9),  # an odd head size: the last feature has a zero partner
])
def test_bfloat16_pairs_are_as_close_as_pytorchs_own_bfloat16_attention(shape):
    """The bfloat16 path rounds the softmax weights to bfloat16 before the second product, as PyTorch's bfloat16
    attention does; against float32 attention on the same inputs it must be as close as PyTorch's is."""
    batch, queries, keys, heads, head = shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, n, heads, head).bfloat16() for n in (queries, keys, keys))
    exact = sdpa(q.float(), k.float(), v.float(), head**-0.5)
    out = flash_attention(q, k, v, head**-0.5)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    pytorch_error = (sdpa(q, k, v, head**-0.5).float() - exact).abs().max().item()
    assert (out.float() - exact).abs().max().item() <= 1.5 * pytorch_error + 1e-3
    # the pairs path is the one that ran: the float32 path, rounded at the end, differs in many elements
    assert not torch.equal(out, flash_attention(q.float(), k.float(), v.float(), head**-0.5).bfloat16())


@needs_kernel
def test_torch_compile_calls_the_kernel_as_one_operator():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 70, 2, 40) for _ in range(3))
    flash_kernel()
    compiled = torch.compile(lambda q, k, v: flash_attention(q * 2, k, v, 0.1) + 1, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), sdpa(q * 2, k, v, 0.1) + 1, rtol=1e-5, atol=1e-5)


def test_the_processor_leaves_masks_and_large_heads_to_sdpa(monkeypatch):
    def kernel_called(*args):
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(attention, "flash_attention", kernel_called)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 160) for _ in range(3))
    out = FlashAttnProcessor().attend(q, k, v, None, 160)  # head size 160: SDPA was as fast here
    torch.testing.assert_close(out, sdpa(q, k, v, 160**-0.5).flatten(2))
    mask = torch.zeros(1, 2, 6, 6)
    q, k, v = (t[..., :40] for t in (q, k, v))
    out = FlashAttnProcessor().attend(q, k, v, mask, 40)
    torch.testing.assert_close(out, sdpa(q, k, v, 40**-0.5).flatten(2))


def test_without_avx2_the_kernel_says_what_to_use_instead(monkeypatch):
    monkeypatch.setattr(attention, "kernel_isa", lambda: None)
    with pytest.raises(RuntimeError, match="use PyTorch's SDPA instead"):
        attention.kernel_build()


@pytest.mark.parametrize("capability, bf16, isa", [
    ("AVX512", True, "AVX512_BF16"), ("AVX512", False, "AVX512"), ("AVX2", True, "AVX2"), ("DEFAULT", False, None)])
def test_the_build_follows_pytorchs_instruction_set_and_bfloat16_support(monkeypatch, capability, bf16, isa):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    assert attention.kernel_isa() == isa
    if isa == "AVX512_BF16":
        name, flags = attention.kernel_build()
        assert name.endswith("_avx512_bf16") and "-DED_BF16" in flags and "-mavx512bf16" in flags


@pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "c++")), reason="needs a C++ compiler")
@pytest.mark.parametrize("isa", ["AVX2", "AVX512_BF16"])  # the AVX512 build's code is the BF16 build's less ED_BF16
def test_the_avx2_and_bf16_builds_compile_on_any_x86_cpu(tmp_path, isa):
    """Compiling needs no such CPU: a break in the AVX2 or bfloat16 code shows on the CPU at hand too."""
    if not any(machine in os.uname().machine for machine in ("x86_64", "amd64")):
        pytest.skip("the kernel's builds are for x86-64")
    from torch.utils.cpp_extension import include_paths

    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    command = [os.environ.get("CXX", "c++"), "-std=c++17", abi, *(f"-I{path}" for path in include_paths()),
               *attention.KERNEL_FLAGS[isa], "-O0", "-c", str(attention.KERNEL_SOURCE), "-o", str(tmp_path / "k.o")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@needs_kernel
@pytest.mark.parametrize("fused", [False, True])
def test_the_tiny_vae_decodes_the_same_with_the_kernel(tiny_pipe, fused):
    """The VAE's attention normalises its input first (GroupNorm): keys and values must come from the normalised
    input too, fused projections or not."""
    vae = copy.deepcopy(tiny_pipe.vae)
    latents = torch.randn(1, vae.config.latent_channels, 8, 8)
    with torch.no_grad():
        reference = vae.decode(latents).sample
        if fused:
            vae.fuse_qkv_projections()
        use_flash_attention(vae)
        assert {type(p) for p in vae.attn_processors.values()} == {FlashAttnProcessor}
        out = vae.decode(latents).sample
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa, kernel_calls", [("AVX512_BF16", 1), ("AVX512", 0)])
def test_bfloat16_pairs_take_heads_up_to_the_vaes_512(monkeypatch, isa, kernel_calls):
    """The dispatch alone (no kernel runs): bfloat16 at head 512 goes to the kernel only where pairs are built;
    float32 at 512 always goes to SDPA."""
    calls = []
    monkeypatch.setattr(attention, "kernel_isa", lambda: isa)
    monkeypatch.setattr(attention, "flash_attention", lambda *args: calls.append(args[0].shape) or args[0])
    q = torch.randn(1, 6, 1, 512).bfloat16()
    FlashAttnProcessor().attend(q, q, q, None, 512)
    FlashAttnProcessor().attend(q.float(), q.float(), q.float(), None, 512)
    assert calls == [q.shape] * kernel_calls


@needs_bf16_pairs
def test_the_tiny_vae_in_bfloat16_decodes_as_close_with_the_kernels_pairs(tiny_pipe):
    vae = copy.deepcopy(tiny_pipe.vae).to(torch.bfloat16)
    latents = torch.randn(1, vae.config.latent_channels, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        exact = copy.deepcopy(tiny_pipe.vae).decode(latents.float()).sample
        pytorch = vae.decode(latents).sample.float()
        use_flash_attention(vae)
        out = vae.decode(latents).sample.float()
    assert (out - exact).abs().max() <= 1.5 * (pytorch - exact).abs().max() + 1e-2
