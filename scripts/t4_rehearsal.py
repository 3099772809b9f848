"""A Colab T4 rehearsal on any CUDA GPU: the notebooks at real size, the process held to a T4's 15 GiB.

Usage: python scripts/t4_rehearsal.py [--dry-run] [--limit-gib 15] [--model sd15-random] [--out build/gpu-check/t4]
                                      [--jobs 1] [NOTEBOOK ...]   (default: every notebook)

Each notebook runs under nbval (as `make test` runs them) with TUTORIAL_MODEL=sd15-random (SD 1.5's architecture at
512x512, random weights: a T4's real compute and memory without the Hub) in the device's half precision. An IPython
startup file caps the kernel with ``torch.cuda.set_per_process_memory_fraction`` so that it may allocate no more than
a T4 holds, and records the peak (``torch.cuda.max_memory_allocated``) after every cell. A notebook that would not fit
a T4 fails with the cells nbval names. As in ``make test-models``, a random-weights model's verdicts ('not judged')
read like shapes' True (tests/sanitize-random-weights.cfg); a False still fails. Prints one line per notebook
(seconds, peak GiB, result) and exits 1 if any failed. ``--dry-run`` says what it would run, on any machine. ``--jobs
N`` runs N notebooks at once, each kernel with its share of the cores: on a big GPU the rehearsal then fits a short
lease, but its seconds are those of notebooks that shared the GPU (the caps and peaks are per process, so they still
hold).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
T4_GIB = 15.0  # a Colab T4's memory as torch sees it (15,360 MiB)

# Runs first in every kernel (IPython's startup folder): the cap, and the peak written after every cell.
STARTUP = '''
import json, os
import torch

if torch.cuda.is_available():
    _total = torch.cuda.get_device_properties(0).total_memory
    _limit = float(os.environ["T4_LIMIT_GIB"]) * 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, _limit / _total))

    def _record_peak(*_):
        with open(os.environ["T4_PEAK_FILE"], "w") as f:
            json.dump({"peak": torch.cuda.max_memory_allocated(), "limit": _limit, "total": _total}, f)

    get_ipython().events.register("post_run_cell", _record_peak)
'''


def failed_cells(report: str) -> list[str]:
    """The cells nbval reports as failed, e.g. ['Cell 12'], with the error type when the report names one."""
    cells = []
    for match in re.finditer(r"FAILED \S+?::(Cell \d+)", report):
        cells.append(match.group(1))
    if "OutOfMemoryError" in report or "CUDA out of memory" in report:
        cells = [f"{cell} (out of memory)" for cell in cells] or ["out of memory"]
    return list(dict.fromkeys(cells))


def command(notebook: Path, sanitize: Path | None = None) -> list[str]:
    """nbval on one notebook; with ``sanitize``, that file's rules instead of tests/sanitize.cfg alone."""
    rules = [f"--nbval-sanitize-with={sanitize}"] if sanitize else []
    return [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *rules,
            str(notebook.relative_to(ROOT))]


def sanitize_rules(model: str) -> str:
    """The sanitize rules for ``model``: a random-weights preset's 'not judged' reads as shapes' True."""
    from helpers.models import PRESET_NAMES  # imports torch: not before it is needed

    rules = (ROOT / "tests" / "sanitize.cfg").read_text()
    return rules + (ROOT / "tests" / "sanitize-random-weights.cfg").read_text() if model in PRESET_NAMES else rules


