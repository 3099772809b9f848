import json

import pytest

from helpers.bench_figures import read_bench
from helpers.errors import TutorialError

# Rows as `make bench` writes them to build/bench.json (fabricated numbers, the real keys).
ROWS = [
    {"rung": "float32 + PNDM (guide baseline)", "kind": "exact", "dtype": "float32", "solver": "pndm", "steps": 50,
     "unet s/step": 6.0, "e2e s": 320.0, "e2e how": "estimated", "speedup": 1.0},
    {"rung": "half precision + PNDM", "kind": "exact", "dtype": "bfloat16", "solver": "pndm", "steps": 50,
     "unet s/step": 2.0, "e2e s": 100.0, "e2e how": "estimated", "speedup": 3.2},
    {"rung": "+ DPM-Solver++", "kind": "exact", "dtype": "bfloat16", "solver": "dpm", "steps": 20,
     "unet s/step": 2.0, "e2e s": 40.0, "e2e how": "estimated", "speedup": 8.0},
    {"rung": "+ channels_last + fused QKV", "kind": "exact", "dtype": "bfloat16", "solver": "dpm", "steps": 20,
     "unet s/step": 1.6, "e2e s": 32.0, "e2e how": "measured", "speedup": 10.0},
    {"rung": "approx: channels_last + fused QKV, 10 steps", "kind": "approximate", "dtype": "bfloat16",
     "solver": "dpm", "steps": 10, "unet s/step": 1.6, "e2e s": 16.0, "e2e how": "measured", "speedup": 20.0},
]


def write(tmp_path, **meta):
    path = tmp_path / "bench.json"
    data = {"device": "CPU (2 threads)", "model": "sd15-random", "height": 512, "width": 512, "threads": 2,
            "torch": "2.13.0+cpu", "rows": ROWS} | meta
    path.write_text(json.dumps(data))
    return path


def test_no_bench_json_gives_none(tmp_path):
    assert read_bench(tmp_path / "bench.json") is None


def test_each_rung_names_the_lesson_it_supports(tmp_path):
    figures = read_bench(write(tmp_path))
    lessons = figures.table["lesson"].tolist()
    assert lessons[0].startswith("baseline")
    assert lessons[1] == "half precision (step 3)"
    assert lessons[2] == "the scheduler and its steps (step 4)"
    assert lessons[3].startswith("beyond the guide") and "approximation" in lessons[4]


def test_speedups_over_the_baseline_and_over_the_best_rung_before(tmp_path):
    table = read_bench(write(tmp_path)).table
    assert table["speedup"].tolist() == [1.0, 3.2, 8.0, 10.0, 20.0]
    assert table["vs best before"].tolist()[1:] == [3.2, 2.5, 1.25, 2.0]  # the approximate rung vs the last exact one
    assert table["seconds"].tolist() == [320.0, 100.0, 40.0, 32.0, 16.0]


def test_a_rung_not_kept_is_not_what_the_next_rung_is_compared_with(tmp_path):
    slower = {**ROWS[3], "rung": "+ something slower", "e2e s": 64.0, "kept": "no"}
    rows = [{**r, "kept": "yes"} for r in ROWS[:4]] + [slower, {**ROWS[3], "rung": "+ faster", "e2e s": 16.0,
                                                                "kept": "yes"}]
    figures = read_bench(write(tmp_path, rows=rows))
    assert figures.table["vs best before"].tolist()[4:] == [0.5, 2.0]  # 32/64, then 32/16: not 64/16
    lines = figures.describe().splitlines()
    assert "slower, so dropped" in lines[3] and "dropped" not in lines[4]


def test_a_peer_is_compared_with_the_best_exact_rung_and_is_no_lesson(tmp_path):
    peer = {"rung": "peer: Some engine bf16", "kind": "peer", "dtype": "float32", "solver": "dpm", "steps": 20,
            "e2e s": 40.0, "e2e how": "estimated"}
    figures = read_bench(write(tmp_path, rows=ROWS + [peer]))
    row = figures.table.loc["peer: Some engine bf16"]
    assert row["vs best before"] == 0.8  # the best exact rung (32 s) against the peer's 40 s, not the approximate one
    assert row["lesson"].startswith("another engine") and "step 3" not in row["lesson"]
    assert figures.describe().splitlines()[-1].startswith("peer: Some engine bf16: 40.0 s per image, 0.80x")


def test_machine_line_says_where_the_figures_come_from(tmp_path):
    figures = read_bench(write(tmp_path))
    assert figures.machine == "CPU (2 threads), torch 2.13.0+cpu: sd15-random at 512x512"
    assert read_bench(write(tmp_path, machine="Intel Xeon, 2 cores")).machine.startswith("Intel Xeon, 2 cores,")
    # what the bench writes: the CPU's name beside the device
    assert read_bench(write(tmp_path, cpu="Intel(R) Xeon(R) Processor")).machine.startswith(
        "Intel(R) Xeon(R) Processor, CPU (2 threads), torch")
    assert "3.2x the speed of the best rung before it" in figures.describe().splitlines()[0]


@pytest.mark.parametrize("text", ["not json", '{"rows": []}', '{"rows": [{"rung": "x"}]}', '{"device": "cpu"}'])
def test_a_broken_bench_json_is_one_clear_error(tmp_path, text):
    path = tmp_path / "bench.json"
    path.write_text(text)
    with pytest.raises(TutorialError, match="run `make bench` again"):
        read_bench(path)
