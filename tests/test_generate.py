import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.device import recipe_dtype
from helpers.errors import TutorialError
from helpers.generate import files, run

ROOT = Path(__file__).resolve().parents[1]
# Lines 2 and 5 are blank: pictures are named and seeded by their line in the file.
PROMPTS = "a red circle on a white background\n\na blue square\nan old warrior chief\n\n  a green triangle  \nsunset\n"
LINES = [1, 3, 4, 6, 7]
# Batches of 2 give three batches [1, 3], [4, 6], [7]: two processes take two and one.
ARGS = ["--steps", "2", "--batch-size", "2", "--threads", "1"]


@pytest.fixture(autouse=True)
def _keep_threads():
    """``--threads`` sets torch's thread count in this process: put it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_here(prompts: Path, out: Path, *extra: str) -> int:
    """A run in this process, on the CPU like the two-process run (which hides any GPU), so that both make the same
    bytes on a GPU machine too.

    Accelerate's ``PartialState`` is one object per process, made once: an earlier ``run.main`` in this process
    (say a bad-file test) has made it for the GPU on a GPU machine, so it is made anew here, for the CPU
    (``_reset_state`` is Accelerate's own, used by its tests).
    """
    from accelerate import PartialState

    PartialState._reset_state()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("helpers.device.pick_device", lambda: torch.device("cpu"))
            return run.main([str(prompts), "--out", str(out), "--model", MODEL[0], *ARGS, *extra])
    finally:
        PartialState._reset_state()  # and gone after, so a later run in this process makes its own


def pictures(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def index(out: Path) -> list[dict]:
    with open(out / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


MODEL = [""]


@pytest.fixture(scope="module", autouse=True)
def _model(tmp_path_factory):
    """The tiny preset saved as a folder: the preset's tokenizer is learned anew in each process, and its token ids
    can differ from one process to the next, so processes that must agree load one saved copy."""
    from helpers.models import load_pipeline

    folder = tmp_path_factory.mktemp("model") / "tiny"
    load_pipeline("tiny", dtype=torch.float32, device="cpu", quiet=True).save_pretrained(folder)
    MODEL[0] = str(folder)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text(PROMPTS)
    return path


@pytest.fixture(scope="module")
def single(prompts, tmp_path_factory) -> Path:
    """One uninterrupted run in this process."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("single") / "pictures"
    try:
        assert run_here(prompts, out) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_read_prompts_numbers_lines_and_skips_blank_ones(prompts):
    assert files.read_prompts(prompts) == [(1, "a red circle on a white background"), (3, "a blue square"),
                                              (4, "an old warrior chief"), (6, "a green triangle"), (7, "sunset")]


@pytest.mark.parametrize(("content", "match"), [
    (None, "does not exist"), ("folder", "is not a file"), (b"\n  \n\n", "has no prompts"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file"), (b"caf\xe9 au lait\n", "is not a text file"),
])
def test_bad_prompt_file_is_one_line_error(tmp_path, capsys, content, match):
    path = tmp_path / "prompts.txt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(TutorialError, match=match):
        files.read_prompts(path)
    assert run.main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_line_for_a_missing_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "helpers.generate", str(tmp_path / "nope.txt"), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {str(tmp_path / 'nope.txt')!r} does not exist: give a UTF-8 text file with one prompt per line."]


def test_one_process_writes_every_picture_and_the_index(single):
    assert sorted(pictures(single)) == [f"{line:05d}.png" for line in LINES]
    rows = index(single)
    assert [int(r["line"]) for r in rows] == LINES
    assert [int(r["seed"]) for r in rows] == LINES  # seed 0 + line number
    assert {r["rank"] for r in rows} == {"0"} and {r["processes"] for r in rows} == {"1"}
    assert rows[3]["prompt"] == "a green triangle"
    assert all(float(r["seconds"]) > 0 for r in rows)
    dtype = str(recipe_dtype("cpu")).removeprefix("torch.")  # the default follows the recipe's policy
    assert f"model={MODEL[0]} dtype={dtype} scheduler=dpm++ steps=2 guidance=7.5 seed=0 batch=2" in rows[0]["settings"]
    with Image.open(single / "00004.png") as image:
        assert image.size == (64, 64)
        assert image.text["prompt"] == "an old warrior chief" and image.text["seed"] == "4"
    assert not list(single.glob(".*.tmp"))


@pytest.mark.parametrize(("native", "speedup", "expected"),
                         [(False, 2.0, "float32"), (True, 2.0, "bfloat16"), (True, 0.7, "float32")])
def test_the_default_dtype_follows_the_recipe_policy(tmp_path, monkeypatch, capsys, native, speedup, expected):
    """A CPU that would emulate bfloat16 generates in float32 by default; one with AMX or AVX-512 BF16 in bfloat16
    where bfloat16 ran SD 1.5's first level faster than float32 on it, else in float32."""
    monkeypatch.setattr("helpers.device.cpu_has_fast_bf16", lambda: native)
    monkeypatch.setattr("helpers.device.half_speedup", lambda: speedup)
    (tmp_path / "one.txt").write_text("a red circle\n")
    assert run.parse_args([str(tmp_path / "one.txt"), "--out", "x"]).dtype == "recipe"
    assert run_here(tmp_path / "one.txt", tmp_path / "out", "--steps", "1") == 0
    assert f"dtype={expected} " in index(tmp_path / "out")[0]["settings"]
    assert f"generate: the recipe's precision, {expected}: " in capsys.readouterr().out  # and why


def test_two_processes_make_the_same_files(single, prompts, tmp_path):
    out = tmp_path / "pictures"
    # What starts two CPU processes: --multi_gpu (torchrun underneath); --cpu would start only one.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "helpers.generate", str(prompts), "--out", str(out), "--model", MODEL[0], *ARGS]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pictures(out) == pictures(single)
    rows = index(out)
    assert [r["line"] for r in rows] == [r["line"] for r in index(single)]
    assert {r["rank"] for r in rows} == {"0", "1"} and {r["processes"] for r in rows} == {"2"}
    # The first two batches go to rank 0, the last to rank 1; index.csv is written once, by rank 0.
    assert [r["rank"] for r in rows] == ["0", "0", "0", "0", "1"]
    assert "with 2 process(es)" in proc.stdout


def test_resume_after_an_interruption_loses_only_the_batch_in_flight(single, prompts, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pictures"
    real = files.png_bytes
    calls = []

    def stop_in_the_second_batch(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(run, "png_bytes", stop_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_here(prompts, out)
    monkeypatch.setattr(run, "png_bytes", real)
    assert sorted(pictures(out)) == ["00001.png", "00003.png"]  # the first batch; the second was lost
    assert not (out / "index.csv").exists()  # only a finished run has an index
    # A torn picture (e.g. a disk filled up) and a stray temporary file are not taken for work done.
    (out / "00001.png").write_bytes((out / "00001.png").read_bytes()[:200])
    (out / ".00004.png.123.tmp").write_bytes(b"half")
    kept = (out / "00003.png").stat().st_mtime_ns
    capsys.readouterr()
    assert run_here(prompts, out) == 0
    assert "made 4 pictures" in capsys.readouterr().out
    assert pictures(out) == pictures(single)
    assert (out / "00003.png").stat().st_mtime_ns == kept
    assert not list(out.glob(".*.tmp"))
    assert [int(r["line"]) for r in index(out)] == LINES
    assert run_here(prompts, out) == 0  # nothing left to do
    assert "made 0 pictures" in capsys.readouterr().out


def test_a_changed_prompt_is_made_again(single, prompts, tmp_path, capsys):
    out = tmp_path / "pictures"
    shutil.copytree(single, out)
    changed = tmp_path / "prompts.txt"
    changed.write_text(PROMPTS.replace("sunset", "a yellow star"))
    assert run_here(changed, out) == 0
    assert "made 1 pictures" in capsys.readouterr().out
    before, after = pictures(single), pictures(out)
    assert [name for name in after if after[name] != before[name]] == ["00007.png"]
    assert index(out)[-1]["prompt"] == "a yellow star"


def test_other_settings_are_refused(single, prompts, tmp_path, capsys):
    out = tmp_path / "pictures"
    shutil.copytree(single, out)
    assert run_here(prompts, out, "--steps", "3") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps 2 -> 3" in err[0] and "choose another --out" in err[0]
    assert pictures(out) == pictures(single)


def test_a_folder_with_other_files_is_refused(prompts, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert run_here(prompts, tmp_path) == 2
    assert "not made by helpers.generate" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert run.main([str(prompts), "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--steps", "0"], ["--batch-size", "x"], ["--batch-size", "0"], ["--threads", "0"],
                                  ["--scheduler", "nope"]])
def test_bad_options_are_refused(prompts, tmp_path, args):
    with pytest.raises(SystemExit) as exc:
        run.main([str(prompts), "--out", str(tmp_path / "out"), *args])
    assert exc.value.code == 2
