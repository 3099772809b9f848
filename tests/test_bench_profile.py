"""``python -m helpers.bench --profile``: where one UNet step and one decode spend their time, by kind of work."""

import os
from datetime import timedelta
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers.bench.__main__ import main as bench_main
from helpers.bench.flops import flops_by_operator
from helpers.bench.profile import (
    KINDS,
    breakdown_line,
    breakdown_rows,
    flops_by_kind,
    openvino_seconds,
    profile_call,
    seconds_by_kind,
    torch_kind,
)
from helpers.bench_figures import profile_table


@pytest.mark.parametrize(("name", "kind"), [
    ("aten::convolution", "convolution"), ("aten::mkldnn_convolution", "convolution"),
    ("mkldnn::_convolution_pointwise", "convolution"), ("aten.convolution", "convolution"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("aten.bmm", "attention"),
    ("aten::baddbmm", "attention"), ("aten::_softmax", "attention"),
    ("aten::linear", "linear"), ("aten::addmm", "linear"), ("aten.mm", "linear"), ("aten::mm", "linear"),
    ("mkldnn::_linear_pointwise", "linear"),
    ("aten::group_norm", "normalisation"), ("aten::native_layer_norm", "normalisation"),
    ("aten::add", None), ("aten::silu", None), ("aten::_to_copy", None), ("aten::convert_element_type", None),
    ("Torch-Compiled Region: 0/0", None),
])
def test_each_operator_has_its_kind_of_work(name, kind):
    assert torch_kind(name) == kind


def event(name, own_us, parent=None):
    return SimpleNamespace(name=name, self_cpu_time_total=own_us, cpu_parent=parent)


def test_an_operators_inner_bookkeeping_counts_for_the_operator_around_it():
    norm = event("aten::group_norm", 100)
    conv = event("aten::convolution", 50)
    region = event("Torch-Compiled Region: 0/0", 400)  # fused elementwise kernels: the region's own time
    events = [norm, event("aten::empty", 20, norm), conv, event("aten::mkldnn_convolution", 900, conv),
              event("aten::add", 30), region, event("aten::addmm", 700, region)]
    seconds = seconds_by_kind(events)
    assert seconds == pytest.approx({"convolution": 950e-6, "attention": 0.0, "linear": 700e-6,
                                     "normalisation": 120e-6, "other": 430e-6})


class Block(torch.nn.Module):
    """One of each kind: a convolution, a group norm, a linear layer, attention, and an elementwise tail."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.norm = torch.nn.GroupNorm(8, 32)
        self.proj = torch.nn.Linear(32, 96)

    def forward(self, x):
        x = self.norm(self.conv(x))
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.proj(tokens).view(x.shape[0], -1, 4, 24).transpose(1, 2).chunk(3, dim=-1)
        return F.silu(F.scaled_dot_product_attention(q, k, v)) * 2


def test_profiling_a_call_finds_each_kind_and_adds_up_to_the_call():
    block, x = Block(), torch.randn(2, 32, 32, 32)
    with torch.no_grad():
        block(x)
        seconds = profile_call(lambda: block(x))
    assert set(seconds) == set(KINDS)
    assert all(seconds[kind] > 0 for kind in KINDS), seconds
    # Every operator's own time counted once: the kinds add up to the profiler's own total.
    from torch.profiler import profile

    with torch.no_grad(), profile() as prof:
        block(x)
    total = sum(e.self_cpu_time_total for e in prof.events()) / 1e6
    assert sum(seconds_by_kind(prof.events()).values()) == pytest.approx(total)


def test_profiling_prints_nothing_to_stderr():
    """Kineto's "USDT: profiler_start/stop" lines, printed at every profile by default, are silenced."""
    import subprocess
    import sys

    code = "import torch; from helpers.bench.profile import profile_call; profile_call(lambda: torch.ones(3) + 1)"
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "USDT" not in done.stderr and "profiler_st" not in done.stderr, done.stderr


def test_flops_by_kind_add_up_to_the_benchs_count(tiny_pipe):
    ops = flops_by_operator(tiny_pipe, 64, 64)
    for part in ("unet", "vae"):
        kinds = flops_by_kind(ops[part])
        assert sum(kinds.values()) == pytest.approx(sum(ops[part].values()))
    assert flops_by_kind(ops["vae"])["convolution"] > 0.5 * sum(ops["vae"].values())  # a decoder is convolutions
    unet = flops_by_kind(ops["unet"])
    assert unet["attention"] > 0 and unet["linear"] > 0 and unet["convolution"] > 0


def test_a_breakdown_gives_each_kinds_share_of_the_peak():
    seconds = {"convolution": 2.0, "attention": 1.0, "linear": 0.5, "normalisation": 0.25, "other": 0.25}
    flops = {"convolution": 1e12, "attention": 0.1e12, "linear": 0.5e12, "normalisation": 0.0, "other": 0.0}
    rows = breakdown_rows("rung", "UNet step", seconds, flops, peak=1.0)
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["convolution"]["% of peak"] == pytest.approx(50.0)
    assert by_kind["attention"]["% of peak"] == pytest.approx(10.0)
    assert by_kind["normalisation"]["% of peak"] is None  # no FLOPs counted: no share of the peak
    assert sum(r["share %"] for r in rows) == pytest.approx(100.0)
    line = breakdown_line(rows)
    assert line.startswith("    profile UNet step: convolution 2.00 s (50 % of peak), attention 1.00 s (10 % of peak)")
    table = profile_table(rows + breakdown_rows("rung", "decode", seconds, flops, peak=1.0))
    assert list(table.index) == [("rung", "UNet step"), ("rung", "decode")]
    assert table.loc[("rung", "UNet step"), "total s"] == 4.0
    assert table.loc[("rung", "decode"), "convolution % peak"] == 50.0


def test_openvinos_executed_layers_are_grouped_like_torchs():
    def layer(node_type, ms, status="Status.EXECUTED", name="x"):
        return SimpleNamespace(node_type=node_type, node_name=name, real_time=timedelta(milliseconds=ms),
                               status=status)

    # Names as OpenVINO 2026.4 gives its fused layers of SD's UNet.
    info = [layer("Convolution", 30), layer("FullyConnected", 20), layer("ScaledDotProductAttention", 10),
            layer("MVN", 5), layer("Eltwise", 3), layer("Reorder", 2), layer("Convolution", 99, "Status.NOT_RUN"),
            layer("Parameter", 0, "Status.OPTIMIZED_OUT"),
            layer("Subgraph", 40, name="__module.unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1/"
                                       "aten::transpose/Transpose_3"),
            layer("Subgraph", 7, name="__module.unet.down_blocks.0.resnets.0.norm1/"
                                      "aten::group_norm/GroupNormalization"),
            layer("Subgraph", 1, name="__module.unet.down_blocks.0.resnets.0.nonlinearity/aten::silu/Swish"),
            layer("Subgraph", 4, name="__module.vae.decoder.mid_block.attentions.0/aten::transpose/Transpose_2")]
    assert openvino_seconds(info) == pytest.approx({"convolution": 0.030, "attention": 0.054, "linear": 0.020,
                                                    "normalisation": 0.012, "other": 0.006})


def test_bench_profile_writes_the_breakdown_per_rung(tmp_path, capsys):
    code = bench_main(["--model", "tiny", "--rungs", "3", "--steps", "2",
                       "--repeats", "1", "--peak-seconds", "0.01", "--profile", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("    profile UNet step: convolution ") >= 1 and out.count("    profile decode: ") >= 1
    table = pd.read_csv(tmp_path / "profile.csv", index_col=["rung", "part"])
    rungs = pd.read_csv(tmp_path / "bench.csv", index_col="rung")
    measured = [r for r, how in rungs["e2e how"].items() if how != "at least"]  # a hopeless rung is not profiled
    assert list(table.index) == [(r, part) for r in measured for part in ("UNet step", "decode")]
    assert (table["total s"] > 0).all() and table["convolution % peak"].notna().all()
    assert (tmp_path / "profile.png").stat().st_size > 10_000
