"""The notebooks under nbval, as a learner runs them: from the package built as a wheel, in an empty folder.

Colab's install cell builds this project's wheel and installs it; a learner's notebook then sits in a folder with
nothing else from the repository. So here the wheel is built from the sources (``pip wheel --no-deps``), unpacked
apart from the clone, and each notebook is copied alone into an empty folder and run under nbval with the unpacked
package first on the path: anything the notebooks need that the wheel lacks (the shapes weights, say) fails here.

With the default model (``shapes`` on a CPU) this is what ``make test`` runs. ``TUTORIAL_MODEL=tiny`` (marked
``other_model``, run by ``make test-models``) checks that the notebooks run to the end with a random-weights model
and that every checked cell prints the same, except the judges' verdicts: a random model's pictures are *not
judged*, where shapes' print True (``sanitize-random-weights.cfg`` makes the two read alike; a False would still
differ).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.models import PRESET_NAMES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = ("pyproject.toml", "README.md", "helpers")  # what a build reads; the rest of the clone stays behind
pytestmark = pytest.mark.slow
SANITIZE = ROOT / "tests" / "sanitize.cfg"
NBVAL = ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600", "-p", "no:cacheprovider"]
UNJUDGED = ROOT / "tests" / "sanitize-random-weights.cfg"  # added for tiny's and sd15-random's verdicts


def build_wheel(to: Path) -> Path:
    """This project's wheel, built from a copy of its sources (the build leaves nothing in the clone)."""
    source = to / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(to / "dist"), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (to / "dist").glob("*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """The wheel unpacked into a folder of its own, as pip would install it into site-packages."""
    where = tmp_path_factory.mktemp("wheel")
    site = where / "site-packages"
    with zipfile.ZipFile(build_wheel(where)) as wheel:
        wheel.extractall(site)
    return site


def run_alone(notebook: Path, site: Path, folder: Path, model: str | None) -> subprocess.CompletedProcess:
    """nbval on ``notebook`` copied alone into ``folder``, with the unpacked package ``site`` first on the path."""
    folder.mkdir()
    shutil.copy(notebook, folder / notebook.name)
    sanitize = folder.parent / "sanitize.cfg"
    sanitize.write_text(SANITIZE.read_text() + (UNJUDGED.read_text() if model in PRESET_NAMES else ""))
    env = {k: v for k, v in os.environ.items() if k not in ("TUTORIAL_MODEL", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    if model:
        env["TUTORIAL_MODEL"] = model
    return subprocess.run([sys.executable, "-m", "pytest", *NBVAL, f"--nbval-sanitize-with={sanitize}", notebook.name],
                          cwd=folder, env=env,
                          capture_output=True, text=True, timeout=1800)


def test_the_wheel_carries_the_package_and_the_shapes_weights(installed):
    helpers = installed / "helpers"
    assert (helpers / "shapes" / "weights" / "shapes" / "model_index.json").is_file()
    weights = sorted(p.relative_to(helpers) for p in helpers.rglob("*.safetensors"))
    assert len(weights) == 8, weights  # shapes: text encoder, UNet, VAE, fine-tuned VAE; shapes-flux: 4 more
    assert (helpers / "shapes" / "weights" / "shapes-flux" / "tokenizer_2" / "tokenizer.json").is_file()
    assert (helpers / "bench" / "flash_attention.cpp").is_file()  # the bench's kernel, compiled where it runs
    assert {p.name for p in helpers.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "bench", "generate", "shapes"}
    probe = subprocess.run([sys.executable, "-c", "import helpers; print(helpers.__file__)"], cwd=installed.parent,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).parent == helpers  # the unpacked copy, not the clone's


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_from_the_installed_package(notebook, installed, tmp_path):
    run = run_alone(notebook, installed, tmp_path / "learner", model=None)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


# 05 runs a Flux pipeline: tiny and sd15-random are UNet presets, so it has no other model to run here.
UNET_NOTEBOOKS = [p for p in NOTEBOOKS if p.name != "05_transformers.ipynb"]


@pytest.mark.other_model
@pytest.mark.parametrize("notebook", UNET_NOTEBOOKS, ids=[p.stem for p in UNET_NOTEBOOKS])
def test_notebook_checks_print_the_same_with_another_model(notebook, installed, tmp_path):
    run = run_alone(notebook, installed, tmp_path / "learner", model="tiny")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
