"""The T4 rehearsal's plan, and the parts of it that run without a GPU (it runs for real in make gpu-check)."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
t4 = runpy.run_path(str(ROOT / "scripts" / "t4_rehearsal.py"))


def test_the_dry_run_names_every_notebook_the_model_and_the_cap():
    run = subprocess.run([sys.executable, "scripts/t4_rehearsal.py", "--dry-run", "--limit-gib", "15"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "TUTORIAL_MODEL=sd15-random" in lines[0] and "capped at 15 GiB" in lines[0]
    planned = [line.split()[-1] for line in lines[1:]]
    assert planned == [f"notebooks/{p.name}" for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]


def test_without_a_gpu_it_says_so_in_one_line():
    # The GPU hidden: on a GPU machine (make gpu-check) the script would otherwise rehearse every notebook for real.
    run = subprocess.run([sys.executable, "scripts/t4_rehearsal.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 2 and run.stderr.strip().startswith("t4: no CUDA GPU here")


def test_a_failing_notebook_names_its_cells_and_out_of_memory():
    report = "FAILED notebooks/02_memory.ipynb::Cell 12\nFAILED notebooks/02_memory.ipynb::Cell 15\n"
    assert t4["failed_cells"](report) == ["Cell 12", "Cell 15"]
    oom = report + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert t4["failed_cells"](oom) == ["Cell 12 (out of memory)", "Cell 15 (out of memory)"]


def test_the_startup_file_is_harmless_without_cuda(tmp_path):
    """It runs first in every kernel: on a machine without CUDA it must do nothing, and fail nothing."""
    code = "get_ipython = None\n" + t4["STARTUP"]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"T4_LIMIT_GIB": "15", "T4_PEAK_FILE": str(tmp_path / "peak.json"), "PATH": "",
                              "CUDA_VISIBLE_DEVICES": ""})  # a GPU machine too (make gpu-check)
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "peak.json").exists()


def test_it_rehearses_the_notebooks_it_is_given_and_refuses_others(tmp_path):
    run = subprocess.run([sys.executable, "scripts/t4_rehearsal.py", "--dry-run", "notebooks/04_beyond.ipynb"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [line.split()[-1] for line in run.stdout.splitlines()[1:]] == ["notebooks/04_beyond.ipynb"]
    other = tmp_path / "mine.ipynb"
    run = subprocess.run([sys.executable, "scripts/t4_rehearsal.py", "--dry-run", str(other)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "not one of the tutorial's notebooks" in run.stderr


def test_it_refuses_fewer_than_one_job():
    run = subprocess.run([sys.executable, "scripts/t4_rehearsal.py", "--dry-run", "--jobs", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--jobs must be 1 or more" in run.stderr


def test_a_random_weights_model_gets_the_rule_that_reads_not_judged_as_true():
    rules = t4["sanitize_rules"]("sd15-random")
    assert rules.startswith((ROOT / "tests" / "sanitize.cfg").read_text())
    assert "not judged" in rules and "not judged" not in t4["sanitize_rules"]("shapes")


def test_the_dry_run_says_how_many_at_a_time():
    run = subprocess.run([sys.executable, "scripts/t4_rehearsal.py", "--dry-run", "--jobs", "2",
                          "notebooks/01_speed.ipynb", "notebooks/02_memory.ipynb"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "would run 2 notebooks at a time" in run.stdout.splitlines()[1]
