# One vocabulary for people and CI. Everything runs inside .venv, created on first use.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?=
OVERRIDES ?=
STATE ?= .state
PREFECT_PORT ?=
MLFLOW_PORT ?=
STACK = $(BIN)/python -m infra.local_stack --state $(STATE) $(if $(PREFECT_PORT),--prefect-port $(PREFECT_PORT)) $(if $(MLFLOW_PORT),--mlflow-port $(MLFLOW_PORT))

.PHONY: up down demo run eval bench-gpu bench-rl-curves test-gpu test test-fast reliability quality base-model ui-prefect ui-mlflow clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a CPU machine takes its local CPU wheel; a range would pull a 5 GB CUDA build
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/.installed  ## run the whole pipeline on the embedded tiny default (through the local stack when it is up)
	R1_STATE_DIR=$(STATE) env $$($(STACK) env) $(BIN)/python -m flows.cli
	@$(STACK) status || true

up: $(BIN)/.installed  ## start Prefect server, MLflow server and a process worker on $(STATE); apply the deployments
	$(STACK) up

down:  ## stop what `make up` started
	$(STACK) down

run: $(BIN)/.installed  ## make run RECIPE=flows/recipes/tiny.yaml OVERRIDES="final_rl.trl.max_steps=80"
	R1_STATE_DIR=$(STATE) $(BIN)/python -m flows.cli $(if $(RECIPE),--recipe $(RECIPE)) $(OVERRIDES)

eval: $(BIN)/.installed  ## make eval MODEL=models:/r1-tiny@champion [RECIPE=...] (held-out pass@1, cons@k, tables)
	R1_STATE_DIR=$(STATE) $(BIN)/python -m flows.cli --evaluate "$(MODEL)" $(if $(RECIPE),--recipe $(RECIPE)) $(OVERRIDES)

test: $(BIN)/.installed  ## the whole test suite (CPU), end-to-end flow tests included
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## unit tests only
	$(BIN)/python -m pytest -q -m "not slow"

reliability: $(BIN)/.installed  ## kills, two runs at once, storage faults, rewards, guards, bad input, security: one table (OUT=reliability.md)
	$(BIN)/python tests/reliability/report.py --out $${OUT:-reliability.md}

quality: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

base-model: $(BIN)/.installed  ## rebuild models/assets/tiny_base (about 2-5 minutes on 2 CPU cores)
	$(BIN)/python -m models.tiny_base --out models/assets/tiny_base

ui-prefect: $(BIN)/.installed
	PREFECT_HOME=$(abspath $(STATE))/prefect $(BIN)/prefect server start

ui-mlflow: $(BIN)/.installed
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(STATE))/mlflow.db

bench-gpu:  ## on a GPU machine, in its own python3 (see README): ours vs stock TRL, GRPO and SFT, one run
	$(or $(BENCH_PYTHON),python3) -m models.benchmarks.gpu --out $${OUT:-bench-results}

bench-rl-curves: $(BIN)/.installed  ## reasoning_rl reward curves, our rollouts vs TRL's stock ones (CPU, ~3 minutes)
	$(BIN)/python -m models.benchmarks.rl_curves --out $${OUT:-bench-results}/rl_curves

test-gpu:  ## on a GPU machine: a few steps of every stage on the GPU
	$(or $(BENCH_PYTHON),python3) -m pytest -q -m gpu tests/gpu -p no:cacheprovider

clean:  ## remove the local state (runs, artifacts, caches); keeps the environment
	rm -rf $(STATE)

.PHONY: docker-build test-docker
DOCKER_BUILD_ARGS ?=

docker-build:  ## images r1-worker and r1-mlflow (CUDA base by default; docker/README.md shows the local Debian base)
	docker/build.sh worker r1-worker:latest $(DOCKER_BUILD_ARGS)
	docker/build.sh mlflow r1-mlflow:latest $(DOCKER_BUILD_ARGS)

test-docker: $(BIN)/.installed  ## hadolint, the compose file, the worker image built on local/debian and run as a worker
	$(BIN)/python -m pytest -q -m docker tests/docker
