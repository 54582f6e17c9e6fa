# MUTR: `make run` starts the whole system on this machine, `make test` runs everything CI runs.
# Each target installs what it needs (hack/ensure-deps.sh) and starts PostgreSQL and Redis when
# none answers (hack/with-services.sh). `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Test models: MUTR_MODEL_DIR when set, else ../shared/models when it exists, else the download
# cache that `mutr-ai-server fetch-model` fills.
SHARED_MODELS := $(abspath $(CURDIR)/../shared/models)
MUTR_MODEL_DIR ?= $(if $(wildcard $(SHARED_MODELS)/*.gguf),$(SHARED_MODELS),)
export MUTR_MODEL_DIR
# sqlx macros read the checked-in .sqlx/ data, so a build never needs a database.
export SQLX_OFFLINE ?= true
export CARGO_TERM_COLOR ?= auto

HACK := ./hack

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install missing build needs (cmake, libclang, pkg-config) through apt-get
	@$(HACK)/ensure-deps.sh build

.PHONY: build
build: deps ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets

.PHONY: run
run: deps ## Start PostgreSQL/Redis if needed, migrate, start the AI server and the API, print the URL (PROFILE=small: Gemma 3 270M)
	@PROFILE="$(PROFILE)" $(HACK)/with-services.sh $(HACK)/run.sh

.PHONY: test
test: deps ## Everything CI runs: lint, every test against real PostgreSQL, Redis and models, chart checks
	@$(HACK)/with-services.sh $(HACK)/test.sh

.PHONY: bench
bench: deps ## Benchmarks; each prints a table with its figure, its baseline and their ratio
	@$(HACK)/ensure-deps.sh bench
	@$(HACK)/with-services.sh $(HACK)/bench.sh

.PHONY: lint
lint: deps ## cargo fmt --check and cargo clippy --all-targets -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: images
images: ## Build the images with Docker or Podman (REGISTRY=, TAG=, PUSH=1, CUDA=1; see hack/release/images.sh)
	@$(HACK)/release/images.sh $(if $(PUSH),--push) $(if $(CUDA),--cuda)

.PHONY: crds
crds: deps ## Regenerate crds/ from the operator's Rust types
	$(CARGO) run -q -p mutr-operator --bin mutr-operator -- crd > crds/mutrdeployments.mutr.io.yaml
	@for dest in charts/mutr/crds manifests/base/crds; do cp crds/*.yaml $$dest/; done
	@echo "wrote crds/mutrdeployments.mutr.io.yaml and its copies in charts/mutr/crds and manifests/base/crds"

.PHONY: openapi
openapi: deps ## Regenerate api/openapi.json from the API's code (a test fails when it drifts)
	$(CARGO) run -q -p mutr-api --bin mutr-api -- openapi > api/openapi.json.tmp
	@mv api/openapi.json.tmp api/openapi.json
	@echo "wrote api/openapi.json"

.PHONY: sqlx-prepare
sqlx-prepare: deps ## Refresh .sqlx/ (offline query data) against a scratch database; no sqlx-cli needed
	@$(HACK)/with-services.sh $(HACK)/sqlx-prepare.sh

.PHONY: clean
clean: ## Remove build output and local service data
	$(CARGO) clean
	rm -rf .local
