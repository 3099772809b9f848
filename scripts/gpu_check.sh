#!/usr/bin/env bash
# gpu-check: on a CUDA machine without the Hub or a package registry, check the project end to end in a few minutes:
#   1. the unit tests (tests/, without the notebook runs),  2. the notebooks under nbval on CUDA with the small
#   trained model `shapes`,  3. a T4 rehearsal: the notebooks at real size (sd15-random, float16) with the process
#   held to a T4's 15 GiB (scripts/t4_rehearsal.py),  4. where the Hub answers, the notebooks with the real SD 1.5,
#   5. a short bench on sd15-random in half precision (rungs 2-4, 10 steps).
# What is missing (diffusers, nbval, Jupyter's kernel) is installed from .wheelhouse/ (`make wheelhouse`, made
# beforehand where PyPI is reachable) into a temporary folder; the machine's own torch is never replaced.
#
# Usage: bash scripts/gpu_check.sh            (or `make gpu-check`)
#        bash scripts/gpu_check.sh --dry-run  (on any machine: say what it would do, check the wheelhouse, run nothing)
# Environment: PYTHON (default python3, else .venv/bin/python), WHEELHOUSE (default .wheelhouse), GPU_CHECK_OUT (default build/gpu-check),
#              TESTS_TIMEOUT / NOTEBOOKS_TIMEOUT / T4_TIMEOUT / REAL_TIMEOUT / BENCH_TIMEOUT in seconds
#              (defaults 300 / 210 / 420 / 600 / 120), T4_JOBS (rehearsal notebooks at once; default 5 with 8 cores
#              or more, else 1).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PY=${PYTHON:-python3}
WHEELS=${WHEELHOUSE:-.wheelhouse}
OUTDIR=${GPU_CHECK_OUT:-build/gpu-check}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

say() { printf 'gpu-check: %s\n' "$*"; }

if [ -z "${PYTHON:-}" ] && ! "$PY" -c "import torch" 2>/dev/null && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python  # this project's own environment, where plain python3 has no torch
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  say "no torch for $PY: run it with a Python that has a CUDA build of torch (PYTHON=...)"; exit 2
fi
TORCH_BEFORE=$("$PY" -c "import torch; print(torch.__version__)")
CUDA=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")
if [ -z "$CUDA" ] && [ "$DRY" = 0 ]; then
  say "no CUDA GPU here (torch $TORCH_BEFORE sees none): run it on a GPU machine, or add --dry-run to see the steps"
  exit 2
fi

SITE=""
if ! "$PY" -c "import diffusers, nbval, ipykernel, jupyter_client, nbformat" 2>/dev/null; then
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    say "diffusers/nbval/Jupyter are missing and $WHEELS/ has no wheels: run \`make wheelhouse\` where PyPI is reachable"
    exit 2
  fi
  SITE=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
  if [ "$DRY" = 1 ]; then
    say "would install $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS/ into a temporary folder"
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
      || { say "installing the wheels from $WHEELS/ failed"; exit 2; }
  fi
fi
export PYTHONPATH="${SITE:+$SITE:}$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# The real model only where the Hub answers (asked before HF_HUB_OFFLINE is set); everything else runs offline.
HUB=$("$PY" -c "from helpers.models import hub_reachable; print(hub_reachable())" 2>/dev/null || echo "no")
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
TORCH_AFTER=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$TORCH_AFTER" != "$TORCH_BEFORE" ]; then
  say "torch changed from $TORCH_BEFORE to $TORCH_AFTER: the wheelhouse must not carry torch"; exit 2
fi

# The notebooks' model: the trained small model if this checkout has it, else the tiny preset.
if [ -f helpers/shapes/weights/shapes/model_index.json ]; then
  MODEL=shapes
else
  MODEL=tiny
fi
# A GPU machine has cores to spare: pytest-xdist, where it is installed, runs the tests (and the notebooks, one
# notebook per worker) four at a time. Each test worker takes one thread (tests/conftest.py), and each notebook's
# kernel a quarter of the cores: four kernels of all the cores each would fight over them.
PARALLEL=()
"$PY" -c "import xdist" 2>/dev/null && PARALLEL=(-n 4)
KERNEL_THREADS=$(( $(nproc) / 4 > 0 ? $(nproc) / 4 : 1 ))
T4_JOBS=${T4_JOBS:-$(( $(nproc) >= 8 ? 5 : 1 ))}
BENCH=(-m helpers.bench --model sd15-random --rungs 2-4 --baseline-steps 10 --steps 10 --repeats 2 --budget 100
       --out "$OUTDIR")
