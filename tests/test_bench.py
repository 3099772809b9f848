import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import helpers.bench.ladder as ladder_module
from helpers.bench.__main__ import main as bench_main
from helpers.bench.__main__ import parse_args
from helpers.bench.flops import count_flops, flops_text
from helpers.bench.ladder import Rung, approximate, approximations, build_on, climb, keeps, ladder, seconds_needed
from helpers.bench.runner import Bench
from helpers.device import half_dtype, native_half, pick_device
from helpers.models import shapes_folder


@pytest.fixture(autouse=True)
def _without_nnpack(monkeypatch):
    """The ladders below are laid out without the Winograd rung; tests/test_winograd.py tests that rung."""
    monkeypatch.setattr(ladder_module, "nnpack_available", lambda: False)


def test_ladder_adds_one_setting_per_rung():
    rungs = ladder(steps=20, baseline_steps=50)
    assert [r.steps for r in rungs] == [50, 50, 20, 20, 20, 20, 20]
    assert all(r.exact for r in rungs)
    assert (rungs[0].half, rungs[1].half, rungs[2].solver, rungs[3].channels_last, rungs[4].pad_heads,
            rungs[5].regional, rungs[6].compiled) == (False, True, "dpm", True, True, True, True)
    assert not rungs[3].pad_heads and not rungs[4].regional  # padding comes after fusing, compiling after both
    assert not rungs[6].regional  # the whole-model compile replaces the regional one
    approx = approximate(rungs[-1], 10)
    assert not approx.exact and approx.steps == 10 and approx.compiled


def test_the_approximations_patch_an_eager_copy_of_the_best_rung():
    best = ladder(steps=20)[-1]
    fewer, tome, cache = approximations(best, 10)
    assert fewer.steps == 10 and fewer.compiled  # fewer steps keep the compiled model
    assert (tome.tome, tome.steps, tome.compiled, tome.regional, tome.exact) == (0.5, 20, False, False, False)
    assert (cache.deepcache, cache.steps, cache.compiled, cache.exact) == (3, 20, False, False)
    assert tome.channels_last and cache.channels_last  # the best rung's other settings stay


def test_cpu_ladder_ends_with_the_allocator_rung_that_cannot_be_taken_back(monkeypatch):
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: None)  # a CPU without AVX2: no kernel rung
    monkeypatch.setattr(ladder_module, "onednn_available", lambda: False)  # a PyTorch without oneDNN
    rungs = ladder(cpu=True)
    assert [r.keep_memory for r in rungs] == [False] * 7 + [True]
    assert rungs[-1].compiled and rungs[-2].compiled and rungs[-3].regional and not rungs[-4].regional


def test_cpu_ladder_tries_the_attention_kernel_after_the_padded_heads_and_compiles_it(monkeypatch):
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: "AVX2")
    monkeypatch.setattr(ladder_module, "onednn_available", lambda: False)
    rungs = ladder(cpu=True)
    padded, kernel, regional, compiled = rungs[4:8]
    assert padded.pad_heads and not padded.flash_attention
    assert kernel.flash_attention and not kernel.pad_heads and kernel.channels_last
    assert regional.flash_attention and compiled.flash_attention and not compiled.pad_heads
    assert not any(r.flash_attention for r in ladder(cpu=False))  # GPUs keep PyTorch's SDPA
    # The kernel rejected, padding kept: compiling builds on the padded heads, without the kernel.
    rung = build_on(padded, regional, kernel)
    assert rung.regional and rung.pad_heads and not rung.flash_attention
    # Padding rejected, the kernel kept: it builds on channels-last + fused QKV.
    layout = rungs[3]
    rung = build_on(layout, kernel, padded)
    assert rung.flash_attention and not rung.pad_heads and rung.channels_last


