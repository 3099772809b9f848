import json
import re

import pandas as pd
import pytest
import torch

from helpers import bench


def test_ladder_adds_one_setting_per_rung():
    rungs = bench.ladder(steps=20, baseline_steps=50)
    assert [r.steps for r in rungs] == [50, 50, 20, 20, 20]
    assert all(r.exact for r in rungs)
    assert (rungs[0].half, rungs[1].half, rungs[2].solver, rungs[3].channels_last, rungs[4].compiled) == (
        False, True, "dpm", True, True)
    approx = bench.approximate(rungs[-1], 10)
    assert not approx.exact and approx.steps == 10 and approx.compiled


def test_cpu_ladder_has_the_allocator_rung_before_compile():
    rungs = bench.ladder(cpu=True)
    assert [r.keep_memory for r in rungs] == [False, False, False, False, True, True]
    assert rungs[-1].compiled and not rungs[-2].compiled


def test_flops_match_the_published_sd15_counts():
    from helpers import presets

    flops = bench.count_flops(presets.sd15_random(), 512, 512)
    assert flops["unet"] / 1e12 == pytest.approx(1.61, abs=0.01)
    assert flops["vae"] / 1e12 == pytest.approx(2.51, abs=0.01)


def test_bench_runs_on_tiny_and_writes_its_table(tmp_path, capsys):
    code = bench.main(["--model", "tiny", "--rungs", "1-4", "--steps", "2", "--baseline-steps", "3",
                       "--repeats", "1", "--approx", "--approx-steps", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^speedup: \d+\.\dx$", out.strip().splitlines()[-1])
    assert out.count("[") >= 5  # a progress line per rung
    df = pd.read_csv(tmp_path / "bench.csv", index_col="rung")
    assert len(df) == 5 and list(df["kind"]) == ["exact"] * 4 + ["approximate"]
    for column in ("unet s/step", "it/s", "vae decode s", "e2e s", "e2e how", "speedup", "TFLOP/s"):
        assert column in df.columns
    # Core-seconds per image mean something on a CPU only: the bench writes them there and nowhere else.
    assert ("core-s/image" in df.columns) == (bench.pick_device().type == "cpu")
    assert set(df["e2e how"]) <= {"measured", "estimated"}
    assert df["speedup"].iloc[0] == 1.0
    assert df["max diff"].notna().iloc[-1] and df["max diff"].isna().iloc[:-1].all()
    meta = json.loads((tmp_path / "bench.json").read_text())
    assert meta["model"] == "tiny" and len(meta["rows"]) == 5


def test_compiling_needs_minutes_of_budget_on_every_device():
    base = bench.ladder()[3]
    compiled = bench.ladder()[-1]
    assert compiled.compiled and not base.compiled
    assert bench.seconds_needed(compiled, base) >= 240  # a T4 takes minutes too, not only a CPU
    assert bench.seconds_needed(compiled, compiled) == bench.seconds_needed(base, base) == 30


@pytest.mark.parametrize("args", [["--rungs", "0-2"], ["--rungs", "x"], ["--rungs", "1-9"], ["--steps", "0"],
                                  ["--resolution", "100"]])
def test_bench_rejects_bad_options(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(args, torch.device("cpu"))
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
