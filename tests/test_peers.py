import math
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import helpers.bench.__main__ as bench_cli
from helpers.bench import peers

ARGS = ["--model", "tiny", "--rungs", "3", "--steps", "2", "--repeats", "1", "--peak-seconds", "0.01", "--peers"]


@pytest.fixture(autouse=True)
def on_the_cpu(monkeypatch):
    """The peers are CPU engines: on a GPU machine the bench would not run them, so every bench here runs on the CPU."""
    monkeypatch.setattr(bench_cli, "pick_device", lambda: torch.device("cpu"))


def run_bench(tmp_path, capsys):
    code = bench_cli.main([*ARGS, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^speedup: \d+\.\dx$", out.strip().splitlines()[-1])  # still the last line
    return out, pd.read_csv(tmp_path / "bench.csv", index_col="rung")


class Broken:
    """A peer whose converter raises, as one that cannot take a model would."""

    name, modules, label, dtype = "Broken engine", (), "Broken engine 0.0", "float32"

    def __init__(self, profiling=False):
        self.profiling = profiling

    def convert(self, module, inputs, workdir):
        raise RuntimeError("cannot convert this model\nsecond line of the report")


def test_without_the_extra_one_line_says_what_to_install(tmp_path, capsys, monkeypatch):
    def refuse(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    # Only the peers' imports fail (diffusers imports onnxruntime too when it is installed, and must still work).
    monkeypatch.setattr(peers, "importlib", SimpleNamespace(import_module=refuse))
    out, df = run_bench(tmp_path, capsys)
    lines = [line for line in out.splitlines() if line.startswith("peers:")]
    assert len(lines) == 1 and 'pip install -e ".[peers]"' in lines[0]
    assert "OpenVINO and ONNX Runtime not installed" in lines[0]
    assert list(df["kind"]) == ["exact"] and "vs peers" not in out


def test_a_peer_that_fails_to_convert_is_skipped_with_its_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(peers, "PEERS", (Broken,))
    out, df = run_bench(tmp_path, capsys)
    skipped = [line.strip() for line in out.splitlines() if "skipped:" in line]
    assert skipped == ["skipped: Broken engine conversion failed (RuntimeError: cannot convert this model)"]
    assert list(df["kind"]) == ["exact"] and "vs peers" not in out


def test_vs_peers_compares_the_fastest_peer_with_the_best_exact_rung():
    rows = [{"rung": "float32", "kind": "exact", "e2e s": 4.0}, {"rung": "bf16", "kind": "exact", "e2e s": 2.0},
            {"rung": "approx", "kind": "approximate", "e2e s": 1.0},
            {"rung": "peer: A 1", "kind": "peer", "e2e s": 3.0}, {"rung": "peer: B 2", "kind": "peer", "e2e s": 5.0}]
    assert peers.summary(rows) == "vs peers: best exact rung is 1.50x the fastest peer (A 1)"
    assert peers.summary(rows[:3]) is None


def test_peers_on_tiny_give_rows_with_their_differences_from_pytorch(tmp_path, capsys):
    for module in ("openvino", "onnxruntime", "onnx", "onnxscript"):
        pytest.importorskip(module)
    out, df = run_bench(tmp_path, capsys)
    assert re.search(r"^vs peers: best exact rung is \d+\.\d\dx the fastest peer", out.strip().splitlines()[-2])
    rows = df[df["kind"] == "peer"]
    # OpenVINO in float32, and in bfloat16 too where the CPU computes it natively; ONNX Runtime in float32.
    assert len(rows) == len(peers.OpenVINO.variants()) + 1
    assert rows.index.str.startswith(("peer: OpenVINO", "peer: ONNX Runtime")).all()
    assert rows[rows.index.str.startswith("peer: OpenVINO")]["dtype"].iloc[-1] == "float32"
    for column in ("convert s", "unet s/step", "vae decode s", "e2e s", "unet max diff", "unet mean diff",
                   "decode max diff", "decode mean diff"):
        assert rows[column].map(math.isfinite).all(), column
    assert set(rows["e2e how"]) <= {"measured", "estimated"}
    assert (rows["unet mean diff"] <= rows["unet max diff"]).all()
    # ONNX Runtime computes in float32 like the reference: its UNet output matches PyTorch's to rounding.
    assert rows[rows.index.str.startswith("peer: ONNX Runtime")]["unet max diff"].iloc[0] < 1e-3


def test_openvinos_own_layer_times_stand_beside_the_rungs_profile(tmp_path, capsys, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(peers, "PEERS", (peers.OpenVINO,))
    code = bench_cli.main([*ARGS, "--profile", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    # the rung's, then OpenVINO's under its row (one per precision)
    assert out.count("    profile UNet step: ") == 1 + len(peers.OpenVINO.variants())
    profile = pd.read_csv(tmp_path / "profile.csv", index_col=["rung", "part"])
    openvino = [index for index in profile.index if index[0].startswith("peer: OpenVINO")]
    assert [part for _, part in openvino] == ["UNet step", "decode"] * len(peers.OpenVINO.variants())
    # The layers OpenVINO says it ran add up to about its timed call (the timing adds the Python around it).
    row = pd.read_csv(tmp_path / "bench.csv", index_col="rung").loc[openvino[0][0]]
    assert 0.3 * row["unet s/step"] < profile.loc[openvino[0], "total s"] <= 1.5 * row["unet s/step"]
    assert profile.loc[openvino[1], "convolution s"] > 0