def test_a_rung_after_a_rejected_one_builds_on_the_best_settings():
    base, half, dpm, layout, padded, regional, compiled = ladder()
    assert build_on(regional, compiled, regional) == compiled  # everything kept: the plan itself
    assert build_on(base, half, None) == half
    # Padding rejected: compiling builds on channels-last + fused QKV, without the padding.
    rung = build_on(layout, regional, padded)
    assert rung.name == regional.name and rung.regional and rung.channels_last and not rung.pad_heads
    # Regional compilation rejected: the whole-model compile builds on the best eager rung.
    rung = build_on(layout, compiled, regional)
    assert rung.compiled and not rung.regional and rung.channels_last
    # Half precision rejected: DPM-Solver++ runs in float32.
    rung = build_on(base, dpm, half)
    assert (rung.half, rung.solver, rung.steps) == (False, "dpm", 20)
    # --rungs 1,3: the rung brings only its own change, so DPM-Solver++ runs in float32.
    rung = build_on(base, dpm, half)
    assert (rung.half, rung.solver) == (False, "dpm")


def test_a_rung_is_kept_unless_slower_than_the_best_so_far():
    plain, regional = Rung("plain"), Rung("regional", regional=True)
    best = {"e2e s": 10.0, "unet s/step": 0.5}
    assert keeps(plain, {"e2e s": 10.0}, None)
    assert keeps(plain, {"e2e s": 9.0}, best) and keeps(plain, {"e2e s": 10.0}, best)
    assert not keeps(plain, {"e2e s": 10.5}, best)
    # Regional compilation is judged per UNet step (it leaves the decoder eager), not end to end.
    assert keeps(regional, {"e2e s": 10.5, "unet s/step": 0.45}, best)
    assert not keeps(regional, {"e2e s": 9.0, "unet s/step": 0.55}, best)


