import os
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# A bare environment for subprocesses, keeping only where Python finds packages installed outside the venv
# (gpu-check installs diffusers and nbval into a folder on PYTHONPATH) and the test run's own cache (conftest.py);
# HOME is a test's own folder, so that nothing they write lands in the user's home or the repository.
_KEEP = {k: os.environ[k] for k in ("PYTHONPATH", "EFFICIENT_DIFFUSION_CACHE") if k in os.environ}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    """The same requirements as pyproject.toml, except torch, pinned as the Makefile pins it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + extras["dev"] + extras["peers"]}
    pinned = re.search(r"^TORCH_SPEC \?= (torch==[\w.]+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    wanted["torch"] = pinned
    listed = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"\s+- (?!pip:)([A-Za-z0-9_.\-\[\]]+.*)$", line)
        if m and not m.group(1).startswith(("python", "pip")):
            listed[_name(m.group(1))] = m.group(1).replace(" ", "")
    assert listed == wanted


def test_the_drift_workflow_reads_the_floors_and_names_what_moved(tmp_path):
    workflow = (ROOT / ".github" / "workflows" / "drift.yml").read_text()
    assert "schedule:" in workflow and "versions.py floors" in workflow and "versions.py moved" in workflow
    floors = subprocess.run([sys.executable, "scripts/versions.py", "floors"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert "diffusers==0.40" in floors and "torch==2.4" in floors
    tested = (ROOT / "ci" / "tested-versions.txt").read_text()
    assert {line.split("==")[0] for line in tested.split()} >= {"torch", "diffusers", "transformers", "accelerate"}
    old = tmp_path / "old.txt"
    old.write_text(tested.replace("diffusers==", "diffusers==0.0.1-"))
    moved = subprocess.run([sys.executable, "scripts/versions.py", "moved", str(old)], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout
    assert moved.startswith("moved since") and "diffusers: 0.0.1-" in moved


def test_notebook_urls_match_pyproject():
    proc = subprocess.run([sys.executable, "scripts/sync_urls.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    text = path.read_text()
    assert not re.search(r"/(tmp|root|work|home|Users)/[\w.-]+", text), "a machine path is stored in the notebook"
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "stderr (warnings, progress bars) is stored"
    first = nb.cells[0].source
    assert "colab.research.google.com" in first, "the first cell carries the Open-in-Colab badge"
    assert any("google.colab" in c.source for c in nb.cells if c.cell_type == "code")
    assert not [o for o in outputs if {"image/png", "image/jpeg"} <= set(o.get("data", {}))], "a picture twice"
    assert "../docs/" not in text, "a relative link to docs/ does not resolve in Colab: scripts/sync_urls.py"


def test_notebooks_mark_checked_cells_with_a_tag_not_a_comment():
    """nbval reads the cell tag nbval-check-output; a learner who copies a cell never sees it. Other markers are
    noise under --nbval-lax (only checked cells are compared)."""
    tagged = 0
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            assert "NBVAL" not in cell.source, f"{path.name}: an nbval comment in {cell.source[:60]!r}"
            tagged += "nbval-check-output" in cell.metadata.get("tags", [])
    assert tagged >= 20


def test_notebooks_are_numbered_in_the_guides_order():
    assert [p.name for p in NOTEBOOKS] == ["01_speed.ipynb", "02_memory.ipynb", "03_quality.ipynb", "04_beyond.ipynb",
                                           "05_transformers.ipynb"]


def test_info_command_prints_one_screen(tmp_path, monkeypatch):
    from helpers.device import cpu_has_fast_bf16, remember_half_speedup

    # A recorded bfloat16 speed-up, as notebook 01 leaves one: info reads it instead of measuring (5 s or more).
    monkeypatch.setenv("EFFICIENT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    remember_half_speedup(1.0, 0.8)
    proc = subprocess.run([sys.executable, "-m", "helpers", "info"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**_KEEP, "PATH": "", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path),
                                            "EFFICIENT_DIFFUSION_CACHE": str(tmp_path / "cache"),
                                            "OMP_NUM_THREADS": str(torch.get_num_threads())})  # the record's key
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) < 25
    for key in ("device", "cpu", "recipe dtype", "default model", "torch", "diffusers", "transformers",
                "hub reachable"):
        assert any(line.startswith(key) for line in lines), key
    assert "HF_HUB_OFFLINE" in proc.stdout
    assert ("1.25x as fast" in proc.stdout) == cpu_has_fast_bf16()  # the record read, where bfloat16 is native


def test_runner_never_writes_into_notebooks():
    proc = subprocess.run([sys.executable, "scripts/run_notebooks.py", "--out", "notebooks"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "never overwritten" in proc.stderr


def test_runner_names_an_output_folder_outside_the_repository(tmp_path):
    shown = runpy.run_path(str(ROOT / "scripts" / "run_notebooks.py"))["shown"]  # main() does not run
    assert shown(ROOT / "build" / "01_speed.ipynb") == Path("build/01_speed.ipynb")
    assert shown(tmp_path / "01_speed.ipynb") == tmp_path / "01_speed.ipynb"  # used to raise ValueError


def test_runner_summary_leaves_out_a_charts_placeholder_text():
    import nbformat

    summary_lines = runpy.run_path(str(ROOT / "scripts" / "run_notebooks.py"))["summary_lines"]
    chart = {"output_type": "display_data", "data": {"image/png": "...", "text/plain": "<Figure size 800x450>"}}
    table = {"output_type": "execute_result", "data": {"text/plain": "   steps  s/image"}}
    printed = {"output_type": "stream", "name": "stdout", "text": "measured on CPU\n"}
    cell = {"cell_type": "code", "metadata": {"tags": ["summary"]}, "outputs": [chart, table, printed]}
    untagged = {"cell_type": "code", "metadata": {}, "outputs": [table]}
    nb = nbformat.from_dict({"cells": [cell, untagged]})
    assert summary_lines(nb) == ["   steps  s/image", "measured on CPU"]


def test_info_flags_a_bad_tutorial_model(monkeypatch, capsys):
    """In this process (a process of its own spends 7 s importing on an AVX2-only EPYC; the test above runs info
    as one, end to end)."""
    from helpers.__main__ import main

    monkeypatch.setenv("TUTORIAL_MODEL", "nonsense")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no network call for the hub line
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("default model"))
    assert "INVALID" in line and "shapes, tiny, sd15-random" in line


def test_runner_stops_at_once_on_a_bad_model(monkeypatch, capsys):
    """In this process (a process of its own spends 7 s importing on an AVX2-only EPYC); should the model check
    stop working, no notebook runs here: the runner's ``run`` fails at once instead."""
    monkeypatch.setenv("TUTORIAL_MODEL", "nonsense")
    runner = runpy.run_path(str(ROOT / "scripts" / "run_notebooks.py"))

    def run(*args):
        raise AssertionError("the runner went on to run a notebook with a bad TUTORIAL_MODEL")

    monkeypatch.setitem(runner["main"].__globals__, "run", run)  # run_path hands back a copy of the globals
    assert runner["main"]([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        "error: Unknown model 'nonsense': use shapes, tiny, sd15-random, a hub id such as "
        "'stable-diffusion-v1-5/stable-diffusion-v1-5', or a local folder."]


def test_every_helpers_package_is_installed():
    """A pip install (Colab's) ships only the packages pyproject lists: every helpers folder must be among them."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "helpers").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"


SPEED_MEMORY = [p for p in NOTEBOOKS if p.name in ("01_speed.ipynb", "02_memory.ipynb")]


@pytest.mark.parametrize("path", SPEED_MEMORY, ids=[p.name for p in SPEED_MEMORY])
def test_cells_show_diffusers_own_calls(path):
    """A learner copies cells: they show from_pretrained, CPU generators and the guide's prompt, not our wrappers."""
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert code.count("choose_model(") == 1, "resolve the model once, for the notebook's device"
    assert "DiffusionPipeline.from_pretrained(model_id, use_safetensors=True" in code
    assert 'torch.Generator("cpu").manual_seed(' in code
    assert 'DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)' in code
    assert re.search(r'for_(model|batch)\("portrait photo of a old warrior chief", model_id\)', code)
    for wrapper in ("load_pipeline", "load_vae", "PROMPT", "import get_inputs", "get_inputs,"):
        assert wrapper not in code, f"{wrapper} is our wrapper: spell the diffusers call out instead"


@pytest.mark.parametrize("path", SPEED_MEMORY, ids=[p.name for p in SPEED_MEMORY])
def test_lessons_are_checked_with_the_judge(path):
    """Each notebook's checked cells judge its pictures, not only their dtype or count."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    checked = "\n".join(c.source for c in cells if "nbval-check-output" in c.metadata.get("tags", []))
    wanted = {"01_speed.ipynb": {"shown": "shows_prompt(", "drawn": "shows_prompt("},
              "02_memory.ipynb": {"shown": "shows_prompt(", "same": "same_pictures("}}
    for name, call in wanted[path.name].items():
        assert any(f"{name} = {call}" in c.source for c in cells), f"{name} = {call}...)"
        assert f"{name}.verdict" in checked, f"a checked cell prints {name}.verdict"
    if path.name == "01_speed.ipynb":  # shown, not checked: CUDA's float16 moves it (docs/shapes.md)
        assert any("layout = same_layout(rungs" in c.source for c in cells) and "layout.verdict" not in checked


def test_every_notebook_resolves_the_model_and_its_kind_once():
    for path in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert code.count("choose_model(") + code.count("choose_flux_model(") == 1, path.name
        assert code.count("model_kind(") <= 1, path.name
        assert "._repeated_blocks" not in code, f"{path.name}: diffusers' private list (helpers.repeated_blocks)"


def test_04_loads_through_one_function_and_its_trials_return_what_they_measure():
    cells = nbformat.read(ROOT / "notebooks" / "04_beyond.ipynb", as_version=4).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert code.count("DiffusionPipeline.from_pretrained(") == 1, "load through the notebook's load()"
    assert code.count("DPMSolverMultistepScheduler.from_config(") == 1 and "def load(" in code
    trial = next(c.source for c in cells if "def trial(" in c.source)
    body = trial[trial.index("def trial("):trial.index("\n\n\n", trial.index("def trial("))]
    assert "trials" not in body and "global" not in body, "trial() returns its row; the caller keeps it"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here (a GPU machine runs gpu_check.sh without it)")
def test_make_help_lists_every_target_with_a_line():
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY: ((?:.*\\\n)*.*)$", makefile, re.M).group(1).replace("\\\n", " ").split())
    proc = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    listed = {line.split()[1] for line in proc.stdout.splitlines()}
    assert proc.returncode == 0 and listed == phony, phony ^ listed
