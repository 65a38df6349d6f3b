# Every target works on a fresh clone: `make test` installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help install test test-suite test-images lock test-real lint preview screenshots bench dashboards monitoring grafana-schema clean images up down manifests kind-up kind-down test-kind lint-docker print-images version-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

help: ## list the targets with what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install the project with its test extras

test: test-suite test-images ## everything CI runs: the default suite, then the images built and run

test-suite: $(STAMP) ## the default suite (embedded PostgreSQL 18 + emulator); checks chromium and prometheus first
	@test -n "$(SKIP_PREREQS)" || $(PY) -m devenv.prereqs
	$(PY) -m pytest $(PYTEST_ARGS)

# Root and Docker's daemon (Debian docker.io) + debootstrap: a private dockerd under a temp dir, a Debian base
# from this machine's apt sources, the five images built and run as the chart runs them (tests/images).
# Without them it skips, naming what is missing; under CI=true it fails instead. -s: it prints image sizes,
# build times and docker stop times.
test-images: $(STAMP) ## build and run the five images against PostgreSQL 18 + the emulator (docs/containers.md)
	$(PY) -m pytest tests/images -m images -s -p no:cacheprovider $(PYTEST_ARGS)

lock: $(STAMP) ## re-pin requirements/*.lock (hashes) from pyproject.toml with uv; commit the result
	$(PY) -m devenv.lock

test-real: $(STAMP) ## integration tests against the server in TEST_DATABASE_URL (real pg_trickle)
	@test -n "$$TEST_DATABASE_URL" || { echo "error: set TEST_DATABASE_URL to a PostgreSQL 18 server with pg_trickle preloaded" >&2; exit 2; }
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and ruff format --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

preview: $(STAMP) ## embedded PostgreSQL 18 + emulator + bootstrap + scheduler + generator, in the foreground
	$(PY) -m devenv.preview

screenshots: $(STAMP) ## regenerate docs/screenshots/<scenario>-<1440|390>.png from the browser tests; commit the result
	@$(PY) -m devenv.prereqs
	DASHBOARD_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/integration/test_dashboard_browser.py \
	  -k test_dag_edges_avoid_node_boxes_and_screenshots -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP) ## benchmarks under tests/bench (print figures; not part of make test)
	$(PY) -m pytest tests/bench -m bench -s -p no:cacheprovider $(PYTEST_ARGS)

dashboards: $(STAMP) ## regenerate the Grafana dashboards (monitoring/dashboards/*.json) and sync the monitoring package
	$(PY) monitoring/grafana/generate_dashboards.py
	$(PY) monitoring/build.py

monitoring: $(STAMP) ## render the monitoring package (monitoring/): compose's alert rules and the chart's copies; commit the result
	$(PY) monitoring/build.py

grafana-schema: ## regenerate monitoring/grafana/schema/dashboard.schema.json from npm @grafana/schema (needs node and npm)
	bash monitoring/grafana/schema/generate.sh

clean: ## remove .venv, caches, test output and the preview's data
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output .preview

# -- containers, compose, Kubernetes ----------------------------------------------------------------------
CHART       := helm/pg-trickle-demo
VERSION     := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' $(CHART)/Chart.yaml)
IMAGE_REPO  ?= pg-trickle-demo
SERVICES    := bootstrap generator dashboard exporter operator
IMAGES      := $(foreach s,$(SERVICES),$(IMAGE_REPO)/$(s):$(VERSION))
PG_TRICKLE_IMAGE ?= ghcr.io/trickle-labs/pg_trickle:0.67.0-pg18.3
DOCKER      ?= docker
COMPOSE     ?= $(DOCKER) compose
PROFILES    ?=
SCENARIO    ?= $(or $(DEMO_SCENARIO),ecommerce)
KIND        ?= kind
KIND_CLUSTER ?= pg-trickle-demo
KIND_CONFIG ?= kind-config.yaml
HELM        ?= helm
KUBECTL     ?= kubectl
NAMESPACE   ?= pg-trickle-demo
RELEASE     ?= demo

