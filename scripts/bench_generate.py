"""Pictures per second of ``helpers.generate`` with 1 and with 2 processes on this machine (a command, not a test).

Writes ``--count`` prompts to ``--out``/prompts.txt, makes them once with ``python -m helpers.generate`` and once
with ``accelerate launch --multi_gpu --num_processes 2`` (two GPUs, or two CPU processes where there is no CUDA),
each into a fresh folder, and prints each run's pictures per second: generation only, from the moment every
process has its model loaded until the last picture is written (the rate that ``helpers.generate`` prints). On a
CPU the cores are shared out: 1 process gets them all, each of 2 processes gets half. It says whether the two runs
wrote the same pixels (on a CPU the thread counts differ, and they can change the rounding). Keep ``--count`` a
multiple of twice the batch size (4 on a CPU), so that both processes get as many batches.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"made (\d+) pictures in ([\d.]+) s")
LAUNCH = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no"]
SUBJECTS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "an old warrior chief",
            "a cat on a sofa", "a mountain river at sunset", "a city street at night"]


def run(processes: int, prompts: Path, out: Path, extra: list[str], threads: int | None) -> tuple[int, float]:
    """Run helpers.generate in ``processes`` processes; (pictures made, generation seconds) from its last line."""
    shutil.rmtree(out, ignore_errors=True)
    launch = [sys.executable] + (LAUNCH + ["--num_processes", str(processes)] if processes > 1 else [])
    cmd = launch + ["-m", "helpers.generate", str(prompts), "--out", str(out), *extra]
    if threads:
        cmd += ["--threads", str(threads)]
    print("$", " ".join(["python", *cmd[1:]] if processes == 1 else ["accelerate launch", *cmd[3:]]), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    found = RATE.findall(proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit(f"bench_generate: the {processes}-process run failed:\n{proc.stdout}{proc.stderr}")
    made, seconds = found[-1]
    return int(made), float(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=16, help="how many prompts (default 16)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "generate-bench", help="work folder")
    args, extra = parser.parse_known_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2")
    import torch

    cpu = not torch.cuda.is_available()
    if not cpu and torch.cuda.device_count() < 2:
        print("bench_generate: 2 processes need 2 GPUs here; this machine has 1, so only 1 process is measured.")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = args.out / "prompts.txt"
    prompts.write_text("".join(f"{SUBJECTS[i % len(SUBJECTS)]}, picture {i + 1}\n" for i in range(args.count)))
    rows = []
    for processes in (1, 2) if cpu or torch.cuda.device_count() >= 2 else (1,):
        threads = max(1, cores // processes) if cpu else None
        made, seconds = run(processes, prompts, args.out / f"{processes}-process", extra, threads)
        rows.append((processes, threads, made, seconds, made / seconds))
    print(f"\n{'processes':>9} {'threads each':>12} {'pictures':>8} {'seconds':>8} {'pictures/s':>10} {'speedup':>7}")
    for processes, threads, made, seconds, rate in rows:
        print(f"{processes:>9} {threads or '-':>12} {made:>8} {seconds:>8.2f} {rate:>10.3f} {rate / rows[0][4]:>7.2f}")
    if len(rows) == 2:
        from PIL import Image

        one, two = ({p.name: Image.open(p).tobytes() for p in (args.out / f"{n}-process").glob("*.png")}
                    for n in (1, 2))
        same = sum(one[name] == two.get(name) for name in one)
        print(f"pictures with the same pixels in both runs: {same} of {len(one)}"
              + (" (on a CPU the threads per process differ, and they can change the rounding)" if cpu else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
