"""The ladder's Winograd rung: NNPACK's 3x3 convolutions against PyTorch's (its place in the ladder: test_bench.py)."""

import re

import pytest
import torch
from torch import nn

import helpers.bench.winograd as winograd

needs_nnpack = pytest.mark.skipif(not winograd.nnpack_available(), reason="this PyTorch has no NNPACK for this CPU")


@needs_nnpack
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
def test_the_winograd_operator_gives_pytorchs_convolution_in_the_inputs_layout(layout, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=bias)
    x = torch.randn(3, 8, 20, 20).contiguous(memory_format=layout)  # 3 pictures: NNPACK runs one at a time
    out = winograd.winograd_op()(x, conv.weight, conv.bias, [1, 1])
    torch.testing.assert_close(out, conv(x), atol=1e-4, rtol=1e-4)
    assert out.is_contiguous(memory_format=layout)


@needs_nnpack
def test_the_operator_traces_as_one_with_its_shape_rule():
    op = winograd.winograd_op()
    torch.library.opcheck(op, (torch.randn(2, 4, 9, 9), torch.randn(6, 4, 3, 3), torch.randn(6), [1, 1]))
    torch.library.opcheck(op, (torch.randn(1, 4, 9, 9), torch.randn(6, 4, 3, 3), None, [0, 0]))
    laid_out = torch.randn(2, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(op, (laid_out, torch.randn(6, 4, 3, 3).contiguous(memory_format=torch.channels_last),
                               torch.randn(6), [1, 1]))


@needs_nnpack
def test_compiled_layers_call_the_operator_also_when_first_called_compiled(monkeypatch):
    """A layer decided eagerly runs Winograd inside torch.compile; so does a fresh copy of it that is first called
    compiled (the bench reloads the pipeline before compiling it whole): it takes the choice its shapes measured."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(winograd, "CHOSEN", {})
    monkeypatch.setattr(winograd, "_seconds", lambda fn: 1.0 if "_conv_forward" in fn.__code__.co_names else 0.5)
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU()).eval()  # noqa: E731
    model, fresh = make(), make()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 4, 12, 12)
    calls = []
    nnpack = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *args: calls.append(1) or nnpack(*args))
    with torch.no_grad(), inductor.patch(freezing=True):
        expected = model(x)
        winograd.use_winograd(model)
        model(x)  # eager: the layer times both ways and keeps Winograd
        assert model[0].winograd is True and len(calls) == 2
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), expected, atol=1e-4, rtol=1e-4)
        assert len(calls) == 4  # one per picture
        winograd.use_winograd(fresh)
        torch.testing.assert_close(torch.compile(fresh, fullgraph=True)(x), expected, atol=1e-4, rtol=1e-4)
    assert fresh[0].winograd is None and len(calls) == 6


def test_only_plain_float32_3x3_convolutions_are_candidates():
    assert winograd.candidate(nn.Conv2d(4, 4, 3, padding=1))
    assert not winograd.candidate(nn.Conv2d(4, 4, 3, padding=1, stride=2))  # SD's downsamplers
    assert not winograd.candidate(nn.Conv2d(4, 4, 1))  # 1x1 shortcuts and projections
    assert not winograd.candidate(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert not winograd.candidate(nn.Conv2d(4, 4, 3, padding=1).to(torch.bfloat16))  # NNPACK: float32 only


@needs_nnpack
@pytest.mark.parametrize("faster", [True, False])
def test_each_layer_keeps_the_way_it_measured_faster_and_gives_the_same_output(monkeypatch, faster):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                          nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        asked = []
        monkeypatch.setattr(winograd, "winograd_faster", lambda layer, *shape: asked.append(shape) or faster)
        assert winograd.use_winograd(model) == 2  # the strided one is left alone
        calls = []
        op = torch.ops.efficient_diffusion.winograd_conv2d
        monkeypatch.setattr(torch.ops.efficient_diffusion, "winograd_conv2d",
                            lambda *args: calls.append(1) or op(*args), raising=False)
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)
        model(x)
    assert asked == [((2, 3, 16, 16), False), ((2, 8, 8, 8), False)]  # each layer asked once, at its first call
    assert [model[0].winograd, model[3].winograd] == [faster, faster]
    assert len(calls) == (4 if faster else 0)


@needs_nnpack
def test_the_choice_is_timed_once_per_shape(monkeypatch):
    timed = []
    monkeypatch.setattr(winograd, "CHOSEN", {})
    monkeypatch.setattr(winograd, "_seconds", lambda fn: timed.append(1) or len(timed))  # direct 1 s, Winograd 2 s
    layer = nn.Conv2d(4, 4, 3, padding=1)
    assert winograd.winograd_faster(layer, (1, 4, 300, 300), False) is False
    assert winograd.winograd_faster(nn.Conv2d(4, 4, 3, padding=1), (1, 4, 300, 300), False) is False
    assert len(timed) == 2  # the second layer of the same shape reuses the first one's choice


@needs_nnpack
def test_the_bench_runs_the_winograd_rung_on_tiny_and_times_it(tmp_path, capsys, monkeypatch):
    """The rung through the bench's own pipeline: its convolutions choose at the warm-up, then are timed."""
    import helpers.bench.__main__ as bench_cli
    from helpers.bench.ladder import ladder

    number = next(i for i, rung in enumerate(ladder(cpu=True), 1) if rung.winograd)
    monkeypatch.setattr(bench_cli, "pick_device", lambda: torch.device("cpu"))  # a CUDA machine's ladder has none
    code = bench_cli.main(["--model", "tiny", "--rungs", f"3,{number}", "--steps", "2", "--repeats", "1",
                           "--peak-seconds", "0.01", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"\] \+ Winograd 3x3 convolutions \(NNPACK\), per layer \.\.\.\n"
                     r"    Winograd kept by \d+ of [1-9]\d* float32 3x3 convolutions.*\n    unet [\d.]+ s/step", out)


def test_the_report_counts_layers_first_called_compiled_apart(monkeypatch):
    """Layers first called inside torch.compile hold no choice: the line counts them apart, with what the shapes
    measured, and never as measured faster direct."""
    monkeypatch.setattr(winograd, "CHOSEN", {"a": True, "b": False, "c": True})
    layers = [winograd.WinogradConv2d(4, 4, 3, padding=1) for _ in range(4)]
    layers[0].winograd, layers[1].winograd = True, False
    assert winograd.winograd_report(layers[:2]) == ("Winograd kept by 1 of 2 float32 3x3 convolutions, 1 measured "
                                                    "faster direct")
    line = winograd.winograd_report(layers)
    assert line.startswith("Winograd kept by 1 of 4 float32 3x3 convolutions, 1 measured faster direct; 2 first ran "
                           "compiled")
    assert "Winograd for 2 of the 3 shapes measured" in line
    compiled = winograd.winograd_report(layers[2:])
    assert compiled.startswith("Winograd kept by 0 of 2 float32 3x3 convolutions, 0 measured faster direct; 2 first")