class FakeBench:
    """Stands in for Bench: no pipeline, a chosen time per image for each rung, records what it applied."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds, self.applied = seconds, []
        self.current, self.memory_kept, self.compile_s = Rung(""), False, 0.0

    def apply(self, rung):
        self.applied.append(rung)
        self.current = rung

    def time_rung(self, rung, direct_limit, best_e2e=None):
        e2e = self.seconds.get(rung.name, 1.0)
        return {"rung": rung.name, "kind": "exact" if rung.exact else "approximate", "dtype": "float32",
                "unet s/step": 0.1, "vae decode s": 0.1, "e2e s": e2e, "e2e how": "measured", "unet TFLOP/s": 0.5,
                "image": [[0.5]]}

    quiet_compiler = contextlib.nullcontext

    def generate(self, steps):
        return [[0.5]]


def test_the_climb_marks_a_slower_rung_and_builds_on_the_best(capsys):
    plan = ladder(steps=2, baseline_steps=3)
    base, half, dpm, layout, padded, regional, compiled = plan
    fake = FakeBench({base.name: 8.0, half.name: 4.0, dpm.name: 2.0, layout.name: 1.5, padded.name: 1.8,
                      regional.name: 1.4, compiled.name: 1.2})
    args = argparse.Namespace(approx=True, approx_steps=1, profile=False, budget=1e9, direct_limit=1e9)
    rows = climb(fake, plan, args, time.perf_counter(), {"float32": 1.0})
    assert [r["kept"] for r in rows] == ["yes", "yes", "yes", "yes", "no", "yes", "yes", "-", "-", "-"]
    assert "kept: no" in capsys.readouterr().out
    applied = {r.name: r for r in fake.applied}
    assert applied[padded.name].pad_heads
    assert applied[compiled.name].compiled and not applied[compiled.name].pad_heads  # built on the best
    fewer, tome, cache = fake.applied[-3:]
    assert not fewer.exact and fewer.compiled and not fewer.pad_heads and fewer.steps == 1
    assert tome.tome and cache.deepcache and not (tome.compiled or cache.compiled) and tome.steps == 2
    assert rows[0]["unet % peak"] == pytest.approx(50.0)
    assert rows[-1]["max diff"] == 0.0


def test_cpu_ladder_packs_the_linear_layers_after_the_kernel_and_compiles_them(monkeypatch):
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: "AVX2")
    monkeypatch.setattr(ladder_module, "onednn_available", lambda: True)
    rungs = ladder(cpu=True)
    kernel, packed, regional, compiled = rungs[5:9]  # then, on Linux only, the allocator rung
    assert packed.packed_linear and packed.flash_attention and not kernel.packed_linear
    assert regional.packed_linear and compiled.packed_linear and all(r.packed_linear for r in rungs[9:])
    assert not any(r.packed_linear for r in ladder(cpu=False))  # GPUs keep cuBLAS
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: None)  # no kernel: the packed rung follows the padding
    assert ladder(cpu=True)[5].packed_linear and not ladder(cpu=True)[5].flash_attention


def test_the_cpu_ladder_tries_winograd_after_the_packed_linear_layers(monkeypatch):
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: "AVX2")
    monkeypatch.setattr(ladder_module, "onednn_available", lambda: True)
    monkeypatch.setattr(ladder_module, "nnpack_available", lambda: True)
    rungs = ladder(cpu=True)
    packed, wino, regional, compiled = rungs[6:10]
    assert wino.winograd and wino.packed_linear and not packed.winograd
    assert regional.winograd and compiled.winograd
    assert not any(r.winograd for r in ladder(cpu=False))  # GPUs keep cuDNN
    monkeypatch.setattr(ladder_module, "nnpack_available", lambda: False)
    assert not any(r.winograd for r in ladder(cpu=True))


def test_the_winograd_rung_is_skipped_where_the_best_rung_runs_in_half_precision(monkeypatch, capsys):
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: None)
    monkeypatch.setattr(ladder_module, "onednn_available", lambda: False)
    monkeypatch.setattr(ladder_module, "nnpack_available", lambda: True)
    plan = ladder(steps=2, baseline_steps=3, cpu=True)[:6]  # up to the Winograd rung
    assert plan[-1].winograd
    fake = FakeBench({plan[0].name: 8.0, plan[1].name: 4.0})  # half precision measured faster: kept
    args = argparse.Namespace(approx=False, approx_steps=1, profile=False, budget=1e9, direct_limit=1e9)
    rows = climb(fake, plan, args, time.perf_counter(), {})
    assert "Winograd 3x3 convolutions (NNPACK), per layer: skipped, NNPACK runs float32 only" in capsys.readouterr().out
    assert len(rows) == 5 and not any(r.winograd for r in fake.applied)


def test_a_kernel_that_does_not_build_is_skipped_and_the_climb_goes_on(monkeypatch, capsys):
    monkeypatch.setattr(ladder_module, "kernel_isa", lambda: "AVX2")
    monkeypatch.setattr(ladder_module, "onednn_available", lambda: False)
    monkeypatch.setattr(ladder_module, "kernel_error", lambda: "CalledProcessError: no C++ compiler")
    plan = ladder(steps=2, baseline_steps=3, cpu=True)[:7]  # up to the regional compile
    fake = FakeBench({})
    args = argparse.Namespace(approx=False, approx_steps=1, profile=False, budget=1e9, direct_limit=1e9)
    rows = climb(fake, plan, args, time.perf_counter(), {})
    assert "kernel (the project's C++): skipped, the kernel did not build here (CalledProcessError" in (
        capsys.readouterr().out)
    assert len(rows) == 6 and not any(r.flash_attention for r in fake.applied)
    assert fake.applied[-1].regional and fake.applied[-1].pad_heads  # built on the best rung, the padded heads


def test_a_higher_second_probe_of_the_peak_counts_and_the_shares_follow(monkeypatch, capsys):
    import helpers.bench.__main__ as bench_cli

    rows = [{"unet TFLOP/s": 0.27, "dtype": "float32", "unet % peak": 150.0},
            {"unet TFLOP/s": None, "dtype": "float32", "unet % peak": None}]  # a peer's row
    args = argparse.Namespace(peak_seconds=0.01, probe_half=True)
    peak = {"float32": 0.18, "bfloat16": 0.17}
    halves = []
    monkeypatch.setattr(bench_cli, "measure_peak",
                        lambda device, seconds, half: halves.append(half) or {"float32": 0.30, "bfloat16": 0.16})
    rows[0]["rung"], rows[1]["rung"] = "compiled", "peer"
    profiles = [{"rung": "compiled", "TFLOP/s": 0.15, "% of peak": 83.3}, {"rung": "compiled", "TFLOP/s": None,
                                                                             "% of peak": None}]
    bench_cli.recheck_peak(rows, profiles, peak, torch.device("cpu"), args)
    assert peak == {"float32": 0.30, "bfloat16": 0.17}  # the higher probe of each dtype
    assert rows[0]["unet % peak"] == pytest.approx(90.0) and rows[1]["unet % peak"] is None
    assert profiles[0]["% of peak"] == pytest.approx(50.0) and profiles[1]["% of peak"] is None
    assert "peak probed again after the rungs" in capsys.readouterr().out and halves == [True]  # as the first probe
    monkeypatch.setattr(bench_cli, "measure_peak", lambda device, seconds, half: {"float32": 0.29, "bfloat16": 0.17})
    bench_cli.recheck_peak(rows, profiles, peak, torch.device("cpu"), args)  # not higher: nothing changes, nothing said
    assert peak["float32"] == 0.30 and capsys.readouterr().out == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_the_allocator_rungs_memory_is_given_back_before_the_peers():
    """In a process of its own (the setting is process-wide): a freed 200 MB block stays resident while glibc keeps
    freed memory, and is handed back once its defaults are restored."""
    code = """
