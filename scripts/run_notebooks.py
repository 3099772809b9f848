"""Execute the tutorial notebooks in order into build/ (never touching notebooks/), then print a summary.

Usage: python scripts/run_notebooks.py [NOTEBOOK ...]   (default: notebooks/[0-9][0-9]_*.ipynb)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "efficient-diffusion"  # installed into the virtual environment by `make setup`


def summary_lines(nb) -> list[str]:
    """The text of every output of cells tagged 'summary': the measured tables (not a chart's placeholder text)."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "summary" not in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = out.get("text") or (None if any(k.startswith("image/") for k in data) else data.get("text/plain"))
            if text:
                lines.append(text.rstrip())
    return lines


def run(path: Path, out_dir: Path, kernel: str) -> bool:
    import nbformat  # Jupyter's packages load only when a notebook runs: argument errors need none of them
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # stored outputs must not pass for this run's (e.g. after a failing cell)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    kernelspec = nb.metadata.get("kernelspec")
    client = NotebookClient(nb, timeout=3600, kernel_name=kernel, record_timing=False,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    ok = True
    try:
        client.execute()
    except CellExecutionError as err:
        ok = False
        print(f"  FAILED: {str(err).strip().splitlines()[-1]}")
    seconds = time.perf_counter() - start
    if kernelspec:  # keep the notebook's own kernel (Colab and Jupyter users open the executed copy too)
        nb.metadata["kernelspec"] = kernelspec
    out_dir.mkdir(parents=True, exist_ok=True)
    one_picture_each(nb)
    nbformat.write(nb, out_dir / path.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    print(f"{path.name}: {'ran' if ok else 'stopped with an error'} in {seconds:.0f} s -> "
          f"{shown(out_dir / path.name)} and .html")
    for line in summary_lines(nb):
        print("  " + line.replace("\n", "\n  "))
    return ok


def one_picture_each(nb) -> None:
    """Keep each picture once, as PNG: IPython stores a PIL image as both image/png and image/jpeg."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                data.pop("image/jpeg", None)


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it lies inside it (build/...), else as it is."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="where executed copies go (default build/)")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel name (default {KERNEL})")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.out.resolve() == (ROOT / "notebooks").resolve():
        parser.error("--out must not be notebooks/: the tutorial's own files are never overwritten")
    from helpers.errors import TutorialError
    from helpers.models import resolve_model

    try:  # a bad TUTORIAL_MODEL: one line now, rather than the same error from every notebook
        resolve_model(None)
    except TutorialError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = [run(p.resolve(), args.out.resolve(), args.kernel) for p in paths]
    print(f"{sum(results)} of {len(results)} notebooks ran; executed copies in {shown(args.out.resolve())}/")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
