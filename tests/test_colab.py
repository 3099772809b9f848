"""Colab's install cell installs what Colab lacks and no more: every import of the helpers and the notebooks is
either in Python's standard library, shipped with Colab, installed by the cell, or brought in by what it installs."""

import ast
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# What a Colab runtime (CPU or GPU) ships, as distributions (the list, and what any Python kernel has).
COLAB = {"torch", "numpy", "pandas", "matplotlib", "ipywidgets", "ipython", "psutil", "tqdm", "pillow", "google-colab"}
BROUGHT_BY = {"huggingface-hub": "diffusers", "packaging": "diffusers", "filelock": "diffusers"}  # dependencies
# Imports made only by the bench's optional peers (pip install -e ".[peers]"), never by a notebook.
PEERS_EXTRA = {"openvino", "onnxruntime", "onnx", "onnxscript"}
# Imported only where installed (04 asks diffusers' is_torchao_available first): an extra, not a dependency.
OPTIONAL = {"torchao"}
DISTRIBUTION = {"PIL": "pillow", "IPython": "ipython", "google": "google-colab", "huggingface_hub": "huggingface-hub",
                "optimum": "optimum-quanto", "DeepCache": "deepcache"}


def top_modules(source: str) -> set[str]:
    """The top-level modules a piece of Python imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def notebook_code(path: Path) -> list[str]:
    """The code cells, with IPython's magics (%pip) and shell lines turned into ``pass``."""
    def python(line: str) -> str:
        code = line.lstrip()
        return line[: len(line) - len(code)] + "pass" if code.startswith(("%", "!")) else line

    cells = nbformat.read(path, as_version=4).cells
    return ["\n".join(map(python, c.source.splitlines())) for c in cells if c.cell_type == "code"]


# What only notebooks 04 and 05 need (the bench imports tomesd and DeepCache too, but no notebook runs the bench);
# Quanto is not imported, diffusers' PipelineQuantizationConfig loads it by name.
EXTRAS = {"04_beyond.ipynb": {"optimum-quanto", "tomesd", "deepcache"}, "05_transformers.ipynb": {"optimum-quanto"}}
ONLY_LATER = set().union(*EXTRAS.values())


def needed(notebooks: list[Path] = NOTEBOOKS) -> dict[str, set[str]]:
    """Distribution -> the files that import it, for the helpers package and ``notebooks``."""
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "helpers").rglob("*.py")}
    for path in notebooks:
        sources.update({f"{path.name} cell {i}": code for i, code in enumerate(notebook_code(path))})
    wanted: dict[str, set[str]] = {}
    for where, source in sources.items():
        for module in top_modules(source) - set(sys.stdlib_module_names) - {"helpers", "__future__"}:
            if module in PEERS_EXTRA and where.startswith("helpers/bench/peers") or module in OPTIONAL:
                continue
            wanted.setdefault(DISTRIBUTION.get(module, module).lower(), set()).add(where)
    return wanted


def install_cell(path: Path) -> list[str]:
    """The distributions the notebook's Colab cell installs with %pip."""
    cell = next(c.source for c in nbformat.read(path, as_version=4).cells if "google.colab" in c.source)
    names = []
    for line in cell.splitlines():
        if line.strip().startswith("%pip install"):
            for spec in re.findall(r'"([^"]+)"|(\S+)', line.split("install", 1)[1]):
                spec = spec[0] or spec[1]
                if not spec.startswith("-"):
                    names.append(re.split(r"[<>=!~ @\[]", spec, maxsplit=1)[0].lower())
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_colab_cell_installs_what_colab_lacks_and_no_more(path):
    installed = [name.lower() for name in install_cell(path)]
    assert "efficient-diffusion" in installed, "the cell installs this package"
    assert not set(installed) & COLAB, f"Colab already has {sorted(set(installed) & COLAB)}"
    wanted = needed([path])
    extras = EXTRAS.get(path.name, set())
    wanted |= {name: {f"{path.name}'s optimizations"} for name in extras}
    assert not set(installed) & (ONLY_LATER - extras), f"only 04/05 need {sorted(set(installed) & ONLY_LATER)}"
    wanted = {dist: where for dist, where in wanted.items() if dist not in ONLY_LATER - extras}
    missing = {dist: sorted(where)[:3] for dist, where in wanted.items()
               if dist not in COLAB and dist not in installed and BROUGHT_BY.get(dist) not in installed}
    assert not missing, f"add these to the Colab cell (or to COLAB if Colab ships them): {missing}"


def test_the_colab_cells_differ_only_in_04s_and_05s_extra_packages():
    cells = {next(c.source for c in nbformat.read(p, as_version=4).cells if "google.colab" in c.source)
             for p in NOTEBOOKS if p.name not in EXTRAS}
    assert len(cells) == 1


def test_optional_imports_are_an_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    offered = {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for reqs in extras.values() for r in reqs}
    assert OPTIONAL | PEERS_EXTRA <= offered


def test_everything_imported_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for r in project["dependencies"]}
    undeclared = {dist: sorted(where)[:3] for dist, where in needed().items()
                  if dist not in declared and dist not in BROUGHT_BY and dist not in {"google-colab", "ipython"}}
    assert not undeclared, f"add these to pyproject.toml's dependencies: {undeclared}"
