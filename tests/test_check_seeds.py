import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import lessons
from helpers.shapes.world import WORDS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_shapes_seeds.py"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_quality.ipynb"


def test_it_checks_the_prompts_the_notebooks_give_shapes():
    script = runpy.run_path(str(SCRIPT))  # the module's constants; main() does not run
    prompts = [script["PROMPT"], script["DETAILED"], script["UNWANTED"], *script["TWEAKS"]]
    assert all(word in WORDS for text in prompts for word in text.split())  # shapes' words, not the guide's
    assert len(set(script["TWEAKS"])) == len(script["TWEAK_COLOURS"]) == 4


def test_it_checks_the_seed_and_tolerances_03_uses():
    script = runpy.run_path(str(SCRIPT))
    assert (script["tweak_seed"], script["TWEAK_MOVE_PX"], script["TWEAK_AREA_RATIO"]) == (
        lessons.tweak_seed, lessons.TWEAK_MOVE_PX, lessons.TWEAK_AREA_RATIO)
    cells = [cell for cell in json.loads(NOTEBOOK.read_text())["cells"] if cell["cell_type"] == "code"]
    code = "\n".join("".join(cell["source"]) for cell in cells)
    assert "TWEAK_SEED = tweak_seed(device)" in code and "manual_seed(TWEAK_SEED)" in code
    assert "tolerance=TWEAK_MOVE_PX, area_ratio=TWEAK_AREA_RATIO" in code
    assert not any(f"manual_seed({seed})" in code for seed in lessons.TWEAK_SEEDS.values())  # not typed again


def test_the_tweak_seed_is_the_cpus_except_on_cuda():
    assert lessons.tweak_seed("cpu") == lessons.tweak_seed(torch.device("mps")) == lessons.TWEAK_SEEDS["cpu"]
    assert lessons.tweak_seed("cuda:0") == lessons.TWEAK_SEEDS["cuda"] != lessons.TWEAK_SEEDS["cpu"]


def test_a_folder_without_a_checkpoint_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def _main(args: list[str]) -> int:
    """The script's exit status for ``args``, run in this process (a process of its own spends 7 s importing on an
    AVX2-only EPYC; the test above runs it as one, end to end)."""
    try:
        return runpy.run_path(str(SCRIPT))["main"](args)
    except SystemExit as stop:  # argparse's errors
        return stop.code


def test_cuda_without_a_gpu_is_one_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert _main(["--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --device cuda needs a CUDA GPU, and torch sees none here: leave --device out"]


@pytest.mark.parametrize("args, message", [
    (["--tweak-seeds", "5-3"], "--tweak-seeds takes A-B with A <= B"),
    (["--tweak-seeds", "0-1", "--dtypes", "float33"], "--dtypes takes names such as"),
    (["--dtypes", "float16"], "--dtypes goes with --tweak-seeds"),
])
def test_bad_scan_arguments_are_one_clear_error(args, message, capsys):
    assert _main(args) == 2 and message in capsys.readouterr().err