# One Dockerfile (services/Dockerfile): target `service` with SERVICE/PORT for the three HTTP services,
# `bootstrap`, `operator`. BUILD_ARGS adds options, e.g. --build-arg BASE_IMAGE=... --network host.
BUILD_ARGS  ?=
images: ## build the five service images as $(IMAGE_REPO)/<service>:$(VERSION)
	@rev=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown); \
	for spec in bootstrap:bootstrap: generator:service:8000 dashboard:service:8080 exporter:service:9188 operator:operator:; do \
	  s=$${spec%%:*}; rest=$${spec#*:}; target=$${rest%%:*}; port=$${rest#*:}; \
	  echo "building $(IMAGE_REPO)/$$s:$(VERSION)"; \
	  $(DOCKER) build -f services/Dockerfile --target $$target -t $(IMAGE_REPO)/$$s:$(VERSION) \
	    $${port:+--build-arg SERVICE=$$s --build-arg PORT=$$port} \
	    --build-arg VERSION=$(VERSION) --build-arg REVISION=$$rev $(BUILD_ARGS) . || exit 1; \
	done

up: ## docker compose up (writes .env with random passwords when missing); PROFILES=monitoring adds Prometheus+Grafana
	$(PYTHON) -m devenv.dotenv .env
	$(COMPOSE) $(if $(PROFILES),--profile $(PROFILES)) up -d --build
	@echo "dashboard http://localhost:8080  exporter http://localhost:9188/metrics  generator http://localhost:8000/control"
	@$(if $(PROFILES),echo "prometheus http://localhost:9090  grafana http://localhost:3000 (anonymous viewer; admin password in .env)")

down: ## docker compose down (keeps the volumes; add -v yourself to wipe them)
	$(COMPOSE) --profile monitoring down

manifests: $(STAMP) ## render k8s/ (plain manifests and kustomize base/overlays) from the chart
	$(PY) -m devenv.manifests

lint-docker: $(STAMP) ## hadolint the Dockerfile
	$(VENV)/bin/hadolint services/Dockerfile

version-check: ## the version in pyproject.toml, Chart.yaml and compose.yaml agree (CHANGELOG.md: docs/release.md)
	$(PYTHON) devenv/release.py check

print-images: ## the image names make images builds (and make kind-up loads)
	@echo $(PG_TRICKLE_IMAGE) $(IMAGES)

kind-up: images ## kind cluster + images + helm upgrade --install --wait --wait-for-jobs with values-$(SCENARIO).yaml, print URLs
	@command -v $(KIND) >/dev/null || { echo "error: kind is not installed (https://kind.sigs.k8s.io)" >&2; exit 2; }
	@command -v $(HELM) >/dev/null || { echo "error: helm is not installed" >&2; exit 2; }
	@command -v $(KUBECTL) >/dev/null || { echo "error: kubectl is not installed" >&2; exit 2; }
	$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG)
	$(DOCKER) image inspect $(PG_TRICKLE_IMAGE) >/dev/null 2>&1 || $(DOCKER) pull $(PG_TRICKLE_IMAGE)
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGES)
	@# A pulled multi-platform image cannot be loaded from Docker's containerd image store (kind issue 3795):
	@# then the node pulls it itself (postgres.image.pullPolicy IfNotPresent).
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(PG_TRICKLE_IMAGE) \
	  || echo "note: could not load $(PG_TRICKLE_IMAGE) into the node; the node will pull it from the registry"
	$(HELM) upgrade --install $(RELEASE) $(CHART) --kube-context kind-$(KIND_CLUSTER) -n $(NAMESPACE) --create-namespace \
	  -f $(CHART)/values-$(SCENARIO).yaml -f $(CHART)/values-kind.yaml --wait --wait-for-jobs --timeout 10m
	@echo "dashboard http://localhost:8080  exporter http://localhost:9188/metrics  generator http://localhost:8000/control"

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

test-kind: $(STAMP) ## opt-in: kind cluster, install, check data and refreshes, uninstall (skips without Docker/kind/helm)
	$(PY) -m pytest tests/kind -m k8s -p no:cacheprovider $(PYTEST_ARGS)
