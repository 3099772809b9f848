# make tutorial: run the notebooks into build/.   make test: unit tests + notebooks under nbval.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and on its own, so a machine can pick its build (CPU-only, a CUDA version):
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
BENCH_ARGS ?=
# make generate PROMPTS=prompts.txt [OUT=build/pictures] [NPROC=2] [GENERATE_ARGS="--steps 10"]
PROMPTS ?=
OUT ?= build/pictures
NPROC ?= 1
GENERATE_ARGS ?=
# --multi_gpu starts NPROC processes (torchrun), on GPUs or, without CUDA, on the CPU; --cpu would start only one.
LAUNCH := $(PY) -m accelerate.commands.launch --multi_gpu --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: setup tutorial test bench generate generate-bench lint info clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name efficient-diffusion --display-name "Python (efficient-diffusion)" >/dev/null
	@touch $(STAMP)

tutorial: setup
	$(PY) scripts/run_notebooks.py

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m helpers.bench $(BENCH_ARGS)

generate: setup
	@test -n "$(PROMPTS)" || { echo 'usage: make generate PROMPTS=prompts.txt [OUT=build/pictures] [NPROC=2] [GENERATE_ARGS="--steps 10"]'; exit 2; }
	$(if $(filter 1,$(NPROC)),$(PY),$(LAUNCH) --num_processes $(NPROC)) -m helpers.generate $(PROMPTS) --out $(OUT) $(GENERATE_ARGS)

generate-bench: setup
	$(PY) scripts/bench_generate.py $(GENERATE_BENCH_ARGS)

lint: setup
	$(PY) -m ruff check .

info: setup
	$(PY) -m helpers info

clean:
	rm -rf build
