# Everyday commands. STACK picks the environment (Pulumi.<STACK>.yaml).
STACK ?= dev
VENV ?= venv
PYTHON ?= python3
ACTIONLINT_VERSION ?= v1.7.12
BIN := $(VENV)/bin

.PHONY: deploy preview refresh destroy test e2e lint kubeconfig bench bench-engine schema charts

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-deps: requirements.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# actionlint comes from the Go module proxy (its PyPI wrapper downloads a binary at build time).
$(BIN)/actionlint: | $(BIN)/activate
	@command -v go >/dev/null || { echo "Go is needed to install actionlint for the workflow tests: https://go.dev/dl/"; exit 1; }
	GOBIN=$(abspath $(BIN)) GOFLAGS=-mod=mod go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

deploy: $(VENV)/.runtime-deps
	scripts/pulumi-stack.sh $(STACK) up

preview: $(VENV)/.runtime-deps
	scripts/pulumi-stack.sh $(STACK) preview

# Both renew expired admin kubeconfigs first (a targeted up), so they work after any pause.
refresh: $(VENV)/.runtime-deps
	scripts/pulumi-stack.sh $(STACK) refresh

destroy: $(VENV)/.runtime-deps
	scripts/pulumi-stack.sh $(STACK) destroy

# The pinned Istio charts the tests check values and objects against: fetched once from
# istioChartRepository (Istio's official repository) or the ISTIO_CHART_MIRROR mirror, verified,
# cached in .cache/istio-charts/<version>/ (README: Tests). Fails in one line when neither is reachable.
charts: $(VENV)/.dev-deps
	$(BIN)/python -m testing.charts

test: $(VENV)/.dev-deps $(BIN)/actionlint charts
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

$(VENV)/.e2e-deps: requirements.txt requirements-dev.txt e2e/requirements.txt | $(BIN)/activate
	$(BIN)/pip install -q -r e2e/requirements.txt
	touch $@

# The real program against real Kubernetes control planes on loopback (README: End-to-end tests).
# Builds its tools from the Go modules in e2e/tools on the first run and reuses them after that.
e2e: $(VENV)/.e2e-deps charts
	e2e/tools/build.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider e2e

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .

# Writes the merged admin kubeconfig (one context per cluster) readable by you alone.
kubeconfig: $(VENV)/.runtime-deps
	scripts/pulumi-stack.sh $(STACK) kubeconfig

# Writes the untracked bench/.out/RESULTS.md; UPDATE=1 rewrites the committed bench/RESULTS.md.
bench: $(VENV)/.dev-deps
	$(BIN)/python -m bench.run $(if $(UPDATE),--update)

# The real engine's preview and up at N clusters (default 8) on local control planes, with the
# critical path from its own events; writes e2e/.out/engine-scale-<N>.json for `make bench`.
N ?= 8
bench-engine: $(VENV)/.e2e-deps charts
	e2e/tools/build.sh
	$(BIN)/python -m bench.engine_scale --clusters $(N)

# After changing components/config.py: regenerates schema/stack-config.schema.json and prints the
# README's config table.
schema: $(VENV)/.runtime-deps
	$(BIN)/python -m components.config_reference
