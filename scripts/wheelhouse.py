"""Download the wheels `make gpu-check` installs on the lent GPU machine (which reaches no registry); check them.

Usage: python scripts/wheelhouse.py [--check-only] [--out .wheelhouse]

Needs PyPI (run it on the CPU machine). Downloads scripts/gpu-wheels.txt, pinned, without dependencies, for CPython 3.12
on x86-64 Linux, into an ignored folder; then checks that every wheel's requirements are met by another wheel there or
by a package the GPU machine already has (scripts/gpu-machine-packages.txt), that no name comes twice, and the size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
WANTED = ROOT / "scripts" / "gpu-wheels.txt"
PRESENT = ROOT / "scripts" / "gpu-machine-packages.txt"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_5_x86_64"]
# The GPU machine's interpreter, for evaluating requirement markers.
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "os_name": "posix",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "extra": ""}
MAX_MIB = 30


def _lines(path: Path) -> list[str]:
    return [s for line in path.read_text().splitlines() if (s := line.split("#")[0].strip())]


def download(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *platforms, "-d", str(out), *_lines(WANTED)]
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    # This machine's pip config names local indexes that hold few packages: drop pip's notes about each miss.
    noise = "is ignored: it is neither"
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if noise not in line))
    if proc.returncode:
        raise SystemExit(f"wheelhouse: pip download failed (exit {proc.returncode}); is PyPI reachable?")


def check(out: Path) -> list[str]:
    """Problems with the wheelhouse: missing or extra wheels, unmet requirements, duplicates, size."""
    wheels = sorted(out.glob("*.whl"))
    have: dict[str, list[str]] = {}
    for wheel in wheels:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        have.setdefault(name, []).append(str(version))
    present = {canonicalize_name(n) for n in _lines(PRESENT)}
    wanted = {canonicalize_name(Requirement(r).name): r for r in _lines(WANTED)}
    problems = [f"{n}: {len(v)} versions ({', '.join(v)}); keep one" for n, v in have.items() if len(v) > 1]
    problems += [f"{r}: no wheel in {out}" for n, r in wanted.items() if n not in have]
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            requires = [line.split(":", 1)[1].strip() for line in zf.read(meta).decode().splitlines()
                        if line.startswith("Requires-Dist:")]
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(TARGET):
                continue
            name = canonicalize_name(req.name)
            if name in have:
                if not all(req.specifier.contains(v, prereleases=True) for v in have[name]):
                    problems.append(f"{wheel.name} needs {text}; the wheelhouse has {name} {have[name]}")
            elif name not in present:
                problems.append(f"{wheel.name} needs {text}: neither in the wheelhouse nor on the GPU machine")
    size = sum(w.stat().st_size for w in wheels) / 2**20
    if size > MAX_MIB:
        problems.append(f"the wheels take {size:.1f} MiB, over {MAX_MIB} MiB (the carried tree must stay under 64)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".wheelhouse", help="folder for the wheels (.wheelhouse)")
    parser.add_argument("--check-only", action="store_true", help="check an existing wheelhouse, download nothing")
    args = parser.parse_args(argv)
    if not args.check_only:
        download(args.out)
    problems = check(args.out)
    for problem in problems:
        print(f"wheelhouse: {problem}", file=sys.stderr)
    wheels = list(args.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"wheelhouse: {len(wheels)} wheels, {size:.1f} MiB in {args.out}; "
          + ("complete for the GPU machine" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