import psutil, torch
from helpers.bench.runner import give_back_freed_memory, keep_freed_memory
process = psutil.Process()
def handed_back():
    block = torch.ones(50_000_000)
    before = process.memory_info().rss
    del block
    return before - process.memory_info().rss
keep_freed_memory()
kept = handed_back()
give_back_freed_memory()
print(kept < 50e6, handed_back() > 150e6)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_a_rung_left_out_of_the_plan_adds_nothing():
    """--rungs 1,3-4 on a CPU without native bfloat16: the float32 ladder, never half precision."""
    whole = ladder(steps=2, baseline_steps=3)
    base, half, dpm, layout = whole[:4]
    fake = FakeBench({})
    args = argparse.Namespace(approx=False, approx_steps=1, profile=False, budget=1e9, direct_limit=1e9)
    climb(fake, [base, dpm, layout], args, time.perf_counter(), {}, whole)
    assert [r.half for r in fake.applied] == [False, False, False]
    assert fake.applied[1].solver == "dpm" and fake.applied[2].channels_last
    fake = FakeBench({})
    climb(fake, [dpm, layout], args, time.perf_counter(), {}, whole)  # no baseline: from its settings
    assert [r.half for r in fake.applied] == [False, False]


def test_a_hopeless_rung_is_timed_by_one_unet_call_and_not_kept(monkeypatch):
    """Emulated half precision: one UNet call, times the steps, already exceeds twice the best; no decode."""
    b = Bench("tiny", torch.device("cpu"), None, None, repeats=1)
    rung = ladder(steps=2, baseline_steps=3)[1]
    b.apply(rung)
    decoded = []
    b.pipe.vae.decoder.register_forward_pre_hook(lambda *a: decoded.append(1))
    row = b.time_rung(rung, direct_limit=1e9, best_e2e=1e-9)
    assert row["e2e how"] == "at least" and not decoded
    assert row["e2e s"] == pytest.approx(3 * row["unet s/step"]) and row["dtype"] == "bfloat16"
    row = b.time_rung(rung, direct_limit=0, best_e2e=1e9)  # fast enough: timed as usual
    assert row["e2e how"] == "estimated" and decoded
    # An approximation is timed in full however slow its first call: its row needs a picture to compare (float32:
    # emulated bfloat16 would take seconds more on an AVX2 CPU).
    b = Bench("tiny", torch.device("cpu"), None, None, repeats=1)
    b.apply(ladder(steps=2, baseline_steps=3)[0])
    row = b.time_rung(approximate(b.current, 1), direct_limit=1e9, best_e2e=1e-9)
    assert row["e2e how"] == "measured" and "image" in row