if [ "$DRY" = 1 ]; then
  say "device: ${CUDA:-none here}; torch $TORCH_BEFORE; notebooks' model: $MODEL"
  say "would run: $PY -m pytest tests -q -rfE -m 'not slow'${PARALLEL:+ -n 4}"
  say "would run: TUTORIAL_MODEL=$MODEL ${PARALLEL:+OMP_NUM_THREADS=$KERNEL_THREADS }$PY -m pytest notebooks -q -rfE${PARALLEL:+ -n 4 --dist loadfile}"
  "$PY" scripts/t4_rehearsal.py --dry-run --jobs "$T4_JOBS" --out "$OUTDIR/t4" | sed 's/^/gpu-check: /'
  case "$HUB" in yes*) say "would run: TUTORIAL_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5 $PY -m pytest notebooks -q (the Hub answers)";;
                 *) say "would skip the real model: the Hub does not answer ($HUB)";; esac
  say "would run: $PY ${BENCH[*]}"
  exit 0
fi

mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/gpu-check.log") 2>&1  # what it prints, the summary too, kept beside the steps' logs
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
say "$CUDA (driver ${DRIVER:-unknown}, $(nproc) cores); torch $TORCH_BEFORE; notebooks' model: $MODEL; logs in $OUTDIR/"
START=$SECONDS
step() {  # step NAME TIMEOUT COMMAND...: run it, log it, remember its exit status and last line
  local name=$1 limit=$2; shift 2
  say "$name ..."
  local t0=$SECONDS
  # At its limit a step is interrupted (SIGINT) as Ctrl-C would: pytest then still lists the failures so far (-rfE).
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  { [ $rc = 124 ] || [ $rc = 137 ]; } && echo "gpu-check: stopped after $limit s" >>"$OUTDIR/$name.log"
  RESULTS+=("$(printf '%-10s %-4s %4d s  %s' "$name" "$([ $rc = 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) \
    "$(grep -v '^\s*$' "$OUTDIR/$name.log" | tail -n 1 | cut -c1-150)")")
  [ $rc = 0 ] || { FAILED=1; tail -n 40 "$OUTDIR/$name.log"; }
}
RESULTS=()
FAILED=0
step tests "${TESTS_TIMEOUT:-300}" "$PY" -m pytest tests -q -rfE -m "not slow" ${PARALLEL[@]+"${PARALLEL[@]}"}
step notebooks "${NOTEBOOKS_TIMEOUT:-210}" env TUTORIAL_MODEL="$MODEL" ${PARALLEL:+OMP_NUM_THREADS=$KERNEL_THREADS} \
  "$PY" -m pytest notebooks -q -rfE ${PARALLEL[@]+"${PARALLEL[@]}"} ${PARALLEL:+--dist loadfile}
step t4 "${T4_TIMEOUT:-420}" "$PY" scripts/t4_rehearsal.py --jobs "$T4_JOBS" --out "$OUTDIR/t4"
case "$HUB" in
  yes*) step real "${REAL_TIMEOUT:-600}" env -u HF_HUB_OFFLINE TUTORIAL_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5 \
          "$PY" -m pytest notebooks -q ;;
  *) RESULTS+=("$(printf '%-10s %-4s %4s    %s' real skip - "the Hub does not answer ($HUB)")")
esac
step bench "${BENCH_TIMEOUT:-120}" "$PY" "${BENCH[@]}"

echo
say "summary ($((SECONDS - START)) s in all, on $CUDA)"
printf '  %s\n' "${RESULTS[@]}"
if [ -f "$OUTDIR/bench.csv" ]; then
  "$PY" - "$OUTDIR/bench.csv" <<'EOF'
import sys

import pandas as pd

df = pd.read_csv(sys.argv[1], index_col="rung")
cols = [c for c in ("dtype", "solver", "steps", "unet s/step", "it/s", "vae decode s", "e2e s", "e2e how", "speedup",
                    "TFLOP/s") if c in df.columns]
with pd.option_context("display.width", 200, "display.max_columns", 20):
    print(df[cols].to_string())
EOF
fi
if [ "$FAILED" = 0 ]; then say "PASSED"; else say "FAILED (see the logs in $OUTDIR/)"; fi
exit "$FAILED"