def rehearse(notebook: Path, model: str, limit_gib: float, out: Path, threads: int | None = None) -> dict:
    """Run one notebook under the cap (its kernel on `threads` cores if given); its seconds, peak GiB and result."""
    with tempfile.TemporaryDirectory(prefix="t4-ipython-") as ipython:
        startup = Path(ipython) / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-t4.py").write_text(STARTUP)
        peak_file = Path(ipython) / "peak.json"
        sanitize = Path(ipython) / "sanitize.cfg"
        sanitize.write_text(sanitize_rules(model))
        env = {**os.environ, "TUTORIAL_MODEL": model, "IPYTHONDIR": ipython, "T4_LIMIT_GIB": str(limit_gib),
               "T4_PEAK_FILE": str(peak_file)}
        env.setdefault("TUTORIAL_FLUX_MODEL", "shapes-flux")  # 05's model on a T4 (a big GPU would pick FLUX.1)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        run = subprocess.run(command(notebook, sanitize), cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = json.loads(peak_file.read_text())["peak"] / 2**30 if peak_file.is_file() else float("nan")
    (out / f"{notebook.stem}.log").write_text(run.stdout + run.stderr)
    cells = failed_cells(run.stdout + run.stderr) if run.returncode else []
    result = "ok" if run.returncode == 0 else "FAIL: " + (", ".join(cells) or f"exit {run.returncode}")
    return {"notebook": notebook.name, "seconds": round(seconds, 1), "peak GiB": round(peak, 2), "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/t4_rehearsal.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="say what would run; needs no GPU")
    parser.add_argument("--limit-gib", type=float, default=T4_GIB, help=f"memory cap in GiB (default {T4_GIB:g})")
    parser.add_argument("--model", default="sd15-random", help="TUTORIAL_MODEL for the notebooks (sd15-random)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check" / "t4", help="folder for the logs")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at once (default 1)")
    parser.add_argument("notebooks", nargs="*", type=Path, help="the notebooks to rehearse (default: all)")
    args = parser.parse_args(argv)
    if args.limit_gib <= 0:
        parser.error("--limit-gib must be positive")
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    notebooks = [path.resolve() for path in args.notebooks] or NOTEBOOKS
    missing = [str(path) for path in notebooks if path not in NOTEBOOKS]
    if missing:
        parser.error(f"not one of the tutorial's notebooks: {', '.join(missing)} (give paths such as "
                     "notebooks/04_beyond.ipynb)")
    print(f"t4: {len(notebooks)} notebook(s) with TUTORIAL_MODEL={args.model}, each kernel capped at "
          f"{args.limit_gib:g} GiB (torch.cuda.set_per_process_memory_fraction); logs in {args.out}")
    jobs = min(args.jobs, len(notebooks))
    threads = max(1, len(os.sched_getaffinity(0)) // jobs) if jobs > 1 else None
    if args.dry_run:
        if jobs > 1:
            print(f"t4: would run {jobs} notebooks at a time, {threads} threads each")
        for notebook in notebooks:
            print(f"t4: would run {' '.join(command(notebook)[1:])}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("t4: no CUDA GPU here: run it on a GPU machine, or add --dry-run to see the plan", file=sys.stderr)
        return 2
    print(f"t4: on {torch.cuda.get_device_name(0)} "
          f"({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    def one(notebook: Path) -> dict:
        try:
            row = rehearse(notebook, args.model, args.limit_gib, args.out, threads)
        except Exception as err:  # noqa: BLE001 - one notebook's failure must not lose the others' rows
            row = {"notebook": notebook.name, "seconds": float("nan"), "peak GiB": float("nan"),
                   "result": f"FAIL: {type(err).__name__}: {err}"}
        print(f"t4: {row['notebook']:18} {row['seconds']:7.1f} s  peak {row['peak GiB']:6.2f} GiB  {row['result']}",
              flush=True)
        return row

    if jobs > 1:
        print(f"t4: {jobs} notebooks at a time, {threads} threads each (their seconds overlap)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(one, notebooks))
    (args.out / "t4.json").write_text(json.dumps(rows, indent=1))
    failed = [r for r in rows if r["result"] != "ok"]
    print(f"t4: {'every notebook fits a T4' if not failed else f'{len(failed)} notebook(s) would not run on a T4'}"
          f" ({args.limit_gib:g} GiB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
