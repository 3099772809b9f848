"""The notebooks' semantic checks can fail: with random `shapes` UNet weights, nbval must fail on a judge cell.

Another model's run of a notebook, as in ``make test-models`` (marked ``other_model``), which runs it; ``make test``
leaves it out (62 s of an AVX2-only EPYC's 12-minute budget).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path("notebooks/03_quality.ipynb")  # the one with most judge checks; one notebook keeps this quick
JUDGED = ("judged_check(", "shows_prompt(", "same_layout(", "names_detail(", "avoids(")  # the checks a judge makes
UNET_CHECK = "shows_prompt("  # the judge's verdict on pictures the UNet drew: colour, shape and background


def _copy_repository(to: Path) -> None:
    """The files nbval needs: the notebook (up to its first judge check of the UNet's pictures), helpers with its
    shapes weights, pyproject.toml and the sanitize file."""
    to.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "helpers", to / "helpers", ignore=ignore)
    (to / "notebooks").mkdir()
    notebook = json.loads((ROOT / NOTEBOOK).read_text(encoding="utf-8"))
    cells = notebook["cells"]
    # 03's first judge check reads the VAE alone (a random UNet leaves it alone); the next reads the UNet's pictures.
    # The cells after it only cost time here (about 25 s of 90 on an AVX2-only EPYC).
    last = next(i for i, cell in enumerate(cells) if _is_unet_check(cell))
    notebook["cells"] = cells[: last + 1]
    (to / NOTEBOOK).write_text(json.dumps(notebook), encoding="utf-8")
    (to / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "sanitize.cfg", to / "tests" / "sanitize.cfg")
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")


def _is_judge_check(cell: dict) -> bool:
    """Whether a cell is a compared cell (tagged nbval-check-output) that prints a judge's verdicts."""
    source = "".join(cell["source"])
    return "nbval-check-output" in cell.get("metadata", {}).get("tags", []) and any(c in source for c in JUDGED)


def _is_unet_check(cell: dict) -> bool:
    """Whether a cell is a judge check of the pictures the UNet drew."""
    return _is_judge_check(cell) and UNET_CHECK in "".join(cell["source"])


def _randomise_unet(folder: Path) -> None:
    """Overwrite the UNet's weights with a fresh random initialisation of the same architecture (fixed seed)."""
    import torch
    from diffusers import UNet2DConditionModel

    before = (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
    unet.save_pretrained(folder, safe_serialization=True)
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() != before


def _failing_cells(report: str, notebook: Path) -> list[dict]:
    """Each cell nbval reports as failed (nbval numbers the code cells only)."""
    cells = [c for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    indices = {int(i) for i in re.findall(rf"FAILED \S*{re.escape(notebook.name)}::Cell (\d+)", report)}
    return [cells[i] for i in sorted(indices) if i < len(cells)]


@pytest.mark.slow
@pytest.mark.other_model
def test_random_unet_fails_a_semantic_cell(tmp_path):
    """nbval on a copy whose shapes UNet is random fails, and a failing cell is one that asks the judge."""
    copy = tmp_path / "repo"
    _copy_repository(copy)
    _randomise_unet(copy / "helpers" / "shapes" / "weights" / "shapes" / "unet")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")])))
    # helpers.models.WEIGHTS is the shapes folder beside the package's own files: where Python finds the package
    # (found, not imported: importing it would take seconds of diffusers).
    probe = [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('helpers').origin)"]
    where = subprocess.run(probe, cwd=copy / "notebooks", env=env, capture_output=True, text=True, check=True).stdout
    where = Path(where.strip()).parent / "shapes" / "weights"
    assert where == copy / "helpers" / "shapes" / "weights", f"the notebook would load {where}, not the copy"

    # pyproject.toml's addopts (--nbval-lax, the sanitize file as a relative path) apply with the copy as rootdir.
    run = subprocess.run([sys.executable, "-m", "pytest", str(NOTEBOOK), "-rf"],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    assert run.returncode == 1, f"nbval should fail on the random UNet (exit {run.returncode}):\n{report[-3000:]}"
    failing = _failing_cells(report, copy / NOTEBOOK)
    assert failing, f"no failing cell found in nbval's report:\n{report[-3000:]}"
    semantic = [cell for cell in failing if _is_unet_check(cell)]
    assert semantic, "the judge check of the UNet's pictures did not fail; the failing cells:\n" + "\n---\n".join(
        "".join(c["source"]) for c in failing)
