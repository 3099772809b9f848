"""Notebook 04's checks that an option took effect: each fails when its option is turned into a no-op.

The thresholds are the notebook's: quantized linears > 0, float8 share > 0.5, merged tokens > 0, the deep blocks run
on at most 60 % of the UNet calls, regional compilation marks exactly the repeated blocks.
"""

import contextlib
import copy
import warnings

import pytest
import torch

from helpers import compiled_blocks, count_runs, count_tokens, float8_share, quantized_linears, weight_bytes
from helpers.effects import repeated_blocks
from helpers.models import load_pipeline


@pytest.fixture
def pipe():
    """A fresh tiny pipeline for each test: the options change it in place."""
    return load_pipeline("tiny", dtype=torch.float32, device="cpu", quiet=True)


def run(pipe, steps=4):
    return pipe("a red circle", num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                output_type="np").images


def test_int8_weights_are_counted_only_when_quantized(tmp_path, pipe):
    from diffusers import DiffusionPipeline, PipelineQuantizationConfig, QuantoConfig

    assert quantized_linears(pipe.unet)[0] == 0  # no-op: the check (> 0) fails
    pipe.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers 0.42 deprecates the Quanto backend
        config = PipelineQuantizationConfig(quant_mapping={"unet": QuantoConfig(weights_dtype="int8")})
        quanto = DiffusionPipeline.from_pretrained(tmp_path, quantization_config=config)
    done, total = quantized_linears(quanto.unet)
    assert 0 < done <= total == quantized_linears(pipe.unet)[1]
    assert weight_bytes(quanto.unet) < weight_bytes(pipe.unet)


def test_float8_storage_is_counted_only_when_cast(pipe):
    assert float8_share(pipe.unet) == 0  # no-op: the check (> 0.5) fails
    pipe.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert float8_share(pipe.unet) > 0.9
    assert run(pipe).shape == (1, 64, 64, 3)


def test_merged_tokens_are_counted_only_where_the_patch_merges(pipe):
    import tomesd

    with count_tokens(pipe.unet) as plain:
        run(pipe, 2)
    assert plain.into_blocks > 0 and plain.merged == 0
    # tiny has no attention at its first level: the default max_downsample=1 patches the blocks, merges nothing
    tomesd.apply_patch(pipe, ratio=0.5, use_rand=False)
    with count_tokens(pipe.unet) as silent:
        run(pipe, 2)
    assert silent.merged == 0  # the silent no-op the notebook's check catches
    tomesd.remove_patch(pipe)
    tomesd.apply_patch(pipe, ratio=0.5, max_downsample=2, use_rand=False)
    with count_tokens(pipe.unet) as merged:
        run(pipe, 2)
    tomesd.remove_patch(pipe)
    assert merged.merged > 0


def test_deep_blocks_are_counted_as_skipped_only_with_a_cache(pipe):
    from DeepCache import DeepCacheSDHelper

    cache = DeepCacheSDHelper(pipe=pipe)
    cache.set_params(cache_interval=1, cache_branch_id=0)  # a full step every step: a no-op
    cache.enable()
    with count_runs(pipe.unet, pipe.unet.mid_block) as every:
        run(pipe)
    cache.disable()
    assert every.share == 1.0  # the check (<= 0.6) fails
    cache.set_params(cache_interval=2, cache_branch_id=0)
    cache.enable()
    with count_runs(pipe.unet, pipe.unet.mid_block) as cached:
        run(pipe)
    cache.disable()
    assert cached.calls >= 4 and 0 < cached.share <= 0.6  # PNDM (tiny's scheduler) adds a call


def test_regional_compilation_marks_the_repeated_blocks_only():
    pipe = load_pipeline("tiny", dtype=torch.float32, device="cpu", quiet=True)
    assert compiled_blocks(pipe.unet) == {}  # no-op
    regional = copy.deepcopy(pipe.unet)
    regional.compile_repeated_blocks(fullgraph=True)  # marks; compiling waits for the first call
    blocks = sum(type(m).__name__ == "BasicTransformerBlock" for m in pipe.unet.modules())
    assert compiled_blocks(regional) == {"BasicTransformerBlock": blocks} and blocks > 0
    assert repeated_blocks(pipe.unet) == compiled_blocks(regional)  # 04's check: every declared copy, nothing else
    assert repeated_blocks(torch.nn.Linear(2, 2)) == {}  # a model that declares none
    whole = copy.deepcopy(pipe.unet)
    whole.compile()
    assert compiled_blocks(whole) == {"UNet2DConditionModel": 1}  # not what the notebook's check wants


class _Guided(torch.nn.Module):
    """A stand-in for a diffusers CacheMixin: a ``cache_context`` method, and a part that a cache could skip."""

    def __init__(self):
        super().__init__()
        self.part = torch.nn.Linear(2, 2)
        self.skip = False

    @contextlib.contextmanager
    def cache_context(self, name):
        yield

    def forward(self, x):
        return x if self.skip else self.part(x)


def test_runs_are_split_by_the_cache_context_each_call_ran_in():
    model, x = _Guided(), torch.ones(1, 2)
    with count_runs(model, model.part) as outer, count_runs(model, model.part) as inner:
        for step in range(4):
            with model.cache_context("cond"):
                model(x)
            model.skip = step > 0  # the negative prompt's call reuses from the second step on
            with model.cache_context("uncond"):
                model(x)
            model.skip = False
        model(x)  # a call outside any context counts only in all
    for runs in (outer, inner):
        assert (runs.ran, runs.calls) == (6, 9)
        assert runs.share_in("cond") == 1.0 and runs.share_in("uncond") == 0.25
        assert runs.share_in("other") != runs.share_in("other")  # NaN: no call in that context
    assert "cache_context" not in vars(model)  # the class's own method is back