def test_on_a_gpu_a_slow_first_call_alone_does_not_make_a_rung_hopeless(monkeypatch):
    """On a GPU the first call after a change of layout also picks cuDNN's kernels (an H200 took 0.49 s for it
    against 0.026 s for the calls after): the second call decides there. On a CPU the first call still does."""
    b = Bench("tiny", torch.device("cpu"), None, None, repeats=1)
    rung = ladder(steps=2, baseline_steps=3)[3]  # channels-last + fused QKV
    b.apply(rung)
    first = []

    def unet():
        if not first:
            first.append(True)
            time.sleep(0.3)

    monkeypatch.setattr(b, "calls", lambda: {"text": lambda: None, "unet": unet, "vae": lambda: None})
    monkeypatch.setattr("helpers.bench.runner.synchronize", lambda device: None)
    b.device = torch.device("cuda")
    assert b.time_rung(rung, direct_limit=0, best_e2e=0.1)["e2e how"] == "estimated"  # 2 x 0.3 s > 2 x 0.1 s
    b.device = torch.device("cpu")
    first.clear()
    row = b.time_rung(rung, direct_limit=0, best_e2e=0.1)
    assert row["e2e how"] == "at least" and row["unet s/step"] >= 0.3


def test_bench_calls_the_unet_and_decoder_as_the_pipeline_does():
    """A compiled rung must time the graph the pipeline runs: same strides, dtypes, modes and keywords."""
    b = Bench("tiny", torch.device("cpu"), None, None, repeats=1)
    b.apply(ladder(steps=1, baseline_steps=1)[4])  # half, DPM, channels-last + fused QKV, padded heads
    seen = {"unet": [], "vae": []}

    def record(key):
        def hook(module, args, kwargs):
            tensors = [(tuple(t.shape), t.stride(), t.dtype, t.is_inference(), t.requires_grad)
                       for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
            others = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
            seen[key].append((tensors, others, torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return hook

    hooks = [b.pipe.unet.register_forward_pre_hook(record("unet"), with_kwargs=True),
             b.pipe.vae.decoder.register_forward_pre_hook(record("vae"), with_kwargs=True)]
    b.generate(2)
    calls = b.calls()
    calls["unet"]()
    calls["vae"]()
    for hook in hooks:
        hook.remove()
    assert len(seen["unet"]) == 3 and len(seen["vae"]) == 2
    assert seen["unet"][0] == seen["unet"][1] == seen["unet"][2]  # the pipeline's two steps, then the bench's
    assert seen["vae"][0] == seen["vae"][1]


def test_only_the_whole_model_compile_freezes_weights():
    """Regional compilation reuses one graph for every copy of the block: frozen weights would make one per copy."""
    import torch._inductor.config as inductor

    before = inductor.freezing
    b = Bench("tiny", torch.device("cpu"), None, None, repeats=1)
    base, half, dpm, layout, padded, regional, compiled = ladder(steps=1, baseline_steps=1)
    b.apply(regional)
    assert inductor.freezing is False
    b.apply(compiled)  # takes the regional compile off (a reload), then compiles the whole UNet and decoder
    assert inductor.freezing is True
    b.uncompile()
    assert inductor.freezing == before


def test_release_drops_the_pipeline_and_the_next_rung_loads_a_fresh_one():
    """Before the peers: the pipeline, its compiled graphs and freezing go; a later ``apply`` loads a pipeline and
    puts every setting of its rung on it, even when nothing must come off."""
    import gc
    import weakref

    import torch._inductor.config as inductor

    before = inductor.freezing
    b = Bench("tiny", torch.device("cpu"), None, None, repeats=1)
    base, half, dpm, layout, padded, regional, compiled = ladder(steps=1, baseline_steps=1)
    b.apply(compiled)
    unet = weakref.ref(b.pipe.unet)
    b.release()
    gc.collect()
    assert b.pipe is None and unet() is None and inductor.freezing == before
    assert b.current == Rung("")
    b.apply(compiled)  # the same rung again: nothing to take off, yet a pipeline must be loaded and set up
    assert b.pipe is not None and b.pipe.unet.dtype == half_dtype(b.device) and inductor.freezing is True
    assert b.pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert b.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    b.uncompile()


@pytest.mark.skipif(not ladder_module.onednn_available(), reason="this PyTorch has no oneDNN")
def test_frozen_weights_and_their_packs_go_once_the_compiled_modules_are_forgotten():
    """What ``Bench.release`` does before the peers load their own copy: a frozen graph's module holds the weights."""
    import gc
    import weakref

    import torch._inductor.config as inductor

    from helpers.bench import linear
    from helpers.bench.runner import forget_compiled_modules

    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.GELU(), torch.nn.Linear(24, 8))
    linear.use_packed_linear(model)
    with torch.no_grad(), inductor.patch(freezing=True):
        torch.compile(model, fullgraph=True)(torch.randn(4, 16))
    weight = model[0].weight
    gone = weakref.ref(weight)
    del model
    torch.compiler.reset()
    gc.collect()
    assert weight in linear._PACKS  # still held by the compiled module, with its pack
    del weight
    gc.collect()
    assert gone() is not None  # the compiled module still holds it after reset()
    forget_compiled_modules()
    gc.collect()
    assert gone() is None


def test_flops_match_the_published_sd15_counts():
    from helpers import presets

    with torch.device("meta"):  # count_flops needs the configurations only: no 4.3 GB of weights
        pipe = presets.sd15_random()
    flops = count_flops(pipe, 512, 512)
    assert flops["unet"] / 1e12 == pytest.approx(1.61, abs=0.01)
    assert flops["vae"] / 1e12 == pytest.approx(2.51, abs=0.01)


def test_bench_runs_on_tiny_and_writes_its_table(tmp_path, capsys):
    # Where bfloat16 is emulated (AVX2), rung 2 and its peak probe would take most of a minute: rungs 1 and 3-5 there.
    native = native_half(pick_device())
    code = bench_main(["--model", "tiny", "--rungs", "1-5" if native else "1,3-5", "--steps", "2",
                       "--baseline-steps", "3", "--repeats", "1", "--approx", "--approx-steps", "1",
                       "--peak-seconds", "0.01", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    exact = 5 if native else 4
    assert re.search(r"^speedup: \d+\.\dx$", out.strip().splitlines()[-1])
    isa = r"(unknown|AMX (yes|no), AVX-512 BF16 (yes|no), AVX512-FP16 (yes|no), AVX-512 (yes|no))"
    assert re.search(rf"^bench: CPU .+; {isa}$", out, re.M)
    half = str(half_dtype(pick_device())).removeprefix("torch.")  # bfloat16 on a CPU, float16 on CUDA
    probed = rf", {half} [\d.]+ TFLOP/s$" if native else "; bfloat16 not probed"
    assert re.search(rf"^bench: peak matrix multiply .*float32 [\d.]+ TFLOP/s{probed}", out, re.M)
    assert out.count("[") >= exact + 3  # a progress line per rung
    df = pd.read_csv(tmp_path / "bench.csv", index_col="rung")
    assert len(df) == exact + 3 and list(df["kind"]) == ["exact"] * exact + ["approximate"] * 3
    names = [name.split(",")[0] for name in df.index[-2:]]
    assert names == ["approx: token merging 0.5", "approx: DeepCache interval 3"]
    for column in ("unet s/step", "it/s", "vae decode s", "e2e s", "e2e how", "speedup", "TFLOP/s", "unet % peak",
                   "kept"):
        assert column in df.columns
    # Core-seconds per image mean something on a CPU only: the bench writes them there and nowhere else.
    assert ("core-s/image" in df.columns) == (pick_device().type == "cpu")
    assert set(df["e2e how"]) <= {"measured", "estimated", "at least"}  # at least: emulated bfloat16
    assert df["speedup"].iloc[0] == 1.0
    assert df["kept"].iloc[0] == "yes" and set(df["kept"].iloc[:exact]) <= {"yes", "no"}
    assert (df["kept"].iloc[exact:] == "-").all()
    assert df["unet % peak"].notna().all() and (df["unet % peak"] >= 0).all()  # tiny is far below the peak
    assert df["max diff"].notna().iloc[exact:].all() and df["max diff"].isna().iloc[:exact].all()  # each approx's
    meta = json.loads((tmp_path / "bench.json").read_text())
    assert meta["model"] == "tiny" and len(meta["rows"]) == exact + 3
    assert set(meta["peak TFLOP/s"]) == ({"float32", half} if native else {"float32"}) and meta["isa"] and meta["cpu"]


def test_compiling_needs_minutes_of_budget_on_every_device():
    base = ladder()[3]
    compiled = ladder()[-1]
    assert compiled.compiled and not base.compiled
    assert seconds_needed(compiled, base) >= 240  # a T4 takes minutes too, not only a CPU
    assert seconds_needed(compiled, compiled) == seconds_needed(base, base) == 30


@pytest.mark.parametrize("args", [["--rungs", "0-2"], ["--rungs", "x"], ["--rungs", "1-99"], ["--steps", "0"],
                                  ["--resolution", "100"]])
def test_bench_rejects_bad_options(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(args, torch.device("cpu"))
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_emulated_half_precision_is_left_out_unless_named(monkeypatch, capsys):
    """On a CPU without native bfloat16 the default plan skips rung 2 (minutes a real-size call), and says so."""
    import helpers.bench.__main__ as command

    cpu, count = torch.device("cpu"), len(ladder(cpu=True))
    monkeypatch.setattr(command, "native_half", lambda device: False)
    args = parse_args([], cpu)
    assert args.left_out == [2] and args.picked == [1, *range(3, count + 1)]
    assert parse_args(["--rungs", "all"], cpu).picked == list(range(1, count + 1))
    assert parse_args(["--rungs", "1-3"], cpu).picked == [1, 2, 3]
    probes = []
    monkeypatch.setattr(command, "measure_peak", lambda device, seconds, half: probes.append(half) or {"float32": 1.0})
    command.header(cpu, args)
    out = capsys.readouterr().out
    assert "rung 2 (half precision) left out" in out and "bfloat16 not probed" in out
    # Emulated bfloat16's peak costs about 45 s to probe on an AVX2 CPU: only where a rung runs in it.
    assert probes == [False] and args.probe_half is False
    assert parse_args(["--rungs", "all"], cpu).probe_half and parse_args(["--rungs", "1-2"], cpu).probe_half
    assert not parse_args(["--rungs", "3-5"], cpu).probe_half  # rung 3 alone runs in float32 (build_on)
    monkeypatch.setattr(command, "native_half", lambda device: True)
    assert parse_args([], cpu).picked == list(range(1, count + 1)) and parse_args([], cpu).left_out == []
    assert parse_args(["--rungs", "3"], cpu).probe_half  # native: always probed


def test_help_numbers_the_rungs_as_rungs_takes_them(capsys):
    whole = ladder(cpu=True)
    with pytest.raises(SystemExit):
        parse_args(["--help"], torch.device("cpu"))
    listed = capsys.readouterr().out.split("as --rungs numbers them:\n")[1].splitlines()
    assert [line.split(maxsplit=1) for line in listed] == [[str(i), rung.name] for i, rung in enumerate(whole, 1)]


def test_toy_models_never_write_over_the_real_size_figures():
    cpu = torch.device("cpu")
    assert parse_args(["--model", "tiny"], cpu).out == Path("build") / "bench-tiny"
    assert parse_args(["--model", "shapes"], cpu).out == Path("build") / "bench-shapes"
    assert parse_args(["--model", str(shapes_folder())], cpu).out == Path("build") / "bench-shapes"  # a folder
    assert parse_args([], cpu).out == Path("build")  # sd15-random: what notebook 01 and the README show
    assert parse_args(["--model", "tiny", "--out", "elsewhere"], cpu).out == Path("elsewhere")


def test_the_header_shows_a_toy_models_flops_in_g_not_as_zero():
    assert flops_text(1.607e12) == "1.607 T"
    assert flops_text(2.5e7) == "0.025 G"


def test_a_bad_model_is_one_line_before_any_work(capsys):
    assert bench_main(["--model", "nosuchmodel"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: Unknown model 'nosuchmodel'") and err.count("\n") == 1
