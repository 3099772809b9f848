import pytest
import torch

from helpers.stepcache import apply_deep_cache, remove_deep_cache


def _calls(block):
    seen = []
    handle = block.register_forward_hook(lambda *_: seen.append(1))
    return seen, handle


def test_deep_cache_skips_the_deep_blocks_every_other_step(tiny_pipe):
    unet = tiny_pipe.unet
    deep = unet.mid_block.resnets[0]  # inside a cached block: it runs only when the block computes
    seen, handle = _calls(deep)
    generator = torch.Generator().manual_seed(0)
    plain = tiny_pipe("a red circle", num_inference_steps=6, generator=generator, output_type="np").images
    runs_plain = len(seen)
    counts = apply_deep_cache(unet, interval=2)
    try:
        seen.clear()
        generator = torch.Generator().manual_seed(0)
        cached = tiny_pipe("a red circle", num_inference_steps=6, generator=generator, output_type="np").images
        runs_cached = len(seen)
        # a second generation starts afresh: its first step runs the whole UNet again
        tiny_pipe("a red circle", num_inference_steps=6, generator=torch.Generator().manual_seed(1))
    finally:
        remove_deep_cache(unet)
        handle.remove()
    full = (runs_plain + 1) // 2  # steps 0, 2, 4, ... (PNDM calls the UNet once more than its step count)
    assert runs_plain >= 6 and runs_cached == full
    assert (counts.full, counts.reused) == (2 * full, 2 * (runs_plain - full))
    assert f"ran on {2 * full} of {2 * runs_plain} UNet calls" in str(counts)
    assert cached.shape == plain.shape and not (cached == plain).all()  # approximate: the picture changes


def test_remove_deep_cache_restores_the_exact_unet(tiny_pipe):
    unet = tiny_pipe.unet
    generator = torch.Generator().manual_seed(0)
    before = tiny_pipe("a red circle", num_inference_steps=4, generator=generator, output_type="np").images
    apply_deep_cache(unet, interval=2)
    remove_deep_cache(unet)
    generator = torch.Generator().manual_seed(0)
    after = tiny_pipe("a red circle", num_inference_steps=4, generator=generator, output_type="np").images
    assert (before == after).all()


def test_deep_cache_refuses_bad_settings(tiny_pipe):
    with pytest.raises(ValueError, match="at least 2"):
        apply_deep_cache(tiny_pipe.unet, interval=1)
    apply_deep_cache(tiny_pipe.unet)
    try:
        with pytest.raises(ValueError, match="already on"):
            apply_deep_cache(tiny_pipe.unet)
    finally:
        remove_deep_cache(tiny_pipe.unet)
